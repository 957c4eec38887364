"""Every parser an attacker's bytes reach on the board, fed random input:
only ota.OTAError with a documented code may come out, never another
exception (a crash the caller does not expect, or a hang).

Runs the device code on CPython (the second runtime; hypothesis needs the
interpreter it runs in), in-process. Bytes come from the network
(HTTP status line, headers, chunk sizes, Content-Range, Location, a
check-in answer), from the image (header, segments, trailing signature
block), from a bundle's header, or from a manifest. Each test counts the
cases it ran; the counts are printed when the module ends (pytest -s).
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
import ota.http as http  # noqa: E402
from ota import OTAError  # noqa: E402
from ota.bundle import AppBundle  # noqa: E402
from ota.checkin import _offer  # noqa: E402
from ota.ed25519 import public_point, verify  # noqa: E402
from ota.http_extra import redirect  # noqa: E402
from ota.image import ImageValidator  # noqa: E402
from ota.inflate import Inflate  # noqa: E402
from ota.manifest import parse_manifest, public_key_bytes  # noqa: E402

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
    print("\nhypothesis cases per parser:")
    for name in sorted(COUNTS):
        print("  %-28s %6d" % (name, COUNTS[name]))


def only(codes, fn, *args):
    """fn(*args), its OTAError checked against `codes`; other exceptions
    propagate (and fail the test). -> the result, or the OTAError."""
    try:
        return fn(*args)
    except OTAError as e:
        assert e.code in codes, (e.name, e.msg)
        if e.code == ota.ESP_FAIL:
            assert e.http_status is not None
        return e


# --- the image: header, segments, app descriptor, signature block ------------------

IMAGE = make_app_image(version="1.0.0", size=12 * 1024)


def feed_image(data, chunk, max_size=1 << 22):
    v = ImageValidator(0, max_size, 0, 100)
    mv = memoryview(data)
    for i in range(0, len(data), chunk):
        v.feed(mv[i:i + chunk])
    v.done()
    return v


@FAST
@given(data=st.binary(max_size=600), chunk=st.integers(1, 700))
def test_random_bytes_as_an_image(data, chunk):
    counted("image: random bytes")
    only(IMAGE_CODES, feed_image, data, chunk)


@FAST
@given(cut=st.integers(0, len(IMAGE)), tail=st.binary(max_size=400),
       chunk=st.sampled_from([1, 7, 256, 4096]))
def test_a_real_image_cut_anywhere_then_random_bytes(cut, tail, chunk):
    # Past the random first bytes: segment headers, descriptor, padding,
    # checksum, digest, and (after a whole image) a signature block.
    counted("image: prefix + random")
    only(IMAGE_CODES, feed_image, IMAGE[:cut] + tail, chunk)


@FAST
@given(tail=st.one_of(st.binary(max_size=200),
                      st.binary(max_size=4200).map(lambda b: b"\xff" * (4096 - len(IMAGE) % 4096) + b),
                      st.binary(max_size=2000).map(lambda b: b"\0\0\0\0" + b)),
       chunk=st.sampled_from([1, 13, 4096]))
def test_random_signature_blocks_after_a_whole_image(tail, chunk):
    counted("image: signature block")
    r = only(IMAGE_CODES, feed_image, IMAGE + tail, chunk, len(IMAGE) + 8192)
    if isinstance(r, OTAError):
        assert r.code in (ota.ESP_ERR_OTA_VALIDATE_FAILED, ota.ESP_ERR_INVALID_SIZE)


# --- the bundle header -------------------------------------------------------------

BUNDLE = build({"a.py": b"A = 1\n", "lib/b.py": b"B = 2\n" * 20}, "1.2.3", "demo")


class _Client:
    def __init__(self, size):
        self.size = size

    def get_image_size(self):
        return self.size


def feed_bundle(app, data, step):
    t = AppBundle(app)
    try:
        t.begin(_Client(len(data)))
        mv = memoryview(data)
        p = 0
        while p < len(data):
            w = t.window()
            n = min(len(w), len(data) - p, step)
            w[:n] = mv[p:p + n]
            p += n
            t.commit(n)
        t.finish()
    finally:
        t.abort()


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
def test_random_bundle_headers(boards, data, step):
    counted("bundle header")
    app = boards()
    r = only(BUNDLE_CODES, feed_bundle, app, data, step)
    assert not os.path.exists(app + ".ota/new")     # nothing left staged
    if isinstance(r, OTAError):
        assert os.listdir(app) == ["keep.txt"]      # the app untouched


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
def test_random_manifests(data):
    counted("manifest envelope")
    r = only(MANIFEST_CODES, parse_manifest, data, PUB)
    assert isinstance(r, OTAError)     # nothing unsigned gets through


@SLOW
@given(fields=st.dictionaries(st.sampled_from(["chip", "kind", "project", "secure_version", "sha256",
                                               "size", "url", "version", "extra",
                                               "compressed_sha256", "compressed_size"]),
                              json_values, max_size=11))
def test_signed_manifests_with_random_fields(fields):
    # The signature verifies; the fields are anything JSON holds.
    counted("manifest fields")
    body = canonical_bytes(fields) if all(isinstance(k, str) for k in fields) else b"{}"
    data = json.dumps({"manifest": base64.b64encode(body).decode(),
                       "sig": base64.b64encode(KEY.sign(body)).decode()}).encode()
    only(MANIFEST_CODES, parse_manifest, data, PUB)


@SLOW
@given(key=st.binary(min_size=32, max_size=32), sig=st.binary(min_size=64, max_size=64),
       msg=st.binary(max_size=64))
def test_random_keys_and_signatures(key, sig, msg):
    counted("ed25519 key + signature")
    assert verify(key, msg, sig) in (True, False)
    r = only({ota.ESP_ERR_INVALID_ARG}, public_key_bytes, key)
    assert isinstance(r, OTAError) == (public_point(key) is None)


# --- HTTP: status line, headers, Location, Content-Range, chunk sizes -----------------

class FakeNet:
    """A stand-in for ota.http's `socket` module: every connection answers
    `answer`, `step` bytes at most per read, then EOF."""
    SOCK_STREAM = 1
    timeout = TimeoutError

    def __init__(self, answer, step):
        self.answer = answer
        self.step = step
        self.connections = 0

    def getaddrinfo(self, host, port, *args):
        return [(2, 1, 0, "", (host, port))]

    def socket(self, *args):
        return FakeSock(self)


class FakeSock:
    def __init__(self, net):
        self.net = net
        self.pos = 0

    def settimeout(self, t):
        pass

    def connect(self, addr):
        self.net.connections += 1
        if self.net.connections > 40:
            raise AssertionError("more connections than redirects and resumes allow")

    def sendall(self, data):
        pass

    def recv_into(self, buf, n):
        data = self.net.answer
        k = min(n, self.net.step, len(data) - self.pos)
        buf[:k] = data[self.pos:self.pos + k]
        self.pos += k
        return k

    def close(self):
        pass


def fetch(answer, step, offset=0):
    """Download.start(offset) and read to the end against `answer`: the
    bytes delivered."""
    saved = http.socket
    http.socket = FakeNet(answer, step)
    dl = http.Download("http://ota.test/fw.bin", allow_http=True, retries=1)
    buf = memoryview(bytearray(512))
    got = 0
    try:
        dl.start(offset, '"e"' if offset else None)
        for _ in range(100000):
            n = dl.readinto(buf)
            if not n:
                return got
            got += n
        raise AssertionError("readinto() never ended")
    finally:
        dl.close()
        http.socket = saved


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
def test_random_http_answers(answer, step, offset):
    counted("http: status + headers")
    only(HTTP_CODES, fetch, answer, step, offset)


chunk_line = st.one_of(st.integers(0, 40).map(lambda n: b"%x" % n),
                       st.binary(max_size=12), st.sampled_from([b"-1", b"0x10", b"1_0", b"ff;ext=1"]))


@FAST
@given(chunks=st.lists(st.tuples(chunk_line, st.binary(max_size=40), st.sampled_from([b"\r\n", b"\n", b"", b"xx"])),
                       max_size=8),
       trailer=st.binary(max_size=60), step=st.sampled_from([1, 3, 4096]))
def test_random_chunk_sizes_and_trailers(chunks, trailer, step):
    counted("http: chunked framing")
    body = b"".join(line + b"\r\n" + data + end for line, data, end in chunks)
    answer = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + body + b"0\r\n" + trailer
    only(HTTP_CODES, fetch, answer, step)


def test_endless_chunked_trailers_end_with_fetch_header():
    answer = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n" + \
        b"X-T: 12345678\r\n" * 1000
    e = only(HTTP_CODES, fetch, answer, 4096)
    assert isinstance(e, OTAError) and e.code == ota.ESP_ERR_HTTP_FETCH_HEADER


@FAST
@given(loc=st.text(max_size=40))
def test_random_locations(loc):
    counted("http: Location")

    class Dl:
        _headers = {"Authorization": "x"}
    r = only({ota.ESP_ERR_HTTP_FETCH_HEADER}, redirect, Dl(), "http://ota.test/a/b", loc)
    if not isinstance(r, OTAError):
        assert all(" " < c <= "~" for c in r)   # what may go into a request line
        http.parse_url(r)


@FAST
@given(raw=st.one_of(st.binary(max_size=1100), json_values.map(lambda v: json.dumps(v).encode())))
@example(raw=b"[" * 1024)
def test_random_check_in_answers(raw):
    counted("check-in answer")
    only({ota.ESP_ERR_INVALID_RESPONSE}, _offer, raw)


# --- the header of a compressed update (ota.inflate) ---------------------------

class BytesDownload:
    """The Download interface over bytes, one short read at a time; the
    first four bytes (the magic, which the client reads) already taken."""

    def __init__(self, data, step, size):
        self.data, self.step, self.size = data, step, size
        self.offset, self.etag = 4, '"e"'

    def readinto(self, mv):
        n = len(self.data[self.offset:self.offset + min(len(mv), self.step)])
        mv[:n] = self.data[self.offset:self.offset + n]
        self.offset += n
        return n

    def start(self, offset=0, etag=None):
        self.offset = offset


COMPRESSED = compress(IMAGE, block_size=4096)


def inflate_header(data, step, size):
    src = Inflate(BytesDownload(data, step, size), b"OTAZ")
    src.start()
    return src


@FAST
@given(data=st.one_of(st.binary(max_size=200).map(lambda b: b"OTAZ" + b),
                      st.tuples(st.integers(4, 100), st.binary(min_size=1, max_size=4)).map(
                          lambda t: COMPRESSED[:t[0]] + t[1] + COMPRESSED[t[0] + len(t[1]):])),
       step=st.sampled_from([1, 7, 4096]), lie=st.sampled_from([0, 0, 1, -1, None]))
@example(data=COMPRESSED, step=1, lie=0)
def test_compressed_headers_are_refused_by_the_board_exactly_when_the_host_refuses_them(
        data, step, lie):
    # lie: how far the server's Content-Length is off (None: not sent)
    counted("compressed header")
    size = -1 if lie is None else len(data) + lie
    r = only({ota.ESP_ERR_OTA_VALIDATE_FAILED}, inflate_header, data, step, size)
    try:
        host = CompressedHeader.from_bytes(data)
        if size >= 0 and host.offsets[-1] != size:
            host = None
    except ValueError:
        host = None
    if host is None:
        assert isinstance(r, OTAError)
    else:
        assert not isinstance(r, OTAError), r
        assert (r.size, r.sha256, r.offset) == (host.total_size, host.sha256, 0)
        assert list(struct.unpack_from("<%dI" % (host.block_count + 1), r._segs)) == host.offsets
