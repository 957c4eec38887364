# ota.http: the HTTP/1.1 stream an image is downloaded through.
#
# Why not micropython-lib `requests`: the version frozen into current firmware
# (0.10.x, v1.25-v1.28) speaks HTTP/1.0, reads the body to EOF ignoring
# Content-Length, rejects chunked bodies, crashes on relative redirects and
# hard-codes CERT_NONE, so it can neither verify the server nor resume a cut
# download. This client does what an OTA stream needs and no more:
#
# * TLS that verifies: SSLContext(PROTOCOL_TLS_CLIENT), CERT_REQUIRED,
#   server_hostname, CAs loaded as DER (the boards' mbedtls rejects PEM;
#   ota.certs converts; loaded only for https);
# * bodies framed by Content-Length or chunked encoding, read with
#   readinto(buf, n) straight into the caller's buffer: no allocation per read;
# * redirects, absolute and relative, at most 10 (as esp_http_client);
# * transparent resume of a cut or stalled body (Range + If-Range), and Range
#   windows of a fixed size (esp_https_ota's partial_http_download) on one
#   kept-alive connection where the server allows it.
#
# And what a hostile server (or a redirect to one) must not get out of it:
# a URL with a control character or a space never reaches the request line
# (the caller's: ESP_ERR_INVALID_ARG; a Location: ESP_ERR_HTTP_FETCH_HEADER,
# before anything is sent); a redirect to another origin (scheme, host,
# port) gets none of the caller's headers (Authorization, a device token),
# as curl and requests do; a response head is at most 8 KiB (each line at
# most 4 KiB), else ESP_ERR_HTTP_FETCH_HEADER. An overall deadline for all
# downloads is ota.deadline's (ota.updater uses it at boot): a Download made
# while one runs checks it.
#
# What a plain download (one 200 answer framed by Content-Length, never cut
# or redirected) does not need is in ota.http_extra: redirects, chunked
# framing, Range requests and their 206 answers, resuming. It is loaded
# (by _extra) the first time one of them happens, so a board that never
# needs them does not give them heap. Imports run one way: ota.checkin and
# ota.manifest import this module; it loads ota.http_extra, which never
# imports it (what both need, URLs, is ota.url's); it never imports
# ota.deadline.
#
# Errors are ota.OTAError with the esp_err_t codes of docs/API.md.
import errno
import socket
import sys

from ota import const, OTAError
from ota.url import parse_url

# esp_err_t values (as in ota/__init__.py), inlined by const(): names
# imported from ota would each take a slot of this module's dict.
_FAIL = const(-1)
_INVALID_ARG = const(0x102)
_INVALID_STATE = const(0x103)
_TIMEOUT = const(0x107)
_INVALID_RESPONSE = const(0x108)
_MAX_REDIRECT = const(0x7001)
_CONNECT = const(0x7002)
_FETCH_HEADER = const(0x7004)
_NOT_MODIFIED = const(0x7009)
_INCOMPLETE_DATA = const(0x700C)

# Texts of its failures: numbers into ota.texts.TEXTS (error texts load
# only when a failure is shown).
_T_IDLE = const(15)
_T_HEAD_LONG = const(16)
_T_REDIRECTS = const(17)
_T_CLEN = const(18)
_T_CHANGED = const(19)
_T_NO_RANGE = const(20)
_T_NOT_MODIFIED = const(21)
_T_STATUS = const(22)
_T_HEAD = const(23)
_T_STATUS_LINE = const(24)
_T_NO_RESPONSE = const(25)
_T_HTTP = const(26)
_T_HTTPS = const(27)
_T_CONNECT = const(28)

_MAX_REDIRECTS = const(10)
_MAX_LINE = const(4096)  # longest head or chunk-size line accepted
_MAX_HEAD = const(8192)  # longest response head (and chunked trailers) accepted

# States (explicit, as in esp_https_ota.c).
_IDLE = const(0)  # not started, or closed, or failed
_BODY = const(1)  # a response head is read; its body, or the next request, follows
_DONE = const(2)  # the whole entity was delivered; the connection is closed

# Body framing (_chunk); _left counts the bytes to go in the body or chunk.
_PLAIN = const(0)  # Content-Length (or a Content-Range); _left -1: until EOF.
#                    Also after the last chunk of a chunked body.
_CHUNKED = const(1)  # chunked: the first chunk-size line is due (ota.http_extra
#                      decodes the framing and has the other states)

# Chunk-size lines (and head lines where the socket has no readline, or
# past its first 128 bytes: _headline) are read a byte at a time into _B1
# and collected in _LINE (grown for a longer line, up to _MAX_LINE). Module
# buffers rather than attributes: a line is read whole within one call, so
# two Download objects never use them at once; and with these two fewer
# attributes a Download's table of them stays one size smaller.
_LINE = bytearray(128)
_B1 = bytearray(1)


def _fault(e):
    # The error code a failed read or connection means. CPython raises
    # socket.timeout (no errno); MicroPython OSError(ETIMEDOUT), or EAGAIN on
    # ports where a socket's timeout runs out that way.
    if isinstance(e, getattr(socket, "timeout", ())) or \
            (e.args and e.args[0] in (errno.ETIMEDOUT, errno.EAGAIN)):
        return _TIMEOUT
    return _INCOMPLETE_DATA


class Download:
    def __init__(self, url, cert_der=None, headers=None, timeout_ms=10000,
                 allow_http=False, range_size=None, retries=3):
        # The URL is checked by the first request, before any connection.
        self.url = url
        # The SSLContext that verifies the server, made now rather than at
        # the first connection: its block (3 KiB in one piece on the unix
        # port) comes before the firmware target's sector buffer and
        # before the garbage of connecting.
        self._tls = None
        if cert_der:
            from ota.certs import context, der_certs
            self._tls = context(der_certs(bytes(cert_der)))
            # Its code is done with: over HTTPS it left no 4 KiB in one
            # piece for the sector buffer in heaps up to 4 KiB larger
            # (bench_ota.py, board modules frozen).
            from ota import _unload
            _unload("certs")
        self._headers = headers or {}
        self._timeout = timeout_ms / 1000
        self._allow_http = allow_http
        self._range = range_size
        self._retries = retries
        self.size = -1
        self.offset = 0
        self.etag = None
        self.failure = None     # the OTAError readinto() raised, for ota.client
        self._state = _IDLE
        self._sock = self._rd = None
        self._left = 0
        self._chunk = _PLAIN
        self._keep = False  # the connection may carry the next request
        self._tries = 0
        # The overall deadline (ota.deadline) if one runs: looked up, not
        # imported, so that a board that never sets one does not load it.
        d = sys.modules.get("ota.deadline")
        self._deadline = d if d and d.running() else None

    def start(self, offset=0, etag=None):
        # The first request (or a restart from a journal). With offset > 0, a
        # 200 answer means "start over": self.offset becomes 0.
        self.close()
        self.offset = offset
        self.etag = etag
        self.size = -1
        self._tries = 0
        self.failure = None
        try:
            self._open(True)
        except OTAError:
            self.close()
            raise

    def readinto(self, mv):
        # At most one body read from the socket per call; returns n > 0, or 0
        # once the entity is complete. The end of a Range window, a cut or a
        # stall opens the next request here, transparently (_read).
        #
        # The hot path: a read the body (or the chunk) holds in full, in
        # few steps (_left > 0 only while a body is read: close() zeroes
        # it). Its frame is on the heap (a try and four names are too many
        # for the C stack; the failure's code needs the error).
        want = len(mv)
        if want <= self._left:
            try:
                n = self._rd(mv, want)
            except OSError as e:
                return self._read(mv, e)
            if n:
                self.offset += n
                self._left -= n
                self._tries = 0
                return n
        return self._read(mv, None)

    def _read(self, mv, err):
        # readinto() for the rest: err, the failure of its read; the first
        # chunk-size line, a body framed by EOF, a short read, the end of a
        # response, resuming.
        try:
            if err:     # a cut or stall: ask for the rest (ota.http_extra)
                _extra().resume(self, _fault(err))
            while self._state == _BODY:
                try:
                    # How many bytes this read may ask for; 0: this
                    # response's body is done. A chunk-size line first when
                    # one is due.
                    if self._chunk and not self._left:
                        _extra().chunk_head(self, _LINE)
                    want = len(mv)
                    if 0 <= self._left < want:
                        want = self._left
                    if want:
                        n = self._rd(mv, want)
                        if n:
                            self.offset += n
                            if self._left > 0:
                                self._left -= n
                            self._tries = 0
                            return n
                        if self._left >= 0 or self._chunk:
                            raise OSError(errno.ECONNRESET)  # closed early
                        self.size = self.offset  # a body framed by EOF ended
                    if self.size < 0 or self.offset >= self.size:
                        self.close()
                        self._state = _DONE
                    else:
                        _extra().resume(self, None)  # the next window, or the rest
                except OSError as e:
                    _extra().resume(self, _fault(e))
        except OTAError as e:
            self.close()
            self.failure = e
            raise
        if self._state == _DONE:
            return 0
        raise OTAError(_INVALID_STATE, (_T_IDLE,))

    def close(self):
        # Also between requests (redirects, resumes): the next request sets
        # the state again.
        s = self._sock
        self._sock = self._rd = None
        self._keep = False
        self._state = _IDLE
        self._left = 0
        if s:
            try:
                s.close()
            except OSError:
                pass

    def _readline(self, limit=_MAX_LINE, n=0):
        # One line into _LINE (CRLF stripped) by one-byte reads: heads and
        # chunk-size lines only, never body data. Returns its length. More
        # than `limit` bytes before the LF (what is left of a head's 8 KiB)
        # or than _MAX_LINE: a server that would keep us reading forever.
        # n: bytes of the line already in _LINE (_headline).
        line = _LINE
        b1 = _B1
        while True:
            if not self._rd(b1, 1):
                raise OSError(errno.ECONNRESET)  # closed early
            if b1[0] == 0x0A:
                return n - 1 if n and line[n - 1] == 0x0D else n
            if n >= limit or n >= _MAX_LINE:
                raise OTAError(_FETCH_HEADER, (_T_HEAD_LONG,))
            if n == len(line):
                line.extend(bytes(n))
            line[n] = b1[0]
            n += 1

    def _headline(self, limit):
        # One line of a response head (CRLF stripped), as _readline bounds
        # it, read by the socket's own readline where it has one (a
        # MicroPython stream; not under a deadline, whose reads each stop
        # at it): the same one-byte reads without a Python step for each.
        # readline(k) allocates k bytes at once: it is asked for at most
        # 128, and a longer line goes on in _readline.
        rl = self._deadline is None and getattr(self._sock, "readline", None)
        if not rl:
            return _LINE[:self._readline(limit)]
        k = limit if limit < 127 else 127
        line = rl((k if k > 0 else 0) + 1)
        m = len(line) if line else 0
        if m and line[m - 1] == 0x0A:
            m -= 1
            return line[:m - 1] if m and line[m - 1] == 0x0D else line[:m]
        if m > k:
            if m > limit:
                raise OTAError(_FETCH_HEADER, (_T_HEAD_LONG,))
            _LINE[:m] = line
            return _LINE[:self._readline(limit, m)]
        # The end of the stream, or a stall (readline returns what came):
        # one more read tells which.
        if not self._rd(_B1, 1):
            raise OSError(errno.ECONNRESET)  # closed early
        raise OSError(errno.ETIMEDOUT)

    # -- requests -------------------------------------------------------------

    def _open(self, first):
        # Request the entity from self.offset, follow redirects, read the head
        # and check it continues what was delivered. first: the start()
        # request, where a 200 to a Range request means "start over"; later,
        # a 200 (If-Range failed) means the image changed under us.
        url = self.url
        for _ in range(_MAX_REDIRECTS + 1):
            status, h = self._exchange(url)
            if status not in (301, 302, 303, 307, 308) or "location" not in h:
                break
            url = _extra().redirect(self, url, h["location"])
            self.close()
        else:
            raise OTAError(_MAX_REDIRECT, (_T_REDIRECTS, _MAX_REDIRECTS))
        self.url = url
        etag = h.get("etag")
        changed = self.etag and etag and etag != self.etag
        clen = h.get("content-length")
        # bytes.isdigit(): ASCII digits only (CPython's str.isdigit() also
        # takes "²", which int() refuses)
        if clen and not clen.encode().isdigit():
            raise OTAError(_INVALID_RESPONSE, (_T_CLEN,))
        left = int(clen) if clen else -1
        if status == 200 and (first or not self.offset):
            self.offset = 0
            self.size = left
            self.etag = etag
        elif status == 206:
            left = _extra().partial(self, h.get("content-range", ""), left, changed)
            self.etag = etag or self.etag
        elif status == 200:
            raise OTAError(_INVALID_RESPONSE, (_T_CHANGED if changed else _T_NO_RANGE,))
        elif status == 304:
            raise OTAError(_NOT_MODIFIED, (_T_NOT_MODIFIED,))
        else:
            raise OTAError(_FAIL, (_T_STATUS, status, url), status)
        chunked = h.get("transfer-encoding", "").lower().endswith("chunked")
        self._chunk = _CHUNKED if chunked else _PLAIN
        self._left = 0 if chunked else left
        self._state = _BODY

    def _exchange(self, url):
        # One GET and the head of its answer, on the kept-alive connection
        # if the server has not closed it meanwhile, else on a new one.
        # -> (status, {header: value}) for the headers this client uses
        # (names in lower case).
        scheme, host, port, path = parse_url(url)
        if ":" in host:
            host = "[%s]" % host
        if port != (443 if scheme == "https" else 80):
            host += ":%d" % port
        req = "GET %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: micropython-ota\r\n" % (path, host)
        if self.offset or self._range:      # a resume, or a Range window
            req += _extra().range_lines(self)
        if not self._range:
            req += "Connection: close\r\n"
        for k in self._headers:
            req += "%s: %s\r\n" % (k, self._headers[k])
        req = (req + "\r\n").encode()
        fresh = not (self._sock and self._keep)
        while True:
            if fresh:
                self._connect(url)
            try:
                self._sock.sendall(req)
                status = None
                h = {}
                left = _MAX_HEAD
                while True:
                    line = self._headline(left)
                    n = len(line)
                    left -= n + 2
                    if status is not None and not n:
                        break
                    try:
                        line = line.decode()
                    except UnicodeError:
                        raise OTAError(_INVALID_RESPONSE, (_T_HEAD,))
                    if status is not None:
                        i = line.find(":")
                        name = line[:i].strip().lower()
                        if name in ("content-length", "content-range", "etag", "location",
                                    "transfer-encoding", "connection"):  # the ones used here
                            h[name] = line[i + 1:].strip()
                        continue
                    if not line.startswith("HTTP/1.") or not line[9:12].encode().isdigit():
                        raise OTAError(_INVALID_RESPONSE, (_T_STATUS_LINE,))
                    status = int(line[9:12])
                    h["connection"] = "keep-alive" if line[7] == "1" else "close"
                break
            except OSError as e:
                if fresh:
                    raise OTAError(_TIMEOUT if _fault(e) == _TIMEOUT else _CONNECT,
                                   (_T_NO_RESPONSE, url, e))
            except OTAError:
                if fresh:
                    raise
            fresh = True  # the kept connection was closed meanwhile
        # Only Range windows reuse a connection, and only one whose body
        # framing says where the next answer starts.
        self._keep = self._range and "close" not in h["connection"].lower() and \
            ("content-length" in h or "transfer-encoding" in h)
        return status, h

    def _connect(self, url):
        self.close()
        scheme, host, port, _ = parse_url(url)
        # Also where a redirect leads: plain http only when allowed, https
        # only with the CA to check it.
        if scheme == "http" and not self._allow_http:
            raise OTAError(_INVALID_ARG, (_T_HTTP,))
        if scheme == "https" and not self._tls:
            raise OTAError(_INVALID_ARG, (_T_HTTPS,))
        t = self._timeout
        d = self._deadline
        if d:
            try:
                t = min(t, d.left() / 1000)     # connect within what is left
            except OTAError:
                self._retries = 0   # past the deadline no resume attempt is worth making
                raise
        sock = None
        try:
            addrs = socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM)
            for ai in addrs:  # e.g. ::1 then 127.0.0.1 for "localhost"
                sock = socket.socket(ai[0], ai[1], ai[2])
                sock.settimeout(t)
                try:
                    sock.connect(ai[-1])
                    break
                except OSError:
                    sock.close()
                    sock = None
                    if ai is addrs[-1]:
                        raise
            raw = sock
            if scheme == "https":
                sock = self._tls.wrap_socket(sock, server_hostname=host)
        except (OSError, ValueError) as e:
            # ValueError: how MicroPython reports a rejected certificate.
            if sock:
                sock.close()
            raise OTAError(_CONNECT, (_T_CONNECT, host, port, e))
        self._sock = sock
        # MicroPython streams: readinto(buf, n) fills n bytes (fewer only at
        # EOF) and allocates nothing. CPython sockets: recv_into(buf, n).
        self._rd = getattr(sock, "readinto", None) or sock.recv_into
        if d:   # reads take what has arrived, never past the deadline
            self._rd = d.reader(sock, raw, self._rd, self._timeout)


def _extra():
    # ota.http_extra, loaded the first time a download needs it.
    import ota.http_extra
    return ota.http_extra
