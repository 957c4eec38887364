"""The parsers an attacker's bytes reach on the board, each behind one
function that feeds it bytes the way the board does (test_parser_properties
draws the bytes). Written for both runtimes: CPython calls these functions
in-process; serve() runs them in one MicroPython unix-port process, one
case per line, so that every case also runs on the interpreter a board has.

A case is a JSON line [name, arg, ...], bytes as {"hex": "..."}; its
answer is a JSON line: ["ok", what the parser gave] or ["err", OTAError
code] or ["crash", the other exception's repr]. The parser's result is
reduced to what both runtimes can say alike (sizes, fields, counts).
"""
import binascii
import json
import sys

import ota.http as http
from ota import OTAError
from ota.bundle import AppBundle
from ota.checkin import _offer
from ota.ed25519 import verify
from ota.http_extra import redirect
from ota.image import ImageValidator
from ota.inflate import Inflate
from ota.manifest import parse_manifest, public_key_bytes


def feed_image(data, chunk, max_size=1 << 22):
    v = ImageValidator(0, max_size, 0, 100)
    mv = memoryview(data)
    for i in range(0, len(data), chunk):
        v.feed(mv[i:i + chunk])
    v.done()
    return [v.pos, v.length, v.desc["version"]]


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
    return len(data)


class _Timeout(Exception):
    pass


class FakeNet:
    """A stand-in for ota.http's `socket` module: every connection answers
    `answer`, `step` bytes at most per read, then EOF."""
    SOCK_STREAM = 1
    timeout = _Timeout

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
    number of bytes delivered."""
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


def location(base, loc):
    """Where a redirect from `base` with Location `loc` leads."""
    class Dl:
        _headers = {"Authorization": "x"}
    return redirect(Dl(), base, loc)


def signature(key, msg, sig):
    """[whether sig verifies, whether key is a usable public key]"""
    try:
        public_key_bytes(key)
        usable = True
    except OTAError:
        usable = False
    return [verify(key, msg, sig), usable]


class BytesDownload:
    """The Download interface over bytes, one short read at a time; the
    first four bytes (the magic, which the client reads) already taken."""

    def __init__(self, data, step, size):
        self.data, self.step, self.size = data, step, size
        self.offset, self.etag = 4, '"e"'

    def readinto(self, mv):
        n = max(0, min(len(mv), self.step, len(self.data) - self.offset))
        mv[:n] = self.data[self.offset:self.offset + n]
        self.offset += n
        return n

    def start(self, offset=0, etag=None):
        self.offset = offset


def started(data, step, size):
    """An Inflate over `data` whose header start() has read; its first four
    bytes as the client reads them (zeros past a short file)."""
    head = bytearray(4)
    head[:len(data[:4])] = data[:4]
    src = Inflate(BytesDownload(data, step, size), head)
    src.start()
    return src


def inflate_header(data, step, size):
    src = started(data, step, size)
    return [src.size, binascii.hexlify(src.sha256).decode(), src.offset,
            list(src._segs[:-4])]


def inflate(data, step):
    """A whole compressed file inflated, read in 4 KiB windows as a target
    reads it: [bytes given, their SHA-256]. (CPython has no deflate module:
    there every block is refused.)"""
    import hashlib
    src = started(data, step, len(data))
    window = memoryview(bytearray(4096))
    h = hashlib.sha256()
    total = 0
    n = src.readinto(window)
    while n:
        total += n
        h.update(window[:n])
        n = src.readinto(window)
    return [total, binascii.hexlify(h.digest()).decode()]


def runtime():
    return sys.implementation.name


PARSERS = {"runtime": runtime, "feed_image": feed_image, "feed_bundle": feed_bundle, "fetch": fetch,
           "location": location, "manifest": parse_manifest, "signature": signature,
           "offer": _offer, "inflate_header": inflate_header, "inflate": inflate}


def decoded(value):
    # JSON back to arguments: {"hex": ...} is bytes
    if isinstance(value, dict) and "hex" in value:
        return binascii.unhexlify(value["hex"])
    return value


def answer(name, args):
    """The answer line's value for PARSERS[name](*args)."""
    try:
        return ["ok", PARSERS[name](*args)]
    except OTAError as e:
        return ["err", e.code]
    except Exception as e:  # noqa: BLE001 (what the property tests look for)
        return ["crash", repr(e)]


def serve():
    while True:
        line = sys.stdin.readline()
        if not line:
            return
        case = json.loads(line)
        print(json.dumps(answer(case[0], [decoded(a) for a in case[1:]])))
