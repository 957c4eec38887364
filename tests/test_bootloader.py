"""The emulated bootloader picks the app from otadata as ESP-IDF's does with
app rollback enabled: every otadata state, broken entries, broken images,
and otadata's CRC as ESP-IDF computes it."""
import signal

import pytest

from conftest import run_cpython, run_mpy
from shimutil import OTA_0, OTA_1, RUNNING, device, fresh_board, image, od, state, write_otadata

NEW, PENDING, VALID, INVALID, ABORTED, UNDEFINED = (
    od.NEW, od.PENDING_VERIFY, od.VALID, od.INVALID, od.ABORTED, od.UNDEFINED)
BLANK = (0xFFFFFFFF, "UNDEFINED")


@pytest.fixture
def board(board_dir):
    """ota_0: the factory-flashed app; ota_1: a second valid app."""
    b = fresh_board(board_dir)
    b.write_flash(OTA_1, image())
    return b


def power_on(board):
    return device(RUNNING, board.path)


# (otadata sector 0, sector 1) -> app that runs, otadata afterwards
CASES = {
    "blank otadata boots ota_0 and initialises it":
        (None, None, "ota_0", [(1, "VALID"), BLANK]),
    "a NEW app boots once as PENDING_VERIFY":
        ((1, VALID), (2, NEW), "ota_1", [(1, "VALID"), (2, "PENDING_VERIFY")]),
    "an unconfirmed app is ABORTED and the previous one boots":
        ((1, VALID), (2, PENDING), "ota_0", [(1, "VALID"), (2, "ABORTED")]),
    "a VALID app keeps booting, nothing written":
        ((1, VALID), (2, VALID), "ota_1", [(1, "VALID"), (2, "VALID")]),
    "an INVALID entry is skipped":
        ((1, VALID), (2, INVALID), "ota_0", [(1, "VALID"), (2, "INVALID")]),
    "an ABORTED entry is skipped":
        ((1, VALID), (2, ABORTED), "ota_0", [(1, "VALID"), (2, "ABORTED")]),
    "UNDEFINED (rollback never armed) counts as valid":
        ((1, VALID), (2, UNDEFINED), "ota_1", [(1, "VALID"), (2, "UNDEFINED")]),
    "the highest seq wins, whichever sector holds it":
        ((4, VALID), (3, VALID), "ota_1", [(4, "VALID"), (3, "VALID")]),
    "a CRC-corrupt entry is ignored":
        ((1, VALID), (2, VALID, 0x12345678), "ota_0", [(1, "VALID"), (2, "VALID/BADCRC")]),
    "both CRC-corrupt: the slots are tried in order, otadata left alone":
        ((2, VALID, 0), (4, VALID, 0), "ota_0", [(2, "VALID/BADCRC"), (4, "VALID/BADCRC")]),
    "the only entry ABORTED: ota_0, nothing re-initialised":
        (None, (2, ABORTED), "ota_0", [BLANK, (2, "ABORTED")]),
}


@pytest.mark.parametrize("case", CASES)
def test_the_bootloader_follows_otadata(board, case):
    e0, e1, running, after = CASES[case]
    write_otadata(board, e0, e1)
    assert power_on(board)["running"] == running
    assert state(board) == after


def test_an_unconfirmed_update_rolls_back_over_two_boots(board):
    write_otadata(board, (1, VALID), (2, NEW))
    assert [power_on(board)["running"] for _ in range(3)] == ["ota_1", "ota_0", "ota_0"]
    assert state(board) == [(1, "VALID"), (2, "ABORTED")]


def test_a_corrupt_selected_image_falls_back_without_touching_the_selection(board):
    b = bytearray(image())
    b[5000] ^= 0x80
    b[5001] ^= 0x80   # the XOR checksum still matches: only the SHA-256 can tell
    board.write_flash(OTA_1, bytes(b))
    write_otadata(board, (1, VALID), (2, NEW))
    proc = run_mpy(RUNNING, board.path)
    assert '"running": "ota_0", "boot": "ota_1"' in proc.stdout
    assert "Image hash failed" in proc.stderr
    # the state moved to PENDING_VERIFY before the image was checked
    assert state(board) == [(1, "VALID"), (2, "PENDING_VERIFY")]


def test_an_empty_ota_0_on_a_blank_otadata_boots_ota_1_and_records_it(board):
    board.write_flash(OTA_0, b"\xff" * 4096)
    assert power_on(board)["running"] == "ota_1"
    assert state(board) == [(2, "VALID"), BLANK]   # set_actual_ota_seq


def test_no_bootable_app_is_a_boot_loop(board):
    board.write_flash(OTA_0, b"\xff" * 4096)
    board.write_flash(OTA_1, b"\xff" * 4096)
    proc = run_mpy(RUNNING, board.path)
    assert proc.returncode == -signal.SIGKILL and "RESULT" not in proc.stdout
    assert "No bootable app partitions" in proc.stderr
    assert open(board.path + "/rtc").read() == "bootloop"


def test_a_broken_partition_table_stops_the_board(board):
    board.write_flash(0x8000 + 5 * 32 + 20, b"X")   # a label byte: the MD5 no longer matches
    proc = run_mpy(RUNNING, board.path)
    assert proc.returncode == -signal.SIGKILL
    assert "Failed to verify partition table" in proc.stderr


@pytest.mark.parametrize("cut, left, next_app", [
    (1, [(1, "VALID"), (2, "NEW")], "ota_1"),  # before the erase: tried again
    (2, [(1, "VALID"), BLANK], "ota_0"),       # after the erase: the new app is lost
])
def test_a_power_cut_while_the_bootloader_marks_pending(board, cut, left, next_app):
    # ESP-IDF erases an entry's sector before programming it again
    write_otadata(board, (1, VALID), (2, NEW))
    proc = run_mpy(RUNNING, board.path, env={"OTA_POWER_CUT_AT": str(cut)})
    assert proc.returncode == -signal.SIGKILL and "RESULT" not in proc.stdout
    assert state(board) == left
    assert power_on(board)["running"] == next_app


def test_the_chip_revision_range_of_the_header_is_enforced(board):
    from otatool.appimage import make_app_image
    board.write_flash(OTA_1, make_app_image(version="3", size=24 * 1024, min_rev=400))
    write_otadata(board, (1, VALID), (2, NEW))
    proc = run_mpy(RUNNING, board.path)
    assert '"running": "ota_0"' in proc.stdout
    assert "Image requires chip rev >= v4.0, but chip is v3.1" in proc.stderr


@pytest.mark.parametrize("chip", ["esp32s3", "esp32c3"])
def test_other_chips_boot_their_own_default_app(board_dir, chip):
    board = fresh_board(board_dir, chip)
    assert device(RUNNING, board.path, env={"OTA_CHIP": chip})["running"] == "ota_0"
    assert board.read_flash(0, 1) == b"\xe9"          # bootloader at 0x0 on these
    assert fresh_board(board_dir, "esp32").read_flash(0x1000, 1) == b"\xe9"


# esp_rom_crc32_le(UINT32_MAX, &ota_seq, 4): seq 1 and 2 as read from boards
# flashed by ESP-IDF; seq 0 gives the all-ones; and the ROM function is the
# standard CRC-32 when started from 0 ("123456789" -> 0xCBF43926).
CRC = """
import binascii, json, struct, sys
sys.path.append(%r)
import _otadata
print("RESULT " + json.dumps([_otadata.crc(s) for s in (1, 2, 0)]
                             + [binascii.crc32(b"123456789", 0)]))
"""


@pytest.mark.parametrize("runtime", ["micropython", "cpython"])
def test_otadata_crc_is_esp_idfs(board_dir, runtime):
    from conftest import SHIM
    run = run_mpy if runtime == "micropython" else run_cpython
    proc = run(CRC % SHIM, board_dir)
    assert proc.stdout.split("RESULT ")[1].strip() == "[%d, %d, %d, %d]" % (
        0x4743989A, 0x55F63774, 0xFFFFFFFF, 0xCBF43926)
