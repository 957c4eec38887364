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
# deflate.DeflateIO, fed only that block's compressed bytes: a block that
# inflates to more than its declared size (a decompression bomb: the
# inflater is never asked for more, then for one byte that must not come),
# to less, or leaves compressed bytes unused is ESP_ERR_OTA_VALIDATE_FAILED,
# raised in perform(), long before finish(). The header's SHA-256 of the
# uncompressed bytes is checked by the client in finish(), like a caller's
# sha256, before the target makes anything bootable.
#
# The input: DeflateIO reads its stream one byte per call, natively only
# from a native stream (a stream written in Python costs a method call per
# compressed byte). It reads an io.BytesIO made over a bytes object, which
# BytesIO references without copying; the network reads land in that same
# memory through a uctypes alias of it (one buffer of _IN bytes, no copy).
# It holds up to _IN compressed bytes of the block, topped up between
# inflate steps (the unread ones moved to the front). Each step asks for no
# more output than the input held surely gives: a deflate stream takes at
# most 15 bits per output byte (a literal's longest code; a match of L >= 3
# bytes takes at most 48 bits) plus, where a step crosses from one deflate
# block into the next, the next block's header (at most 290 bytes for
# dynamic Huffman codes) and an empty final block (zlib makes non-final
# blocks of 16 K symbols or more, so a step crosses at most one header):
# _MARGIN. So a stream zlib made never runs dry in a step. One that does
# (padded with empty blocks, or hostile) reads past the bytes held, which
# BytesIO.tell() shows after the step: refused, and its output is never
# passed on. The inflater is never resumed after that, so a symbol cut in
# two is never decoded.
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
# Memory: 2**window_bits bytes for the window and about 1.4 KiB of inflater
# state (allocated by DeflateIO for each block: the previous block's are
# collected first so that the new ones take their place), _IN bytes of
# input (made with the first block's inflater: after the target's buffers,
# which the client makes after start(), in the room the client held for
# them from before this module loaded) and 4 bytes per block for the
# offsets. What loading this module left is collected in start(), before
# anything else is made. Few methods and attributes on
# purpose: each costs heap here. Their names are ones the modules loaded
# before this one (ota.client, ota.http, ota.firmware, ota.image) intern
# already, where one fits: MicroPython interns every name a module uses, and
# when its table is full the first new name costs a whole new pool at once
# (6.4 KiB on the 64-bit unix port), which a fragmented heap may not have.
#
# CPython (the host's property tests) has no deflate module: the header is
# parsed there, a block is not inflated.
import gc
import io
import struct
from binascii import crc32

from ota import const, OTAError

try:
    import deflate
    from uctypes import addressof, bytearray_at
except ImportError:  # CPython, or a port without them
    deflate = None

_NO_MEM = const(0x101)
_INVALID_RESPONSE = const(0x108)
_VALIDATE_FAILED = const(0x1503)

_HEAD = const(52)       # the fixed part of the header, magic included
_IN = const(1536)       # compressed bytes held for the inflater
_MARGIN = const(320)    # a block header and what ends a block, and slack


def _err(msg):
    return OTAError(_VALIDATE_FAILED, "compressed update: " + msg)


class Inflate:
    def __init__(self, dl, head, compressed=None, sha256=None, buf=None):
        # dl: a started Download whose first four bytes the caller has read
        # (head: the magic).
        # compressed: (SHA-256, size) of the compressed file, as a signed
        # manifest names it, or None. sha256: what the caller expects of the
        # inflated image, or None. buf: a block as large as what the first
        # block's inflater makes, which the caller made before this module
        # loaded; kept as self._mv until then and freed just before, so
        # that they find its room in one piece.
        if head != b"OTAZ":
            raise _err("the manifest names one; this file is not one")
        self._dl = dl
        self._want = compressed
        self._hash = self._rd = None
        if compressed:
            import hashlib
            self._hash = hashlib.sha256(head)
        self._mv = buf
        self.size = -1
        self.offset = 0
        self.etag = None
        self.sha256 = sha256    # the caller's, until the header's replaces it

    def start(self, offset=0, etag=None):
        # Read and check the header; then, if `etag` (as this source showed
        # it before) names this same file, go on at the block holding the
        # inflated `offset`; else from the first block. self.offset: where
        # the inflated bytes go on.
        dl = self._dl
        # What loading this module left goes first: what is made now takes
        # its holes, not the room the target's buffers and the inflater need.
        gc.collect()
        fixed = bytearray(_HEAD - 4)
        self._read(fixed)
        self._buf = None    # the input: made with the first block's inflater
        # format, window_bits, reserved; block_size; total_size; the
        # SHA-256; block_count
        v, bs = struct.unpack_from("<II", fixed)
        total = struct.unpack_from("<II", fixed, 8)[0]
        n = struct.unpack_from("<II", fixed, 40)[1]
        wbits = v >> 8 & 255
        if (v & 0xFFFF00FF != 1 or not 9 <= wbits <= 15 or not bs or bs % 4096
                or bs > 1 << 20 or not 1 <= n <= 4096 or n != (total + bs - 1) // bs):
            raise _err("unsupported or bad header")
        sha = bytes(fixed[12:44])
        crc = crc32(fixed, crc32(b"OTAZ"))
        self._segs = segs = bytearray(4 * n + 8)    # the offsets, then the CRC-32
        self._read(segs)
        if crc32(memoryview(segs)[:-4], crc) != struct.unpack_from("<II", segs, 4 * n)[1]:
            raise _err("header CRC mismatch")
        # block 0 right after the header, each later one after the one before
        prev = _HEAD + 4 * n + 7
        for i in range(n + 1):
            at = struct.unpack_from("<II", segs, 4 * i)[0]
            if at <= prev or (not i and at != prev + 1):
                raise _err("unsupported or bad header")
            prev = at
        if (dl.size >= 0 and prev != dl.size) or (self._want and prev != self._want[1]):
            raise _err("the file has %d bytes, its header says %d" % (dl.size, prev))
        if self.sha256 and sha != self.sha256:
            raise _err("sha256 of the image does not match")
        self._win, self._bs = wbits, bs
        self.size = total
        self.sha256 = sha
        self.etag = dl.etag + "+z" if dl.etag else None
        i = 0
        if offset and etag and etag == self.etag:
            i = min(offset // bs, n - 1)
        if i:
            self._hash = None   # the file is not read whole: the inflated bytes' hash binds it
            at = struct.unpack_from("<II", segs, 4 * i)[0]
            dl.start(at, dl.etag)
            if dl.offset != at:
                raise OTAError(_INVALID_RESPONSE, "the image changed on the server")
        self._n = i - 1     # the block before the next one
        self._need = self._left = self._have = 0
        self.offset = i * bs

    def readinto(self, mv):
        # Fills mv, up to the end of the block: one perform() for each
        # window of the target, as when uncompressed, in inflate steps of
        # what the input held surely gives (each step after the first
        # writes through a slice of mv).
        got = 0
        buf = self._buf
        while got < len(mv):
            if not self._need:
                if got:
                    break
                i = self._n + 1
                if self._rd:
                    # The block must end here, with its last compressed byte.
                    self._fill(_MARGIN)
                    try:
                        more = self._rd.readinto(mv, 1)
                    except (OSError, EOFError):
                        more = 1
                    if more or self._left or buf.tell() != self._have:
                        raise _err("block %d does not end with its bytes" % (i - 1))
                    self._rd = None
                self._n = i
                if 4 * i + 8 == len(self._segs):
                    # The end of the file: nothing after the last block, and
                    # the whole file's SHA-256 if a manifest names it.
                    if self._dl.readinto(mv):
                        raise _err("data after the last block")
                    h = self._hash
                    self._hash = None
                    if h and h.digest() != self._want[0]:
                        raise _err("sha256 of the file does not match the manifest")
                    return 0
                if deflate is None:
                    raise OTAError(_VALIDATE_FAILED, "no deflate or uctypes module")
                if not buf:
                    self._mv = None     # the room held for the first block (__init__)
                gc.collect()    # the last block's window goes before the next one's comes
                if not buf:
                    # The input, made once, now that the target has its buffers:
                    # written through this alias of b, read by the BytesIO.
                    b = bytes(_IN)
                    self._buf = buf = io.BytesIO(b)
                    self._mv = memoryview(bytearray_at(addressof(b), _IN))
                k, n = struct.unpack_from("<II", self._segs, 4 * i)
                self._left = n - k
                self._need = min(self._bs, self.size - i * self._bs)
                self._have = 0
                buf.seek(0)
                self._rd = deflate.DeflateIO(buf, deflate.RAW, self._win)
            k = min(self._need, len(mv) - got)
            if self._left:
                n = self._have - buf.tell()
                if n < _MARGIN + 1 + k * 15 // 8:
                    self._fill(_MARGIN + 1 + k * 15 // 8)
                    n = self._have - buf.tell()
                k = min(k, (n - _MARGIN) * 8 // 15)
            try:
                n = self._rd.readinto(mv[got:] if got else mv, k)
            except (OSError, EOFError):
                n = 0           # corrupt, or its compressed bytes ran out
            except MemoryError:
                # The window, made at the block's first read: a file
                # compressed for a bigger board (window_bits 15: 32 KiB).
                raise OTAError(_NO_MEM, "compressed update: its %d-byte window does not fit"
                               " the heap" % (1 << self._win))
            if not n or buf.tell() > self._have:
                raise _err("block %d does not inflate to its bytes" % self._n)
            self._need -= n
            self.offset += n
            got += n
        return got

    def close(self):
        self._dl.close()
        self._rd = self._buf = self._mv = None

    # -- inside --------------------------------------------------------------

    def _read(self, mv):
        # Exactly len(mv) bytes of the header into mv.
        n = 0
        while n < len(mv):
            k = self._dl.readinto(memoryview(mv)[n:])
            if not k:
                raise _err("the file is cut short")
            n += k
        if self._hash:
            self._hash.update(mv)

    def _fill(self, size):
        # Until `size` compressed bytes of the block are held (or all that
        # are left of it, or _IN): the unread ones to the front, then
        # network reads behind them, as many as fit.
        buf = self._buf
        p = buf.tell()
        n = self._have
        if n - p >= size or not self._left:
            return
        mv = self._mv
        mv[:n - p] = mv[p:n]    # memmove
        n -= p
        buf.seek(0)
        while n < size and n < _IN and self._left:
            m = mv[n:n + min(self._left, _IN - n)]
            k = self._dl.readinto(m)
            if not k:
                raise _err("the file is cut short")
            if self._hash:
                self._hash.update(m[:k])
            self._left -= k
            n += k
        self._have = n
