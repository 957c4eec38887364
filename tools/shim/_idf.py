# The ESP-IDF side of the emulated board, run in a helper process for each
# call (see _board.idf): on a real board this is C code (the bootloader,
# esp_ota_ops) and costs the MicroPython heap nothing, so here it costs the
# app's interpreter nothing either.
#
# Environment: OTA_IDF = "call [arg] ops fail_erase fail_write running_address"
# (the caller's flash-operation state); the answer goes to DIR/idf:
# "ops fail_erase fail_write error value", then the call's further lines.
import os
import sys

import _board as b

# chip: (esp_chip_id_t, chip revision major*100+minor)
CHIPS = {"esp32": (0, 301), "esp32s3": (9, 2), "esp32c3": (5, 4), "esp8266": None}


def log(msg):
    # The bootloader's lines on the UART: errors always (on stderr, so the
    # board's stdout stays the app's), the rest with OTA_BOOT_LOG=1.
    if msg[0] == "E" or os.getenv("OTA_BOOT_LOG"):
        sys.stderr.write(msg + "\n")


def read_table():
    # esp_partition_table_verify(): 32-byte entries (magic 0x50AA) up to the
    # end marker, with the MD5 entry (0xEBEB) over the entries before it.
    # -> [(type, subtype, address, size, label, encrypted)], or None
    import hashlib
    import struct

    parts = []
    md5 = hashlib.md5()
    ent = bytearray(32)
    has_md5 = False
    for i in range(0xC00 // 32):
        b.read(0x8000 + i * 32, ent)
        magic, ptype, sub, addr, size, label, flags = struct.unpack("<HBBII16sI", ent)
        if magic == 0x50AA and addr + size <= b.SIZE:
            parts.append((ptype, sub, addr, size, label.split(b"\0")[0].decode(), bool(flags & 1)))
            md5.update(ent)
        elif magic == 0xEBEB and not has_md5 and md5.digest() == ent[16:]:
            has_md5 = True
        elif magic == 0xFFFF and ptype == 0xFF and sub == 0xFF and has_md5:
            return parts
        else:
            return None
    return None


def _open_flash():
    b.open_flash()
    b.parts = read_table()


def boot():
    # A power-on: take what the last reset left in RTC memory, create the
    # flash on first use, read the partition table, run the bootloader.
    # -> (running address, [reset cause, partition lines...])
    try:
        with open(b.DIR + "/rtc") as f:
            rtc = f.read().split()
    except OSError:
        rtc = []
    open(b.DIR + "/rtc", "w").close()
    cause = 1  # PWRON_RESET
    if rtc and rtc[0] in ("reset", "panic"):
        cause = 5  # SOFT_RESET
    elif rtc and rtc[0] == "soft":
        cause = int(rtc[2])
    if CHIPS[b.CHIP] is None:
        return 0, [str(cause)]
    b.CHIP_ID, b.CHIP_REV = CHIPS[b.CHIP]
    try:
        os.stat(b.DIR + "/flash.bin")
    except OSError:
        import _factory

        _factory.create(b.DIR, b.CHIP, b.SHIM)
    _open_flash()
    if b.parts is None:
        log("E boot: Failed to verify partition table")
        raise b.esp_error(-1)
    if rtc and rtc[0] == "soft":  # the interpreter restarts on the same app
        running = b.at(int(rtc[1]))
    else:
        import _bootloader

        running = _bootloader.boot(log)
    if running is None:
        log("E boot: No bootable app partitions in the partition table")
        raise b.esp_error(-1)
    return running[2], [str(cause)] + ["%d %d %d %d %s %d" % p for p in b.parts]


def app_call(name, arg, running):
    # esp_ota_ops for esp32.Partition -> an address (0: none)
    import _otadata as od

    b.CHIP_ID, b.CHIP_REV = CHIPS[b.CHIP]
    _open_flash()
    b.running = b.at(running)
    if name == "set_boot":
        od.set_boot(b.at(arg))
        return 0
    if name == "mark_valid":
        od.mark_valid()
        return 0
    p = od.boot_partition()
    return p[2] if p else 0


def main():
    call = os.getenv("OTA_IDF").split()
    state = [int(x) for x in call[-4:]]
    call = call[:-4]
    b.counts[:] = state[:3]
    err = value = 0
    more = []
    try:
        if call[0] == "boot":
            value, more = boot()
        else:
            value = app_call(call[0], int(call[1]) if len(call) > 1 else 0, state[3])
    except OSError as e:
        err = -e.args[0]
    with open(b.DIR + "/idf", "w") as f:
        f.write("%d %d %d %d %d\n" % (b.counts[0], b.counts[1], b.counts[2], err, value))
        f.write("\n".join(more))


main()
