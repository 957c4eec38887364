# ota.inflate: a compressed update (format: tools/otatool/compressed.py),
# read as the stream the client downloads from (the interface of
# ota.http.Download), so that the targets receive the uncompressed bytes and
# validate, write, journal and resume exactly as for an uncompressed one.
#
# The client imports this module only when the first four bytes of a
# download are the magic b"OTAZ": an uncompressed update never loads it.
#
# The header is read and checked whole before a byte is inflated (the same
# checks as otatool.compressed.CompressedHeader.from_bytes, and the file's
# length against the server's). Then each block is inflated by MicroPython's
# deflate.DeflateIO through _Block, which ends at the block's last
# compressed byte: a block that inflates to more than its declared size (a
# decompression bomb), to less, or leaves compressed bytes unused is
# ESP_ERR_OTA_VALIDATE_FAILED, raised in perform(), long before finish().
# The header's SHA-256 of the uncompressed bytes is checked by the client in
# finish(), like a caller's sha256, before the target makes anything
# bootable.
#
# Resume: a connection cut mid-block is resumed inside ota.http.Download at
# the exact compressed byte (Range + If-Range), so the inflater never sees
# it. After a reset, the target's journal holds an uncompressed offset; the
# header is fetched again and the download restarts at the block holding
# that offset (a second request, with Range), the target re-feeding the kept
# prefix from flash. The ETag this source shows its target ends in "+z", so
# that the journal tells the client the kept prefix belongs to a compressed
# file.
#
# Memory: 2**window_bits bytes for the window and about 1 KiB of inflater
# state (allocated by DeflateIO for each block: the previous block's are
# collected first so that the new ones take their place), a 256-byte input
# buffer and 4 bytes per block for the offsets.
#
# CPython (the host's property tests) has no deflate module: the header is
# parsed there, a block is not inflated.
import binascii
import gc
import hashlib
import io
import struct

from ota import const, OTAError

try:
    import deflate
except ImportError:  # CPython
    deflate = None

_INVALID_RESPONSE = const(0x108)
_VALIDATE_FAILED = const(0x1503)

MAGIC = b"OTAZ"
Z = "+z"                    # ends the ETag shown to the target (see above)
_HEAD = const(52)           # the fixed part, magic included
_IN = const(256)            # compressed bytes fetched per network read


def _bad(msg):
    return OTAError(_VALIDATE_FAILED, "compressed update: " + msg)


class _Block(io.IOBase):
    # The compressed bytes of one block, for DeflateIO, which reads its
    # stream one byte per call: served from a buffer that one network read
    # at a time fills, never past the block's end (self.left), so a corrupt
    # block runs into EOF instead of into the next one.
    def __init__(self, dl):
        self.dl = dl
        self.buf = bytearray(_IN)
        self.mv = memoryview(self.buf)
        self.left = self.pos = self.end = 0
        self.hash = None    # SHA-256 of the whole file, when a manifest names it

    def readinto(self, b):
        p = self.pos
        if p == self.end:
            if not self.left:
                return 0
            mv = self.mv if self.left >= _IN else self.mv[:self.left]
            n = self.dl.readinto(mv)
            if not n:
                return 0    # the file ends early: DeflateIO raises EOFError
            if self.hash:
                self.hash.update(mv if n == len(mv) else mv[:n])
            self.left -= n
            self.end = n
            p = 0
        b[0] = self.buf[p]
        self.pos = p + 1
        return 1

    def fetch(self, buf):
        # Exactly len(buf) bytes of the header into buf.
        mv = memoryview(buf)
        n = 0
        while n < len(buf):
            k = self.dl.readinto(mv[n:])
            if not k:
                raise _bad("cut short")
            n += k
        if self.hash:
            self.hash.update(buf)


class Inflate:
    def __init__(self, dl, head, wire=None, sha256=None):
        # dl: a started Download whose first four bytes the caller has read
        # (head). wire: (SHA-256, size) of the compressed file, as a signed
        # manifest names it, or None. sha256: what the caller expects of the
        # inflated image, or None.
        if head != MAGIC:
            raise _bad("the manifest names one, this is not one")
        self._sha = sha256
        self._dl = dl
        self._rd = _Block(dl)
        self._wire = wire
        self._one = bytearray(1)
        self._d = self._offs = None
        self.size = -1
        self.offset = 0
        self.etag = None
        self.sha256 = None
        self._wbits = self._bs = self._n = self._i = self._out = 0

    def start(self, offset=0, etag=None):
        # Read and check the header; then, if `etag` (as this source showed
        # it before) names this same file, go on at the block holding the
        # uncompressed `offset`; else from the first block. self.offset:
        # where the uncompressed bytes go on.
        dl = self._dl
        rd = self._rd
        if self._wire:
            rd.hash = hashlib.sha256(MAGIC)
        fixed = bytearray(_HEAD - 4)
        rd.fetch(fixed)
        fmt, wbits, reserved, bs, total, sha, n = struct.unpack("<BBHII32sI", fixed)
        if (fmt != 1 or not 9 <= wbits <= 15 or reserved or not bs or bs % 4096
                or bs > 1 << 20 or not 1 <= n <= 4096 or n != (total + bs - 1) // bs):
            raise _bad("unsupported or bad header")
        offs = bytearray(4 * n + 8)     # the offsets, then the CRC-32
        rd.fetch(offs)
        crc = binascii.crc32(memoryview(offs)[:-4], binascii.crc32(fixed, binascii.crc32(MAGIC)))
        if crc != struct.unpack_from("<I", offs, 4 * n + 4)[0]:
            raise _bad("header CRC mismatch")
        prev = 0
        for i in range(n + 1):
            at = struct.unpack_from("<I", offs, 4 * i)[0]
            # block 0 right after the header, each later one after the one before
            if at <= prev or (not i and at != _HEAD + 4 * n + 8):
                raise _bad("block offsets out of order")
            prev = at
        if (dl.size >= 0 and prev != dl.size) or (self._wire and prev != self._wire[1]):
            raise _bad("the file has %d bytes, its header says %d" % (dl.size, prev))
        self._offs = offs
        self._wbits, self._bs, self._n = wbits, bs, n
        self.size = total
        if self._sha and sha != self._sha:
            raise _bad("sha256 of the image does not match")
        self.sha256 = sha
        self.etag = dl.etag + Z if dl.etag else None
        i = 0
        if offset and etag and etag == self.etag:
            i = min(offset // bs, n - 1)
        if i:
            rd.hash = None      # the file is not read whole: the inflated bytes' hash binds it
            dl.start(self._at(i), dl.etag)
            if dl.offset != self._at(i):
                raise OTAError(_INVALID_RESPONSE, "the image changed on the server")
        self._i = i
        self.offset = i * bs

    def readinto(self, mv):
        if not self._out:
            if self._d:
                self._end_block()
            if self._i == self._n:
                self._end_file()
                return 0
            self._start_block()
        out = self._out
        try:
            n = self._d.readinto(mv if out >= len(mv) else mv[:out])
        except (OSError, EOFError):
            n = 0           # corrupt, or its compressed bytes ran out
        if not n:
            raise _bad("block %d does not inflate to its %d bytes" % (self._i, self._block_size()))
        self._out = out - n
        self.offset += n
        return n

    def close(self):
        self._dl.close()
        self._d = None

    # -- inside --------------------------------------------------------------

    def _at(self, i):
        return struct.unpack_from("<I", self._offs, 4 * i)[0]

    def _block_size(self):
        return min(self._bs, self.size - self._i * self._bs)

    def _start_block(self):
        if deflate is None:
            raise OTAError(_VALIDATE_FAILED, "no deflate module")
        self._rd.left = self._at(self._i + 1) - self._at(self._i)
        self._rd.pos = self._rd.end = 0
        self._out = self._block_size()
        self._d = None
        gc.collect()    # the last block's window goes before the next one's comes
        self._d = deflate.DeflateIO(self._rd, deflate.RAW, self._wbits)

    def _end_block(self):
        # Its declared bytes are out: the stream must end here, on its last
        # compressed byte.
        try:
            more = self._d.readinto(self._one)
        except (OSError, EOFError):
            more = 1
        rd = self._rd
        if more or rd.left or rd.pos != rd.end:
            raise _bad("block %d does not end with its %d bytes" % (self._i, self._block_size()))
        self._d = None
        self._i += 1

    def _end_file(self):
        if self._dl.readinto(self._one):
            raise _bad("data after the last block")
        h = self._rd.hash
        if h:
            self._rd.hash = None
            if h.digest() != self._wire[0]:
                raise _bad("sha256 of the file does not match the manifest")
