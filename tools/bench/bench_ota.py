"""Benchmark a firmware OTA on the emulated ESP32 (MicroPython unix port).

Prints, from one run, with lib/ota compiled as `otatool deploy --mpy` puts
it on a board with less than 64 KiB of heap (mpy-cross for the unix port's
architecture, so ota/xor.py is native code; no line numbers):

* throughput of a 1.5 MiB update over loopback HTTP and HTTPS (the same
  `otatool serve` server), against a bare loop that reads the same bytes
  from the same server, hashes them with sha256 and writes them with
  writeblocks to the same shim, and validates nothing. Without finish()
  (begin + perform loop: the transfer) against the bare loop; with
  finish() against the bare loop followed by the same set_boot() (the
  firmware's own verification of the whole image, which the shim runs in a
  helper process). Runs interleaved, medians, so machine noise hits all;
* a peer, "glenn20-style": the approach glenn20/micropython-esp32-ota
  describes (stream the image into the next partition with
  Partition.writeblocks while hashing it, check length and sha256, then
  leave validation to set_boot()), written here from that description;
* the smallest `-X heapsize` at which each completes (smallest_heap): the
  smallest size from which every size up to 4 KiB larger completes too,
  since the heap's fragmentation makes single sizes pass or fail by chance.
  For ota once as a main.py does it (`import ota`, then the update), once
  with `esp32` imported first (the emulated board then powers on before
  ota is loaded, which lays the heap out differently); and over HTTP for
  images of 0.5, 1.5 and 4 MiB (on a board with an 8 MiB flash and a
  4.7 MiB slot, as large as the first line's slot is 1.5 MiB), to show
  memory does not grow with the image.

    .venv/bin/python tools/bench/bench_ota.py [--rounds 3]

bench_frozen.py imports smallest_heap() and run() from here.
"""
import argparse
import os
import shutil
import ssl
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import benchutil  # noqa: E402

from otatool import SHIM_DIR  # noqa: E402
from otatool.appimage import make_app_image  # noqa: E402
from otatool.board import unix_port_mpy  # noqa: E402
from otatool.deploy import compiled, package_files  # noqa: E402
from otatool.serve import start_server  # noqa: E402

MICROPYTHON = shutil.which("micropython", path=os.path.dirname(sys.executable) + os.pathsep
                           + os.environ.get("PATH", ""))
CHECKOUT = os.path.dirname(os.path.dirname(HERE))

# The connection of the loops below (not of ota): a GET, the head skipped;
# with TLS verified against ca.der in the board's directory, as ota does.
CONNECT = """
import socket, hashlib, time, esp32
part = esp32.Partition(esp32.Partition.RUNNING).get_next_update()
buf = bytearray(4096)
t0 = time.ticks_us()
ai = socket.getaddrinfo(%(host)r, %(port)d)[0][-1]
s = socket.socket()
s.connect(ai)
if %(tls)r:
    import tls
    ctx = tls.SSLContext(tls.PROTOCOL_TLS_CLIENT)
    ctx.verify_mode = tls.CERT_REQUIRED
    with open("ca.der", "rb") as f:
        ctx.load_verify_locations(f.read())
    s = ctx.wrap_socket(s, server_hostname=%(host)r)
s.write(b"GET %(path)s HTTP/1.1\\r\\nHost: x\\r\\nConnection: close\\r\\n\\r\\n")
length = -1
while True:
    line = s.readline()
    if line in (b"\\r\\n", b""):
        break
    if line.lower().startswith(b"content-length:"):
        length = int(line[15:])
"""

# The baseline: what any OTA must do at least, with nothing checked; then
# the set_boot() that any OTA ends with.
BARE = CONNECT + """
h = hashlib.sha256()
block = 0
while True:
    n = s.readinto(buf, 4096)
    if not n:
        break
    h.update(buf if n == 4096 else memoryview(buf)[:n])
    part.writeblocks(block, buf)
    block += 1
h.digest()
t1 = time.ticks_us()
part.set_boot()
print("MS", time.ticks_diff(t1, t0), time.ticks_diff(time.ticks_us(), t0))
"""

# glenn20/micropython-esp32-ota's approach, from its description: the
# image streamed into the next OTA partition a 4096-byte block at a time
# (writeblocks erases and writes it), hashed on the way; the length and the
# sha256 (when given) checked; validation left to set_boot().
GLENN20 = CONNECT + """
sha = %(sha)r
h = hashlib.sha256()
mv = memoryview(buf)
block = got = 0
while True:
    n = s.readinto(buf, 4096)
    if not n:
        break
    got += n
    h.update(mv[:n])
    if n < 4096:
        for i in range(n, 4096):
            buf[i] = 0xFF
    part.writeblocks(block, buf)
    block += 1
s.close()
if got != length or h.digest() != sha:
    raise ValueError("length or sha256")
t1 = time.ticks_us()
part.set_boot()
print("MS", time.ticks_diff(t1, t0), time.ticks_diff(time.ticks_us(), t0))
"""

# The timed update: the loading of ota's modules (imported on first use)
# counts, esp32's power-on does not (on a board it is built in).
OTA_TIMED = """
import esp32, ota, time
t0 = time.ticks_us()
with ota.begin(%(url)r, allow_http=True%(ca)s) as h:
    while h.perform() == ota.IN_PROGRESS:
        pass
    t1 = time.ticks_us()
    h.finish()
print("MS", time.ticks_diff(t1, t0), time.ticks_diff(time.ticks_us(), t0))
"""

# What a main.py does; with %(first)s = "import esp32" the board powers on first.
OTA = """
%(first)s
import ota
with ota.begin(%(url)r, allow_http=True%(ca)s) as h:
    while h.perform() == ota.IN_PROGRESS:
        pass
    h.finish()
print("MS 0")
"""
CA = ", cert_pem=open('ca.der', 'rb').read()"


def run(micropython, script, template, work, path, heap=None):
    """Run `script` with `micropython` (MICROPYPATH `path`) on a fresh copy
    of the board in `template` (its flash.bin and any ca.der); -> the
    numbers it printed after "MS", or None if it failed."""
    board = tempfile.mkdtemp(dir=work)
    for name in os.listdir(template):
        if os.path.isfile(os.path.join(template, name)):
            shutil.copy(os.path.join(template, name), os.path.join(board, name))
    env = dict(os.environ, MICROPYPATH=path, OTA_BOARD=board)
    cmd = [micropython] + (["-X", "heapsize=%d" % heap] if heap else []) + ["-c", script]
    try:
        p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, cwd=board)
    finally:
        shutil.rmtree(board, ignore_errors=True)
    for line in p.stdout.splitlines():
        if line.startswith("MS "):
            return [int(x) for x in line[3:].split()]
    return None


def smallest_heap(micropython, script, template, work, path, lo=8 * 1024, hi=128 * 1024):
    """The smallest -X heapsize (bytes, to 256) at which `script` completes
    with `micropython`, every size up to 4 KiB above completing too; None
    if it does not complete at `hi`."""
    return benchutil.smallest_heap(
        lambda heap: run(micropython, script, template, work, path, heap) is not None,
        lo, hi, grain=256, span=4096, step=512)


def compile_lib(dst, sys_mpy=None):
    # As `otatool deploy --mpy` compiles it for an emulated board with less
    # than 64 KiB of heap (sys_mpy: the board's sys.implementation._mpy, by
    # default the pinned unix port's).
    for rel, data in compiled(package_files(CHECKOUT), sys_mpy or unix_port_mpy(), lines=False):
        out = os.path.join(dst, rel)
        os.makedirs(os.path.dirname(out), exist_ok=True)
        with open(out, "wb") as f:
            f.write(data)


def make_board(work, path, table=None, flash_size=None):
    """A board directory holding a fresh flash.bin (grown to `flash_size`,
    with partition table `table`; otatool's shim's 4 MiB and table if None)."""
    board = tempfile.mkdtemp(dir=work)
    subprocess.run([MICROPYTHON, "-c", "import esp32"], cwd=board, capture_output=True,
                   env=dict(os.environ, MICROPYPATH=path, OTA_BOARD=board), timeout=60,
                   check=True)
    with open(os.path.join(board, "flash.bin"), "r+b") as f:
        if flash_size:
            f.seek(0, 2)
            f.write(b"\xff" * (flash_size - f.tell()))
        if table:
            sys.path.insert(0, SHIM_DIR)
            import _table
            f.seek(_table.ADDR)
            f.write(_table.build(table))
    return board


def kib(n):
    return "%d bytes (%.1f KiB)" % (n, n / 1024) if n else "does not complete at 128 KiB"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="bench-ota-")
    try:
        bench(work, args.rounds)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def bench(work, rounds):
    import hashlib

    www = os.path.join(work, "www")
    os.makedirs(www)
    sizes = {"0.5MiB": 512 * 1024, "1.5MiB": 1536 * 1024 - 4096, "4MiB": 4096 * 1024 - 4096}
    images = {}
    for name, size in sizes.items():
        images[name] = make_app_image(version="2.0.0", size=size)
        with open(os.path.join(www, name + ".bin"), "wb") as f:
            f.write(images[name])
    http, http_base, _ = start_server(www, log=lambda *a: None)
    https, https_base, ca = start_server(www, tls=True, cert_dir=os.path.join(work, "tls"),
                                         log=lambda *a: None)
    lib = os.path.join(work, "lib")
    compile_lib(lib)
    # The shim loads itself precompiled (tools/shim/_mpy.py).
    path = ":".join([SHIM_DIR, lib, ".frozen"])
    board = make_board(work, path)
    # The 4 MiB image needs a bigger flash and slot: a small ota_0 for the
    # factory app, then ota_1.
    big = make_board(work, path, ((1, 0x02, 0x9000, 0x4000, "nvs", False),
                                  (1, 0x00, 0xD000, 0x2000, "otadata", False),
                                  (1, 0x01, 0xF000, 0x1000, "phy_init", False),
                                  (0, 0x10, 0x10000, 0x40000, "ota_0", False),
                                  (0, 0x11, 0x50000, 0x4B0000, "ota_1", False)), 0x800000)
    with open(ca) as f:
        der = ssl.PEM_cert_to_DER_cert(f.read())
    for b in (board, big):
        with open(os.path.join(b, "ca.der"), "wb") as f:
            f.write(der)

    def loop(base, template, name="1.5MiB"):
        host, port = base.split("//")[1].split(":")
        return template % {"host": host, "port": int(port), "path": "/%s.bin" % name,
                           "tls": base.startswith("https"),
                           "sha": hashlib.sha256(images[name]).digest()}

    def ota(base, template, first="", name="1.5MiB"):
        return template % {"url": base + "/%s.bin" % name, "first": first,
                           "ca": CA if base.startswith("https") else ""}

    timed = {}  # what: [(transfer ms, with set_boot/finish ms)] per round
    for _ in range(rounds):
        for what, script in (("bare http", loop(http_base, BARE)),
                             ("ota http", ota(http_base, OTA_TIMED)),
                             ("bare https", loop(https_base, BARE)),
                             ("ota https", ota(https_base, OTA_TIMED)),
                             ("glenn20 http", loop(http_base, GLENN20))):
            timed.setdefault(what, []).append(run(MICROPYTHON, script, board, work, path))
    # medians, in ms (the scripts print microseconds)
    med = {k: [statistics.median(r[i] for r in v) / 1000 for i in (0, 1)] for k, v in timed.items()}
    mib = sizes["1.5MiB"] / 1048576

    print("throughput, 1.5 MiB firmware OTA over loopback (median of %d):" % rounds)
    for scheme in ("http", "https"):
        bt, bs = med["bare " + scheme]
        ot, of = med["ota " + scheme]
        print("  %s:" % scheme)
        print("    bare read+sha256+writeblocks loop:  %6.1f ms  %5.1f MiB/s" % (bt, mib / bt * 1000))
        print("    bare loop + set_boot():             %6.1f ms" % bs)
        print("    ota begin + perform loop:           %6.1f ms  %5.1f MiB/s  ratio %.2f vs bare loop"
              % (ot, mib / ot * 1000, bt / ot))
        print("    ota begin/perform/finish:           %6.1f ms  (finish %.1f ms, set_boot %.1f ms)  "
              "ratio %.2f vs bare + set_boot()" % (of, of - ot, bs - bt, bs / of))
    gt, gs = med["glenn20 http"]
    bt, bs = med["bare http"]
    print("  glenn20-style (http): transfer %.1f ms, ratio %.2f vs bare loop; with set_boot() "
          "%.1f ms, ratio %.2f vs bare + set_boot()" % (gt, bt / gt, gs, bs / gs))

    print("smallest -X heapsize from which the update completes:")
    print("  bare loop, http:            %s" % kib(smallest_heap(
        MICROPYTHON, loop(http_base, BARE), board, work, path)))
    print("  bare loop, https:           %s" % kib(smallest_heap(
        MICROPYTHON, loop(https_base, BARE), board, work, path)))
    for scheme, base in (("http", http_base), ("https", https_base)):
        for first, what in (("", "import ota first"), ("import esp32", "esp32 imported first")):
            print("  ota, %-5s %-21s %s" % (scheme + ",", what + ":", kib(smallest_heap(
                MICROPYTHON, ota(base, OTA, first), board, work, path))))
    print("  glenn20-style, http:        %s" % kib(smallest_heap(
        MICROPYTHON, loop(http_base, GLENN20), board, work, path)))
    print("  ota, http, import ota first, by image size (8 MiB flash, 4.7 MiB slot):")
    for name in sizes:
        print("    %-6s  %s" % (name, kib(smallest_heap(
            MICROPYTHON, ota(http_base, OTA, "", name), big, work, path))))
    http.shutdown()
    https.shutdown()


if __name__ == "__main__":
    main()
