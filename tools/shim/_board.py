# The emulated ESP32 board behind the shim's `esp32` and `machine` modules.
#
# On a board, the bootloader and ESP-IDF's OTA functions (set_boot, ...) are
# C code that costs MicroPython's heap nothing. Here they run in a helper
# process (_idf.py, through os.system), so the app's heap holds only this
# module and esp32/machine: the hot path, reading and writing the NOR flash.
#
# Board directory ($OTA_BOARD, default ./.ota-board):
#   flash.bin  4 MiB flash image (bootloader, partition table, apps, ...)
#   fs/        the board's filesystem (mounted as / by _boot.py)
#   rtc        what a reset leaves for the next power-on (a power cut: nothing)
#   idf        the helper's answer to the last call
#
# NOR rules: erase sets whole 4096-byte sectors to 0xFF; programming can only
# clear bits (new = old AND data), so a write over unerased bytes corrupts
# them exactly as on the chip. Every sector erase and every program (split at
# sector boundaries) is one flash operation, numbered from 1 in each power-on,
# the bootloader's writes included:
#   OTA_POWER_CUT_AT=N   op N never reaches the file; the board dies at once
#   OTA_FAIL_ERASE_AT=N  the first erase that is op N or later fails (once),
#                        as ESP-IDF reports it: OSError(-0x6001, ...)
#   OTA_FAIL_WRITE_AT=N  the same for a program
#   OTA_FLASH_LOG=path   append "N erase|write 0xADDR LEN[ fail| cut]"
import os
import sys

MPY = sys.implementation.name == "micropython"
SECTOR = 4096
SIZE = 0x400000


def esp_error(code):
    # ports/esp32 check_esp_err(): OSError(-code, esp_err_to_name(code))
    return OSError(-code, {-1: "ESP_FAIL", 0x102: "ESP_ERR_INVALID_ARG",
                           0x104: "ESP_ERR_INVALID_SIZE", 0x105: "ESP_ERR_NOT_FOUND",
                           0x1503: "ESP_ERR_OTA_VALIDATE_FAILED",
                           0x6001: "ESP_ERR_FLASH_OP_FAIL"}[code])


def abspath(p):
    return (p if p[0] == "/" else os.getcwd().rstrip("/") + "/" + p).rstrip("/")


def _env(name):
    return int(os.getenv(name) or 0)


DIR = abspath(os.getenv("OTA_BOARD") or ".ota-board")
CHIP = os.getenv("OTA_CHIP") or "esp32"
SHIM = abspath(__file__.rsplit("/", 1)[0] if "/" in __file__ else ".")
LOG = os.getenv("OTA_FLASH_LOG")
LOG = LOG and abspath(LOG)
CUT = _env("OTA_POWER_CUT_AT")
# [flash ops so far, op of the pending erase fault, op of the write fault]
counts = [0, _env("OTA_FAIL_ERASE_AT"), _env("OTA_FAIL_WRITE_AT")]

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
    return counts[0]


def open_flash():
    global _f, _log
    _f = open(DIR + "/flash.bin", "r+b") if MPY else open(DIR + "/flash.bin", "r+b", buffering=0)
    _log = LOG and (open(LOG, "a") if MPY else open(LOG, "a", buffering=1))


def read(addr, buf):
    if addr < 0 or addr + len(buf) > SIZE:
        raise esp_error(0x102)
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
    c = counts
    c[0] += 1
    f = 1 if kind == "erase" else 2
    note = ""
    if CUT and c[0] >= CUT:
        note = " cut"
    elif c[f] and c[0] >= c[f]:
        c[f] = 0
        note = " fail"
    if _log:
        _log.write("%d %s 0x%06x %d%s\n" % (c[0], kind, addr, n, note))
    if note == " cut":
        die("")
    if note:
        raise esp_error(0x6001)


def find(ptype, sub=0xFF, label=None):
    # esp_partition_find(): table order; 0xFF is "any" type / subtype
    return [p for p in parts
            if (ptype == 0xFF or p[0] == ptype) and (sub == 0xFF or p[1] == sub)
            and (label is None or p[4] == label)]


def at(addr):
    return ([p for p in parts if p[2] == addr] or [None])[0]


def part_io(p, off, buf, kind):
    # esp_partition_read / write / erase_range (partition_target.c):
    # kind 0 reads into buf, 1 programs buf, 2 erases buf (a length) bytes
    n = buf if kind == 2 else len(buf)
    if off > p[3]:
        raise esp_error(0x102)
    if n > p[3] - off:
        raise esp_error(0x104)
    if kind == 2 and n % SECTOR:
        raise esp_error(0x104)
    if kind == 2 and off % SECTOR:
        raise esp_error(0x102)
    a = p[2] + off
    if kind:
        # CONFIG_SPI_FLASH_DANGEROUS_WRITE_ABORTS (ESP-IDF's default): writing
        # the bootloader, the partition table or the running app aborts.
        r = running
        if a <= 0x8C00 or r[2] <= a < r[2] + r[3] or a < r[2] < a + n:
            print("abort() was called: unsafe flash write at 0x%x" % a)
            die("panic")
    if kind == 0:
        read(a, buf)
    elif kind == 2:
        erase(a, n)
    elif n:
        program(a, buf)


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
    # The first import of esp32 or machine runs _power once.
    if not reset_cause:
        import _power

        del sys.modules["_power"]


_f = _log = _buf = parts = running = mailbox = rtc_file = uid = None
reset_cause = 0
