"""The campaign server for a fleet: on SQLite and on a real PostgreSQL that
the tests start (conftest's `postgres`), several servers sharing one
database, a schema that upgrades itself in numbered steps, a device that
rolled back left alone, and an event loop that a busy database never stops.
"""
import concurrent.futures
import contextlib
import json
import os
import sqlite3
import subprocess
import sys
import time
import types

import psycopg
import pytest

from otatool import server
from otatool.server import store as campaigns
from otatool.server.migrations import MIGRATIONS, latest_version
from pgserver import free_port, wait_until_listening
from test_campaign_server import PASSWORD, Api, api, clock, config, fleet, image, srv  # noqa: F401

OTATOOL = os.path.join(os.path.dirname(sys.executable), "otatool")


# --- rolled back means no --------------------------------------------------------

def test_a_device_that_rolled_back_is_not_offered_that_image_again_even_after_a_restart(
        config, clock):
    with server.ServerThread(config) as srv:
        api = Api(srv)
        api.request("POST", "/admin/users", body={"name": "dora"})
        api.request("POST", "/admin/devices", body={"user": "dora", "token": "d1"})
        cid = api.start(image("1.1.0"), token="d1", max_attempts=3)
        assert api.check("d1", "1.0.0")[0] == 200
        assert api.report("d1", cid, "installed")[0] == 204
        assert api.report("d1", cid, "rolled_back", error="self-test failed")[0] == 204
        clock.t += 30 * 86400  # every back-off is long over
        assert api.check("d1", "1.0.0")[0] == 204
        d = api.device_status(cid, "d1")
        assert (d["state"], d["error"], d["attempts"]) == ("rolled_back", "self-test failed", 1)
    with server.ServerThread(config) as srv:
        api = Api(srv)
        assert api.check("d1", "1.0.0")[0] == 204
        assert api.device_status(cid, "d1")["state"] == "rolled_back"
        newer = api.start(image("1.2.0"), token="d1")
        status, offer = api.check("d1", "1.0.0")
        assert status == 200 and (offer["campaign"], offer["version"]) == (newer, "1.2.0")


def test_a_rollback_seen_only_at_check_in_also_ends_the_offers(api, fleet, clock):
    cid = api.start(image("1.1.0"), token="a1", max_attempts=5)
    assert api.check("a1", "1.0.0")[0] == 200
    assert api.check("a1", "1.1.0")[0] == 204  # it ran the new image ...
    clock.t += 30 * 86400
    assert api.check("a1", "1.0.0")[0] == 204  # ... and came back on the old one
    assert api.check("a1", "1.0.0")[0] == 204
    assert api.device_status(cid, "a1")["state"] == "rolled_back"


# --- the schema -------------------------------------------------------------------

def applied(store):
    return [r["version"] for r in store._rows("SELECT version FROM schema_version ORDER BY version")]


def test_a_new_database_gets_every_migration_once_in_order(database):
    for _ in range(2):  # the second opening applies nothing
        store = campaigns.Store(database)
        try:
            assert applied(store) == [n for n, _ in MIGRATIONS] == list(range(1, latest_version() + 1))
        finally:
            store.close()


def test_a_database_from_a_newer_otatool_is_refused_in_one_line(database):
    store = campaigns.Store(database)
    with store._transaction(write=True):
        store._exec("INSERT INTO schema_version (version, applied) VALUES (?, 0)",
                    (latest_version() + 1,))
    store.close()
    with pytest.raises(campaigns.Unavailable, match="newer than this otatool's"):
        campaigns.Store(database)


@pytest.mark.sqlite_only
def test_a_database_made_before_schema_versions_is_upgraded_and_keeps_its_data(database):
    conn = sqlite3.connect(database)
    for ddl in MIGRATIONS[0][1]:  # the tables as the first releases made them
        conn.execute(ddl % {"serial": "INTEGER PRIMARY KEY"})
    conn.execute("INSERT INTO users (name, created) VALUES ('erin', 1)")
    conn.commit()
    conn.close()
    store = campaigns.Store(database)
    try:
        assert applied(store) == list(range(1, latest_version() + 1)) and [u["name"] for u in store.users()] == ["erin"]
        assert store._row("SELECT name FROM sqlite_master WHERE name = 'rollouts_by_token'")
    finally:
        store.close()


# --- a busy database does not stop the server -------------------------------------

@contextlib.contextmanager
def another_process_holding(db):
    """A process that holds the SQLite file `db` exclusively until the block ends."""
    locker = subprocess.Popen(
        [sys.executable, "-c", "import sqlite3, sys\n"
         "c = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
         "c.execute('BEGIN EXCLUSIVE'); print('locked', flush=True); sys.stdin.read()",
         db], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert locker.stdout.readline() == "locked\n"
        yield locker
    finally:
        locker.kill()
        locker.wait()


@pytest.mark.sqlite_only
def test_requests_that_need_no_database_answer_while_another_process_holds_it(srv, api, fleet,
                                                                            config):
    with another_process_holding(config["db"]) as locker:
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            check_in = pool.submit(api.check, "a1", "1.0.0")  # a write: it waits for the lock
            status, body = api.request("GET", "/no/such/path", auth=False)
            assert status == 404 and body["error"] == "no such path"
            assert api.request("GET", "/admin/users", auth=False)[0] == 401
            assert not check_in.done()  # still waiting, yet the others were answered
            locker.stdin.close()  # the other process lets go
            assert check_in.result(timeout=30)[0] == 204


# --- a database that is down: 503, then back to work ------------------------------

@pytest.mark.sqlite_only
def test_a_database_held_past_the_busy_wait_answers_503_until_it_is_let_go(config,
                                                                           monkeypatch):
    monkeypatch.setattr(campaigns._SqliteConnections, "BUSY_WAIT", 1)
    with server.ServerThread(config) as srv:
        api = Api(srv, PASSWORD)
        assert api.request("POST", "/admin/users", body={"name": "fleet"})[0] == 201
        assert api.request("POST", "/admin/devices",
                           body={"user": "fleet", "token": "d1"})[0] == 201
        with another_process_holding(config["db"]):
            status, body = api.check("d1", "1.0.0")
            assert status == 503 and body["error"] == "database unavailable, try again later"
        assert api.check("d1", "1.0.0")[0] == 204


def test_while_postgresql_is_down_the_server_answers_503_and_recovers_when_it_is_back(
        tmp_path, monkeypatch):
    from pgserver import PostgresServer
    monkeypatch.setattr(campaigns._PostgresConnections, "WAIT", 2)  # how long a request waits
    with PostgresServer() as pg:
        db = pg.new_database()
        store = campaigns.Store(db)
        store.set_password("admin", PASSWORD)
        store.close()
        with server.ServerThread({"db": db, "files": str(tmp_path / "files")}) as srv:
            api = Api(srv, PASSWORD)
            assert api.request("POST", "/admin/users", body={"name": "fleet"})[0] == 201
            assert api.request("POST", "/admin/devices",
                               body={"user": "fleet", "token": "d1"})[0] == 201
            assert api.check("d1", "1.0.0")[0] == 204

            pg.pause()
            for _ in range(2):  # a pooled connection the server dropped, then none to be had
                status, body, resp = api.request("GET", "/ota/check",
                                                 {"token": "d1", "version": "1.0.0"},
                                                 auth=False, raw=True)
                assert status == 503, body
                assert json.loads(body) == {"error": "database unavailable, try again later",
                                            "detail": {"retry_after": 30}}
                assert resp.getheader("Retry-After") == "30"
            assert api.request("GET", "/admin/ota/status")[0] == 503
            assert api.request("GET", "/no/such/path", auth=False)[0] == 404  # no database needed

            pg.resume()
            for _ in range(60):  # the pool reconnects in the background
                status = api.check("d1", "1.0.0")[0]
                if status != 503:
                    break
                time.sleep(0.5)
            assert status == 204
            assert api.request("GET", "/admin/ota/status")[0] == 200


# --- several servers on one PostgreSQL --------------------------------------------

@pytest.fixture
def two_servers(postgres, tmp_path):
    """Two `otatool server` processes started at the same moment on one new
    PostgreSQL database, sharing the images' directory; no back-off, so a
    device may be offered again at once. Yields (url, [port, port], [stdout, stdout])."""
    url = postgres.new_database()
    (tmp_path / "server.toml").write_text("backoff_base = 0\nbackoff_max = 0\n")
    ports, outs, processes = [free_port(), free_port()], [], []
    try:
        for i, port in enumerate(ports):
            out = tmp_path / ("server%d.out" % i)
            outs.append(out)
            with out.open("w") as stdout:  # the child keeps its own copy
                processes.append(subprocess.Popen(
                    [OTATOOL, "server", "--config", str(tmp_path / "server.toml"), "--db", url,
                     "--files", str(tmp_path / "files"), "--host", "127.0.0.1",
                     "--port", str(port)], stdout=stdout, stderr=subprocess.STDOUT))
        for port, process in zip(ports, processes):
            wait_until_listening(port, process)
        yield url, ports, [out.read_text() for out in outs]
    finally:
        for process in processes:
            process.terminate()
            process.wait(30)


def test_two_servers_on_one_postgresql_share_campaigns_attempts_and_stops(two_servers):
    url, ports, outs = two_servers
    printed = [line for out in outs for line in out.splitlines() if "created admin user" in line]
    assert len(printed) == 1  # both came up; only one made the admin
    password = printed[0].split("password ")[1].split()[0]
    a, b = (Api(types.SimpleNamespace(port=p), password) for p in ports)
    assert a.request("POST", "/admin/users", body={"name": "fleet"})[0] == 201
    tokens = ["dev%02d" % i for i in range(24)]
    for token in tokens + ["late"]:
        assert b.request("POST", "/admin/devices", body={"user": "fleet", "token": token})[0] == 201
    cid = a.start(image("1.1.0"), user="fleet", max_attempts=3)

    # Each device asks six times at once, three times each server: with no
    # back-off, exactly max_attempts of the six are offers.
    def ask(token, server):
        return server.check(token, "1.0.0")[0]
    with concurrent.futures.ThreadPoolExecutor(48) as pool:
        answers = {t: [pool.submit(ask, t, (a, b)[i % 2]) for i in range(6)] for t in tokens}
        offers = {t: sorted(f.result() for f in futures) for t, futures in answers.items()}
    assert offers == {t: [200, 200, 200, 204, 204, 204] for t in tokens}
    assert {d["attempts"] for d in a.status(cid)[0]["devices"] if d["token"] in tokens} == {3}

    status, offer = b.check("late", "1.0.0")  # started through one, served by the other
    assert status == 200 and offer["campaign"] == cid
    assert b.request("GET", "/admin/ota/stop", {"campaign": cid})[1] == {"stopped": [cid]}
    assert a.check("late", "1.0.0")[0] == 204  # stopped through the other one

    with psycopg.connect(url) as conn:
        states = [s for (s,) in conn.execute(
            "SELECT state FROM pg_stat_activity WHERE datname = current_database()"
            " AND pid <> pg_backend_pid()")]
    assert states and not [s for s in states if s.startswith("idle in transaction")]
