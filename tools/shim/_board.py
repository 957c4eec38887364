# The emulated ESP32 board behind the shim's `esp32` and `machine` modules.
#
# One interpreter process is one power-on: importing this module opens the
# board's flash file (created on first use), reads the partition table and
# runs the bootloader, which picks the app from otadata. What the chip keeps
# across a reset but not across a power cut (the reset reason, and the
# running app over a soft reset) lives in the board's `rtc` file.
#
# Board directory ($OTA_BOARD, default ./.ota-board):
#   flash.bin  4 MiB NOR flash image (bootloader, partition table, apps, ...)
#   fs/        the board's filesystem (mounted as / by _boot.py)
#   rtc        written by a reset, consumed by the next power-on
#
# Faults from the host: OTA_POWER_CUT_AT, OTA_FAIL_ERASE_AT,
# OTA_FAIL_WRITE_AT, OTA_FLASH_LOG (see Flash below).
import os
import sys

MPY = sys.implementation.name == "micropython"

SECTOR = 4096
FLASH_SIZE = 0x400000
TABLE_ADDR = 0x8000
TABLE_LEN = 0xC00

PWRON_RESET = 1
SOFT_RESET = 5

# chip name: (esp_chip_id_t, chip revision major*100+minor, bootloader offset)
CHIPS = {
    "esp32": (0, 301, 0x1000),
    "esp32s3": (9, 2, 0x0),
    "esp32c3": (5, 4, 0x0),
    "esp8266": (None, 0, 0x0),
}

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
    # ports/esp32 check_esp_err(): OSError(-code, esp_err_to_name(code)).
    return OSError(-code, _NAMES[code])


def _abspath(p):
    if not p.startswith("/"):
        p = os.getcwd().rstrip("/") + "/" + p
    return p.rstrip("/")


def _env_int(name):
    v = os.getenv(name)
    return int(v) if v else 0


DIR = _abspath(os.getenv("OTA_BOARD") or ".ota-board")
CHIP = os.getenv("OTA_CHIP") or "esp32"
if CHIP not in CHIPS:
    raise ImportError("OTA_CHIP=%s: not one of %s" % (CHIP, " ".join(CHIPS)))
SHIM = _abspath(__file__.rsplit("/", 1)[0] if "/" in __file__ else ".")
# Where board code finds the shim's lazily imported modules (_boot.py mounts
# it elsewhere once the board's own filesystem is /).
shim_path = SHIM


def load(name):
    # Import a shim module on first use, so a board only pays in RAM for what
    # it uses. The shim directory is not on the board's sys.path.
    m = sys.modules.get(name)
    if m is None:
        sys.path.append(shim_path)
        try:
            m = __import__(name)
        finally:
            sys.path.pop()
    return m


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


class Flash:
    # NOR flash in a host file. Erase sets whole 4096-byte sectors to 0xFF;
    # programming can only clear bits (new = old AND data), so a write over
    # unerased bytes corrupts them exactly as on the chip. Every sector erase
    # and every program (split at sector boundaries) is one numbered flash
    # operation, counted from 1 in this power-on:
    #   OTA_POWER_CUT_AT=N    op N never reaches the file; the board dies at once
    #   OTA_FAIL_ERASE_AT=N   the first erase that is op N or later fails (once)
    #   OTA_FAIL_WRITE_AT=N   the same for a program
    #   OTA_FLASH_LOG=path    append "N erase|write 0xADDR LEN [fail|cut]"
    CHUNK = 1024  # host I/O granule: one small buffer, not a sector's worth

    def __init__(self, path):
        self.f = open(path, "r+b") if MPY else open(path, "r+b", buffering=0)
        self.ops = 0
        self.cut = _env_int("OTA_POWER_CUT_AT")
        self.fail = {"erase": _env_int("OTA_FAIL_ERASE_AT"), "write": _env_int("OTA_FAIL_WRITE_AT")}
        log = os.getenv("OTA_FLASH_LOG")
        self.log = open(log, "a") if log else None
        self._buf = None

    def read(self, addr, buf):
        # Reads past the end of the chip fail as a bad flash address.
        n = len(buf)
        if addr < 0 or addr + n > FLASH_SIZE:
            raise esp_error(ESP_ERR_INVALID_ARG)
        self.f.seek(addr)
        self.f.readinto(buf)

    def erase(self, addr, n):
        # addr and n are sector multiples (callers check, as ESP-IDF does).
        buf = self._work()
        _fill_ff(buf, self.CHUNK)
        end = addr + n
        while addr < end:
            self._op("erase", addr, SECTOR)
            self.f.seek(addr)
            for _ in range(SECTOR // self.CHUNK):
                self.f.write(buf)
            addr += SECTOR

    def program(self, addr, data):
        mv = memoryview(data)
        done = 0
        while done < len(mv):
            n = min(len(mv) - done, SECTOR - (addr + done) % SECTOR)
            self._op("write", addr + done, n)
            self._and_write(addr + done, mv[done:done + n])
            done += n

    def _and_write(self, addr, mv):
        buf = self._work()
        done = 0
        while done < len(mv):
            n = min(self.CHUNK, len(mv) - done)
            self.f.seek(addr + done)
            self.f.readinto(memoryview(buf)[:n])
            _and_into(buf, mv[done:], n)
            self.f.seek(addr + done)
            self.f.write(memoryview(buf)[:n])
            done += n

    def _work(self):
        if self._buf is None:
            self._buf = bytearray(self.CHUNK)
        return self._buf

    def _op(self, kind, addr, n):
        self.ops += 1
        if self.cut and self.ops >= self.cut:
            self._log(kind, addr, n, " cut")
            die("")
        at = self.fail[kind]
        if at and self.ops >= at:
            self.fail[kind] = 0
            self._log(kind, addr, n, " fail")
            raise esp_error(ESP_ERR_FLASH_OP_FAIL)
        self._log(kind, addr, n, "")

    def _log(self, kind, addr, n, note):
        if self.log:
            self.log.write("%d %s 0x%06x %d%s\n" % (self.ops, kind, addr, n, note))


# ---- partition table (ESP-IDF esp_partition_info_t, 32 bytes each) ----

def read_table(flash):
    # esp_partition_table_verify(): entries (magic 0x50AA) up to the end
    # marker, with the MD5 entry (0xEBEB) over the entries before it.
    # Returns [(type, subtype, address, size, label, encrypted)], or None.
    import hashlib
    import struct

    parts = []
    md5 = hashlib.md5()
    ent = bytearray(32)
    found_md5 = False
    for i in range(TABLE_LEN // 32):
        flash.read(TABLE_ADDR + i * 32, ent)
        magic, ptype, sub, addr, size, label, flags = struct.unpack("<HBBII16sI", ent)
        if magic == 0x50AA:
            if addr + size > FLASH_SIZE:
                return None
            parts.append((ptype, sub, addr, size, label.split(b"\0")[0].decode(), bool(flags & 1)))
            md5.update(ent)
        elif magic == 0xEBEB:
            if found_md5 or md5.digest() != ent[16:]:
                return None
            found_md5 = True
        elif magic == 0xFFFF and ptype == 0xFF and sub == 0xFF:
            return parts if found_md5 else None
        else:
            return None
    return None


def find(ptype, sub=0xFF, label=None):
    # esp_partition_find(): table order; 0xFF is "any" for type and subtype.
    return [p for p in parts
            if (ptype == 0xFF or p[0] == ptype) and (sub == 0xFF or p[1] == sub)
            and (label is None or p[4] == label)]


def first(ptype, sub=0xFF, label=None):
    r = find(ptype, sub, label)
    return r[0] if r else None


# ---- esp_partition_read / write / erase_range ----

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
    _check_unsafe(p[2] + off, len(data))
    if len(data):
        flash.program(p[2] + off, data)


def part_erase(p, off, n):
    _check_range(p, off, n)
    if n % SECTOR:
        raise esp_error(ESP_ERR_INVALID_SIZE)
    if off % SECTOR:
        raise esp_error(ESP_ERR_INVALID_ARG)
    _check_unsafe(p[2] + off, n)
    flash.erase(p[2] + off, n)


def _check_unsafe(addr, n):
    # CONFIG_SPI_FLASH_DANGEROUS_WRITE_ABORTS (ESP-IDF default): an app that
    # writes the bootloader, the partition table or itself is aborted.
    r = running
    if addr <= TABLE_ADDR + TABLE_LEN or r[2] <= addr < r[2] + r[3] or addr < r[2] < addr + n:
        print("abort() was called: unsafe flash write at 0x%x (esp_flash, running app at 0x%x)"
              % (addr, r[2]))
        reset("panic")


# ---- resets and power ----

def die(rtc):
    # Leave what survives in RTC memory, then stop at once, as a reset or a
    # power cut does: no finally blocks, no atexit, nothing flushed later.
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


def reset(kind):
    # machine.reset() / a panic: the chip restarts, the bootloader runs again.
    die(kind)


def soft_reset():
    # machine.soft_reset(): the interpreter restarts on the same app; the
    # runner (_boot.py) sees this file and runs boot.py and main.py again.
    with open(DIR + "/rtc", "w") as f:
        f.write("soft %d %d" % (running[2], reset_cause))
    raise SystemExit


def _take_rtc():
    try:
        with open(DIR + "/rtc") as f:
            rtc = f.read().split()
        os.remove(DIR + "/rtc")
        return rtc
    except OSError:
        return []


def log(msg):
    # The bootloader's lines on the UART; quiet unless OTA_BOOT_LOG is set,
    # errors always (on stderr, so board output on stdout stays clean).
    if msg[0] == "E" or os.getenv("OTA_BOOT_LOG"):
        sys.stderr.write(msg + "\n")


def _power_on():
    global flash, parts, running, reset_cause
    try:
        os.stat(DIR + "/flash.bin")
    except OSError:
        load("_factory").create(DIR, CHIP, SHIM)
    flash = Flash(DIR + "/flash.bin")
    rtc = _take_rtc()
    parts = read_table(flash)
    if rtc and rtc[0] == "soft" and parts:
        running = [p for p in parts if p[2] == int(rtc[1])][0]
        reset_cause = int(rtc[2])
        return
    reset_cause = SOFT_RESET if rtc and rtc[0] in ("reset", "panic") else PWRON_RESET
    if parts is None:
        log("E boot: Failed to verify partition table")
        running = None
    else:
        running = load("_bootloader").boot()
        for m in ("_bootloader", "_image", "_otadata"):  # loaded again on demand
            sys.modules.pop(m, None)
    if running is None:
        log("E boot: No bootable app partitions in the partition table")
        die("bootloop")


flash = parts = running = reset_cause = None
if CHIPS[CHIP][0] is not None:
    _power_on()
else:
    reset_cause = PWRON_RESET if _take_rtc() == [] else SOFT_RESET
