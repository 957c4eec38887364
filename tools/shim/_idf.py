# The ESP-IDF side of the emulated board, run in a helper process for each
# call (see _chip.idf): on a real board this is C code (the bootloader,
# esp_ota_ops) and costs the MicroPython heap nothing, so here it costs the
# app's interpreter nothing either.
#
# Environment: OTA_IDF = "call [arg] ops fail_erase fail_write running_address"
# (the caller's flash-operation state); the answer goes to DIR/idf:
# "ops fail_erase fail_write error value", then the call's further lines. A
# power cut during the call ends this process at once (_flash.halt), with no
# answer: the caller then ends too.
import os
import sys

import _env
import _flash
import _part
import _table


def log(msg):
    # The bootloader's lines on the UART: errors always (on stderr, so the
    # board's stdout stays the app's), the rest with OTA_BOOT_LOG=1.
    if msg[0] == "E" or os.getenv("OTA_BOOT_LOG"):
        sys.stderr.write(msg + "\n")


def _open_flash():
    _flash.open_flash()
    _part.table = _table.parse(_flash.read, _flash.SIZE)


def boot():
    # A power-on: take what the last reset left in RTC memory, create the
    # flash on first use, read the partition table, run the bootloader.
    # -> (running address, [reset cause, partition lines...])
    try:
        with open(_env.DIR + "/rtc") as f:
            rtc = f.read().split()
    except OSError:
        rtc = []
    open(_env.DIR + "/rtc", "w").close()
    cause = 1  # PWRON_RESET
    if rtc and rtc[0] in ("reset", "panic"):
        cause = 5  # SOFT_RESET
    elif rtc and rtc[0] == "soft":
        cause = int(rtc[2])
    if not _env.ESP32:
        return 0, [str(cause)]
    try:
        os.stat(_env.DIR + "/flash.bin")
    except OSError:
        import _factory

        _factory.create(_env.DIR, _env.CHIP, _env.SHIM)
    _open_flash()
    if _flash._log:
        _flash._log.write("# power-on\n")
    if _part.table is None:
        log("E boot: Failed to verify partition table")
        raise _env.esp_error(-1)
    if rtc and rtc[0] == "soft":  # the interpreter restarts on the same app
        running = _part.at(int(rtc[1]))
    else:
        import _bootloader

        running = _bootloader.boot(log)
    if running is None:
        log("E boot: No bootable app partitions in the partition table")
        raise _env.esp_error(-1)
    return running[2], [str(cause)] + ["%d %d %d %d %s %d" % p for p in _part.table]


def app_call(name, arg, running):
    # esp_ota_ops for esp32.Partition -> an address (0: none)
    import _otaops as od

    _open_flash()
    _part.running = _part.at(running)
    if name == "set_boot":
        od.set_boot(_part.at(arg))
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
    _flash.counts[:] = state[:3]
    err = value = 0
    more = []
    try:
        if call[0] == "boot":
            value, more = boot()
        else:
            value = app_call(call[0], int(call[1]) if len(call) > 1 else 0, state[3])
    except OSError as e:
        err = -e.args[0]
    k = _flash.counts
    with open(_env.DIR + "/idf", "w") as f:
        f.write("%d %d %d %d %d\n" % (k[0], k[1], k[2], err, value))
        f.write("\n".join(more))


main()
