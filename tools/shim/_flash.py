# The board's 4 MiB NOR flash (DIR/flash.bin): read, sector erase and
# program by address, as the SPI flash driver does them; _part builds
# ESP-IDF's partition access on it.
#
# NOR rules: erase sets whole 4096-byte sectors to 0xFF; programming can only
# clear bits (new = old AND data), so a write over unerased bytes corrupts
# them exactly as on the chip. Every sector erase and every program (split at
# sector boundaries) is one flash operation, numbered from 1 in each
# power-on, the bootloader's writes included:
#   OTA_POWER_CUT_AT=N   op N never reaches the file; the board dies at once
#   OTA_FAIL_ERASE_AT=N  the first erase that is op N or later fails (once),
#                        as ESP-IDF reports it: OSError(-0x6001, ...)
#   OTA_FAIL_WRITE_AT=N  the same for a program
#   OTA_FLASH_LOG=path   append "N erase|write 0xADDR LEN[ fail| cut]"
#
# The bottom layer of the board: imports no shim module but _env. What it
# must tell the layers above goes through halt(), which the chip replaces.
import os

import _env

SECTOR = 4096
SIZE = 0x400000  # the size of flash.bin once open: 4 MiB as made, larger if a test made it so
CUT = int(os.getenv("OTA_POWER_CUT_AT") or 0)
# this power-on's [flash operations so far, op of the pending erase fault,
# op of the pending write fault]; the helper process (_idf) carries them on
counts = [0, int(os.getenv("OTA_FAIL_ERASE_AT") or 0), int(os.getenv("OTA_FAIL_WRITE_AT") or 0)]

try:
    import micropython

    @micropython.viper
    def _and_into(dst: ptr8, src: ptr8, off: int, n: int):
        i = 0
        while i < n:
            dst[i] = dst[i] & src[off + i]
            i += 1

    @micropython.viper
    def _fill_ff(dst: ptr8, n: int):
        i = 0
        while i < n:
            dst[i] = 0xFF
            i += 1

except ImportError:  # CPython

    def _and_into(dst, src, off, n):
        v = int.from_bytes(dst[:n], "little") & int.from_bytes(bytes(src[off:off + n]), "little")
        dst[:n] = v.to_bytes(n, "little")

    def _fill_ff(dst, n):
        dst[:n] = b"\xff" * n


def halt(note):
    # The board stops at once: at a power cut (note "") and at a panic
    # (_part, note "panic"). This one just ends the process, which is all the
    # helper process needs; the chip puts _chip.die in its place, which
    # first leaves `note` for the next power-on.
    _env.kill()


def ops():
    # flash operations in this power-on so far (tests pick N by it)
    return counts[0]


def open_flash():
    global _f, _log, SIZE
    path, log = _env.DIR + "/flash.bin", _env.LOG
    _f = open(path, "r+b") if _env.MPY else open(path, "r+b", buffering=0)
    SIZE = os.stat(path)[6]
    _log = log and (open(log, "a") if _env.MPY else open(log, "a", buffering=1))


def read(addr, buf):
    if addr < 0 or addr + len(buf) > SIZE:
        raise _env.esp_error(0x102)
    _f.seek(addr)
    _f.readinto(buf)


# erase() and program() stand for the C driver: per call they leave nothing
# on the app's heap (while loops, no ranges, no slices of whole 1 KiB
# pieces), as a board's driver takes nothing from it.

def erase(addr, n):
    # whole sectors (the callers check, as ESP-IDF does)
    b = _work(1024)
    _fill_ff(b, 1024)
    a = addr
    while a < addr + n:
        _op("erase", a, SECTOR)
        _f.seek(a)
        _f.write(b)
        _f.write(b)
        _f.write(b)
        _f.write(b)
        a += SECTOR


def program(addr, data):
    size = len(data)
    i = 0
    while i < size:
        n = min(size - i, SECTOR - (addr + i) % SECTOR)
        _op("write", addr + i, n)
        j = i
        while j < i + n:
            # new = old AND data, through one small buffer
            b = _work(min(1024, i + n - j))
            _f.seek(addr + j)
            _f.readinto(b)
            _and_into(b, data, j, len(b))
            _f.seek(addr + j)
            _f.write(b)
            j += 1024
        i += n


def _work(n):
    # the driver's 1 KiB work buffer, made at its first use; whole when n
    # is 1024, the common case
    global _buf, _wmv
    if _buf is None:
        _buf = bytearray(1024)
        _wmv = memoryview(_buf)
    return _wmv if n == 1024 else _wmv[:n]


def _op(kind, addr, n):
    k = counts
    k[0] += 1
    f = 1 if kind == "erase" else 2
    note = ""
    if CUT and k[0] >= CUT:
        note = " cut"
    elif k[f] and k[0] >= k[f]:
        k[f] = 0
        note = " fail"
    if _log:
        _log.write("%d %s 0x%06x %d%s\n" % (k[0], kind, addr, n, note))
    if note == " cut":
        halt("")
    if note:
        raise _env.esp_error(0x6001)


_f = _log = _buf = _wmv = None
