"""The compressed update format: an app image or bundle cut into blocks that
are deflated one by one (the host writes it; lib/ota/inflate.py reads it on
the board).

    offset  size   field (little-endian)
    0       4      magic b"OTAZ"
    4       1      format version (1)
    5       1      window_bits: log2 of the deflate window, 9..15; the board
                   needs 2**window_bits bytes of RAM to inflate
    6       2      reserved, 0
    8       4      block_size: uncompressed bytes per block, a multiple of
                   4096 (a flash sector), at most 1 MiB; the last block may
                   be shorter
    12      4      total_size: uncompressed bytes in all
    16      32     SHA-256 of the uncompressed bytes
    48      4      block_count N = ceil(total_size / block_size), 1..4096
    52      4*N+4  offsets: where each block starts in this file, then the
                   file's length; the first is the header length, each one
                   larger than the one before
    ...     4      CRC-32 of every header byte before it
    then the N blocks, each a complete raw deflate stream (RFC 1951, no
    zlib or gzip wrapper) that inflates to exactly its block's bytes.

Why blocks: a board that lost its connection or its power restarts at the
block holding the first byte it has not written, with a Range request on
the compressed file, instead of from the start. Why raw deflate with a small
window: MicroPython's `deflate` module inflates it with a buffer of the
window's size, 4 KiB by default (2 KiB suits an ESP8266).
"""
import hashlib
import math
import struct
import zlib

MAGIC = b"OTAZ"
FORMAT = 1
FIXED = struct.Struct("<4sBBHII32sI")  # 52 bytes
SECTOR = 4096
BLOCK_SIZE = 65536
BLOCK_SIZE_MAX = 1 << 20
BLOCKS_MAX = 4096
WINDOW_BITS = 12            # 4 KiB window: the default
WINDOW_BITS_SMALL = 11      # 2 KiB window: ESP8266-class boards
WINDOW_BITS_RANGE = range(9, 16)


def is_compressed(data):
    """Whether these bytes begin a compressed update."""
    return data[:4] == MAGIC


class CompressedHeader:
    """The header of a compressed update, as its fields."""

    def __init__(self, window_bits, block_size, total_size, sha256, offsets):
        self.window_bits = window_bits
        self.block_size = block_size
        self.total_size = total_size
        self.sha256 = sha256
        self.offsets = offsets      # N + 1 values: block starts, then the file length

    @property
    def block_count(self):
        return len(self.offsets) - 1

    @property
    def length(self):
        return FIXED.size + 4 * len(self.offsets) + 4

    def block_range(self, index):
        """(start, end) of block `index` in the compressed file."""
        return self.offsets[index], self.offsets[index + 1]

    def block_output(self, index):
        """How many bytes block `index` inflates to."""
        return min(self.block_size, self.total_size - index * self.block_size)

    def pack(self):
        head = FIXED.pack(MAGIC, FORMAT, self.window_bits, 0, self.block_size,
                          self.total_size, self.sha256, self.block_count)
        head += struct.pack("<%dI" % len(self.offsets), *self.offsets)
        return head + struct.pack("<I", zlib.crc32(head))

    @classmethod
    def from_bytes(cls, data):
        """The header at the start of `data`; ValueError with one line saying
        what is wrong when it is not a well-formed one."""
        if len(data) < FIXED.size:
            raise ValueError("not a compressed update: %d bytes" % len(data))
        magic, fmt, wbits, reserved, block_size, total, sha256, count = FIXED.unpack_from(data)
        if magic != MAGIC:
            raise ValueError("not a compressed update (magic %r)" % magic)
        if fmt != FORMAT:
            raise ValueError("compressed format %d is not supported (only %d)" % (fmt, FORMAT))
        if wbits not in WINDOW_BITS_RANGE or reserved:
            raise ValueError("bad compressed header: window_bits %d" % wbits)
        if not (block_size and block_size % SECTOR == 0 and block_size <= BLOCK_SIZE_MAX):
            raise ValueError("bad compressed header: block_size %d" % block_size)
        if not 1 <= count <= BLOCKS_MAX or count != math.ceil(total / block_size):
            raise ValueError("bad compressed header: %d blocks for %d bytes" % (count, total))
        end = FIXED.size + 4 * (count + 1)
        if len(data) < end + 4:
            raise ValueError("compressed header cut short")
        offsets = list(struct.unpack_from("<%dI" % (count + 1), data, FIXED.size))
        crc, = struct.unpack_from("<I", data, end)
        if crc != zlib.crc32(bytes(data[:end])):
            raise ValueError("compressed header CRC mismatch")
        if offsets[0] != end + 4 or any(a >= b for a, b in zip(offsets, offsets[1:])):
            raise ValueError("bad compressed header: block offsets out of order")
        return cls(wbits, block_size, total, sha256, offsets)


def compress(data, window_bits=WINDOW_BITS, block_size=BLOCK_SIZE):
    """The compressed update of `data` (bytes)."""
    if window_bits not in WINDOW_BITS_RANGE:
        raise ValueError("window_bits must be 9..15")
    if not (block_size and block_size % SECTOR == 0 and block_size <= BLOCK_SIZE_MAX):
        raise ValueError("block_size must be a multiple of %d, at most %d" % (SECTOR, BLOCK_SIZE_MAX))
    if not 0 < len(data) <= BLOCKS_MAX * block_size:
        raise ValueError("%d bytes: 1 to %d blocks of %d" % (len(data), BLOCKS_MAX, block_size))
    blocks = []
    for start in range(0, len(data), block_size):
        c = zlib.compressobj(9, zlib.DEFLATED, -window_bits, 9)
        blocks.append(c.compress(data[start:start + block_size]) + c.flush())
    header_length = FIXED.size + 4 * (len(blocks) + 1) + 4
    offsets = [header_length]
    for block in blocks:
        offsets.append(offsets[-1] + len(block))
    header = CompressedHeader(window_bits, block_size, len(data),
                              hashlib.sha256(data).digest(), offsets)
    return header.pack() + b"".join(blocks)


def decompress(data):
    """The uncompressed bytes of a compressed update, every field checked;
    ValueError with one line when any is wrong."""
    header = CompressedHeader.from_bytes(data)
    if header.offsets[-1] != len(data):
        raise ValueError("compressed update is %d bytes, its header says %d"
                         % (len(data), header.offsets[-1]))
    out = []
    for i in range(header.block_count):
        start, end = header.block_range(i)
        want = header.block_output(i)
        d = zlib.decompressobj(-header.window_bits)
        try:
            block = d.decompress(data[start:end], want + 1)
        except zlib.error as e:
            raise ValueError("block %d does not inflate: %s" % (i, e))
        if len(block) != want or not d.eof or d.unconsumed_tail or d.unused_data:
            raise ValueError("block %d inflates to other than its %d bytes" % (i, want))
        out.append(block)
    result = b"".join(out)
    if hashlib.sha256(result).digest() != header.sha256:
        raise ValueError("SHA-256 of the inflated bytes does not match the header")
    return result
