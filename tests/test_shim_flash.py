"""The emulated board's flash behaves like NOR flash, and the host can break
it on purpose: power cuts and failed operations at a chosen flash operation,
counted over everything the board writes."""
import filecmp
import os
import shutil
import signal

import pytest

from conftest import run_cpython, run_mpy
from shimutil import OTA_1, device, fresh_board

# Block 0 of ota_1, the update slot of a board running ota_0.
NOR = """
import esp32, json
p = esp32.Partition("ota_1")
b = bytearray(8)
def peek(n=8):
    p.readblocks(0, b)
    return bytes(b[:n]).hex()
out = {}
p.ioctl(6, 0)
out["erased"] = peek()
p.writeblocks(0, b"\\x0f\\x3c\\xff\\xff", 0)
out["first"] = peek(4)
p.writeblocks(0, b"\\xf3\\xf0\\x00\\xff", 0)   # over unerased bytes: only clears bits
out["anded"] = peek(4)
p.writeblocks(0, bytes(range(16)) * 256)      # the 2-argument form erases first
out["rewritten"] = peek()
print("RESULT " + json.dumps(out))
"""


def test_writing_unerased_flash_can_only_clear_bits(board_dir):
    fresh_board(board_dir)
    out = device(NOR, board_dir)
    assert out == {"erased": "ff" * 8, "first": "0f3cffff", "anded": "0330 00ff".replace(" ", ""),
                   "rewritten": "0001020304050607"}


def test_nor_rules_are_the_same_on_cpython(board_dir):
    fresh_board(board_dir)
    proc = run_cpython(NOR, board_dir)
    assert "RESULT" in proc.stdout, proc.stderr
    assert proc.stdout.split("RESULT ")[1].strip() == (
        '{"erased": "ffffffffffffffff", "first": "0f3cffff", "anded": "033000ff", '
        '"rewritten": "0001020304050607"}')


def test_an_erase_clears_exactly_its_sector(board_dir):
    board = fresh_board(board_dir)
    device("""
import esp32
p = esp32.Partition("ota_1")
p.writeblocks(0, b"\\x00" * 4096 * 3)
p.ioctl(6, 1)
print("RESULT 0")
""", board_dir)
    data = board.read_flash(OTA_1, 3 * 4096)
    assert data == b"\0" * 4096 + b"\xff" * 4096 + b"\0" * 4096


WRITES = """
import esp32, _flash
p = esp32.Partition("ota_1")
stop = %d
blob = bytes(range(256)) * 32                 # 8 KiB
steps = [lambda: p.writeblocks(0, blob),      # 2 erases, 2 programs
         lambda: p.writeblocks(1, blob[:100], 7),
         lambda: p.ioctl(6, 0),
         lambda: p.writeblocks(0, blob[:4096])]
for step in steps:
    if stop and _flash.ops() >= stop:
        break
    step()
print("RESULT %%d" %% _flash.ops())
"""


def booted(board_dir):
    # a board whose otadata the bootloader has already initialised, so that
    # the flash operations of a power-on are the script's own
    board = fresh_board(board_dir)
    device("print('RESULT 0')\nimport esp32", board_dir)
    return board


def test_every_erase_and_program_is_one_counted_and_logged_operation(board_dir, tmp_path):
    booted(board_dir)
    log = tmp_path / "flash.log"
    assert device(WRITES % 0, board_dir, env={"OTA_FLASH_LOG": str(log)}) == 8
    lines = log.read_text().splitlines()
    assert lines == [
        "# power-on",
        "1 erase 0x190000 4096", "2 erase 0x191000 4096",
        "3 write 0x190000 4096", "4 write 0x191000 4096",
        "5 write 0x191007 100",
        "6 erase 0x190000 4096",
        "7 erase 0x190000 4096", "8 write 0x190000 4096"]


def test_the_bootloaders_own_writes_are_counted_too(board_dir, tmp_path):
    fresh_board(board_dir)
    log = tmp_path / "flash.log"
    device(WRITES % 0, board_dir, env={"OTA_FLASH_LOG": str(log)})
    # a fresh board's first boot initialises otadata: 2 operations first
    assert log.read_text().splitlines()[:3] == ["# power-on", "1 erase 0x00d000 4096",
                                                "2 write 0x00d000 32"]


# Steps of exactly one flash operation each, so a script can stop itself
# where a power cut would hit.
ONE_OP_STEPS = """
import esp32, _flash
p = esp32.Partition("ota_1")
stop = %d
blob = bytes(range(256)) * 16
steps = [lambda: p.ioctl(6, 0), lambda: p.ioctl(6, 1),
         lambda: p.writeblocks(0, blob, 0), lambda: p.writeblocks(1, blob[:100], 7),
         lambda: p.writeblocks(0, blob[:8], 4000), lambda: p.ioctl(6, 0),
         lambda: p.writeblocks(0, blob[1:], 0)]
for step in steps:
    if stop and _flash.ops() >= stop - 1:
        break
    step()
print("RESULT %%d" %% _flash.ops())
"""


@pytest.mark.parametrize("cut", [1, 2, 3, 4, 5, 6, 7])
def test_a_power_cut_at_operation_n_leaves_the_flash_as_operations_before_it_made_it(
        tmp_path, cut):
    reference, victim = tmp_path / "reference", tmp_path / "victim"
    for d in (reference, victim):
        d.mkdir()
    booted(reference)
    shutil.copy(reference / "flash.bin", victim / "flash.bin")
    # the same steps: once stopping by itself after op cut-1, once cut at op `cut`
    assert device(ONE_OP_STEPS % cut, reference) == cut - 1
    proc = run_mpy(ONE_OP_STEPS % 0, victim, env={"OTA_POWER_CUT_AT": str(cut)})
    assert proc.returncode == -signal.SIGKILL and "RESULT" not in proc.stdout
    assert filecmp.cmp(reference / "flash.bin", victim / "flash.bin", shallow=False)
    # and a power cut leaves nothing in RTC memory: the next boot is a power-on
    assert (victim / "rtc").read_text() == ""


def test_a_power_cut_inside_a_multi_sector_write_stops_between_sectors(board_dir):
    board = booted(board_dir)
    board.write_flash(OTA_1, bytes(8192))
    proc = run_mpy(WRITES % 0, board_dir, env={"OTA_POWER_CUT_AT": "2"})
    assert proc.returncode == -signal.SIGKILL
    # op 1 erased the first sector, op 2 (the second erase) never happened
    assert board.read_flash(OTA_1, 8192) == b"\xff" * 4096 + bytes(4096)


def test_a_failed_erase_raises_the_firmwares_error_once_and_erases_nothing(board_dir):
    board = booted(board_dir)
    board.write_flash(OTA_1, b"\x5a" * 4096)
    out = device("""
import esp32, json
p = esp32.Partition("ota_1")
out = []
b = bytearray(4)
for attempt in range(2):
    try:
        p.writeblocks(0, bytes(4096))
        out.append("ok")
    except OSError as e:
        out.append(list(e.args))
    p.readblocks(0, b)
    out.append(bytes(b).hex())
print("RESULT " + json.dumps(out))
""", board_dir, env={"OTA_FAIL_ERASE_AT": "1"})
    # the failed erase left the old bytes; the retry (op 2, 3) went through
    assert out == [[-0x6001, "ESP_ERR_FLASH_OP_FAIL"], "5a5a5a5a", "ok", "00000000"]


def test_a_failed_program_raises_and_leaves_the_sector_erased(board_dir):
    board = booted(board_dir)
    out = device("""
import esp32, json
p = esp32.Partition("ota_1")
try:
    p.writeblocks(0, bytes(4096))
    out = "ok"
except OSError as e:
    out = list(e.args)
print("RESULT " + json.dumps(out))
""", board_dir, env={"OTA_FAIL_WRITE_AT": "2"})
    assert out == [-0x6001, "ESP_ERR_FLASH_OP_FAIL"]
    assert board.read_flash(OTA_1, 4096) == b"\xff" * 4096


def test_writing_the_running_app_aborts_and_resets_the_board(board_dir):
    board = booted(board_dir)
    app = board.read_flash(0x10000, 4096)
    proc = run_mpy("""
import esp32
esp32.Partition(esp32.Partition.RUNNING).writeblocks(0, bytes(4096))
print("RESULT survived")
""", board_dir)
    assert proc.returncode == -signal.SIGKILL and "survived" not in proc.stdout
    assert "abort() was called" in proc.stdout
    assert board.read_flash(0x10000, 4096) == app
    # the panic is a software reset for the next boot
    assert device("import machine; print('RESULT', machine.reset_cause())", board_dir) == 5


def test_partition_bounds_are_checked_as_esp_idf_does(board_dir):
    booted(board_dir)
    out = device("""
import esp32, json
p = esp32.Partition("ota_1")
out = []
for f in (lambda: p.readblocks(385, bytearray(1)),          # past the end
          lambda: p.readblocks(383, bytearray(4097)),       # runs over the end
          lambda: p.writeblocks(0, bytes(100)),             # erase needs whole sectors
          lambda: p.readblocks(-1, bytearray(1))):          # uint32 wrap: far past
    try:
        f()
        out.append("ok")
    except OSError as e:
        out.append(list(e.args))
print("RESULT " + json.dumps(out))
""", board_dir)
    assert out == [[-0x102, "ESP_ERR_INVALID_ARG"], [-0x104, "ESP_ERR_INVALID_SIZE"],
                   [-0x104, "ESP_ERR_INVALID_SIZE"], [-0x102, "ESP_ERR_INVALID_ARG"]]


def test_the_op_counter_is_readable_from_device_code(board_dir):
    booted(board_dir)
    assert device("""
import esp32, _flash
a = _flash.ops()
esp32.Partition("ota_1").writeblocks(2, bytes(4096))
print("RESULT", _flash.ops() - a)
""", board_dir) == 2


def test_the_flash_file_keeps_its_size(board_dir):
    board = booted(board_dir)
    assert os.path.getsize(board.flash_path) == 4 * 1024 * 1024
