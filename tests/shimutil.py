"""Helpers for the shim's own tests (test_shim_*.py, test_bootloader.py,
test_board.py): boards in a known state, and device scripts that answer in
one line of JSON."""
import json
import os
import shutil
import struct
import tempfile

from conftest import run_mpy
from otatool.appimage import make_app_image
from otatool.board import Board, shim_module

od = shim_module("_otadata")  # the shim's otadata format, host side

OTA_0, OTA_1, OTADATA = 0x10000, 0x190000, 0xD000
_TEMPLATES = {}


def fresh_board(board_dir, chip="esp32"):
    """A board as flashed (otadata blank), copied from a per-session template
    so no test pays for making 4 MiB of flash."""
    if chip not in _TEMPLATES:
        d = os.path.join(tempfile.mkdtemp(prefix="shim-template-"), "board")
        Board(d, chip).create()
        _TEMPLATES[chip] = d
    os.makedirs(os.path.join(str(board_dir), "fs"), exist_ok=True)
    shutil.copy(os.path.join(_TEMPLATES[chip], "flash.bin"), os.path.join(str(board_dir), "flash.bin"))
    return Board(board_dir, chip)


def image(version="2.0.0", chip="esp32", size=24 * 1024):
    return make_app_image(version=version, chip=chip, size=size, project_name="shim-test")


def write_otadata(board, e0=None, e1=None):
    """Put entries (seq, state[, crc]) into the otadata sectors (None: blank),
    as esptool would, with the board off."""
    for i, e in enumerate((e0, e1)):
        raw = b"\xff" * 32
        if e is not None:
            seq, state = e[0], e[1]
            crc = e[2] if len(e) > 2 else od.crc(seq)
            raw = struct.pack("<I20sII", seq, b"\xff" * 20, state, crc)
        board.write_flash(OTADATA + i * 4096, raw)


def state(board):
    """otadata as (seq, state name) pairs, CRC-broken entries marked."""
    return [(seq, name if ok or seq == 0xFFFFFFFF else name + "/BADCRC")
            for seq, name, ok in board.otadata_states()]


def result(proc):
    """The JSON after 'RESULT ' in a device script's output."""
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    raise AssertionError("no RESULT line:\n" + proc.stdout + proc.stderr)


def device(script, board_dir, **kw):
    """Run `script` on the unix port (one power-on) and return its RESULT."""
    return result(run_mpy(script, board_dir, **kw))


RUNNING = """
import esp32, json
P = esp32.Partition
print("RESULT " + json.dumps({"running": P(P.RUNNING).info()[4], "boot": P(P.BOOT).info()[4]}))
"""
