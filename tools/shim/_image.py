# esp_image_verify(): the checks ESP-IDF makes on an app image in flash
# (bootloader_support/src/esp_image_format.c), streamed through one small
# buffer: header (magic, chip id and revision range, segment count), each
# segment header (length, flash-mapping alignment), the eFuse block revision
# range in the app descriptor (not on ESP32), the XOR checksum, the image
# length against the partition, and the appended SHA-256.
import hashlib
import struct

MAGIC = 0xE9
MAX_SEGMENTS = 16
SIXTEEN_MB = 0x1000000
MMU_PAGE = 0x10000

# The emulated chips: esp_chip_id_t, the revision the chip reports
# (major*100+minor), and SOC_IROM_LOW/HIGH, SOC_DROM_LOW/HIGH: segments there
# are mapped through the flash cache, not loaded.
CHIPS = {
    "esp32": (0, 301, ((0x400D0000, 0x40400000), (0x3F400000, 0x3F800000))),
    "esp32s3": (9, 2, ((0x42000000, 0x44000000), (0x3C000000, 0x3E000000))),
    "esp32c3": (5, 4, ((0x42000000, 0x42800000), (0x3C000000, 0x3C800000))),
}

try:
    import micropython

    @micropython.viper
    def _xor_words(buf: ptr32, n: int) -> int:
        x = 0
        i = 0
        n = n >> 2
        while i < n:
            x = x ^ buf[i]
            i += 1
        return x

except ImportError:  # CPython: fold the chunk as one big integer

    def _xor_words(buf, n):
        x = int.from_bytes(bytes(buf[:n]), "little")
        bits = n * 8
        while bits > 32:
            half = (bits // 64 + bits % 64 // 32) * 32
            x = (x >> half) ^ (x & ((1 << half) - 1))
            bits = half
        return x


def _mapped(chip, addr):
    for lo, hi in CHIPS[chip][2]:
        if lo <= addr < hi:
            return True
    return False


def verify(flash, start, part_size, chip):
    # flash: anything with read(address, buffer), e.g. the _flash module;
    # chip: the board's (a key of CHIPS).
    # None when the image at flash address `start` is valid, else the reason
    # (ESP-IDF's log message). Memory: one 1 KB buffer and a SHA-256 context.
    chip_id, chip_rev = CHIPS[chip][:2]
    if part_size > SIXTEEN_MB:
        return "partition size 0x%x invalid, larger than 16MB" % part_size
    buf = bytearray(1024)
    mv = memoryview(buf)
    try:
        flash.read(start, mv[:24])
    except OSError:
        return "bootloader_flash_read failed at 0x%08x" % start
    (magic, nseg, _, _, _, _, _, img_chip, _, min_rev, max_rev, _, hashed) = struct.unpack(
        "<BBBBIB3sHBHH4sB", mv[:24])
    sha = hashlib.sha256(mv[:24]) if hashed else None
    if magic != MAGIC:
        return "image at 0x%x has invalid magic byte (nothing flashed here?)" % start
    if img_chip != chip_id:
        return "mismatch chip ID, expected %d, found %d" % (chip_id, img_chip)
    if chip_rev < min_rev:
        return "Image requires chip rev >= v%d.%d, but chip is v%d.%d" % (
            min_rev // 100, min_rev % 100, chip_rev // 100, chip_rev % 100)
    if max_rev not in (0, 0xFFFF) and chip_rev > max_rev:
        return "Image requires chip rev <= v%d.%d, but chip is v%d.%d" % (
            max_rev // 100, max_rev % 100, chip_rev // 100, chip_rev % 100)
    if nseg > MAX_SEGMENTS:
        return "image at 0x%x segment count %d exceeds max %d" % (start, nseg, MAX_SEGMENTS)
    pos = start + 24
    csum = 0xEF
    for i in range(nseg):
        try:
            flash.read(pos, mv[:8])
            load, length = struct.unpack("<II", mv[:8])
            if sha:
                sha.update(mv[:8])
            pos += 8
            if length & 3 or length >= SIXTEEN_MB:
                return "invalid segment length 0x%x" % length
            if _mapped(chip, load) and pos % MMU_PAGE != load % MMU_PAGE:
                return "Segment %d load address 0x%08x, doesn't match data 0x%08x" % (i, load, pos)
            if i == 0 and chip != "esp32" and length >= 180:
                # esp_app_desc_t.min/max_efuse_blk_rev_full; this chip's
                # eFuse block revision is v0.0
                flash.read(pos + 176, mv[:4])
                min_blk = mv[0] | mv[1] << 8
                if min_blk > 0:
                    return "Image requires efuse blk rev >= v%d.%d, but chip is v0.0" % (
                        min_blk // 100, min_blk % 100)
            end = pos + length
            while pos < end:
                n = min(len(buf), end - pos)
                flash.read(pos, mv[:n])
                csum ^= _xor_words(buf, n)
                if sha:
                    sha.update(mv[:n])
                pos += n
        except OSError:
            return "bootloader_flash_read failed at 0x%08x" % pos
    # checksum byte: last of the padding to the next 16-byte boundary
    image_len = pos - start
    pad = (image_len + 16) // 16 * 16 - image_len
    try:
        flash.read(pos, mv[:pad])
        if hashed:
            flash.read(pos + pad, mv[pad:pad + 32])
    except OSError:
        return "bootloader_flash_read failed at 0x%08x" % pos
    csum ^= csum >> 16
    csum ^= csum >> 8
    csum &= 0xFF
    if csum != buf[pad - 1]:
        return "Checksum failed. Calculated 0x%x read 0x%x" % (csum, buf[pad - 1])
    image_len += pad + (32 if hashed else 0)
    if image_len > part_size:
        return "Image length %d doesn't fit in partition length %d" % (image_len, part_size)
    if sha:
        sha.update(mv[:pad])
        if sha.digest() != bytes(mv[pad:pad + 32]):
            return "Image hash failed - image is corrupt"
    return None
