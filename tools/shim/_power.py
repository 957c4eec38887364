# Power-on of the emulated board, run once per interpreter process by
# _board: create the flash on first use, take what a reset left in RTC
# memory, read the partition table, run the bootloader.
import os
import sys

import _board

# chip: (esp_chip_id_t, chip revision major*100+minor); esp8266 has no
# ESP-IDF bootloader and no partitions here (its updates are app bundles)
CHIPS = {"esp32": (0, 301), "esp32s3": (9, 2), "esp32c3": (5, 4), "esp8266": None}
TABLE_ADDR = 0x8000
TABLE_LEN = 0xC00


def log(msg):
    # The bootloader's lines on the UART: errors always (stderr, so the
    # board's stdout stays the app's), the rest with OTA_BOOT_LOG=1.
    if msg[0] == "E" or os.getenv("OTA_BOOT_LOG"):
        sys.stderr.write(msg + "\n")


def read_table(flash):
    # esp_partition_table_verify(): 32-byte entries (magic 0x50AA) up to the
    # end marker, with the MD5 entry (0xEBEB) over the entries before it.
    # -> [(type, subtype, address, size, label, encrypted)], or None
    import hashlib
    import struct

    parts = []
    md5 = hashlib.md5()
    ent = bytearray(32)
    has_md5 = False
    for i in range(TABLE_LEN // 32):
        flash.read(TABLE_ADDR + i * 32, ent)
        magic, ptype, sub, addr, size, label, flags = struct.unpack("<HBBII16sI", ent)
        if magic == 0x50AA and addr + size <= flash.SIZE:
            parts.append((ptype, sub, addr, size, label.split(b"\0")[0].decode(), bool(flags & 1)))
            md5.update(ent)
        elif magic == 0xEBEB and not has_md5 and md5.digest() == ent[16:]:
            has_md5 = True
        elif magic == 0xFFFF and ptype == 0xFF and sub == 0xFF and has_md5:
            return parts
        else:
            return None
    return None


def _take_rtc(path):
    try:
        with open(path) as f:
            rtc = f.read().split()
        os.remove(path)
        return rtc
    except OSError:
        return []


def on():
    b = _board
    chip = CHIPS.get(b.CHIP, 0)
    if chip == 0:
        raise ImportError("OTA_CHIP=%s: not one of %s" % (b.CHIP, " ".join(CHIPS)))
    rtc = _take_rtc(b.DIR + "/rtc")
    if rtc and rtc[0] in ("soft", "reset", "panic"):
        b.reset_cause = int(rtc[2]) if rtc[0] == "soft" else b.SOFT_RESET
    if chip is None:
        return
    b.CHIP_ID, b.CHIP_REV = chip
    try:
        os.stat(b.DIR + "/flash.bin")
    except OSError:
        b.load("_factory").create(b.DIR, b.CHIP, b.SHIM)
        b.drop("_factory")
    b.flash = b.Flash(b.DIR + "/flash.bin")
    b.parts = read_table(b.flash)
    if b.parts is None:
        log("E boot: Failed to verify partition table")
    elif rtc and rtc[0] == "soft":  # the same app goes on running
        b.running = [p for p in b.parts if p[2] == int(rtc[1])][0]
    else:
        b.running = b.load("_bootloader").boot(log)
        b.drop("_bootloader", "_image", "_otadata")
    if b.running is None:
        log("E boot: No bootable app partitions in the partition table")
        b.die("bootloop")
