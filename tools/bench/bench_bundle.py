"""Benchmark of app-bundle OTA on the MicroPython unix port (prints figures).

    .venv/bin/python tools/bench/bench_bundle.py [--files 40] [--size 204800] [--runs 31]

The field case: an app of --files files and --size bytes, every file changed
in each version, installed over HTTP with ota.update(url,
target=ota.AppBundle("/app")) on an emulated ESP8266 (OTA_CHIP=esp8266,
lib/ota compiled as `otatool deploy --mpy` does, in the board's /lib) that
already holds two confirmed earlier versions: the installed one and, for
rollback, what it changed.

* Throughput against the least an atomic install must do: a bare loop that
  downloads the same bytes from the same server with the same buffer (512
  bytes, AppBundle's default), writes each file (and the header) under a
  staging name and renames it into place once, over the files of the
  previous run; no validation, nothing kept for rollback. Runs alternate
  (ota, bare, bare, ota, ...); the ratio is of the medians, and the median
  and quartiles of the ratios of each back-to-back pair show how much the
  load of a shared machine moved them.
* Filesystem changes of one update and of one bare loop: renames, removes,
  opens for writing, mkdir and rmdir, counted by wrapping `os` and `open`.
* Smallest heap (-X heapsize, to 1 KiB; every size up to 4 KiB above
  completes too) for the same update on the same board.
The board is a directory of the host mounted as "/" (VfsPosix), so the
times include the host filesystem.
"""
import argparse
import ast
import os
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import benchutil  # noqa: E402
BIN = os.path.dirname(sys.executable)

from otatool import DEVICE_DIR, SHIM_DIR  # noqa: E402
from otatool.bundle import build, read_bundle_header  # noqa: E402
from otatool.serve import start_server  # noqa: E402

# As an ESP8266 board starts: the board's filesystem is "/" and sys.path the
# firmware's; the library is in /lib as `otatool deploy --mpy` puts it.
START = """
import os, sys, vfs, time, gc
vfs.umount("/")
vfs.mount(vfs.VfsPosix(%r), "/")
os.chdir("/")
sys.path[:] = ["", ".frozen", "/lib"]
import ota
BASE = %r
def install(name):
    ota.update(BASE + name, allow_http=True, target=ota.AppBundle("/app"))
def confirm():
    import ota.bundle_boot as bb
    bb.boot("/app")
    bb.mark_app_valid("/app")
"""

# Counts the filesystem changes of ota.bundle, ota.journal and ota.swap.
COUNT = """
import ota.bundle, ota.journal, ota.swap, _fsops
N = {}
def count(name, args):
    N[name] = N.get(name, 0) + 1
_fsops.watch((ota.bundle, ota.journal, ota.swap), count)
"""

BARE = r"""
import socket
def bare(name, sizes, n=None):
    # n: a dict to count the filesystem changes in. Paths relative to "/":
    # VfsPosix renames no two absolute paths (docs/HOST-BOARD.md).
    buf = bytearray(512)
    mv = memoryview(buf)
    s = socket.socket()
    s.connect(socket.getaddrinfo("127.0.0.1", PORT)[0][-1])
    s.send(b"GET /%s HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n" % name)
    head = b""
    while b"\r\n\r\n" not in head:
        head += s.recv(1)
    for i, size in enumerate(sizes):
        with open("bare/%d.new" % i, "wb") as f:
            while size:
                k = s.readinto(buf, min(size, 512))
                f.write(mv[:k])
                size -= k
        os.rename("bare/%d.new" % i, "bare/%d" % i)
        if n is not None:
            n["open"] = n.get("open", 0) + 1
            n["rename"] = n.get("rename", 0) + 1
    s.close()
"""

TIMED = BARE + r"""
t_ota, t_bare = [], []
def timed(f, *a):
    t = time.ticks_us()
    f(*a)
    return time.ticks_diff(time.ticks_us(), t)
for i, name in enumerate(NAMES):
    first = i % 2
    if first:
        t_bare.append(timed(bare, name, SIZES))
    t_ota.append(timed(install, name))
    confirm()
    if not first:
        t_bare.append(timed(bare, name, SIZES))
print("us", t_ota, t_bare)
"""

COUNTED = COUNT + BARE + """
install(NAME)
print("ota", sorted(N.items()))
n = {}
bare(NAME, SIZES, n)
print("bare", sorted(n.items()))
"""


def median(xs):
    return sorted(xs)[len(xs) // 2]


def compile_lib():
    """lib/ota as `otatool deploy --mpy` compiles it for a small board."""
    from otatool.deploy import compiled, package_files
    r = subprocess.run([os.path.join(BIN, "micropython"), "-c", "import sys; print(sys.implementation._mpy)"],
                       capture_output=True, text=True, check=True)
    return compiled(package_files(DEVICE_DIR), int(r.stdout), lines=False)


def run(code, fs, base, heap=None, first=""):
    # first: runs before "/" becomes the board's (the shim is on the path).
    env = dict(os.environ, MICROPYPATH=":".join([SHIM_DIR, ".frozen"]), OTA_CHIP="esp8266")
    cmd = [os.path.join(BIN, "micropython")] + (["-X", "heapsize=%dk" % heap] if heap else [])
    return subprocess.run(cmd + ["-c", first + (START % (fs, base)) + code], env=env, capture_output=True,
                          text=True, timeout=600)


def checked(r):
    if r.returncode:
        raise SystemExit(r.stdout + r.stderr)
    return r.stdout


def board_with_two_versions(root, lib, base):
    """A board whose /app runs v1, confirmed over v0 (kept for rollback)."""
    fs = os.path.join(root, "template")
    os.makedirs(os.path.join(fs, "app"))
    os.makedirs(os.path.join(fs, "bare"))
    for rel, data in lib:
        path = os.path.join(fs, "lib", rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)
    checked(run("for v in ('v0.bundle', 'v1.bundle'):\n    install(v)\n    confirm()\n", fs, base))
    return fs


def smallest_heap(root, template, base):
    # In KiB, every size up to 4 KiB above completing too.
    def works(kb):
        fs = os.path.join(root, "heap")
        shutil.rmtree(fs, ignore_errors=True)
        shutil.copytree(template, fs)
        r = run("install('v2.bundle')\nprint('ok')\n", fs, base, kb)
        return r.returncode == 0 and "ok" in r.stdout
    return benchutil.smallest_heap(works, 8, 256, grain=1, span=4)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=40)
    ap.add_argument("--size", type=int, default=200 * 1024)
    ap.add_argument("--runs", type=int, default=31)
    args = ap.parse_args()
    per = args.size // args.files
    root = tempfile.mkdtemp(prefix="bench_bundle.")
    www = os.path.join(root, "www")
    os.makedirs(www)
    # v0, v1: the board's history; v2 ...: one per timed run, then one counted.
    count = args.runs + 3
    for v in range(count):
        files = {"m%d/f%03d.py" % (i % 5, i): os.urandom(per // 2).hex().encode()[:per]
                 for i in range(args.files)}
        with open(os.path.join(www, "v%d.bundle" % v), "wb") as f:
            f.write(build(files, "1.0.%d" % v, "bench"))
    d = read_bundle_header(open(os.path.join(www, "v0.bundle"), "rb").read())
    sizes = [d["header_size"]] + [f["size"] for f in d["files"]]
    server, base, _ = start_server(www, log=lambda *a: None)
    try:
        base += "/"
        template = board_with_two_versions(root, compile_lib(), base)
        print("bundle: %d files, %d bytes of files, %d bytes in all; every file changes in each version"
              % (args.files, d["data_size"], d["size"]))
        port = int(base.rstrip("/").rsplit(":", 1)[1])
        head = "PORT = %d\nSIZES = %r\n" % (port, sizes)
        fs = os.path.join(root, "timed")
        shutil.copytree(template, fs)
        names = ["v%d.bundle" % v for v in range(2, count - 1)]
        out = checked(run(head + "NAMES = %r\n" % names + TIMED, fs, base))
        t_ota, t_bare = ast.literal_eval(out.split("us ", 1)[1].replace("] [", "], ["))
        ota_us, bare_us = median(t_ota), median(t_bare)
        print("ota.update (download, SHA-256, staging, journaled swap): %6.1f ms (median of %d)"
              % (ota_us / 1000, len(names)))
        print("bare loop (download, staging name, one rename each):     %6.1f ms" % (bare_us / 1000))
        # Each pair ran back to back: its ratio shows how much the load of a
        # shared machine moved the medians.
        pairs = sorted(b / o for o, b in zip(t_ota, t_bare))
        print("ratio bare / ota: %.2f of the medians (goal >= 0.85); per pair %.2f, quartiles %.2f-%.2f"
              % (bare_us / ota_us, median(pairs), pairs[len(pairs) // 4], pairs[3 * len(pairs) // 4]))
        out = checked(run(head + "NAME = %r\n" % ("v%d.bundle" % (count - 1)) + COUNTED, fs, base,
                          first="import _fsops\n"))
        for line in out.splitlines():
            if line.startswith(("ota ", "bare ")):
                who, counts = line.split(" ", 1)
                counts = dict(ast.literal_eval(counts))     # [(name, n)] from the board
                print("filesystem changes, %-4s %3d: %s" % (who, sum(counts.values()),
                      ", ".join("%d %ss" % (n, k) for k, n in sorted(counts.items()))))
        kb = smallest_heap(root, template, base)
        print("smallest heap, ota.update over HTTP, ESP8266 profile: %s (goal <= 26 KiB)"
              % ("%d KiB" % kb if kb else "over 256 KiB"))
    finally:
        server.shutdown()
        server.server_close()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
