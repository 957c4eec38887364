"""The compressed update format on the host: what `otatool image compress`
writes, read back field by field; every lie in a header is refused."""
import hashlib
import os
import struct
import zlib

import pytest

from otatool.compressed import (CompressedHeader, FIXED, compress, decompress,
                                is_compressed)

TEXT = b"".join(b"def handler_%d(request):\n    return %d\n" % (i, i * i) for i in range(6000))


def test_a_compressed_update_inflates_to_the_same_bytes_and_is_smaller():
    z = compress(TEXT)
    assert is_compressed(z) and not is_compressed(TEXT)
    assert decompress(z) == TEXT
    assert len(z) < len(TEXT) // 3
    header = CompressedHeader.from_bytes(z)
    assert header.block_count == -(-len(TEXT) // 65536)
    assert header.sha256 == hashlib.sha256(TEXT).digest()
    assert header.offsets[-1] == len(z)


def test_each_block_inflates_alone_so_a_download_can_resume_at_any_block():
    z = compress(TEXT, window_bits=11, block_size=8192)
    header = CompressedHeader.from_bytes(z)
    for i in range(header.block_count):
        start, end = header.block_range(i)
        block = zlib.decompressobj(-11).decompress(z[start:end])
        assert block == TEXT[i * 8192:(i + 1) * 8192]


def _with_field(z, offset, fmt, value):
    # The header with one field changed and its CRC made right again, so the
    # field itself is what must be refused.
    header = CompressedHeader.from_bytes(z)
    head = bytearray(z[:header.length - 4])
    struct.pack_into(fmt, head, offset, value)
    return bytes(head) + struct.pack("<I", zlib.crc32(head)) + z[header.length:]


@pytest.mark.parametrize("offset, fmt, value, message", [
    (4, "<B", 2, "format 2"),
    (5, "<B", 16, "window_bits"),
    (8, "<I", 1000, "block_size"),
    (12, "<I", 10 ** 6, "blocks for"),
    (48, "<I", 0, "blocks for"),
    (52, "<I", 0, "out of order"),
])
def test_a_header_that_lies_is_refused_with_one_line(offset, fmt, value, message):
    bad = _with_field(compress(TEXT), offset, fmt, value)
    with pytest.raises(ValueError, match=message):
        decompress(bad)


def test_a_flipped_bit_anywhere_is_refused():
    z = compress(TEXT)
    for pos in (0, 20, FIXED.size + 2, len(z) // 2, len(z) - 1):
        bad = bytearray(z)
        bad[pos] ^= 0x10
        with pytest.raises(ValueError):
            decompress(bytes(bad))


def test_a_block_that_inflates_past_its_size_is_refused():
    # A header claiming 4 KiB blocks over blocks that inflate to 64 KiB each.
    z = compress(bytes(200000), block_size=65536)
    header = CompressedHeader.from_bytes(z)
    lie = CompressedHeader(header.window_bits, 4096, 4096 * 4, header.sha256,
                           [0] * 5)
    blocks = z[header.length:]
    first = lie.length
    lie.offsets = [first + (header.offsets[i] - header.length) for i in range(4)] + \
        [first + len(blocks)]
    with pytest.raises(ValueError, match="block 0 inflates"):
        decompress(lie.pack() + blocks)


def test_random_bytes_are_never_taken_for_an_update():
    for seed in range(200):
        junk = b"OTAZ" + os.urandom(seed * 3)
        with pytest.raises(ValueError):
            decompress(junk)
