# ESP-IDF's esp_ota_ops.c (app_update component, with
# CONFIG_BOOTLOADER_APP_ROLLBACK_ENABLE as MicroPython's OTA boards have it):
# what esp32.Partition's set_boot, mark_app_valid_cancel_rollback and
# Partition(BOOT) call. Runs in the helper process (_idf.py).
import struct
import sys

import _env
import _flash
import _image
import _otadata as od
import _part

OTA_0 = 0x10


def first(ptype, sub):
    r = _part.find(ptype, sub)
    return r[0] if r else None


def read():
    # read_otadata(): (partition, [entry0, entry1]); (None, None) if absent
    p = first(1, 0x00)
    if p is None:
        return None, None
    raw = bytearray(od.ENTRY)
    entries = []
    for i in (0, 1):
        _flash.read(p[2] + i * od.SECTOR, raw)
        entries.append(od.unpack(raw))
    return p, entries


def _rewrite(p, entries, seq, i):
    # rewrite_ota_seq(): erase sector i, program the 32-byte entry
    e = entries[i]
    e[0] = seq
    e[3] = od.crc(seq)
    _part.io(p, i * od.SECTOR, od.SECTOR, 2)
    _part.io(p, i * od.SECTOR, struct.pack("<I20sII", *e), 1)


def _slots():
    # the OTA app partitions ota_0, ota_1, ... as long as there is no gap
    # (esp_ota_get_app_partition_count())
    slots = []
    while first(0, OTA_0 + len(slots)):
        slots.append(first(0, OTA_0 + len(slots)))
    return slots


def default_boot():
    # find_default_boot_partition(): factory, else the first OTA slot, else test
    slots = _slots()
    return first(0, 0x00) or (slots[0] if slots else first(0, 0x20))


def boot_partition():
    # esp_ota_get_boot_partition()
    p, e = read()
    if p is None:
        return None
    n = len(_slots())
    a = od.active(e)
    if (od.invalid(e[0]) and od.invalid(e[1])) or n == 0 or a == -1:
        return default_boot()
    return first(0, OTA_0 + (e[a][0] - 1) % n)


def set_boot(part):
    # esp_ota_set_boot_partition(): a full image verify, then otadata
    why = _image.verify(_flash, part[2], part[3], _env.CHIP)
    if why:
        sys.stderr.write("E esp_image: %s\n" % why)
        raise _env.esp_error(0x1503)
    if part[0] != 0:
        raise _env.esp_error(0x102)
    if part[1] == 0x00:  # factory: erase otadata
        p = first(1, 0x00)
        if p is None:
            raise _env.esp_error(0x105)
        _part.io(p, 0, p[3], 2)
        return
    p, e = read()
    if p is None:
        raise _env.esp_error(0x105)
    n = len(_slots())
    slot = part[1] & 0x0F
    if slot >= n:
        raise _env.esp_error(0x102)
    # esp_rewrite_ota_data()
    a = od.active(e)
    if a == -1:  # both entries unusable: seq slot+1 in sector 0
        i, seq = 0, slot + 1
    elif (e[a][0] - 1) % n == slot:  # already selected: only the state changes
        i, seq = a, e[a][0]
    else:  # the next seq that selects `slot`, into the other sector
        i, seq = a ^ 1, (slot + 1) % n
        while e[a][0] > seq:
            seq += n
    e[i][2] = od.NEW
    _rewrite(p, e, seq, i)


def mark_valid():
    # esp_ota_mark_app_valid_cancel_rollback()
    p, e = read()
    if p is None:
        raise _env.esp_error(0x105)
    a = od.active(e)
    if a == -1 or not _slots():
        raise _env.esp_error(-1)  # "Running firmware is factory"
    if e[a][2] != od.VALID:
        e[a][2] = od.VALID
        _rewrite(p, e, e[a][0], a)
