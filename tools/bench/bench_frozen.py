"""Benchmark a firmware OTA with `ota` frozen into the firmware (MicroPython
unix port built from source): bench_ota.py's figures of the frozen build
only.

    .venv/bin/python tools/bench/bench_frozen.py --micropython-src DIR [--m32] [--build-dir DIR] [--jobs 2]

is `bench_ota.py --frozen-only` with the same options: it builds the unix
port of DIR with the emulated board's modules and lib/ota frozen in and
prints the smallest heaps on that binary (ota as .mpy over HTTP and HTTPS,
ota frozen, the bare loop, frozen ota minus the bare loop). bench_ota.py's
docstring says more; `bench_ota.py --micropython-src DIR` prints these
figures after the stock port's, in one run.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import bench_ota  # noqa: E402

if __name__ == "__main__":
    bench_ota.main(["--frozen-only"] + sys.argv[1:])
