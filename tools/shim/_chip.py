# The emulated chip on the app's side, behind the shim's `esp32` and
# `machine`: importing this module is the power-on (each interpreter process
# is one), and it does the resets and the calls into ESP-IDF.
#
# On a board, the bootloader and ESP-IDF's OTA functions (set_boot, ...) are
# C code that costs MicroPython's heap nothing. Here they run in a helper
# process (_idf.py, started by os.system for each call), so the app's heap
# holds only this module, _part and _flash (the hot path: reading and
# writing the flash) and esp32/machine themselves. The power-on is this
# module's top-level code: it runs once and its code is then freed.
#
# Board directory ($OTA_BOARD, default ./.ota-board):
#   flash.bin  4 MiB flash image (bootloader, partition table, apps, ...)
#   fs/        the board's filesystem (mounted as / by _boot.py)
#   rtc        what a reset leaves for the next power-on (a power cut: nothing)
#   idf        the helper's answer to the last call
import binascii
import os
import sys

import _env

if _env.ESP32:
    import _flash
    import _part
else:  # the ESP8266 profile: no flash here, and a heap too small to hold it
    _flash = _part = None


def idf(call):
    # Run `call` in the helper (_idf.py) -> (value, more lines); an ESP-IDF
    # error there is OSError here. The helper goes on counting this
    # power-on's flash operations and faults; if it died (a power cut during
    # its writes), so does this process.
    k, r = (_flash.counts, _part.running) if _flash else ([0, 0, 0], None)
    # (exec: no shell is left to report a helper that a power cut killed)
    cmd = ("OTA_BOARD='%s' OTA_CHIP=%s OTA_IDF='%s %d %d %d %d' %s='%s'%s "
           "exec '%s' -c 'import _idf'") % (
        _env.DIR, _env.CHIP, call, k[0], k[1], k[2], r[2] if r else 0,
        "MICROPYPATH" if _env.MPY else "PYTHONPATH", _env.SHIM,
        " OTA_FLASH_LOG='%s'" % _env.LOG if _env.LOG else "", sys.executable)
    if os.system(cmd):
        die("")
    mailbox.seek(0)
    lines = mailbox.read().decode().split("\n")
    r = [int(x) for x in lines[0].split()]
    k[:] = r[:3]
    if r[3]:
        raise _env.esp_error(r[3])
    return r[4], lines[1:]


def die(rtc):
    # Leave `rtc` for the next power-on, then stop at once, as a reset, a
    # panic or a power cut does.
    rtc_file.write(rtc.encode())
    _env.kill()


def soft_reset():
    # machine.soft_reset(): SystemExit up to the firmware's main loop, which
    # runs boot.py and main.py again on the same app (see _boot.py).
    r = _part and _part.running
    rtc_file.write(("soft %d %d" % (r[2] if r else 0, reset_cause)).encode())
    raise SystemExit


# The power-on: the helper takes what the last reset left, creates the flash
# on first use and runs the bootloader; this side learns the partition table
# and which app runs.
def _open(name, mode):
    # Files needed later are opened now: once _boot.py has mounted the
    # board's filesystem as /, host paths are out of reach.
    path = _env.DIR + "/" + name
    open(path, "ab").close()
    return open(path, mode) if _env.MPY else open(path, mode, buffering=0)


if _env.CHIP not in ("esp32", "esp32s3", "esp32c3", "esp8266"):
    raise ImportError("OTA_CHIP=%s: esp32, esp32s3, esp32c3 or esp8266" % _env.CHIP)
try:
    os.mkdir(_env.DIR)
except OSError:
    pass
mailbox = _open("idf", "rb")
rtc_file = _open("rtc", "ab")
try:
    _value, _lines = idf("boot")
except OSError:  # no bootable app: the chip resets for ever
    die("bootloop")
# 1 (power-on) or 5 (software reset)
reset_cause = int(_lines[0])
if _part:
    _part.table = [(int(f[0]), int(f[1]), int(f[2]), int(f[3]), f[4], f[5] == "1")
                   for f in (s.split() for s in _lines[1:] if s)]
    _part.running = _part.at(_value)
    _flash.open_flash()
    _flash.halt = die  # a power cut or a panic ends the board as a reset does
# machine.unique_id(): the base MAC (ESP32) or chip id (ESP8266), per board
_n = binascii.crc32(_env.DIR.encode()) & 0xFFFFFF
uid = (bytes((0x24, 0x0A, 0xC4, _n >> 16, _n >> 8 & 0xFF, _n & 0xFF)) if _env.ESP32
       else bytes((_n & 0xFF, _n >> 8 & 0xFF, _n >> 16, 0)))
del _open, _value, _lines, _n
