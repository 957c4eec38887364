# The ESP-IDF side of the emulated board, run in a helper process for each
# call (see _chip.idf): on a real board this is C code (the bootloader,
# esp_ota_ops) and costs the MicroPython heap nothing, so here it costs the
# app's interpreter nothing either.
#
# Environment: OTA_IDF = "call [arg] ops fail_erase fail_write running_address"
# (the caller's flash-operation state); the answer goes to DIR/idf:
# "ops fail_erase fail_write error value", then the call's further lines.
import os
import sys

import _chip as b
import _flash as fl

# chip: (esp_chip_id_t, chip revision major*100+minor)
CHIPS = {"esp32": (0, 301), "esp32s3": (9, 2), "esp32c3": (5, 4), "esp8266": None}


def log(msg):
    # The bootloader's lines on the UART: errors always (on stderr, so the
    # board's stdout stays the app's), the rest with OTA_BOOT_LOG=1.
    if msg[0] == "E" or os.getenv("OTA_BOOT_LOG"):
        sys.stderr.write(msg + "\n")


def _open_flash():
    import _table

    fl.open_flash()
    b.parts = _table.parse(fl.read)


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
    if fl._log:
        fl._log.write("# power-on\n")
    if b.parts is None:
        log("E boot: Failed to verify partition table")
        raise b.esp_error(-1)
    if rtc and rtc[0] == "soft":  # the interpreter restarts on the same app
        running = fl.at(int(rtc[1]))
    else:
        import _bootloader

        running = _bootloader.boot(log)
    if running is None:
        log("E boot: No bootable app partitions in the partition table")
        raise b.esp_error(-1)
    return running[2], [str(cause)] + ["%d %d %d %d %s %d" % p for p in b.parts]


def app_call(name, arg, running):
    # esp_ota_ops for esp32.Partition -> an address (0: none)
    import _otaops as od

    b.CHIP_ID, b.CHIP_REV = CHIPS[b.CHIP]
    _open_flash()
    b.running = fl.at(running)
    if name == "set_boot":
        od.set_boot(fl.at(arg))
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
