# The emulated ESP32 board behind the shim's `esp32` and `machine` modules:
# its NOR flash, partitions and resets. Kept small because it stays in RAM;
# power-on (flash creation, partition table, bootloader) is in _power.py,
# which is dropped once the app runs.
#
# Board directory ($OTA_BOARD, default ./.ota-board):
#   flash.bin  4 MiB flash image (bootloader, partition table, apps, ...)
#   fs/        the board's filesystem (mounted as / by _boot.py)
#   rtc        what a reset leaves for the next power-on (not a power cut)
import os
import sys

MPY = sys.implementation.name == "micropython"
SECTOR = 4096

ESP_FAIL = -1
ESP_ERR_INVALID_ARG = 0x102
ESP_ERR_INVALID_SIZE = 0x104
ESP_ERR_NOT_FOUND = 0x105
ESP_ERR_OTA_VALIDATE_FAILED = 0x1503
ESP_ERR_FLASH_OP_FAIL = 0x6001
_NAMES = {
    ESP_FAIL: "ESP_FAIL",
    ESP_ERR_INVALID_ARG: "ESP_ERR_INVALID_ARG",
    ESP_ERR_INVALID_SIZE: "ESP_ERR_INVALID_SIZE",
    ESP_ERR_NOT_FOUND: "ESP_ERR_NOT_FOUND",
    ESP_ERR_OTA_VALIDATE_FAILED: "ESP_ERR_OTA_VALIDATE_FAILED",
    ESP_ERR_FLASH_OP_FAIL: "ESP_ERR_FLASH_OP_FAIL",
}


def esp_error(code):
    # ports/esp32 check_esp_err(): OSError(-code, esp_err_to_name(code))
    return OSError(-code, _NAMES[code])


def abspath(p):
    if p[0] != "/":
        p = os.getcwd().rstrip("/") + "/" + p
    return p.rstrip("/")


DIR = abspath(os.getenv("OTA_BOARD") or ".ota-board")
CHIP = os.getenv("OTA_CHIP") or "esp32"
SHIM = abspath(__file__.rsplit("/", 1)[0] if "/" in __file__ else ".")
shim_path = SHIM  # where load() finds the shim; _boot.py moves it


def load(name):
    # Import a shim module on first use (the shim is not on the board's
    # sys.path once _boot.py has mounted the board's filesystem).
    m = sys.modules.get(name)
    if m is None:
        sys.path.append(shim_path)
        try:
            m = __import__(name)
        finally:
            sys.path.pop()
    return m


def drop(*names):
    # Forget modules used once, so their code can be collected.
    for n in names:
        sys.modules.pop(n, None)


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


def _env_int(name):
    v = os.getenv(name)
    return int(v) if v else 0


class Flash:
    # NOR flash in a host file. Erase sets whole 4096-byte sectors to 0xFF;
    # programming can only clear bits (new = old AND data), so a write over
    # unerased bytes corrupts them exactly as on the chip. Every sector erase
    # and every program (split at sector boundaries) is one flash operation,
    # numbered from 1 in each power-on (the bootloader's own writes too):
    #   OTA_POWER_CUT_AT=N   op N never reaches the file; the board dies at once
    #   OTA_FAIL_ERASE_AT=N  the first erase that is op N or later fails (once)
    #   OTA_FAIL_WRITE_AT=N  the same for a program
    #   OTA_FLASH_LOG=path   append "N erase|write 0xADDR LEN[ fail| cut]"
    SIZE = 0x400000
    CHUNK = 1024  # host I/O through one small buffer, not a sector's worth

    def __init__(self, path):
        self.f = open(path, "r+b") if MPY else open(path, "r+b", buffering=0)
        self.ops = 0
        self.cut = _env_int("OTA_POWER_CUT_AT")
        self.fail = {"erase": _env_int("OTA_FAIL_ERASE_AT"), "write": _env_int("OTA_FAIL_WRITE_AT")}
        log = os.getenv("OTA_FLASH_LOG")
        self.log = open(log, "a") if log else None
        self.buf = bytearray(self.CHUNK)

    def read(self, addr, buf):
        if addr < 0 or addr + len(buf) > self.SIZE:
            raise esp_error(ESP_ERR_INVALID_ARG)
        self.f.seek(addr)
        self.f.readinto(buf)

    def erase(self, addr, n):
        # addr, n: whole sectors (the callers check, as ESP-IDF does)
        _fill_ff(self.buf, self.CHUNK)
        for a in range(addr, addr + n, SECTOR):
            self._op("erase", a, SECTOR)
            self.f.seek(a)
            for _ in range(SECTOR // self.CHUNK):
                self.f.write(self.buf)

    def program(self, addr, data):
        mv = memoryview(data)
        done = 0
        while done < len(mv):
            n = min(len(mv) - done, SECTOR - (addr + done) % SECTOR)
            self._op("write", addr + done, n)
            self._and_write(addr + done, mv[done:done + n])
            done += n

    def _and_write(self, addr, mv):
        buf = memoryview(self.buf)
        for i in range(0, len(mv), self.CHUNK):
            n = min(self.CHUNK, len(mv) - i)
            self.f.seek(addr + i)
            self.f.readinto(buf[:n])
            _and_into(buf, mv[i:], n)
            self.f.seek(addr + i)
            self.f.write(buf[:n])

    def _op(self, kind, addr, n):
        self.ops += 1
        if self.cut and self.ops >= self.cut:
            self._log(kind, addr, n, " cut")
            die("")
        if self.fail[kind] and self.ops >= self.fail[kind]:
            self.fail[kind] = 0
            self._log(kind, addr, n, " fail")
            raise esp_error(ESP_ERR_FLASH_OP_FAIL)
        self._log(kind, addr, n, "")

    def _log(self, kind, addr, n, note):
        if self.log:
            self.log.write("%d %s 0x%06x %d%s\n" % (self.ops, kind, addr, n, note))


def find(ptype, sub=0xFF, label=None):
    # esp_partition_find(): table order; 0xFF is "any" type / subtype
    return [p for p in parts
            if (ptype == 0xFF or p[0] == ptype) and (sub == 0xFF or p[1] == sub)
            and (label is None or p[4] == label)]


def first(ptype, sub=0xFF, label=None):
    r = find(ptype, sub, label)
    return r[0] if r else None


# ---- esp_partition_read / write / erase_range (partition_target.c) ----

def _check_range(p, off, n):
    if off > p[3]:
        raise esp_error(ESP_ERR_INVALID_ARG)
    if n > p[3] - off:
        raise esp_error(ESP_ERR_INVALID_SIZE)


def part_read(p, off, buf):
    _check_range(p, off, len(buf))
    flash.read(p[2] + off, buf)


def part_write(p, off, data):
    _check_range(p, off, len(data))
    _check_safe(p[2] + off, len(data))
    if len(data):
        flash.program(p[2] + off, data)


def part_erase(p, off, n):
    _check_range(p, off, n)
    if n % SECTOR:
        raise esp_error(ESP_ERR_INVALID_SIZE)
    if off % SECTOR:
        raise esp_error(ESP_ERR_INVALID_ARG)
    _check_safe(p[2] + off, n)
    flash.erase(p[2] + off, n)


def _check_safe(addr, n):
    # CONFIG_SPI_FLASH_DANGEROUS_WRITE_ABORTS (ESP-IDF's default): writing
    # the bootloader, the partition table or the running app aborts.
    r = running
    if addr <= 0x8C00 or r[2] <= addr < r[2] + r[3] or addr < r[2] < addr + n:
        print("abort() was called: unsafe flash write at 0x%x" % addr)
        die("panic")


# ---- resets ----

def die(rtc):
    # Leave `rtc` for the next power-on, then stop at once as a reset or a
    # power cut does: no finally blocks, nothing flushed later.
    if rtc:
        with open(DIR + "/rtc", "w") as f:
            f.write(rtc)
    if MPY:
        os.system("kill -9 $PPID")  # the unix port has no os._exit
        import time

        while True:
            time.sleep(1)
    sys.stdout.flush()
    os.kill(os.getpid(), 9)


def soft_reset():
    # machine.soft_reset(): SystemExit up to the firmware's main loop, which
    # runs boot.py and main.py again on the same app (see _boot.py).
    with open(DIR + "/rtc", "w") as f:
        f.write("soft %d %d" % (running[2] if running else 0, reset_cause))
    raise SystemExit


PWRON_RESET = 1
SOFT_RESET = 5
flash = parts = running = None
reset_cause = PWRON_RESET
load("_power").on()
drop("_power")
