# The emulated chip behind the shim's `esp32` and `machine` modules: its
# power-on, resets and the ESP-IDF code that runs outside MicroPython.
#
# On a board, the bootloader and ESP-IDF's OTA functions (set_boot, ...) are
# C code that costs MicroPython's heap nothing. Here they run in a helper
# process (_idf.py, started by os.system for each call), so the app's heap
# holds only this module, _flash (the hot path: reading and writing the
# flash) and esp32/machine themselves.
#
# Board directory ($OTA_BOARD, default ./.ota-board):
#   flash.bin  4 MiB flash image (bootloader, partition table, apps, ...)
#   fs/        the board's filesystem (mounted as / by _boot.py)
#   rtc        what a reset leaves for the next power-on (a power cut: nothing)
#   idf        the helper's answer to the last call
import os
import sys

from _mpy import SHIM

MPY = sys.implementation.name == "micropython"


def esp_error(code):
    # ports/esp32 check_esp_err(): OSError(-code, esp_err_to_name(code))
    return OSError(-code, {-1: "ESP_FAIL", 0x102: "ESP_ERR_INVALID_ARG",
                           0x104: "ESP_ERR_INVALID_SIZE", 0x105: "ESP_ERR_NOT_FOUND",
                           0x1503: "ESP_ERR_OTA_VALIDATE_FAILED",
                           0x6001: "ESP_ERR_FLASH_OP_FAIL"}[code])


def abspath(p):
    return (p if p[0] == "/" else os.getcwd().rstrip("/") + "/" + p).rstrip("/")


DIR = abspath(os.getenv("OTA_BOARD") or ".ota-board")
CHIP = os.getenv("OTA_CHIP") or "esp32"
LOG = os.getenv("OTA_FLASH_LOG")
LOG = LOG and abspath(LOG)
# this power-on's [flash operations so far, op of the pending erase fault,
# op of the pending write fault] (see _flash)
counts = [0, int(os.getenv("OTA_FAIL_ERASE_AT") or 0), int(os.getenv("OTA_FAIL_WRITE_AT") or 0)]


def idf(call):
    # Run `call` in the helper (_idf.py) -> (value, more lines); an ESP-IDF
    # error there is OSError here. The helper goes on counting this
    # power-on's flash operations and faults; if it died (a power cut during
    # its writes), so does this process.
    cmd = "OTA_BOARD='%s' OTA_CHIP=%s OTA_IDF='%s %d %d %d %d' %s='%s'%s '%s' -c 'import _idf'" % (
        DIR, CHIP, call, counts[0], counts[1], counts[2], running[2] if running else 0,
        "MICROPYPATH" if MPY else "PYTHONPATH", SHIM,
        " OTA_FLASH_LOG='%s'" % LOG if LOG else "", sys.executable)
    if os.system(cmd):
        die("")
    mailbox.seek(0)
    lines = mailbox.read().decode().split("\n")
    r = [int(x) for x in lines[0].split()]
    counts[:] = r[:3]
    if r[3]:
        raise esp_error(r[3])
    return r[4], lines[1:]


def die(rtc):
    # Leave `rtc` for the next power-on, then stop at once, as a reset or a
    # power cut does: no finally blocks, nothing flushed later.
    rtc_file.write(rtc.encode())
    if MPY:
        os.system("kill -9 $PPID")  # the unix port has no os._exit
        while True:
            pass
    sys.stdout.flush()
    os.kill(os.getpid(), 9)


def soft_reset():
    # machine.soft_reset(): SystemExit up to the firmware's main loop, which
    # runs boot.py and main.py again on the same app (see _boot.py).
    rtc_file.write(("soft %d %d" % (running[2] if running else 0, reset_cause)).encode())
    raise SystemExit


def power_on():
    # The first import of esp32 or machine runs _power, once.
    if not reset_cause:
        import _power

        del sys.modules["_power"]


# set by _power: the partition table, the running app's partition,
# 1 (power-on) or 5 (software reset), machine.unique_id()
parts = running = uid = mailbox = rtc_file = None
reset_cause = 0
