"""Compressed updates on the emulated ESP32 and ESP8266, told as a user's
story: the board recognises a compressed file by its first bytes, inflates
it block by block into the same validator and writer as an uncompressed
image, resumes it, and refuses every broken or lying one with the old app
still booting.

The files are made by otatool.compressed, as `otatool image compress` makes
them; the hostile ones are rebuilt from its parts with a correct header CRC,
so that what the board refuses is the block, not the header.
"""
import hashlib
import zlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import SHIM, compile_ota, run_mpy
from otatool.appimage import make_app_image
from otatool.compressed import CompressedHeader, compress, decompress
from test_firmware_ota import (  # noqa: F401 (server: a fixture)
    power_cut_mid_download, power_on, result, server, update)

SIZE = 112 * 1024


@pytest.fixture(scope="module")
def v2():
    return make_app_image(version="2.0.0", project_name="greenhouse", size=SIZE)


def rebuilt(data, block_size, blocks=None, **fields):
    """A compressed file of `data` whose blocks (raw deflate) are `blocks`
    where given (index -> bytes), header fields overridden by `fields`, and a
    header CRC that is right for all of it."""
    parts = [data[i:i + block_size] for i in range(0, len(data), block_size)]
    out = []
    for i, part in enumerate(parts):
        c = zlib.compressobj(9, zlib.DEFLATED, -12, 9)
        out.append((blocks or {}).get(i, c.compress(part) + c.flush()))
    h = dict(window_bits=12, block_size=block_size, total_size=len(data),
             sha256=hashlib.sha256(data).digest(), offsets=None)
    h.update(fields)
    length = CompressedHeader(12, block_size, 0, b"", [0] * (len(out) + 1)).length
    offsets = [length]
    for b in out:
        offsets.append(offsets[-1] + len(b))
    h["offsets"] = offsets
    return CompressedHeader(**h).pack() + b"".join(out)


def deflated(data):
    c = zlib.compressobj(9, zlib.DEFLATED, -12, 9)
    return c.compress(data) + c.flush()


# --- deflate streams zlib does not make ------------------------------------

class Bits:
    """An LSB-first bit writer, as deflate packs its fields."""
    def __init__(self):
        self.out, self.acc, self.n = bytearray(), 0, 0

    def put(self, value, count):
        self.acc |= value << self.n
        self.n += count
        while self.n >= 8:
            self.out.append(self.acc & 255)
            self.acc >>= 8
            self.n -= 8

    def huff(self, code, length):   # Huffman codes go most significant bit first
        self.put(int(format(code, "0%db" % length)[::-1], 2), length)

    def done(self):
        if self.n:
            self.out.append(self.acc & 255)
        return bytes(self.out)


def canonical(lengths):
    """The canonical Huffman codes of RFC 1951 3.2.2 for these code lengths."""
    count = [0] * 16
    for n in lengths:
        count[n] += 1
    count[0] = 0
    code, nxt = 0, [0] * 16
    for bits in range(1, 16):
        code = (code + count[bits - 1]) << 1
        nxt[bits] = code
    codes = []
    for n in lengths:
        codes.append(nxt[n] if n else None)
        if n:
            nxt[n] += 1
    return codes


# Every byte a 15-bit literal (the longest code deflate has); the end-of-block
# and a few length symbols take the shorter codes that complete the code.
LIT = [15] * 256 + [1, 2, 3, 4, 5, 6, 7]        # symbols 0..262
# The code-length code: the 7-bit codes (its longest) for the lengths written
# most, 15 and 7; HCLEN = 19, all of its lengths sent.
CL_ORDER = [16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15]
CL = {15: 7, 7: 7, 1: 6, 2: 5, 3: 4, 4: 3, 5: 2, 6: 1}  # Kraft sum 1


def worst_deflate(data, chunk=1024):
    """`data` as raw deflate of dynamic-Huffman blocks of `chunk` bytes each,
    every byte a 15-bit literal behind a header of about 240 bytes: about 1.9
    compressed bytes per byte, the most zlib's inflater can be asked to take."""
    cl_len = [CL.get(s, 0) for s in range(19)]
    cl_codes = canonical(cl_len)
    lit_codes = canonical(LIT)
    w = Bits()
    for start in range(0, len(data), chunk):
        last = start + chunk >= len(data)
        w.put(1 if last else 0, 1)
        w.put(2, 2)                       # dynamic Huffman codes
        w.put(len(LIT) - 257, 5)
        w.put(0, 5)                       # one distance code
        w.put(19 - 4, 4)
        for s in CL_ORDER:
            w.put(cl_len[s], 3)
        for n in LIT + [1]:               # the literal/length, then the distance lengths
            w.huff(cl_codes[n], cl_len[n])
        for b in data[start:start + chunk]:
            w.huff(lit_codes[b], 15)
        w.huff(lit_codes[256], LIT[256])
    return w.done()


def test_a_compressed_update_installs_and_the_next_boot_runs_the_new_app(board_dir, server, v2):
    z = compress(v2, block_size=32768)
    server.route("/fw.binz", z)
    out = update(board_dir, server.url("/fw.binz"))
    # what the handle reports is the installed image, not the wire bytes
    assert out == dict(out, ok=True, version="2.0.0", read=len(v2), size=len(v2), complete=True,
                       boot="ota_1")
    assert server.sent("/fw.binz") == len(z)
    after = power_on(board_dir)
    assert after["running"] == "ota_1" and after["version"] == "2.0.0"


def test_sha256_and_size_given_to_begin_describe_the_inflated_image(board_dir, server, v2):
    z = compress(v2)
    server.route("/fw.binz", z)
    wrong = update(board_dir, server.url("/fw.binz"), sha256=hashlib.sha256(z).hexdigest())
    assert wrong["name"] == "ESP_ERR_OTA_VALIDATE_FAILED" and wrong["boot"] == "ota_0"
    right = update(board_dir, server.url("/fw.binz"), sha256=hashlib.sha256(v2).hexdigest(),
                   size=len(v2))
    assert right["ok"] and right["boot"] == "ota_1"


@pytest.mark.parametrize("chunk", [61, 3])
def test_a_compressed_update_sent_chunked_in_small_pieces_installs(board_dir, server, v2, chunk):
    # No Content-Length, and network reads of a few bytes: the inflater's
    # input is topped up many times per block. In 3-byte chunks even the
    # magic comes in two reads.
    z = compress(v2, block_size=32768)
    server.route("/fw.binz", z, chunked=chunk)
    out = update(board_dir, server.url("/fw.binz"))
    assert out == dict(out, ok=True, read=len(v2), boot="ota_1")
    assert server.requests("/fw.binz")[0]["declared"] is None   # really chunked


def test_a_connection_dropped_mid_block_resumes_and_installs(board_dir, server, v2):
    z = compress(v2, block_size=65536)
    header = CompressedHeader.from_bytes(z)
    start, end = header.block_range(1)
    server.route("/fw.binz", z, drop_at=(start + end) // 2)
    out = update(board_dir, server.url("/fw.binz"))
    assert out["ok"] and out["boot"] == "ota_1"
    ranges = [r["range"] for r in server.requests("/fw.binz")]
    # the drop really happened, and the second request asked only for the rest
    assert len(ranges) == 2 and ranges[1] == "bytes=%d-" % ((start + end) // 2)
    assert server.sent("/fw.binz") == len(z)
    assert power_on(board_dir)["version"] == "2.0.0"


def test_after_a_power_cut_mid_download_a_compressed_update_resumes_at_a_block(board_dir, server):
    # Blocks of 24 sectors: the journal's 256 KiB fall inside block 2, which
    # starts at 192 KiB: the board asks for the file from block 2 on.
    image = make_app_image(version="2.0.0", project_name="greenhouse", size=300 * 1024)
    z = compress(image, block_size=98304)
    header = CompressedHeader.from_bytes(z)
    server.route("/fw.binz", z)
    url = server.url("/fw.binz")
    power_cut_mid_download(board_dir, url)
    before = len(server.requests("/fw.binz"))

    out = update(board_dir, url)
    assert out["ok"] and out["read"] == len(image) and out["boot"] == "ota_1"
    ranges = [r["range"] for r in server.requests("/fw.binz")[before:]]
    # the header from the start, then the rest from the block holding byte 262144
    assert ranges[0] is None and ranges[1:] == ["bytes=%d-" % header.block_range(2)[0]]
    assert power_on(board_dir)["version"] == "2.0.0"


def bad_files(image):
    bs = 32768
    first = image[:bs]
    last = image[3 * bs:]
    z = compress(image, block_size=bs)
    flipped = bytearray(z)
    flipped[CompressedHeader.from_bytes(z).block_range(1)[0] + 40] ^= 0x10
    return {
        # a bit flipped inside block 1
        "corrupt_block": bytes(flipped),
        # block 0 inflates to its bytes and then 1 MiB of zeros: a bomb
        "bomb": rebuilt(image, bs, {0: deflated(first + bytes(1 << 20))}),
        # the last block inflates to fewer bytes than it declares
        "short_block": rebuilt(image, bs, {3: deflated(last[:-100])}),
        # bytes after the end of block 0's deflate stream, inside its range
        "unused_bytes": rebuilt(image, bs, {0: deflated(first) + b"\0\0\0"}),
        # the header's SHA-256 is not that of the bytes the blocks inflate to
        "lying_header": rebuilt(image, bs, sha256=hashlib.sha256(b"other").digest()),
        # the file ends 100 bytes early (the server says so too)
        "truncated": z[:-100],
        # one header byte changed: the CRC no longer matches
        "bad_crc": z[:20] + bytes([z[20] ^ 1]) + z[21:],
    }


@pytest.mark.parametrize("case, why", [
    ("corrupt_block", ""),      # the inflater or the image validator, whichever sees it first
    ("bomb", "block 0 does not end with its bytes"),
    ("short_block", "block 3 does not inflate to its bytes"),
    ("unused_bytes", "block 0 does not end with its bytes"),
    ("lying_header", "sha256 of the download does not match"),
    ("truncated", "its header says"),
    ("bad_crc", "header CRC mismatch"),
])
def test_a_broken_or_lying_compressed_file_is_refused_and_the_old_app_boots(board_dir, server,
                                                                            v2, case, why):
    server.route("/fw.binz", bad_files(v2)[case])
    out = update(board_dir, server.url("/fw.binz"))
    assert out["name"] == "ESP_ERR_OTA_VALIDATE_FAILED" and why in out["msg"], out
    assert out["boot"] == "ota_0"
    assert power_on(board_dir)["version"] == "1.0.0"


def test_a_compressed_image_for_another_chip_is_refused_in_its_first_block(board_dir, server):
    image = make_app_image(version="2.0.0", chip="esp32s3", size=SIZE)
    server.route("/fw.binz", compress(image, block_size=32768))
    out = update(board_dir, server.url("/fw.binz"), sha256=hashlib.sha256(image).hexdigest())
    assert out["name"] == "ESP_ERR_INVALID_VERSION" and out["boot"] == "ota_0"


# --- signed manifests --------------------------------------------------------

def stored(data):
    c = zlib.compressobj(0, zlib.DEFLATED, -12, 9)
    return c.compress(data) + c.flush()


@pytest.mark.parametrize("case, why", [
    ("as_signed", None),
    # the same inflated bytes and size, other wire bytes: a padding bit of a
    # stored deflate block flipped
    ("wire_bytes_differ", "sha256 of the file does not match the manifest"),
    # another image, compressed: its header does not name the signed image
    ("other_image", "compressed update"),
    # the image itself where the manifest names its compressed file
    ("not_compressed", "compressed update: the manifest names one; this file is not one"),
])
def test_a_signed_manifest_binds_both_the_compressed_file_and_the_inflated_image(
        board_dir, server, v2, case, why):
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from otatool.sign import make_manifest, public_key_b64, sign_manifest
    key = Ed25519PrivateKey.generate()
    bs = 32768
    z = rebuilt(v2, bs, {0: stored(v2[:bs])})
    fields = make_manifest(z, "fw.binz")
    assert fields["size"] == len(v2) and fields["compressed_size"] == len(z)
    served = {"as_signed": z, "not_compressed": v2,
              "other_image": compress(make_app_image(version="2.0.0", project_name="evil",
                                                     size=SIZE), block_size=bs)}.get(case)
    if case == "wire_bytes_differ":
        served = bytearray(z)
        at = CompressedHeader.from_bytes(z).block_range(0)[0]
        served[at] ^= 0x80      # bits 3-7 of a stored block's first byte are padding
        served = bytes(served)
        assert served != z and len(served) == len(z)
    server.route("/fw.manifest.json", sign_manifest(fields, key))
    server.route("/fw.binz", served)
    out = update(board_dir, server.url("/fw.manifest.json"), public_key=public_key_b64(key))
    if why is None:
        assert out["ok"] and out["read"] == len(v2) and out["boot"] == "ota_1"
    else:
        assert out["name"] == "ESP_ERR_OTA_VALIDATE_FAILED" and why in out["msg"], out
        assert out["boot"] == "ota_0"


# --- the inflater's input: never more taken than held -----------------------

@pytest.mark.parametrize("chunked", [None, 61], ids=["whole", "chunked_61"])
def test_a_block_of_the_most_expensive_deflate_codes_installs(board_dir, server, v2, chunked):
    # Every byte a 15-bit literal and a header of about 240 bytes every KiB:
    # the most compressed bytes zlib's inflater takes for each byte it gives
    # (ota.inflate bounds each inflate step by it), in network reads of 61
    # bytes or whole ones.
    bs = 32768
    worst = worst_deflate(v2[bs:2 * bs])
    assert len(worst) > 2 * bs     # really that expensive
    z = rebuilt(v2, bs, {1: worst})
    assert decompress(z) == v2      # a valid deflate stream, zlib says
    server.route("/fw.binz", z, chunked=chunked)
    out = update(board_dir, server.url("/fw.binz"))
    assert out == dict(out, ok=True, read=len(v2), boot="ota_1")
    assert power_on(board_dir)["version"] == "2.0.0"


@pytest.mark.parametrize("cut", [1, 2, 300, 20000])
def test_a_block_whose_compressed_bytes_end_inside_a_symbol_is_refused(board_dir, server, v2,
                                                                       cut):
    # Block 1 ends `cut` bytes early, inside a 15-bit code (or its header):
    # the inflater would need bytes the block does not have. What lies in
    # the input buffer behind them (block 0's bytes) must never be read as
    # the rest of the symbol: refused, the old app boots.
    bs = 32768
    z = rebuilt(v2, bs, {1: worst_deflate(v2[bs:2 * bs])[:-cut]})
    server.route("/fw.binz", z)
    out = update(board_dir, server.url("/fw.binz"))
    assert out["name"] == "ESP_ERR_OTA_VALIDATE_FAILED", out
    assert "compressed update: block 1 does not" in out["msg"], out
    assert out["boot"] == "ota_0"
    assert power_on(board_dir)["version"] == "1.0.0"


def test_a_stream_padded_with_empty_deflate_blocks_is_refused_not_misread(board_dir, server, v2):
    # 400 empty stored blocks (5 bytes each, no output) before the data:
    # valid deflate (the host inflates it), but more input than an inflate
    # step can be sure of for its output. The board refuses it rather than
    # take bytes it does not hold; zlib never writes such a stream.
    bs = 32768
    padded = b"\0\0\0\xff\xff" * 400 + deflated(v2[:bs])
    z = rebuilt(v2, bs, {0: padded})
    assert decompress(z) == v2
    server.route("/fw.binz", z)
    out = update(board_dir, server.url("/fw.binz"))
    assert out["name"] == "ESP_ERR_OTA_VALIDATE_FAILED", out
    assert "block 0 does not inflate to its bytes" in out["msg"], out
    assert out["boot"] == "ota_0"


# What loading ota.inflate interns, once an uncompressed update's modules
# are loaded (as when the client finds "OTAZ"): the count of names before and
# after, from micropython.qstr_info().
NAMES = """
import micropython, ota
h = ota.begin(%r, allow_http=True)
h.perform()
micropython.qstr_info()
import ota.inflate
micropython.qstr_info()
"""


def test_loading_the_inflater_interns_few_new_names(board_dir, server, v2, tmp_path):
    # Its names are ones ota.client, ota.http, ota.firmware and ota.image
    # intern already (lib/ota/inflate.py says why): only its file names and
    # a few more are new. More would make MicroPython's table of names grow
    # by a whole pool at once on some boards' heaps (6.4 KiB here).
    server.route("/fw.bin", v2)
    path = ":".join([SHIM, compile_ota(tmp_path / "mpy"), ".frozen"])
    r = run_mpy(NAMES % server.url("/fw.bin"), board_dir, path=path)
    counts = [int(line.split("n_qstr=")[1].split(",")[0]) for line in r.stdout.splitlines()
              if line.startswith("qstr pool:")]
    assert len(counts) == 2, r.stdout + r.stderr
    # the .mpy's path, its source's, and at most 3 others
    assert counts[1] - counts[0] <= 5, counts


# --- random blocks: what an attacker's server may send, inflated on the board --

# ParserBoard (conftest) serves tests/board_parsers.py's "inflate": a whole
# file inflated on the unix port by the real deflate module, read in 4 KiB
# windows as a target reads it. So hypothesis draws each case.

SMALL = make_app_image(version="2.0.0", project_name="greenhouse", size=3 * 4096)
BLOCKS = [deflated(SMALL[i:i + 4096]) for i in range(0, len(SMALL), 4096)]


def garbled(block, flips, tail):
    """`block` with the bits at `flips` (positions modulo its bits) turned
    over, cut or lengthened to end with `tail` when it is not None."""
    b = bytearray(block)
    for f in flips:
        b[f // 8 % len(b)] ^= 1 << f % 8
    return bytes(b) if tail is None else bytes(b[:len(b) // 2]) + tail


@settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))
@given(index=st.integers(0, len(BLOCKS) - 1),
       block=st.one_of(st.binary(max_size=700),
                       st.builds(garbled, st.sampled_from(BLOCKS),
                                 st.lists(st.integers(0, 1 << 16), max_size=4),
                                 st.one_of(st.none(), st.binary(max_size=40)))),
       window_bits=st.integers(9, 15), step=st.sampled_from([1, 61, 1536, 4096]))
def test_random_blocks_are_refused_or_inflate_to_exactly_their_size(parser_board, index, block,
                                                                    window_bits, step):
    # A block of random bytes, or a real one with bits flipped, cut or
    # lengthened, in a file whose header is right (its CRC too), declaring
    # any window: the board's inflater either refuses it with
    # ESP_ERR_OTA_VALIDATE_FAILED or gives exactly the image's size (a
    # changed image is then the SHA-256's to refuse, in finish()). Never
    # another exception, never a hang.
    z = rebuilt(SMALL, 4096, {index: block}, window_bits=window_bits)
    answer = parser_board.ask("inflate", z, step)
    assert answer[0] in ("ok", "err"), answer
    if answer[0] == "err":
        assert answer[1] == 0x1503, answer
    else:
        assert answer[1][0] == len(SMALL), answer
    if block == BLOCKS[index] and window_bits >= 12:
        assert answer == ["ok", [len(SMALL), hashlib.sha256(SMALL).hexdigest()]]
