"""Benchmark the campaign server (`otatool server`) under a fleet's load.

N simulated devices (asyncio, one client process, 127.0.0.1 only) update
through real `otatool server` processes, on each of: SQLite with one
server, PostgreSQL with one server, PostgreSQL with two servers (devices
split between them as a reverse proxy would). PostgreSQL is a throwaway
cluster started here (tests/pgserver.py), durable (fsync on) like the
SQLite file. Each device:

1. checks in on 1.0.0 and is offered 1.1.0 (a 1 MiB image);
2. downloads it in two Range requests and checks its SHA-256;
3. reports downloading, then installed, checks in on 1.1.0, and reports
   confirmed; every tenth reports rolled_back instead and checks in on
   1.0.0 again, where it must not be offered the image again;
4. checks in once more on the version it ended with (nothing due).

Steps 1 and 4 are the two check-in storms timed: check-ins/s and the p50
and p99 latency of one check-in, with `--concurrency` devices at a time.
Afterwards the campaign's status must show every device in the state it
ended in (confirmed, or rolled_back); any other answer is an error.

    .venv/bin/python tools/bench/bench_server.py [--devices 10000]
        [--concurrency 1000] [--setups sqlite,pg1,pg2]
"""
import argparse
import asyncio
import hashlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse

import aiohttp

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(REPO, "tests"))  # the tests' throwaway PostgreSQL

from pgserver import PostgresServer, free_port, wait_until_listening  # noqa: E402
from otatool.appimage import make_app_image  # noqa: E402
from otatool.server.store import Store  # noqa: E402

OTATOOL = os.path.join(os.path.dirname(sys.executable), "otatool")
OLD, NEW = "1.0.0", "1.1.0"
IMAGE_SIZE = 1024 * 1024
PASSWORD = "bench password"
ROLLS_BACK_EVERY = 10
ADMIN = {"Authorization": aiohttp.encode_basic_auth("admin", PASSWORD)}


def token(i):
    return "bench-device-%05d" % i


def expected_state(i):
    return "rolled_back" if i % ROLLS_BACK_EVERY == ROLLS_BACK_EVERY - 1 else "confirmed"


def register_fleet(db, devices):
    """An admin and `devices` devices of user "bench", in one transaction
    (the admin API would take a request each)."""
    store = Store(db)
    try:
        store.set_password("admin", PASSWORD)
        with store._transaction(write=True):  # the store's methods join it
            store.add_user("bench")
            for i in range(devices):
                store.add_device("bench", token=token(i))
    finally:
        store.close()


def start_servers(db, count, workdir):
    """`count` otatool server processes on `db`, sharing one images directory."""
    servers = []
    for _ in range(count):
        port = free_port()
        process = subprocess.Popen(
            [OTATOOL, "server", "--db", db, "--files", os.path.join(workdir, "files"),
             "--host", "127.0.0.1", "--port", str(port)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        servers.append((process, port))
    for process, port in servers:
        wait_until_listening(port, process)
    return servers


class Run:
    """One setup's devices, counters and timings."""

    def __init__(self, session, ports, devices, concurrency):
        self.session, self.ports = session, ports
        self.devices, self.concurrency = devices, concurrency
        self.errors = []
        self.offers = {}

    def base(self, i):
        return "http://127.0.0.1:%d" % self.ports[i % len(self.ports)]

    def error(self, i, what):
        self.errors.append("%s: %s" % (token(i), what))

    async def check_in(self, i, version, latencies):
        t0 = time.perf_counter()
        async with self.session.get(self.base(i) + "/ota/check",
                                    params={"token": token(i), "version": version}) as r:
            body = await r.json() if r.status == 200 else await r.read()
        latencies.append(time.perf_counter() - t0)
        return r.status, body

    async def report(self, i, campaign, state, **extra):
        async with self.session.post(self.base(i) + "/ota/report",
                                     json=dict(token=token(i), campaign=campaign, state=state,
                                               **extra)) as r:
            if r.status != 204:
                self.error(i, "report %s answered %d" % (state, r.status))

    async def download(self, i, offer):
        path = urllib.parse.urlsplit(offer["url"]).path
        half, data = offer["size"] // 2, b""
        for rng in ("bytes=0-%d" % (half - 1), "bytes=%d-" % half):
            async with self.session.get(self.base(i) + path, headers={"Range": rng}) as r:
                if r.status != 206:
                    self.error(i, "download answered %d" % r.status)
                    return False
                data += await r.read()
        if hashlib.sha256(data).hexdigest() != offer["sha256"]:
            self.error(i, "downloaded image does not match its SHA-256")
            return False
        return True

    async def first_check_in(self, i, latencies):
        status, offer = await self.check_in(i, OLD, latencies)
        if status != 200:
            self.error(i, "first check-in answered %d, not an offer" % status)
        else:
            self.offers[i] = offer

    async def update(self, i, latencies):
        offer = self.offers.get(i)
        if offer is None or not await self.download(i, offer):
            return
        cid = offer["campaign"]
        await self.report(i, cid, "downloading", progress=offer["size"])
        await self.report(i, cid, "installed")
        if (await self.check_in(i, NEW, latencies))[0] != 204:
            self.error(i, "check-in on the new version was offered something")
        if expected_state(i) == "rolled_back":
            await self.report(i, cid, "rolled_back", error="bench: self-test failed")
        else:
            await self.report(i, cid, "confirmed")

    async def last_check_in(self, i, latencies):
        version = NEW if expected_state(i) == "confirmed" else OLD
        if (await self.check_in(i, version, latencies))[0] != 204:
            self.error(i, "check-in after the update (%s) was offered something" % version)

    async def every_device(self, step):
        """step(i, latencies) for each device, `concurrency` at a time;
        (seconds, latencies)."""
        latencies, queue = [], iter(range(self.devices))

        async def worker():
            for i in queue:
                try:
                    await step(i, latencies)
                except (aiohttp.ClientError, asyncio.TimeoutError, ValueError) as e:
                    self.error(i, "%s: %s" % (type(e).__name__, e))
        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(self.concurrency)))
        return time.perf_counter() - t0, latencies


def storm_line(name, seconds, latencies):
    if not latencies:
        return "  %s: no answer" % name
    ms = sorted(x * 1000 for x in latencies)
    return ("  %s: %d check-ins in %.1f s = %.0f check-ins/s, p50 %.1f ms, p99 %.1f ms"
            % (name, len(ms), seconds, len(ms) / seconds, statistics.median(ms),
               ms[min(len(ms) - 1, int(len(ms) * 0.99))]))


async def start_campaign(session, port):
    form = aiohttp.FormData()
    form.add_field("user", "bench")
    form.add_field("max_attempts", "3")
    form.add_field("file", make_app_image(version=NEW, size=IMAGE_SIZE), filename="app.bin")
    async with session.post("http://127.0.0.1:%d/admin/ota/start" % port, data=form,
                            headers=ADMIN) as r:
        body = await r.json()
        if r.status != 201:
            raise SystemExit("bench_server: starting the campaign answered %d: %s"
                             % (r.status, body))
        return body["campaign"]


async def final_states(session, port, campaign):
    async with session.get("http://127.0.0.1:%d/admin/ota/status" % port,
                           params={"campaign": campaign},
                           headers=ADMIN,
                           timeout=aiohttp.ClientTimeout(total=300)) as r:
        return {d["token"]: d["state"] for d in (await r.json())["campaigns"][0]["devices"]}


async def load(ports, devices, concurrency):
    connector = aiohttp.TCPConnector(limit=concurrency, limit_per_host=concurrency)
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        campaign = await start_campaign(session, ports[0])
        run = Run(session, ports, devices, concurrency)
        first = await run.every_device(run.first_check_in)
        t0 = time.perf_counter()
        await run.every_device(run.update)
        updating = time.perf_counter() - t0
        last = await run.every_device(run.last_check_in)
        states = await final_states(session, ports[-1], campaign)
    wrong = [i for i in range(devices) if states.get(token(i)) != expected_state(i)]
    counts = {}
    for state in states.values():
        counts[state] = counts.get(state, 0) + 1
    lines = [storm_line("check-in storm 1 (offers)", *first),
             "  downloads and reports: %d x %d KiB in %.1f s (%.0f MiB/s)"
             % (len(run.offers), IMAGE_SIZE // 1024, updating,
                len(run.offers) * IMAGE_SIZE / 2**20 / updating),
             storm_line("check-in storm 2 (nothing due)", *last),
             "  errors: %d%s" % (len(run.errors), "".join("\n    " + e for e in run.errors[:5])),
             "  final states: %s; %s" % (", ".join("%d %s" % (n, s) for s, n in sorted(counts.items())),
                                         "all as expected" if not wrong else
                                         "%d NOT as expected (e.g. %s)" % (len(wrong), token(wrong[0])))]
    return "\n".join(lines)


def bench(name, db, servers_count, devices, concurrency, workdir):
    register_fleet(db, devices)
    servers = start_servers(db, servers_count, workdir)
    try:
        print("%s, %d server(s): %d devices, %d at a time" % (name, servers_count, devices,
                                                             concurrency), flush=True)
        print(asyncio.run(load([port for _, port in servers], devices, concurrency)), flush=True)
    finally:
        for process, _ in servers:
            process.terminate()
            process.wait(30)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--devices", type=int, default=10000)
    p.add_argument("--concurrency", type=int, default=1000)
    p.add_argument("--setups", default="sqlite,pg1,pg2",
                   help="comma-separated: sqlite, pg1 (one server), pg2 (two servers)")
    args = p.parse_args()
    setups = args.setups.split(",")
    unknown = set(setups) - {"sqlite", "pg1", "pg2"}
    if unknown or args.devices < 1 or args.concurrency < 1:
        p.error("--setups takes sqlite, pg1, pg2; --devices and --concurrency positive numbers")
    print("machine: %d cores; one client process" % os.cpu_count(), flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-server-") as workdir:
        if "sqlite" in setups:
            os.makedirs(os.path.join(workdir, "sqlite"))
            bench("SQLite", os.path.join(workdir, "sqlite", "ota.sqlite"), 1, args.devices,
                  args.concurrency, os.path.join(workdir, "sqlite"))
        if {"pg1", "pg2"} & set(setups):
            with PostgresServer(durable=True) as pg:  # commits reach the disk, as SQLite's do
                for setup, count in (("pg1", 1), ("pg2", 2)):
                    if setup in setups:
                        folder = os.path.join(workdir, setup)
                        os.makedirs(folder)
                        bench("PostgreSQL", pg.new_database(), count, args.devices,
                              args.concurrency, folder)


if __name__ == "__main__":
    main()
