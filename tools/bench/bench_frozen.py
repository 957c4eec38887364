"""Benchmark a firmware OTA with `ota` frozen into the firmware (MicroPython
unix port built from source).

Builds the unix port of the MicroPython source tree given with
--micropython-src, with the unix port's own frozen modules, lib/ota through
the repository's manifest.py, and the emulated board's side of the app
(tools/shim: esp32, machine and what they load) frozen in: on a board that
side is the firmware's C code. The build lives in --build-dir (default
build/bench-frozen in the checkout) and make only redoes what changed. Then,
on that one binary, it prints the smallest `-X heapsize` from which a 1.5 MiB
firmware OTA completes (every size up to 4 KiB larger completing too, as
bench_ota.py measures it):

* with ota frozen, as a main.py does it (`import ota`, then the update) and
  with `esp32` imported first;
* the bare read+sha256+writeblocks loop of bench_ota.py;
* the difference between the first and the bare loop (issue #15's target:
  at most 5 KiB);
* for comparison, ota loaded as .mpy files from a directory, as
  `otatool deploy --mpy` puts it on a board (the shim still frozen).

With --m32 it does it all again on a 32-bit build, whose objects take the
room they take on an ESP32 (gcc-multilib; ffi left out).

    .venv/bin/python tools/bench/bench_frozen.py --micropython-src DIR [--m32] [--build-dir DIR] [--jobs 2]

DIR is a MicroPython source tree with the submodules the unix port needs
(lib/micropython-lib, lib/mbedtls, lib/berkeley-db-1.xx), newer than
v1.28.0, whose unix sockets lack the sendall() that ota uses (the figures
in docs/FREEZING.md come from commit 3fff03367a). The build runs under
`nice -n 10`.
"""
import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)

import bench_ota  # noqa: E402

from otatool import FROZEN_MANIFEST, LIB_DIR, SHIM_DIR  # noqa: E402
from otatool.appimage import make_app_image  # noqa: E402
from otatool.serve import start_server  # noqa: E402

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
TARGET = 5 * 1024  # issue #15: frozen ota needs at most 5 KiB more than the bare loop


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
        sys.exit("bench_frozen: %s is not a MicroPython source tree (no ports/unix/Makefile)" % src)
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
            sys.exit("bench_frozen: %s failed:\n%s%s" % (" ".join(cmd), p.stdout[-3000:],
                                                         p.stderr[-3000:]))
    return os.path.join(unix, "micropython"), time.monotonic() - t0


def kib(heap):
    return "%d bytes (%.1f KiB)" % (heap, heap / 1024) if heap else "does not complete at 96 KiB"


def measure(micropython, march, src, work, base):
    """Print the smallest heaps on one built binary."""
    frozen = ".frozen"
    compiled = os.path.join(work, "mpy-" + march)
    sys_mpy = subprocess.run([micropython, "-c", "import sys; print(sys.implementation._mpy)"],
                             capture_output=True, text=True, timeout=60, check=True).stdout
    bench_ota.compile_lib(compiled, int(sys_mpy))
    from_mpy = compiled + ":" + frozen  # ota from .mpy files, found before the frozen one
    template = tempfile.mkdtemp(dir=work)
    env = dict(os.environ, MICROPYPATH=frozen, OTA_BOARD=template)
    subprocess.run([micropython, "-c", "import esp32"], cwd=template, capture_output=True,
                   env=env, timeout=60, check=True)  # makes a fresh flash file
    p = subprocess.run([micropython, "-c", "import ota, esp32; print(ota.__file__, esp32.__file__)"],
                       env=env, capture_output=True, text=True, timeout=60, cwd=template)
    if p.stdout.split() != ["ota/__init__.py", "esp32.py"]:  # a frozen module's __file__
        sys.exit("bench_frozen: ota or esp32 is not frozen in %s: %s%s"
                 % (micropython, p.stdout, p.stderr))

    host, port = base.split("//")[1].split(":")
    bare = bench_ota.BARE % {"host": host, "port": int(port), "path": "/fw.bin", "tls": False}
    ota_first = bench_ota.OTA % {"url": base + "/fw.bin", "first": "", "ca": ""}

    def heap(script, path):
        return bench_ota.smallest_heap(micropython, script, template, work, path, lo=4 * 1024)

    first = heap(ota_first, frozen)
    print("  ota frozen, import ota first:         %s" % kib(first))
    print("  ota frozen, esp32 imported first:     %s"
          % kib(heap(bench_ota.OTA % {"url": base + "/fw.bin", "first": "import esp32", "ca": ""},
                     frozen)))
    bare_heap = heap(bare, frozen)
    print("  bare read+sha256+writeblocks loop:    %s" % kib(bare_heap))
    if first and bare_heap:
        diff = first - bare_heap
        print("  frozen ota - bare loop:               %d bytes (%.1f KiB; target <= 5 KiB: %s)"
              % (diff, diff / 1024, "met" if diff <= TARGET else "not met"))
    print("  ota as .mpy files, import ota first:  %s" % kib(heap(ota_first, from_mpy)))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--micropython-src", required=True, metavar="DIR",
                    help="a MicroPython source tree, with its submodules for the unix port")
    ap.add_argument("--build-dir", default=os.path.join(REPO, "build", "bench-frozen"),
                    help="where the build is kept between runs (default: %(default)s)")
    ap.add_argument("--jobs", type=int, default=2, help="make -j (default: %(default)s)")
    ap.add_argument("--m32", action="store_true",
                    help="also build and measure a 32-bit unix port, whose objects take the "
                         "room they take on an ESP32 (needs gcc-multilib)")
    args = ap.parse_args()
    src = os.path.abspath(args.micropython_src)
    # A frozen _env cannot find the shim's directory from its __file__
    # (_env.py); the helper process runs from there.
    os.environ["OTA_SHIM"] = SHIM_DIR
    work = tempfile.mkdtemp(prefix="bench-frozen-")
    try:
        www = os.path.join(work, "www")
        os.makedirs(www)
        with open(os.path.join(www, "fw.bin"), "wb") as f:
            f.write(make_app_image(version="2.0.0", size=1536 * 1024 - 4096))
        server, base, _ = start_server(www, log=lambda *a: None)
        for m32 in (False, True) if args.m32 else (False,):
            micropython, seconds = build(src, os.path.abspath(args.build_dir), args.jobs, m32)
            print("%d-bit unix port with ota and the shim frozen: %s (make: %.0f s)"
                  % (32 if m32 else 64, micropython, seconds))
            print("smallest -X heapsize from which a 1.5 MiB firmware OTA completes, "
                  "same binary:")
            measure(micropython, MARCH[m32], src, work, base)
        server.shutdown()
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
