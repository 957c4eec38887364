# Streaming validator of ESP-IDF app images: the checks of ESP-IDF's
# esp_image_format.c / esp_https_ota.c, applied chunk by chunk as bytes
# arrive, in fixed memory (one 256-byte scratch buffer and a SHA-256).
#
# Image layout (esp_app_format.h, as written by `esptool elf2image`):
#   esp_image_header_t, 24 bytes: magic 0xE9, segment_count, spi_mode,
#     spi_speed|spi_size, entry_addr u32, wp_pin, spi_pin_drv[3], chip_id u16,
#     min_chip_rev u8 (legacy), min_chip_rev_full u16, max_chip_rev_full u16,
#     reserved[4], hash_appended u8
#   segment_count x { load_addr u32, data_len u32, data }
#   zero padding, then the checksum byte at an offset = 15 (mod 16):
#     0xEF XOR every segment data byte
#   SHA-256 of all bytes before it (32 bytes) when hash_appended
# The first segment starts with esp_app_desc_t (magic 0xABCD5432), so a
# bootloader image (also 0xE9) is refused within its first 288 bytes.
#
# After the image only a Secure Boot signature block may follow, well-formed
# (ota.sigblock, imported then); other trailing bytes are refused
# (VALIDATE_FAILED). ESP-IDF ignores what follows an image, but here that
# would let a corrupted hash_appended byte turn the digest into ignored
# "trailing" bytes and skip the hash check.
import hashlib
import struct

from ota import const, OTAError

# esp_err_t values (as in ota/__init__.py), inlined by const().
_INVALID_SIZE = const(0x104)
_INVALID_VERSION = const(0x10A)
_VALIDATE_FAILED = const(0x1503)
_SMALL_SEC_VER = const(0x1504)

# Texts of its failures: numbers into ota.texts.TEXTS (error texts load
# only when a failure is shown).
_T_SIG_CUT = const(29)
_T_CUT = const(30)
_T_DIGEST = const(31)
_T_TOO_BIG = const(32)
_T_NO_DESC = const(33)
_T_SEC_VER = const(34)
_T_CHECKSUM = const(35)
_T_MAGIC = const(36)
_T_SEGMENTS = const(37)
_T_CHIP = const(38)
_T_REVISION = const(39)
_T_SEG_LEN = const(40)
_T_MAPPING = const(41)

_HEADER = const(0)  # collecting esp_image_header_t
_SEGHDR = const(1)  # collecting a segment header
_DATA = const(2)    # inside segment data (XOR; the first 256 bytes also kept as app desc)
_PAD = const(3)     # padding before the checksum byte
_CSUM = const(4)    # the checksum byte
_DIGEST = const(5)  # the appended SHA-256
_END = const(6)     # image complete and valid
_FAILED = const(7)  # an error was raised; it is raised again on every call

_MAX_SEGMENTS = const(16)  # ESP_IMAGE_MAX_SEGMENTS
_DESC_MAGIC = const(0xABCD5432)
_DESC_LEN = const(256)

try:
    from ota.xor import xor as _xor   # native code (see ota/xor.py)
except (ImportError, SyntaxError, ValueError):
    def _xor(buf, start, end, acc):
        # Plain Python: fold the bytes as one big integer, halving it each
        # step (a few big-int operations per chunk, not one per byte).
        x = int.from_bytes(buf[start:end], "little")
        n = end - start
        while n > 1:
            n = (n + 1) >> 1
            x = (x >> (8 * n)) ^ (x & ((1 << (8 * n)) - 1))
        return acc ^ x


def _str(b, start, n):
    s = bytes(b[start:start + n])
    z = s.find(b"\0")
    if z >= 0:
        s = s[:z]
    try:
        return s.decode()
    except UnicodeError:  # a corrupt descriptor; the checksum/hash will tell
        # ("?" for each non-ASCII byte, by bytes: chr() would intern each
        # character for good)
        return bytes(c if c < 128 else 63 for c in s).decode()


def parse_desc(b):
    """esp_app_desc_t (the first 256 bytes of the first segment) as a dict,
    or None when b does not start with its magic."""
    magic, secure_version = struct.unpack_from("<II", b, 0)
    if magic != _DESC_MAGIC:
        return None
    return {
        "secure_version": secure_version,
        "version": _str(b, 16, 32),
        "project_name": _str(b, 48, 32),
        "time": _str(b, 80, 16),
        "date": _str(b, 96, 16),
        "idf_ver": _str(b, 112, 32),
    }


def _chip_entry(chip_id):
    # This chip's row of the chip table. The table is loaded for the lookup
    # and unloaded again, unless something else had loaded it: a board
    # keeps one row, not every chip's.
    import sys
    loaded = "ota.chips" in sys.modules
    import ota.chips
    entry = ota.chips.CHIPS.get(chip_id)
    if not loaded:
        del sys.modules["ota.chips"], ota.chips
    return entry


class ImageValidator:
    """Feed the image in chunks of any size; errors raise OTAError as soon as
    the bytes that show them have arrived (header, chip and app descriptor
    within the first 288 bytes).

    chip_rev: this chip's revision as major*100+minor when known; then the
    header's min/max chip revision range is checked too."""

    def __init__(self, chip_id, max_size, min_secure_version=0, chip_rev=None):
        self.chip_id = chip_id
        self.max_size = max_size
        self.min_secure_version = min_secure_version
        self.chip_rev = chip_rev
        self.desc = None     # app descriptor dict once parsed
        self.length = -1     # whole image length once the last segment header is in
        self.pos = 0         # bytes fed so far
        self._buf = bytearray(_DESC_LEN)  # the header/segment header/desc/digest being collected
        self._have = 0       # bytes of it collected
        self._need = 24
        self._state = _HEADER
        self._segs = 0       # segment headers still to come
        self._left = 0       # bytes left in the current segment data or padding
        self._x = 0xEF       # running XOR checksum (ESP_ROM_CHECKSUM_INITIAL)
        self._hash_end = -1  # end of the hashed part (checksum byte + 1), -1 until known
        self._sha = hashlib.sha256()  # None once known unneeded (no hash_appended) or checked
        self._err = None
        self._trail = None   # the signature block after the image (ota.sigblock), if any
        self._mapped = _chip_entry(chip_id)  # this chip's row of ota.chips.CHIPS, or None

    def complete(self):
        return self._state == _END and (self._trail is None or self._trail.complete())

    def done(self):
        """Raise unless a whole valid image has been fed."""
        if self._err:
            raise self._err
        if self._state == _END and not self.complete():
            raise OTAError(_VALIDATE_FAILED, (_T_SIG_CUT,))
        if self._state != _END:
            raise OTAError(_VALIDATE_FAILED, (_T_CUT, self.pos,
                                                self.length if self.length >= 0 else "?"))

    def feed(self, mv):
        # The hot path: a chunk inside one segment's data (so all hashed).
        # Without a try and with few names, its frame fits the C stack (a
        # larger one is allocated on the heap and freed at every call).
        n = len(mv)
        if self._state == _DATA and n < self._left and self.desc is not None:
            self._x = _xor(mv, 0, n, self._x)
            self._left -= n
            self.pos += n
            if self._sha is not None:
                self._sha.update(mv)
        else:
            self._feed(mv)

    def _feed(self, mv):
        if self._err:
            raise self._err
        try:
            start = self.pos
            self._parse(mv)
            sha = self._sha
            if sha is None:  # no digest appended, or already checked
                return
            # Hash after parsing, when this chunk's share of the hashed part is known.
            end = self._hash_end
            if end < 0 or self.pos <= end:
                sha.update(mv)
            elif start < end:
                sha.update(mv[:end - start])
            if self._state == _END:
                self._sha = None
                if sha.digest() != bytes(self._buf[:32]):
                    raise OTAError(_VALIDATE_FAILED, (_T_DIGEST,))
        except OTAError as e:
            self._err = e
            self._state = _FAILED
            raise

    def _parse(self, mv):
        i = 0
        n = len(mv)
        while i < n:
            st = self._state
            if st == _DATA:
                k = min(self._left, n - i)
                if self.desc is None:  # the app descriptor, kept
                    k = min(k, _DESC_LEN - self._have)
                    self._buf[self._have:self._have + k] = mv[i:i + k]
                    self._have += k
                self._x = _xor(mv, i, i + k, self._x)
            elif st == _PAD:
                k = min(self._left, n - i)
            elif st == _END:
                k = n - i
                if self.pos + k > self.max_size:
                    raise OTAError(_INVALID_SIZE, (_T_TOO_BIG, self.max_size))
                if self._trail is None:
                    from ota.sigblock import Trailer
                    self._trail = Trailer(self.pos)
                self._trail.feed(mv[i:] if i else mv)
            else:
                # a header or the digest, byte by byte: a slice of mv would
                # leave garbage at every segment boundary
                k = min(self._need - self._have, n - i)
                b = self._buf
                h = self._have
                for j in range(k):
                    b[h + j] = mv[i + j]
                self._have = h + k
            i += k
            self.pos += k
            if st == _DATA:
                self._left -= k
                if self.desc is None and self._have == _DESC_LEN:
                    d = parse_desc(self._buf)
                    if d is None:
                        raise OTAError(_VALIDATE_FAILED, (_T_NO_DESC,))
                    if d["secure_version"] < self.min_secure_version:
                        raise OTAError(_SMALL_SEC_VER, (_T_SEC_VER, d["secure_version"],
                                                        self.min_secure_version))
                    self.desc = d
                if self._left == 0:
                    self._end_segment()
            elif st == _PAD:
                self._left -= k
                if self._left == 0:
                    self._want(_CSUM, 1)
            elif self._have == self._need:
                self._have = 0
                if st == _HEADER:
                    self._on_header()
                elif st == _SEGHDR:
                    self._on_segment()
                elif st == _CSUM:
                    if self._buf[0] != self._x:
                        raise OTAError(_VALIDATE_FAILED, (_T_CHECKSUM, self._buf[0], self._x))
                    if self._sha is not None:  # hash_appended: the digest follows
                        self._want(_DIGEST, 32)
                    else:
                        self._state = _END
                else:
                    self._state = _END  # the digest is compared in feed(), after hashing

    def _want(self, state, n):
        self._state = state
        self._need = n
        self._have = 0

    def _on_header(self):
        b = self._buf
        if b[0] != 0xE9:
            raise OTAError(_VALIDATE_FAILED, (_T_MAGIC, b[0]))
        if not 0 < b[1] <= _MAX_SEGMENTS:
            raise OTAError(_VALIDATE_FAILED, (_T_SEGMENTS, b[1]))
        chip, min_rev, max_rev = struct.unpack_from("<HxHH", b, 12)
        if chip != self.chip_id:
            from ota.chips import chip_name, image_chip
            raise OTAError(_INVALID_VERSION, (_T_CHIP, image_chip(b), chip_name(self.chip_id)))
        rev = self.chip_rev
        # As bootloader_common_check_chip_validity: max 0 or 0xFFFF means "no limit".
        if rev is not None and (rev < min_rev or (max_rev not in (0, 0xFFFF) and rev > max_rev)):
            raise OTAError(_INVALID_VERSION, (_T_REVISION, min_rev // 100, min_rev % 100, max_rev // 100,
                                              max_rev % 100, rev // 100, rev % 100))
        if not b[23]:  # hash_appended
            self._sha = None
        self._segs = b[1]
        self._want(_SEGHDR, 8)

    def _on_segment(self):
        # load_addr and data_len (u32, little-endian) from their bytes:
        # unpack_from's tuple (and, on a 32-bit board, the address as a big
        # int) would be garbage at every segment. The checks need only the
        # address's 64 KiB page and its offset in the page.
        b = self._buf
        size = b[4] | b[5] << 8 | b[6] << 16 | b[7] << 24
        page = b[2] | b[3] << 8
        low = b[0] | b[1] << 8
        pos = self.pos  # file offset of the segment data
        if size & 3:
            raise OTAError(_VALIDATE_FAILED, (_T_SEG_LEN, size))
        if pos + size + 1 > self.max_size:
            raise OTAError(_INVALID_SIZE, (_T_TOO_BIG, self.max_size))
        m = self._mapped
        if m and (m[1] <= page < m[2] or m[3] <= page < m[4]) and (low - pos) & 0xFFFF:
            raise OTAError(_VALIDATE_FAILED, (_T_MAPPING, page, low))
        if self.desc is None and size < _DESC_LEN:
            raise OTAError(_VALIDATE_FAILED, (_T_NO_DESC,))
        self._segs -= 1
        self._state = _DATA
        self._left = size
        if size == 0:
            self._end_segment()

    def _end_segment(self):
        if self._segs:
            self._want(_SEGHDR, 8)
            return
        csum = self.pos | 15  # offset of the checksum byte
        self._hash_end = csum + 1
        self.length = csum + 1 + (32 if self._sha is not None else 0)
        if self.length > self.max_size:
            raise OTAError(_INVALID_SIZE, "image larger than the partition (%d bytes)"
                           % self.max_size)
        self._left = csum - self.pos
        if self._left:
            self._state = _PAD
        else:
            self._want(_CSUM, 1)
