"""Every parser an attacker's bytes reach on the board, fed random input:
only ota.OTAError with a documented code may come out, never another
exception (a crash the caller does not expect, or a hang).

Each case runs twice: on CPython in-process (hypothesis needs the
interpreter it runs in) and on the MicroPython unix port, the interpreter a
board has, in one process that answers case by case (board_parsers.serve).
Both must give the same answer: the same error code, or the same result.
Bytes come from the network (HTTP status line, headers, chunk sizes,
Content-Range, Location, a check-in answer), from the image (header,
segments, trailing signature block), from a bundle's header, from a
manifest, or from a compressed update's header. Each test counts the cases
it ran; the counts are printed when the module ends (pytest -s).
"""
import base64
import json
import os
import struct
import sys

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from conftest import LIB
from otatool.appimage import make_app_image
from otatool.bundle import build
from otatool.compressed import CompressedHeader, compress
from otatool.sign import canonical_bytes, public_key_b64

sys.path.insert(0, LIB)
import ota  # noqa: E402
from ota.ed25519 import public_point  # noqa: E402
from ota.url import parse_url  # noqa: E402

import board_parsers  # noqa: E402  (after ota's directory is on the path)

# What each parser may raise (the table in docs/API.md).
IMAGE_CODES = {ota.ESP_ERR_OTA_VALIDATE_FAILED, ota.ESP_ERR_INVALID_VERSION,
               ota.ESP_ERR_INVALID_SIZE, ota.ESP_ERR_OTA_SMALL_SEC_VER}
BUNDLE_CODES = {ota.ESP_ERR_OTA_VALIDATE_FAILED, ota.ESP_ERR_NOT_SUPPORTED,
                ota.ESP_ERR_INVALID_SIZE, ota.ESP_ERR_INVALID_VERSION,
                ota.ESP_ERR_OTA_SMALL_SEC_VER}
MANIFEST_CODES = {ota.ESP_ERR_OTA_VALIDATE_FAILED, ota.ESP_ERR_INVALID_SIZE}
HTTP_CODES = {ota.ESP_FAIL, ota.ESP_ERR_INVALID_ARG, ota.ESP_ERR_TIMEOUT,
              ota.ESP_ERR_INVALID_RESPONSE, ota.ESP_ERR_HTTP_MAX_REDIRECT,
              ota.ESP_ERR_HTTP_CONNECT, ota.ESP_ERR_HTTP_FETCH_HEADER,
              ota.ESP_ERR_HTTP_NOT_MODIFIED, ota.ESP_ERR_HTTP_INCOMPLETE_DATA}

COUNTS = {}
FAST = settings(max_examples=1000, deadline=None, suppress_health_check=list(HealthCheck))
SLOW = settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))


def counted(name):
    COUNTS[name] = COUNTS.get(name, 0) + 1


@pytest.fixture(scope="module", autouse=True)
def report_counts():
    yield
    print("\nhypothesis cases per parser (each on CPython and on MicroPython):")
    for name in sorted(COUNTS):
        print("  %-28s %6d" % (name, COUNTS[name]))


def both(board, codes, name, *args, board_args=None):
    """board_parsers' `name`(*args) on CPython, then on `board` (with
    board_args instead where given: a second app directory): only an
    OTAError of `codes` or a result, and the same on both. -> the answer,
    ["ok", result] or ["err", code]."""
    host = board_parsers.answer(name, list(args))
    assert host[0] in ("ok", "err"), host
    if host[0] == "err":
        assert host[1] in codes, host
    host = json.loads(json.dumps(host))     # as the board's line says it
    assert board.ask(name, *(board_args or args)) == host
    return host


# --- the image: header, segments, app descriptor, signature block ------------------

IMAGE = make_app_image(version="1.0.0", size=12 * 1024)


@FAST
@given(data=st.binary(max_size=600), chunk=st.integers(1, 700))
def test_random_bytes_as_an_image(parser_board, data, chunk):
    counted("image: random bytes")
    both(parser_board, IMAGE_CODES, "feed_image", data, chunk)


@FAST
@given(cut=st.integers(0, len(IMAGE)), tail=st.binary(max_size=400),
       chunk=st.sampled_from([1, 7, 256, 4096]))
def test_a_real_image_cut_anywhere_then_random_bytes(parser_board, cut, tail, chunk):
    # Past the random first bytes: segment headers, descriptor, padding,
    # checksum, digest, and (after a whole image) a signature block.
    counted("image: prefix + random")
    both(parser_board, IMAGE_CODES, "feed_image", IMAGE[:cut] + tail, chunk)


@FAST
@given(tail=st.one_of(st.binary(max_size=200),
                      st.binary(max_size=4200).map(lambda b: b"\xff" * (4096 - len(IMAGE) % 4096) + b),
                      st.binary(max_size=2000).map(lambda b: b"\0\0\0\0" + b)),
       chunk=st.sampled_from([1, 13, 4096]))
def test_random_signature_blocks_after_a_whole_image(parser_board, tail, chunk):
    counted("image: signature block")
    r = both(parser_board, IMAGE_CODES, "feed_image", IMAGE + tail, chunk, len(IMAGE) + 8192)
    if r[0] == "err":
        assert r[1] in (ota.ESP_ERR_OTA_VALIDATE_FAILED, ota.ESP_ERR_INVALID_SIZE)


# --- the bundle header -------------------------------------------------------------

BUNDLE = build({"a.py": b"A = 1\n", "lib/b.py": b"B = 2\n" * 20}, "1.2.3", "demo")


@pytest.fixture(scope="module")
def boards(tmp_path_factory):
    """A fresh app directory (with a file of the user's) per call."""
    root = tmp_path_factory.mktemp("boards")
    made = []

    def fresh():
        app = root / ("app%d" % len(made))
        app.mkdir()
        (app / "keep.txt").write_text("the user's data\n")
        made.append(app)
        return str(app)
    return fresh


def mutate(data, edits):
    b = bytearray(data)
    for at, value in edits:
        b[at % len(b)] = value
    return bytes(b)


@SLOW
@given(data=st.one_of(st.binary(max_size=300),
                      st.binary(max_size=200).map(lambda b: b"OTAB\x01\x00" + b),
                      st.lists(st.tuples(st.integers(0, 400), st.integers(0, 255)), max_size=6)
                      .map(lambda e: mutate(BUNDLE, e))),
       step=st.sampled_from([1, 64, 512]))
@example(data=BUNDLE[:16] + b"\xff\xfe" + BUNDLE[18:], step=512)
def test_random_bundle_headers(parser_board, boards, data, step):
    counted("bundle header")
    app, on_board = boards(), boards()
    r = both(parser_board, BUNDLE_CODES, "feed_bundle", app, data, step,
             board_args=(on_board, data, step))
    for d in (app, on_board):
        assert not os.path.exists(d + ".ota/new")     # nothing left staged
        if r[0] == "err":
            assert os.listdir(d) == ["keep.txt"]      # the app untouched


# --- manifests and keys --------------------------------------------------------------

KEY = Ed25519PrivateKey.generate()
PUB = public_key_b64(KEY)
json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=20),
                           lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c, max_size=4),
                           max_leaves=12)


@FAST
@given(data=st.one_of(st.binary(max_size=2100), json_values.map(lambda v: json.dumps(v).encode()),
                      st.tuples(st.binary(max_size=300), st.binary(max_size=80)).map(
                          lambda t: json.dumps({"manifest": base64.b64encode(t[0]).decode(),
                                                "sig": base64.b64encode(t[1]).decode()}).encode())))
@example(data=b"[" * 2048)
def test_random_manifests(parser_board, data):
    counted("manifest envelope")
    r = both(parser_board, MANIFEST_CODES, "manifest", data, PUB)
    assert r[0] == "err"     # nothing unsigned gets through


@SLOW
@given(fields=st.dictionaries(st.sampled_from(["chip", "kind", "project", "secure_version", "sha256",
                                               "size", "url", "version", "extra",
                                               "compressed_sha256", "compressed_size"]),
                              json_values, max_size=11))
def test_signed_manifests_with_random_fields(parser_board, fields):
    # The signature verifies; the fields are anything JSON holds.
    counted("manifest fields")
    body = canonical_bytes(fields) if all(isinstance(k, str) for k in fields) else b"{}"
    data = json.dumps({"manifest": base64.b64encode(body).decode(),
                       "sig": base64.b64encode(KEY.sign(body)).decode()}).encode()
    both(parser_board, MANIFEST_CODES, "manifest", data, PUB)


@SLOW
@given(key=st.binary(min_size=32, max_size=32), sig=st.binary(min_size=64, max_size=64),
       msg=st.binary(max_size=64))
def test_random_keys_and_signatures(parser_board, key, sig, msg):
    counted("ed25519 key + signature")
    r = both(parser_board, (), "signature", key, msg, sig)
    assert r[1][0] in (True, False)
    assert r[1][1] == (public_point(key) is not None)


# --- HTTP: status line, headers, Location, Content-Range, chunk sizes -----------------

HEADER_NAMES = ["Content-Length", "Content-Range", "Transfer-Encoding", "Location", "ETag",
                "Connection", "X-Other"]
header_value = st.one_of(st.text(max_size=30), st.integers(-5, 99999).map(str),
                         st.sampled_from(["chunked", "close", "keep-alive", "bytes 0-9/10",
                                          "bytes 5-9/*", "/next", "//ota.test/x", "https://x/y",
                                          "http://ota.test:99999/", "http://[::1/"]))
heads = st.builds(
    lambda version, status, reason, headers, body: (
        ("HTTP/1.%s %s %s\r\n" % (version, status, reason)).encode("utf-8", "replace")
        + b"".join(("%s: %s\r\n" % h).encode("utf-8", "replace") for h in headers)
        + b"\r\n" + body),
    st.sampled_from(["0", "1", "x"]),
    st.one_of(st.sampled_from(["200", "206", "301", "302", "304", "404", "500"]),
              st.text(max_size=4)),
    st.text(max_size=10),
    st.lists(st.tuples(st.sampled_from(HEADER_NAMES), header_value), max_size=5),
    st.binary(max_size=300))


@FAST
@given(answer=st.one_of(st.binary(max_size=400), heads), step=st.sampled_from([1, 5, 4096]),
       offset=st.sampled_from([0, 0, 7]))
@example(answer=b"HTTP/1.1 200 OK\r\nContent-Length: \xc2\xb2\r\n\r\n", step=4096, offset=0)
@example(answer=b"HTTP/1.1 \xc2\xb2\xc2\xb2\xc2\xb2 OK\r\n\r\n", step=4096, offset=0)
@example(answer=b"HTTP/1.1 206 P\r\nContent-Range: bytes 7-9/1_0\r\n\r\nabc", step=4096, offset=7)
@example(answer=b"HTTP/1.1 206 P\r\nContent-Range: bytes +7-9/10\r\n\r\nabc", step=4096, offset=7)
def test_random_http_answers(parser_board, answer, step, offset):
    counted("http: status + headers")
    both(parser_board, HTTP_CODES, "fetch", answer, step, offset)


chunk_line = st.one_of(st.integers(0, 40).map(lambda n: b"%x" % n),
                       st.binary(max_size=12), st.sampled_from([b"-1", b"0x10", b"1_0", b"ff;ext=1"]))


@FAST
@given(chunks=st.lists(st.tuples(chunk_line, st.binary(max_size=40), st.sampled_from([b"\r\n", b"\n", b"", b"xx"])),
                       max_size=8),
       trailer=st.binary(max_size=60), step=st.sampled_from([1, 3, 4096]))
@example(chunks=[(b"_", b"", b"\r\n")], trailer=b"", step=1)     # MicroPython's int(b"_", 16) is 0
@example(chunks=[(b"+1", b"a", b"\r\n"), (b"1_0", b"b" * 16, b"\r\n")], trailer=b"", step=4096)
def test_random_chunk_sizes_and_trailers(parser_board, chunks, trailer, step):
    counted("http: chunked framing")
    body = b"".join(line + b"\r\n" + data + end for line, data, end in chunks)
    answer = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + body + b"0\r\n" + trailer
    both(parser_board, HTTP_CODES, "fetch", answer, step)


def test_endless_chunked_trailers_end_with_fetch_header(parser_board):
    answer = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n" + \
        b"X-T: 12345678\r\n" * 1000
    assert both(parser_board, HTTP_CODES, "fetch", answer, 4096) == ["err", ota.ESP_ERR_HTTP_FETCH_HEADER]


@FAST
@given(loc=st.text(max_size=40))
def test_random_locations(parser_board, loc):
    counted("http: Location")
    r = both(parser_board, {ota.ESP_ERR_HTTP_FETCH_HEADER}, "location", "http://ota.test/a/b", loc)
    if r[0] == "ok":
        assert all(" " < c <= "~" for c in r[1])   # what may go into a request line
        parse_url(r[1])


@FAST
@given(raw=st.one_of(st.binary(max_size=1100), json_values.map(lambda v: json.dumps(v).encode())))
@example(raw=b"[" * 1024)
def test_random_check_in_answers(parser_board, raw):
    counted("check-in answer")
    both(parser_board, {ota.ESP_ERR_INVALID_RESPONSE}, "offer", raw)


# --- the header of a compressed update (ota.inflate) ---------------------------

COMPRESSED = compress(IMAGE, block_size=4096)


@FAST
@given(data=st.one_of(st.binary(max_size=200).map(lambda b: b"OTAZ" + b),
                      st.tuples(st.integers(4, 100), st.binary(min_size=1, max_size=4)).map(
                          lambda t: COMPRESSED[:t[0]] + t[1] + COMPRESSED[t[0] + len(t[1]):])),
       step=st.sampled_from([1, 7, 4096]), lie=st.sampled_from([0, 0, 1, -1, None]))
@example(data=COMPRESSED, step=1, lie=0)
def test_compressed_headers_are_refused_by_the_board_exactly_when_the_host_refuses_them(
        parser_board, data, step, lie):
    # lie: how far the server's Content-Length is off (None: not sent)
    counted("compressed header")
    size = -1 if lie is None else len(data) + lie
    r = both(parser_board, {ota.ESP_ERR_OTA_VALIDATE_FAILED}, "inflate_header", data, step, size)
    try:
        host = CompressedHeader.from_bytes(data)
        if size >= 0 and host.offsets[-1] != size:
            host = None
    except ValueError:
        host = None
    if host is None:
        assert r[0] == "err"
    else:
        assert r[0] == "ok", r
        assert r[1][:3] == [host.total_size, host.sha256.hex(), 0]
        assert list(struct.unpack_from("<%dI" % (host.block_count + 1), bytes(r[1][3]))) \
            == host.offsets
