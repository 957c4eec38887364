# otadata as ESP-IDF keeps it: two sectors, each starting with an
# esp_ota_select_entry_t {u32 ota_seq; u8 seq_label[20]; u32 ota_state;
# u32 crc}, crc = esp_rom_crc32_le(UINT32_MAX, &ota_seq, 4). The active entry
# is the valid one with the highest seq; it selects app slot (seq-1) % count.
# The format only (the board's bootloader and _otaops use it, and otatool).
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
