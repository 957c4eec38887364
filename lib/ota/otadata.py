# Reads otadata the way the ESP-IDF bootloader does (esp_ota_select_entry_t).
#
# Two sectors each hold one 32-byte entry: ota_seq (u32), seq_label[20],
# ota_state (u32), crc (u32 = crc32 of ota_seq, seeded 0xFFFFFFFF). The valid
# entry with the highest ota_seq selects the boot partition
# ota_{(seq - 1) % number of OTA partitions}.
import struct
from binascii import crc32

from ota import const

NEW = 0
PENDING_VERIFY = 1
VALID = 2
INVALID = 3
ABORTED = 4
UNDEFINED = 0xFFFFFFFF
STATE_NAMES = {NEW: "NEW", PENDING_VERIFY: "PENDING_VERIFY", VALID: "VALID",
               INVALID: "INVALID", ABORTED: "ABORTED", UNDEFINED: "UNDEFINED"}

_TYPE_DATA = const(1)
_SUBTYPE_OTA = const(0)


def entries():
    # [(seq, state) or None for each otadata sector]
    from esp32 import Partition
    part = Partition.find(_TYPE_DATA, _SUBTYPE_OTA)[0]
    buf = bytearray(32)
    out = []
    for sector in (0, 1):
        part.readblocks(sector, buf)
        seq, state, crc = struct.unpack_from("<I20xII", buf)
        valid = seq != 0xFFFFFFFF and crc == crc32(buf[:4], 0xFFFFFFFF)
        out.append((seq, state) if valid else None)
    return out


def active():
    # (slot index, state) chosen by otadata, or None when otadata is blank.
    best = None
    for e in entries():
        if e and (best is None or e[0] > best[0]):
            best = e
    if best is None:
        return None
    return (best[0] - 1) % ota_slot_count(), best[1]


def ota_slot_count():
    from esp32 import Partition
    return len([p for p in Partition.find(Partition.TYPE_APP) if 0x10 <= p.info()[1] < 0x20])


def running_state():
    # The otadata state of the running app (UNDEFINED when otadata does not
    # point at it, e.g. blank otadata on first boot).
    from esp32 import Partition
    running = Partition(Partition.RUNNING).info()[1] - 0x10
    act = active()
    if act and act[0] == running:
        return act[1]
    return UNDEFINED


def rejected_slot():
    # The slot whose app the bootloader (ABORTED: it never confirmed itself)
    # or a rollback (INVALID) turned away, as esp_ota_get_last_invalid_partition
    # finds it; None when no otadata entry says so.
    for e in entries():
        if e and e[1] in (INVALID, ABORTED):
            return (e[0] - 1) % ota_slot_count()
    return None
