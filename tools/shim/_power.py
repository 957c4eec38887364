# Power-on of the emulated board, once per interpreter process (imported by
# _board.power_on and dropped afterwards): the helper takes what the last
# reset left, creates the flash on first use and runs the bootloader; this
# side learns the partition table and which app runs.
import binascii
import os

import _board as b


def _open(name, mode):
    # Files needed later are opened now: once _boot.py has mounted the
    # board's filesystem as /, host paths are out of reach.
    open(b.DIR + "/" + name, "ab").close()
    return open(b.DIR + "/" + name, mode)


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
b.running = b.at(value)
if b.parts:
    b.open_flash()
n = binascii.crc32(b.DIR.encode()) & 0xFFFFFF
b.uid = (bytes((n & 0xFF, n >> 8 & 0xFF, n >> 16, 0)) if b.CHIP == "esp8266"
         else bytes((0x24, 0x0A, 0xC4, n >> 16, n >> 8 & 0xFF, n & 0xFF)))
