# The second-stage bootloader of an ESP32_GENERIC-OTA board, as ESP-IDF's
# bootloader_utility.c does it with CONFIG_BOOTLOADER_APP_ROLLBACK_ENABLE
# (MicroPython's boards/sdkconfig.ota):
#
# 1. otadata entries in PENDING_VERIFY (an app that booted once and never
#    confirmed itself) become ABORTED.
# 2. The valid entry with the highest seq picks slot (seq-1) % count; a NEW
#    entry becomes PENDING_VERIFY. Both entries unusable: slot 0, and if
#    otadata was blank (or CRC-broken) it is initialised to seq 1 VALID once
#    that app has loaded.
# 3. The image is verified before it boots; if it fails, earlier slots down
#    to the factory app are tried, then later ones. otadata is not changed by
#    such a fall back, so the boot partition and the running one differ.
#
# Imported by the helper (_idf.py) at power-on.
import _env
import _flash
import _image
import _otadata as od
import _part

FACTORY = -1
SECTOR = 4096
_log = None  # the UART: set by boot()


def _first(ptype, sub):
    r = _part.find(ptype, sub)
    return r[0] if r else None


def _write_entry(ota_info, i, e):
    # write_otadata(): erase the sector, program the 32-byte entry; a failed
    # flash operation is only logged, as the bootloader does.
    try:
        _flash.erase(ota_info[2] + i * SECTOR, SECTOR)
        _flash.program(ota_info[2] + i * SECTOR, od.pack(e[0], e[2], e[1]))
    except OSError as err:
        _log("E boot: Error in write_otadata operation. err = 0x%x" % -err.args[0])


def _select(ota_info, slots, factory):
    # bootloader_utility_get_selected_boot_partition() -> (index, initial)
    if ota_info is None:
        return FACTORY, False
    raw = bytearray(32)
    e = []
    for i in (0, 1):
        _flash.read(ota_info[2] + i * SECTOR, raw)
        e.append(od.unpack(raw))
    for i in (0, 1):
        if e[i][2] == od.PENDING_VERIFY:
            _log("I boot: otadata[%d] is marking as ABORTED" % i)
            e[i][2] = od.ABORTED
            _write_entry(ota_info, i, e[i])
    if (od.invalid(e[0]) and od.invalid(e[1])) or not slots:
        if factory:
            return FACTORY, False
        blank = [x[0] == 0xFFFFFFFF or x[3] != od.crc(x[0]) for x in e]
        return 0, blank[0] and blank[1]
    a = od.active(e)
    if a == -1:
        _log("E boot: ota data partition invalid and no factory, will try all partitions")
        return FACTORY, False
    if e[a][2] == od.NEW:
        _log("I boot: otadata[%d] is selected as new and marked PENDING_VERIFY state" % a)
        e[a][2] = od.PENDING_VERIFY
        _write_entry(ota_info, a, e[a])
    return (e[a][0] - 1) % len(slots), False


def _loads(p):
    # try_load_partition(): a full verify, as bootloader_load_image() does
    # without CONFIG_BOOTLOADER_SKIP_VALIDATE_*.
    why = _image.verify(_flash, p[2], p[3], _env.CHIP)
    if why:
        _log("E esp_image: " + why)
    return why is None


def boot(log):
    # -> the partition the app runs from, or None (no bootable app)
    global _log
    _log = log
    ota_info = _first(1, 0x00)
    slots = [p for p in _part.table if p[0] == 0 and 0x10 <= p[1] < 0x20]
    slots.sort(key=lambda p: p[1])
    factory = _first(0, 0x00)
    start, initial = _select(ota_info, slots, factory)
    # load_boot_image(): from start down to the factory app, then upwards
    order = list(range(start, FACTORY - 1, -1)) + list(range(start + 1, len(slots)))
    for i in order:
        p = factory if i == FACTORY else slots[i]
        if p is None:
            continue
        if _loads(p):
            if i != FACTORY and initial:
                _log("I boot: Set actual ota_seq=%d in otadata[0]" % (i + 1))
                _write_entry(ota_info, 0, [i + 1, b"\xff" * 20, od.VALID])
            _log("I boot: Loaded app from partition at offset 0x%x" % p[2])
            return p
        _log("E boot: %s is not bootable" % (
            "Factory app partition" if i == FACTORY else "OTA app partition slot %d" % i))
    return None
