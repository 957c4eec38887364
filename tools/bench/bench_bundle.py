"""Benchmark of app-bundle OTA on the MicroPython unix port (prints figures).

    .venv/bin/python tools/bench/bench_bundle.py [--files 100] [--size 204800]

* Smallest heap (-X heapsize, to 1 KiB; every size up to 4 KiB above
  completes too) that completes
  ota.update(url, target=ota.AppBundle("/app")) of a bundle with that many
  files and bytes, lib/ota compiled as `otatool deploy --mpy` does for an
  ESP8266-class board (no line numbers), in the board's /lib; and the
  same for the target alone, fed from a file on the board (no HTTP client):
  the bundle code's own share.
* Throughput in one run over loopback HTTP: ota.update (download, per-file
  SHA-256, staging, journaled swap) against a bare loop that reads the same
  bytes from the same server, hashes them and writes them with a buffer of
  the same size (512 bytes, AppBundle's default, and 4 KiB) to the same
  filesystem: into one file, and into one file per bundled file (creating
  files is most of the cost on a filesystem).
* The same for the target alone, fed from a file on the board, against a
  bare loop copying and hashing the same files, with the same buffers.
Times are the best of --runs runs; the board is a directory of the host
mounted as "/" (VfsPosix), so the figures include the host filesystem.
"""
import argparse
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
# firmware's; the library is in /lib as `otatool deploy --mpy` puts it on a
# small board.
START = """
import os, sys, vfs, time, gc
vfs.umount("/")
vfs.mount(vfs.VfsPosix(%r), "/")
os.chdir("/")
sys.path[:] = ["", ".frozen", "/lib"]
"""

UPDATE = """
import ota
gc.collect()
ota.update(%r, allow_http=True, target=ota.AppBundle("/app"))
print("ok")
"""

# The bundle target fed from /in.bundle instead of the network.
FEED = """
class Client:
    def get_image_size(self):
        return os.stat("/in.bundle")[6]
def feed(t):
    t.begin(Client())
    with open("/in.bundle", "rb") as f:
        n = 1
        while n:
            n = f.readinto(t.window())
            t.commit(n)
    t.finish()
"""

TARGET_ONLY = """
import ota
gc.collect()
""" + FEED + """
feed(ota.AppBundle("/app"))
print("ok")
"""

TIMED = r"""
import ota, socket, hashlib
import ota.bundle_boot as bb
def bare(host, port, path, sizes, bs):
    # sizes None: everything into one file; else the bundle's header into
    # one file and each file's bytes into a file of its own.
    buf = bytearray(bs)
    s = socket.socket()
    s.connect(socket.getaddrinfo(host, port)[0][-1])
    s.send(b"GET %%s HTTP/1.0\r\nHost: %%s\r\n\r\n" %% (path, host))
    head = b""
    while b"\r\n\r\n" not in head:
        head += s.recv(1)
    os.mkdir("/bare")
    for i, size in enumerate(sizes or [1 << 30]):
        h = hashlib.sha256()
        with open("/bare/%%d" %% i, "wb") as f:
            while size:
                n = s.readinto(buf, min(size, bs))
                if not n:
                    break
                mv = memoryview(buf)[:n]
                h.update(mv)
                f.write(mv)
                size -= n
        h.digest()
    s.close()
    for n in os.listdir("/bare"):
        os.remove("/bare/" + n)
    os.rmdir("/bare")
for bs in (512, 4096):     # AppBundle's default buffer, and a large one
    best_ota = best_bare = best_files = 1 << 30
    for i in range(%d):
        t = time.ticks_us()
        bare("127.0.0.1", %d, b"/app.bundle", None, bs)
        best_bare = min(best_bare, time.ticks_diff(time.ticks_us(), t))
        t = time.ticks_us()
        bare("127.0.0.1", %d, b"/app.bundle", SIZES, bs)
        best_files = min(best_files, time.ticks_diff(time.ticks_us(), t))
        t = time.ticks_us()
        ota.update(%r, allow_http=True, target=ota.AppBundle("/app", allow_downgrade=True, bufsize=bs))
        best_ota = min(best_ota, time.ticks_diff(time.ticks_us(), t))
        bb.boot("/app")
        bb.mark_app_valid("/app")
    print("us", bs, best_ota, best_bare, best_files)
"""


# The target alone against a bare loop that copies and hashes the same
# files, both reading the bundle from a file on the board with the same
# buffer size: the bundle code's own overhead, without HTTP and client.
TARGET_TIMED = r"""
import ota, hashlib
import ota.bundle_boot as bb
""" + FEED + r"""
for bs in (512, 4096):
    best_t = best_b = 1 << 30
    for i in range(%d):
        t0 = time.ticks_us()
        feed(ota.AppBundle("/app", allow_downgrade=True, bufsize=bs))
        best_t = min(best_t, time.ticks_diff(time.ticks_us(), t0))
        bb.boot("/app")
        bb.mark_app_valid("/app")
        buf = bytearray(bs)
        t0 = time.ticks_us()
        os.mkdir("/bare")
        with open("/in.bundle", "rb") as f:
            for k, size in enumerate(SIZES):
                h = hashlib.sha256()
                with open("/bare/%%d" %% k, "wb") as g:
                    while size:
                        n = f.readinto(memoryview(buf)[:min(size, bs)])
                        mv = memoryview(buf)[:n]
                        h.update(mv)
                        g.write(mv)
                        size -= n
                h.digest()
        for name in os.listdir("/bare"):
            os.remove("/bare/" + name)
        os.rmdir("/bare")
        best_b = min(best_b, time.ticks_diff(time.ticks_us(), t0))
    print("us", bs, best_t, best_b)
"""


def compile_lib():
    """lib/ota as `otatool deploy --mpy` compiles it for a small board."""
    from otatool.deploy import compiled, package_files
    r = subprocess.run([os.path.join(BIN, "micropython"), "-c", "import sys; print(sys.implementation._mpy)"],
                       capture_output=True, text=True, check=True)
    return compiled(package_files(DEVICE_DIR), int(r.stdout), lines=False)


def run(code, fs, heap=None):
    env = dict(os.environ, MICROPYPATH=":".join([SHIM_DIR, ".frozen"]),
               OTA_CHIP="esp8266")
    cmd = [os.path.join(BIN, "micropython")] + (["-X", "heapsize=%dk" % heap] if heap else [])
    return subprocess.run(cmd + ["-c", (START % fs) + code], env=env, capture_output=True,
                          text=True, timeout=300)


def fresh_board(root, bundle, lib):
    fs = os.path.join(root, "fs")
    shutil.rmtree(fs, ignore_errors=True)
    os.makedirs(os.path.join(fs, "app"))
    with open(os.path.join(fs, "in.bundle"), "wb") as f:
        f.write(bundle)
    for rel, data in lib:
        path = os.path.join(fs, "lib", rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)
    return fs


def smallest_heap(code, root, bundle, lib):
    # In KiB, every size up to 4 KiB above completing too.
    def works(kb):
        r = run(code, fresh_board(root, bundle, lib), kb)
        return r.returncode == 0 and "ok" in r.stdout
    kb = benchutil.smallest_heap(works, 8, 256, grain=1, span=4)
    if kb is None:
        raise SystemExit("does not complete even with 256 KiB")
    return kb


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=100)
    ap.add_argument("--size", type=int, default=200 * 1024)
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    per = args.size // args.files
    files = {"m%02d/f%03d.py" % (i % 7, i): os.urandom(per // 2).hex().encode()[:per]
             for i in range(args.files)}
    bundle = build(files, "1.0.0", "bench")
    root = tempfile.mkdtemp(prefix="bench_bundle.")
    www = os.path.join(root, "www")
    os.makedirs(www)
    with open(os.path.join(www, "app.bundle"), "wb") as f:
        f.write(bundle)
    server, base, _ = start_server(www, log=lambda *a: None)
    try:
        lib = compile_lib()
        url = base + "/app.bundle"
        print("bundle: %d files, %d bytes of files, %d bytes in all" % (args.files, args.size, len(bundle)))
        kb = smallest_heap(UPDATE % url, root, bundle, lib)
        print("smallest heap, ota.update over HTTP:        %3d KiB (budget: 32 KiB)" % kb)
        kb = smallest_heap(TARGET_ONLY, root, bundle, lib)
        print("smallest heap, AppBundle fed from a file:   %3d KiB" % kb)
        port = int(base.rsplit(":", 1)[1])
        d = read_bundle_header(bundle)
        sizes = [d["header_size"]] + [f["size"] for f in d["files"]]
        r = run("SIZES = %r\n" % sizes + TIMED % (args.runs, port, port, url), fresh_board(root, bundle, lib))
        if r.returncode:
            raise SystemExit(r.stdout + r.stderr)
        kib = len(bundle) / 1024
        for line in r.stdout.splitlines():
            if not line.startswith("us "):
                continue
            bs, ota_us, bare_us, files_us = [int(x) for x in line.split()[1:]]
            print("bufsize %d:" % bs)
            for what, us in (("ota.update (stage + swap)", ota_us), ("bare loop, one file", bare_us),
                             ("bare loop, one file per file", files_us)):
                print("  throughput, %-31s %6.0f KiB/s (%.1f ms)" % (what + ":", kib * 1e6 / us, us / 1000))
            print("  ratio ota / bare loop, one file:            %5.0f %%" % (100.0 * bare_us / ota_us))
            print("  ratio ota / bare loop, same files:          %5.0f %% (goal >= 85 %%)"
                  % (100.0 * files_us / ota_us))
        r = run("SIZES = %r\n" % sizes + TARGET_TIMED % args.runs, fresh_board(root, bundle, lib))
        if r.returncode:
            raise SystemExit(r.stdout + r.stderr)
        for line in r.stdout.splitlines():
            if line.startswith("us "):
                bs, t_us, b_us = [int(x) for x in line.split()[1:]]
                print("AppBundle(bufsize=%d) from a file: %6d us, bare copy+hash of the files %6d us: %3.0f %%"
                      % (bs, t_us, b_us, 100.0 * b_us / t_us))
    finally:
        server.shutdown()
        server.server_close()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
