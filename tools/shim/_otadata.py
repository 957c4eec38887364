# otadata as ESP-IDF keeps it: two sectors, each starting with an
# esp_ota_select_entry_t {u32 ota_seq; u8 seq_label[20]; u32 ota_state;
# u32 crc}, crc = esp_rom_crc32_le(UINT32_MAX, &ota_seq, 4). The active entry
# is the valid one with the highest seq; it selects app slot (seq-1) % count.
# Format helpers (no board needed, also used by otatool) and the app-side
# esp_ota_ops functions the esp32 module exposes.
import binascii
import struct

NEW = 0
PENDING_VERIFY = 1
VALID = 2
INVALID = 3
ABORTED = 4
UNDEFINED = 0xFFFFFFFF
STATE_NAMES = {NEW: "NEW", PENDING_VERIFY: "PENDING_VERIFY", VALID: "VALID",
               INVALID: "INVALID", ABORTED: "ABORTED", UNDEFINED: "UNDEFINED"}

SECTOR = 4096
ENTRY = 32
_FMT = "<I20sII"
_OTA_0 = 0x10


def crc(seq):
    return binascii.crc32(struct.pack("<I", seq), 0xFFFFFFFF) & 0xFFFFFFFF


def pack(seq, state, label=b"\xff" * 20):
    return struct.pack(_FMT, seq, label, state, crc(seq))


def unpack(raw):
    # -> [seq, label, state, crc] (a list: callers change state and seq)
    return list(struct.unpack(_FMT, raw))


def invalid(e):
    # bootloader_common_ota_select_invalid(): the CRC is not looked at
    return e[0] == 0xFFFFFFFF or e[2] in (INVALID, ABORTED)


def valid(e):
    return not invalid(e) and e[3] == crc(e[0])


def select(entries, ok, highest=True):
    # bootloader_common_select_otadata()
    if ok[0] and ok[1]:
        a, b = entries[0][0], entries[1][0]
        return 0 if (max(a, b) if highest else min(a, b)) == a else 1
    for i in (0, 1):
        if ok[i]:
            return i
    return -1


def active(entries):
    # bootloader_common_get_active_otadata()
    return select(entries, [valid(entries[0]), valid(entries[1])])


# ---- esp_ota_ops on the emulated board ----

def _board():
    import _board

    return _board


def first(ptype, sub):
    r = _board().find(ptype, sub)
    return r[0] if r else None


def read():
    # read_otadata(): (partition, [entry0, entry1]); (None, None) if absent
    b = _board()
    p = first(1, 0x00)
    if p is None:
        return None, None
    raw = bytearray(ENTRY)
    entries = []
    for i in (0, 1):
        b.read(p[2] + i * SECTOR, raw)
        entries.append(unpack(raw))
    return p, entries


def _rewrite(p, entries, seq, i):
    # rewrite_ota_seq(): erase sector i, program the 32-byte entry
    b = _board()
    e = entries[i]
    e[0] = seq
    e[3] = crc(seq)
    b.part_io(p, i * SECTOR, SECTOR, 2)
    b.part_io(p, i * SECTOR, struct.pack(_FMT, *e), 1)


def app_count():
    # esp_ota_get_app_partition_count(): ota_0, ota_1, ... without a gap
    b = _board()
    n = 0
    while first(0, _OTA_0 + n):
        n += 1
    return n


def _ota_slots():
    # the OTA app partitions in slot order (ota_0, ota_1, ...)
    b = _board()
    return [x for x in (first(0, s) for s in range(_OTA_0, 0x20)) if x]


def default_boot():
    # find_default_boot_partition(): factory, else the first OTA slot, else test
    b = _board()
    slots = _ota_slots()
    return first(0, 0x00) or (slots[0] if slots else first(0, 0x20))


def boot_partition():
    # esp_ota_get_boot_partition()
    p, e = read()
    if p is None:
        return None
    n = app_count()
    if (invalid(e[0]) and invalid(e[1])) or n == 0:
        return default_boot()
    a = active(e)
    if a == -1:
        return default_boot()
    return first(0, _OTA_0 + (e[a][0] - 1) % n)


def set_boot(part):
    # esp_ota_set_boot_partition() with CONFIG_BOOTLOADER_APP_ROLLBACK_ENABLE
    b = _board()
    import _image

    why = _image.verify(b, part[2], part[3], b.CHIP, b.CHIP_ID, b.CHIP_REV)
    if why:
        import sys

        sys.stderr.write("E esp_image: %s\n" % why)
        raise b.esp_error(0x1503)
    if part[0] != 0:
        raise b.esp_error(0x102)
    if part[1] == 0x00:  # factory: erase otadata
        p = first(1, 0x00)
        if p is None:
            raise b.esp_error(0x105)
        b.part_io(p, 0, p[3], 2)
        return
    p, e = read()
    if p is None:
        raise b.esp_error(0x105)
    n = app_count()
    slot = part[1] & 0x0F
    if slot >= n:
        raise b.esp_error(0x102)
    a = active(e)
    if a == -1:  # both entries unusable: start again at seq slot+1 in sector 0
        i, seq = 0, slot + 1
    elif (e[a][0] - 1) % n == slot:  # already selected: only the state changes
        i, seq = a, e[a][0]
    else:  # the next seq that selects `slot`, into the other sector
        i, seq = a ^ 1, (slot + 1) % n
        while e[a][0] > seq:
            seq += n
    e[i][2] = NEW
    _rewrite(p, e, seq, i)


def mark_valid():
    # esp_ota_mark_app_valid_cancel_rollback()
    b = _board()
    p, e = read()
    if p is None:
        raise b.esp_error(0x105)
    a = active(e)
    if a == -1 or app_count() == 0:
        raise b.esp_error(-1)  # "Running firmware is factory"
    if e[a][2] != VALID:
        e[a][2] = VALID
        _rewrite(p, e, e[a][0], a)
