# The board's 4 MiB NOR flash (DIR/flash.bin) and ESP-IDF's partition access
# on it (esp_partition_read / write / erase_range).
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
import os

import _chip as c

SECTOR = 4096
SIZE = 0x400000
CUT = int(os.getenv("OTA_POWER_CUT_AT") or 0)

try:
    import micropython

    @micropython.viper
    def _and_into(dst: ptr8, src: ptr8, n: int):
        i = 0
        while i < n:
            dst[i] = dst[i] & src[i]
            i += 1

    @micropython.viper
    def _fill_ff(dst: ptr8, n: int):
        i = 0
        while i < n:
            dst[i] = 0xFF
            i += 1

except ImportError:  # CPython

    def _and_into(dst, src, n):
        v = int.from_bytes(dst[:n], "little") & int.from_bytes(bytes(src[:n]), "little")
        dst[:n] = v.to_bytes(n, "little")

    def _fill_ff(dst, n):
        dst[:n] = b"\xff" * n


def ops():
    # flash operations in this power-on so far (tests pick N by it)
    return c.counts[0]


def open_flash():
    global _f, _log
    path = c.DIR + "/flash.bin"
    _f = open(path, "r+b") if c.MPY else open(path, "r+b", buffering=0)
    _log = c.LOG and (open(c.LOG, "a") if c.MPY else open(c.LOG, "a", buffering=1))


def read(addr, buf):
    if addr < 0 or addr + len(buf) > SIZE:
        raise c.esp_error(0x102)
    _f.seek(addr)
    _f.readinto(buf)


def erase(addr, n):
    # whole sectors (the callers check, as ESP-IDF does)
    b = _work(1024)
    _fill_ff(b, 1024)
    for a in range(addr, addr + n, SECTOR):
        _op("erase", a, SECTOR)
        _f.seek(a)
        for _ in range(4):
            _f.write(b)


def program(addr, data):
    mv = memoryview(data)
    i = 0
    while i < len(mv):
        n = min(len(mv) - i, SECTOR - (addr + i) % SECTOR)
        _op("write", addr + i, n)
        for j in range(i, i + n, 1024):
            # new = old AND data, through one small buffer
            b = _work(min(1024, i + n - j))
            _f.seek(addr + j)
            _f.readinto(b)
            _and_into(b, mv[j:], len(b))
            _f.seek(addr + j)
            _f.write(b)
        i += n


def _work(n):
    global _buf
    if _buf is None:
        _buf = bytearray(1024)
    return memoryview(_buf)[:n]


def _op(kind, addr, n):
    k = c.counts
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
        c.die("")
    if note:
        raise c.esp_error(0x6001)


def find(ptype, sub=0xFF, label=None):
    # esp_partition_find(): table order; 0xFF is "any" type / subtype
    return [p for p in c.parts
            if (ptype == 0xFF or p[0] == ptype) and (sub == 0xFF or p[1] == sub)
            and (label is None or p[4] == label)]


def at(addr):
    return ([p for p in c.parts if p[2] == addr] or [None])[0]


def part_io(p, off, buf, kind):
    # esp_partition_read / write / erase_range (partition_target.c):
    # kind 0 reads into buf, 1 programs buf, 2 erases buf (a length) bytes
    n = buf if kind == 2 else len(buf)
    if off > p[3]:
        raise c.esp_error(0x102)
    if n > p[3] - off:
        raise c.esp_error(0x104)
    if kind == 2 and n % SECTOR:
        raise c.esp_error(0x104)
    if kind == 2 and off % SECTOR:
        raise c.esp_error(0x102)
    a = p[2] + off
    if kind:
        # CONFIG_SPI_FLASH_DANGEROUS_WRITE_ABORTS (ESP-IDF's default): writing
        # the bootloader, the partition table or the running app aborts.
        r = c.running
        if a <= 0x8C00 or r[2] <= a < r[2] + r[3] or a < r[2] < a + n:
            print("abort() was called: unsafe flash write at 0x%x" % a)
            c.die("panic")
    if kind == 0:
        read(a, buf)
    elif kind == 2:
        erase(a, n)
    elif n:
        program(a, buf)


_f = _log = _buf = None
