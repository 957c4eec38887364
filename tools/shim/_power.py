# Power-on of the emulated board, once per interpreter process (imported by
# _chip.power_on and dropped afterwards): the helper takes what the last
# reset left, creates the flash on first use and runs the bootloader; this
# side learns the partition table and which app runs.
import binascii
import os

import _chip as b


def _open(name, mode):
    # Files needed later are opened now: once _boot.py has mounted the
    # board's filesystem as /, host paths are out of reach.
    path = b.DIR + "/" + name
    open(path, "ab").close()
    return open(path, mode) if b.MPY else open(path, mode, buffering=0)


if b.CHIP not in ("esp32", "esp32s3", "esp32c3", "esp8266"):
    raise ImportError("OTA_CHIP=%s: esp32, esp32s3, esp32c3 or esp8266" % b.CHIP)
try:
    os.mkdir(b.DIR)
except OSError:
    pass
b.mailbox = _open("idf", "rb")
b.rtc_file = _open("rtc", "ab")
try:
    value, lines = b.idf("boot")
except OSError:  # no bootable app: the chip resets for ever
    b.reset_cause = 1
    b.die("bootloop")
b.reset_cause = int(lines[0])
b.parts = [(int(f[0]), int(f[1]), int(f[2]), int(f[3]), f[4], f[5] == "1")
           for f in (s.split() for s in lines[1:] if s)]
if b.parts:
    import _flash

    b.running = _flash.at(value)
    _flash.open_flash()
n = binascii.crc32(b.DIR.encode()) & 0xFFFFFF
b.uid = (bytes((n & 0xFF, n >> 8 & 0xFF, n >> 16, 0)) if b.CHIP == "esp8266"
         else bytes((0x24, 0x0A, 0xC4, n >> 16, n >> 8 & 0xFF, n & 0xFF)))
