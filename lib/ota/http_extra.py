# ota.http_extra: what ota.http's Download needs only when a download is not
# one plain 200 answer framed by Content-Length: a redirect, chunked
# framing, a 206 (partial) answer, and asking for the rest after a cut, a
# stall or at the end of a Range window; and reading a small answer whole
# (check-in replies, manifests). Download loads it the first time one of
# them happens: a board that never needs them does not give them heap. The
# functions of a Download `dl` are part of its class in all but file. It
# does not import ota.http: ota.http loads it, one way.
import time

from ota import const, OTAError
from ota.url import parse_url, split

# esp_err_t values (as in ota/__init__.py), inlined by const().
_TIMEOUT = const(0x107)
_INVALID_RESPONSE = const(0x108)
_CONNECT = const(0x7002)
_FETCH_HEADER = const(0x7004)

_MAX_HEAD = const(8192)  # as in ota.http (a const is no module attribute there)
_BACKOFF_MS = const(100)  # before the first resume attempt; doubles each time

# Chunked framing states of dl._chunk (0 and 1 as in ota.http: plain, and
# the first chunk-size line due); dl._left counts the bytes left in a chunk.
_PLAIN = const(0)  # after the last chunk and its trailers
_CRLF = const(2)   # when dl._left is 0: CRLF, then the next size line


def join_url(base, loc):
    # A Location header resolved against the URL that sent it (RFC 3986 5.2:
    # absolute, scheme-relative, absolute-path, relative path, query). Dot
    # segments are left to the server, which normalizes them anyway.
    i = loc.find("://")
    if i > 0 and loc[:i].isalpha():
        return loc
    origin, path = split(base)
    if loc.startswith("//"):
        return origin[:origin.find(":") + 1] + loc
    path = path.split("?")[0]
    if loc.startswith("?"):
        return origin + path + loc
    if loc.startswith("/"):
        return origin + loc
    return origin + path[:path.rfind("/") + 1] + loc


def redirect(dl, url, loc):
    # Where a redirect from `url` with Location `loc` leads. A Location that
    # is no http(s) URL, or has a control character or a space (which would
    # end up in the request line), is the server's fault, refused before
    # anything is sent. The caller's headers (Authorization, a device token)
    # were meant for the origin the caller named: a redirect to another
    # scheme, host or port drops them for good, as curl and requests do.
    new = join_url(url, loc)
    try:
        if parse_url(new)[:3] != parse_url(url)[:3]:
            dl._headers = {}
    except OTAError:
        raise OTAError(_FETCH_HEADER, "bad Location %r" % loc)
    return new


def chunk_head(dl, line):
    # [CRLF ending the previous chunk] "hex-size[;ext]" CRLF; size 0 is the
    # last chunk, and trailer lines up to an empty one follow. line: the
    # buffer dl._readline() reads into.
    n = 0 if dl._chunk == _CRLF and dl._readline() else dl._readline()
    # hex digits only (and spaces before an extension): int() would also
    # take a sign, "0x" and "_", and MicroPython's reads a lone "_" as 0
    size = bytes(line[:n]).split(b";")[0].rstrip(b" \t")
    if not size or size.strip(b"0123456789abcdefABCDEF") or len(size.lstrip(b"0")) > 8:
        raise OTAError(_INVALID_RESPONSE, "bad chunk")
    size = int(size, 16)
    dl._left = size
    dl._chunk = _CRLF
    if not size:
        left = _MAX_HEAD    # trailers: header lines, bounded as a head is
        n = dl._readline(left)
        while n:
            left -= n + 2
            n = dl._readline(left)
        dl._chunk = _PLAIN


def _number(s):
    # A decimal number of the Content-Range (str): ASCII digits only, else
    # -2. int() would also take spaces, a sign and "_".
    b = s.encode()
    return int(b) if b.isdigit() and len(b) <= 15 else -2


def partial(dl, cr, clen, changed):
    # A 206 answer with Content-Range `cr` must continue at dl.offset and be
    # of the same entity. Returns the bytes it holds.
    try:
        a = _number(cr[cr.index(" ") + 1:cr.index("-")])
        left = _number(cr[cr.index("-") + 1:cr.index("/")]) + 1 - a
        total = cr[cr.index("/") + 1:]
        total = -1 if total == "*" else _number(total)
    except ValueError:      # no " ", "-" or "/"
        a = total = -2
    if a != dl.offset or left < 1 or total < -1 or (clen >= 0 and clen != left):
        raise OTAError(_INVALID_RESPONSE, "206 not at byte %d: %s" % (dl.offset, cr))
    if changed or (total >= 0 and dl.size >= 0 and total != dl.size):
        raise OTAError(_INVALID_RESPONSE, "the image changed on the server")
    if total >= 0:
        dl.size = total
    return left


def range_lines(dl):
    # The Range (and If-Range) lines of a request for the rest from
    # dl.offset, or for its next Range window.
    r = dl._range
    lines = "Range: bytes=%d-%s\r\n" % (dl.offset, dl.offset + r - 1 if r else "")
    if dl.etag and not dl.etag.startswith("W/"):  # weak ones cannot
        lines += "If-Range: %s\r\n" % dl.etag
    return lines


def resume(dl, code):
    # Ask for the rest from dl.offset (_resume). A resume that gave up
    # because the download's deadline (ota.deadline) passed says so.
    try:
        _resume(dl, code)
    except OTAError:
        if dl._deadline:
            dl._deadline.left()
        raise


def _resume(dl, code):
    # Ask for the rest from dl.offset. code None: the response ended before
    # the entity (the next Range window, or a server that sent less than
    # asked): at once, on the kept-alive connection if any. Otherwise a cut
    # or stall (code says which): Range with If-Range, bounded attempts with
    # back-off; the budget refills when bytes arrive, so a long download
    # survives many separate cuts, and one that makes no progress fails with
    # the code of its first fault.
    while True:
        if code:
            dl.close()
            if dl._tries >= dl._retries:
                raise OTAError(code, "gave up after %d resume attempts at byte %d of %d"
                               % (dl._retries, dl.offset, dl.size))
            time.sleep(_BACKOFF_MS / 1000 * (1 << dl._tries))
            dl._tries += 1
        elif not dl._keep:
            dl.close()
        try:
            return dl._open(False)
        except OTAError as e:
            if e.code != _CONNECT and e.code != _TIMEOUT:  # worth a retry
                raise
            code = code or e.code


def read_body(dl, limit):
    # The whole body of a small answer (a check-in reply, a manifest) as
    # bytes, or None when it is longer than `limit` bytes.
    if dl.size > limit:
        return None
    buf = bytearray(limit + 1)
    mv = memoryview(buf)
    n = 0
    while n <= limit:
        k = dl.readinto(mv[n:])
        if not k:
            break
        n += k
    return bytes(mv[:n]) if n <= limit else None
