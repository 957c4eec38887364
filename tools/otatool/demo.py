"""`otatool demo`: one over-the-air update, end to end, on an emulated ESP32.

Builds two versions of a demo app image with esptool, flashes v1 into a
fresh emulated board, copies lib/ota, boot.py and main.py onto its
filesystem (what `otatool deploy` does over USB), serves v2 over HTTPS on
127.0.0.1 with a local CA, and boots the board: its main.py finds v2,
installs it and resets; the bootloader starts v2, whose boot.py confirms it.
Every step is checked; the exit status is non-zero if any fails.
"""
import json
import os
import re
import shutil
import sys
import tempfile

import otatool
from otatool.cli import CliFailure, directory, int_range

PROJECT = "ota-demo"
_PROGRESS = re.compile(r"ota: (\d+)/(\d+) bytes")


def register(subparsers):
    p = subparsers.add_parser("demo", help="run a whole OTA update on an emulated ESP32",
                              description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int_range(16, 4096), default=512,
                   help="app image size in KiB, 16 to 4096 (default 512)")
    p.add_argument("--keep", metavar="DIR", type=directory, help="build the board in DIR and keep it")
    p.set_defaults(func=demo)


class Story:
    """A numbered line per step, and a progress bar while the board downloads."""

    def __init__(self, steps):
        self.steps, self.n, self.bar = steps, 0, None
        self.show_progress = False

    def step(self, text):
        self.n += 1
        print("[%d/%d] %s" % (self.n, self.steps, text), flush=True)

    def detail(self, text):
        self.close_bar()
        print("      " + text, flush=True)

    def board_line(self, line):
        m = _PROGRESS.match(line)
        if not m or not self.show_progress:
            return
        done, total = int(m.group(1)), int(m.group(2))
        if self.bar is None:
            from tqdm import tqdm
            self.bar = tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024,
                            desc="      download", ncols=72, file=sys.stdout)
        self.bar.update(done - self.bar.n)

    def close_bar(self):
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def demo(args):
    work = args.keep or tempfile.mkdtemp(prefix="otatool-demo-")
    os.makedirs(work, exist_ok=True)
    try:
        return run(work, args.size * 1024)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


def run(work, size):
    from otatool.appimage import make_app_image
    from otatool.board import Board
    from otatool.serve import start_server

    story = Story(5)
    print("otatool demo: an over-the-air update on an emulated ESP32, end to end")
    v1 = make_app_image(version="1.0.0", project_name=PROJECT, size=size)
    v2 = make_app_image(version="2.0.0", project_name=PROJECT, size=size)
    www = os.path.join(work, "www")
    os.makedirs(www, exist_ok=True)
    with open(os.path.join(www, "%s-2.0.0.bin" % PROJECT), "wb") as f:
        f.write(v2)
    story.step("built %s 1.0.0 and 2.0.0 with esptool elf2image (%d bytes each)"
               % (PROJECT, len(v1)))

    board = Board(os.path.join(work, "board"), chip="esp32")
    if os.path.exists(board.flash_path):
        os.remove(board.flash_path)
    board.create(app=v1)
    install_files(board.fs_dir)
    story.step("flashed 1.0.0 into ota_0 of a fresh board (4 MiB flash) and copied "
               "lib/ota (.mpy), boot.py, main.py onto it")

    server, base, ca = start_server(www, tls=True, cert_dir=os.path.join(work, "certs"),
                                    log=lambda *a: None)
    try:
        shutil.copy(ca, os.path.join(board.fs_dir, "ca.pem"))
        url = "%s/%s-2.0.0.bin" % (base, PROJECT)
        with open(os.path.join(board.fs_dir, "ota_config.json"), "w") as f:
            json.dump({"url": url, "ca": "/ca.pem"}, f)
        story.step("serving 2.0.0 at %s, TLS checked against a local CA" % url)
        first, second = boot_twice(board, story)
    finally:
        server.shutdown()

    check(first.slot == "ota_0" and "update installed" in first.stdout and first.reason == "reset",
          "boot 1 did not install the update", first)
    check(second.slot == "ota_1" and "already running 2.0.0" in second.stdout,
          "boot 2 did not run 2.0.0", second)
    states = [s for s in board.otadata_states() if s[2]]
    newest = max(states)[1] if states else None
    check(newest == "VALID", "2.0.0 was not confirmed (otadata: %s)" % newest, second)
    story.step("boot 2: the bootloader started 2.0.0 from ota_1, boot.py confirmed it: otadata "
               "says VALID, so it stays")
    print("done: the board runs %s 2.0.0" % PROJECT)
    return 0


def install_files(fs_dir):
    # What `otatool deploy --mpy` copies to a real board: lib/ota compiled by
    # mpy-cross for the board's .mpy format (source would be compiled in the
    # board's heap at import), boot.py and main.py.
    from otatool.board import unix_port_mpy
    from otatool.deploy import compiled, entry_point_files, package_files, write_tree
    files = [("/lib/" + rel, data)
             for rel, data in compiled(package_files(otatool.DEVICE_DIR), unix_port_mpy())]
    write_tree(fs_dir, files + entry_point_files(otatool.DEVICE_DIR, no_main=False))


def boot_twice(board, story):
    boots = []
    story.step("boot 1: the bootloader starts 1.0.0 from ota_0; its main.py finds 2.0.0")
    story.show_progress = True

    def on_boot(n, b):
        boots.append(b)
        if n == 1:
            story.show_progress = False
            if "update installed" in b.stdout:
                story.detail("main.py installed 2.0.0 into ota_1 and reset the board")

    board.run(boots=2, timeout=300, on_boot=on_boot, on_line=story.board_line)
    check(len(boots) == 2, "the board did not boot twice", boots[-1] if boots else None)
    return boots


def check(ok, what, boot):
    if not ok:
        tail = ""
        if boot is not None:
            tail = "\n--- board output (%s) ---\n%s%s" % (boot.reason, boot.stdout, boot.stderr[-2000:])
        raise CliFailure("demo failed: %s%s" % (what, tail))
