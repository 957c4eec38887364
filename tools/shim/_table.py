# ESP-IDF's binary partition table (gen_esp32part.py writes it, the
# bootloader and esp_partition read it): at 0x8000, 32-byte entries
# esp_partition_info_t {u16 magic 0x50AA; u8 type, subtype; u32 offset, size;
# char label[16]; u32 flags}, then an MD5 entry (0xEBEB, 14 x 0xFF, md5 of
# the entries before it), 0xFF up to 0xC00. A partition is the tuple
# (type, subtype, offset, size, label, encrypted), as Partition.info() gives.
import hashlib
import struct

ADDR = 0x8000
LEN = 0xC00
_ENTRY = "<HBBII16sI"

# ports/esp32/partitions-4MiB-ota.csv (ESP32_GENERIC-OTA), with its vfs
OTA_4MIB = ((1, 0x02, 0x9000, 0x4000, "nvs", False),
            (1, 0x00, 0xD000, 0x2000, "otadata", False),
            (1, 0x01, 0xF000, 0x1000, "phy_init", False),
            (0, 0x10, 0x10000, 0x180000, "ota_0", False),
            (0, 0x11, 0x190000, 0x180000, "ota_1", False),
            (1, 0x81, 0x310000, 0x0F0000, "vfs", False))


def build(parts=OTA_4MIB):
    ents = b"".join(struct.pack(_ENTRY, 0x50AA, t, s, a, n, label.encode(), int(enc))
                    for t, s, a, n, label, enc in parts)
    ents += b"\xeb\xeb" + b"\xff" * 14 + hashlib.md5(ents).digest()
    return ents + b"\xff" * (LEN - len(ents))


def parse(read, flash_size=0x400000):
    # esp_partition_table_verify(): entries up to the end marker, one MD5
    # entry that matches; read(address, buffer) reads the flash.
    # -> the partitions, or None for a broken table
    parts = []
    md5 = hashlib.md5()
    ent = bytearray(32)
    has_md5 = False
    for i in range(LEN // 32):
        read(ADDR + i * 32, ent)
        magic, ptype, sub, addr, size, label, flags = struct.unpack(_ENTRY, ent)
        if magic == 0x50AA and addr + size <= flash_size:
            parts.append((ptype, sub, addr, size, label.split(b"\0")[0].decode(), bool(flags & 1)))
            md5.update(ent)
        elif magic == 0xEBEB and not has_md5 and md5.digest() == ent[16:]:
            has_md5 = True
        elif magic == 0xFFFF and ptype == 0xFF and sub == 0xFF and has_md5:
            return parts
        else:
            return None
    return None
