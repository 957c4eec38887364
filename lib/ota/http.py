# ota.http: the HTTP/1.1 stream an image is downloaded through.
#
# Why not micropython-lib `requests`: the version frozen into current firmware
# (0.10.x, v1.25-v1.28) speaks HTTP/1.0, reads the body to EOF ignoring
# Content-Length, rejects chunked bodies, crashes on relative redirects and
# hard-codes CERT_NONE, so it can neither verify the server nor resume a cut
# download. This client is small and does what an OTA stream needs:
#
# * TLS that verifies: SSLContext(PROTOCOL_TLS_CLIENT), CERT_REQUIRED,
#   server_hostname, the CA loaded as DER (mbedtls on the board takes DER;
#   PEM is converted by pem_to_der());
# * bodies bounded by Content-Length or chunked framing, read with
#   readinto(buf, n) straight into the caller's buffer: nothing is allocated
#   per read;
# * redirects (absolute and relative, at most 10, as esp_http_client);
# * transparent resume of a cut or stalled body with Range + If-Range, and
#   Range windows of a fixed size (esp_https_ota's partial_http_download),
#   on one kept-alive connection where the server allows it.
#
# Errors are ota.OTAError with the esp_err_t codes of DESIGN.md.
import binascii
import errno
import socket
import time

from ota import (OTAError, ESP_FAIL, ESP_ERR_INVALID_ARG, ESP_ERR_INVALID_STATE,
                 ESP_ERR_INVALID_RESPONSE, ESP_ERR_TIMEOUT, ESP_ERR_HTTP_CONNECT,
                 ESP_ERR_HTTP_MAX_REDIRECT, ESP_ERR_HTTP_NOT_MODIFIED,
                 ESP_ERR_HTTP_INCOMPLETE_DATA)

try:
    import tls as _tls  # MicroPython: load_verify_locations(cadata) is positional
    _MPY_TLS = True
except ImportError:
    import ssl as _tls  # CPython
    _MPY_TLS = False

# CPython raises socket.timeout (TimeoutError, no errno); MicroPython raises
# OSError(ETIMEDOUT), or EAGAIN from a socket whose timeout ran out.
_TIMEOUT_TYPE = getattr(socket, "timeout", ())
_TIMEOUT_ERRNOS = (errno.ETIMEDOUT, errno.EAGAIN)

MAX_REDIRECTS = 10
_BACKOFF_MS = 100  # first resume waits this long, then twice as long each time
_MAX_LINE = 4096  # longest status/header/chunk-size line accepted


def pem_to_der(pem):
    # CA certificate(s) as PEM (str or bytes) or DER bytes -> DER bytes. Several
    # PEM certificates give their DER forms one after another; Download loads
    # each one (mbedtls would take only the first of a concatenation).
    if isinstance(pem, str):
        pem = pem.encode()
    pem = bytes(pem)
    if b"-----BEGIN" not in pem:
        return pem
    out = []
    pos = 0
    while True:
        a = pem.find(b"-----BEGIN CERTIFICATE-----", pos)
        if a < 0:
            break
        a += 27
        b = pem.find(b"-----END", a)
        if b < 0:
            break
        out.append(binascii.a2b_base64(pem[a:b]))
        pos = b + 8
    if not out:
        raise OTAError(ESP_ERR_INVALID_ARG, "no CERTIFICATE block in cert_pem")
    return b"".join(out)


def der_certs(der):
    # Split concatenated DER certificates (each one ASN.1 SEQUENCE).
    certs = []
    i = 0
    while i < len(der):
        if der[i] != 0x30 or i + 2 > len(der):
            raise OTAError(ESP_ERR_INVALID_ARG, "cert_pem is neither PEM nor DER")
        n = der[i + 1]
        head = 2
        if n & 0x80:
            head += n & 0x7F
            if i + head > len(der):
                raise OTAError(ESP_ERR_INVALID_ARG, "truncated DER certificate")
            n = 0
            for k in range(i + 2, i + head):
                n = (n << 8) | der[k]
        end = i + head + n
        if end > len(der):
            raise OTAError(ESP_ERR_INVALID_ARG, "truncated DER certificate")
        certs.append(der[i:end])
        i = end
    if not certs:
        raise OTAError(ESP_ERR_INVALID_ARG, "empty certificate")
    return certs


def parse_url(url):
    # -> (scheme, host, port, path). Host is bare (no [] for IPv6).
    i = url.find("://")
    if i < 0:
        raise OTAError(ESP_ERR_INVALID_ARG, "not an absolute URL: %s" % url)
    scheme = url[:i].lower()
    if scheme not in ("http", "https"):
        raise OTAError(ESP_ERR_INVALID_ARG, "unsupported scheme: %s" % scheme)
    rest = url[i + 3:]
    j = rest.find("#")
    if j >= 0:
        rest = rest[:j]
    j = rest.find("/")
    q = rest.find("?")
    if j < 0 or 0 <= q < j:
        j = q
    hostport, path = (rest, "/") if j < 0 else (rest[:j], rest[j:])
    if path[0] == "?":
        path = "/" + path
    if "@" in hostport:
        raise OTAError(ESP_ERR_INVALID_ARG, "credentials in URL: pass an Authorization header")
    port = 443 if scheme == "https" else 80
    if hostport.startswith("["):
        k = hostport.find("]")
        host = hostport[1:k]
        tail = hostport[k + 1:]
    else:
        k = hostport.rfind(":")
        host, tail = (hostport, "") if k < 0 else (hostport[:k], hostport[k:])
    if tail:
        if tail[0] != ":" or not tail[1:].isdigit():
            raise OTAError(ESP_ERR_INVALID_ARG, "bad port in %s" % url)
        port = int(tail[1:])
    if not host:
        raise OTAError(ESP_ERR_INVALID_ARG, "no host in %s" % url)
    return scheme, host, port, path


def join_url(base, loc):
    # Resolve a Location header against the URL that answered (RFC 3986 5.2,
    # enough of it for redirects: scheme-relative, absolute-path, relative
    # path with ./ and ../, query-only).
    if "://" in loc[:12]:
        return loc
    scheme, host, port, path = parse_url(base)
    if loc.startswith("//"):
        return scheme + ":" + loc
    i = base.find("/", base.find("://") + 3)
    origin = base if i < 0 else base[:i]
    if i < 0 and "?" in origin:
        origin = origin[:origin.find("?")]
    if loc.startswith("/"):
        return origin + _dots(loc)
    path = path.split("?")[0]
    if loc.startswith("?"):
        return origin + path + loc
    return origin + _dots(path[:path.rfind("/") + 1] + loc)


def _dots(path):
    query = ""
    i = path.find("?")
    if i >= 0:
        path, query = path[:i], path[i:]
    out = []
    parts = path.split("/")
    for p in parts[1:]:
        if p == "..":
            if out:
                out.pop()
        elif p != ".":
            out.append(p)
    if parts[-1] in (".", ".."):
        out.append("")
    return "/" + "/".join(out) + query


def _host_header(host, port, scheme):
    h = "[%s]" % host if ":" in host else host
    if port != (443 if scheme == "https" else 80):
        h += ":%d" % port
    return h


def _strong(etag):
    return etag if etag and not etag.startswith("W/") else None


def _sleep_ms(ms):
    if hasattr(time, "sleep_ms"):
        time.sleep_ms(ms)
    else:
        time.sleep(ms / 1000)


class _Cut(Exception):
    # The connection ended before the framing said the body was complete.
    pass


# Download states (explicit, as in esp_https_ota.c).
_IDLE = 0  # not started, or closed
_BODY = 1  # a response head is read; its body (or the next request) streams
_DONE = 2  # the whole entity was delivered; the connection is closed

# Chunked framing of the current body (_chunk).
_PLAIN = 0  # not chunked: _left is bytes to go, -1 = until EOF
_SIZE = 1  # chunked: the first chunk-size line is due
_CRLF = 2  # chunked: when _left hits 0, CRLF then the next size line are due
_LAST = 3  # chunked: the last chunk and the trailers are read


class Download:
    def __init__(self, url, cert_der=None, headers=None, timeout_ms=10000,
                 allow_http=False, range_size=None, retries=3):
        scheme = parse_url(url)[0]
        if scheme == "http" and not allow_http:
            raise OTAError(ESP_ERR_INVALID_ARG, "http:// refused: pass allow_http=True")
        if scheme == "https" and not cert_der:
            raise OTAError(ESP_ERR_INVALID_ARG, "https:// needs cert_pem to verify the server")
        if range_size is not None and range_size < 1:
            raise OTAError(ESP_ERR_INVALID_ARG, "range_size must be positive")
        self._origin = self.url = url
        self._certs = der_certs(bytes(cert_der)) if cert_der else None
        self._ctx = None
        self._headers = headers or {}
        self._timeout = timeout_ms / 1000
        self._allow_http = allow_http
        self._range = range_size
        self._retries = retries
        self.size = -1
        self.offset = 0
        self.etag = None
        self.http_status = None
        self._state = _IDLE
        self._sock = None
        self._rd = None
        self._left = 0
        self._chunk = _PLAIN
        self._keep = False  # the connection may carry the next request
        self._tries = 0
        self._line = bytearray(128)
        self._b1 = bytearray(1)

    # -- public -----------------------------------------------------------

    def start(self, offset=0, etag=None):
        # The first request (or a restart from a journal). With offset > 0 a
        # 200 answer means "start over": self.offset becomes 0.
        self.close()
        self.url = self._origin
        self.offset = offset
        self.etag = etag
        self.size = -1
        self._tries = 0
        self._open(True)

    def readinto(self, mv):
        # At most one body read from the socket per call; returns n > 0, or 0
        # once the entity is complete. The end of a Range window, a cut or a
        # stall opens the next request here, transparently.
        try:
            while self._state == _BODY:
                try:
                    want = self._want(len(mv))
                    if want:
                        n = self._rd(mv, want)
                        if n:
                            self.offset += n
                            if self._left > 0:
                                self._left -= n
                            self._tries = 0
                            return n
                        if self._left >= 0 or self._chunk:
                            raise _Cut()
                        self.size = self.offset  # a body read to EOF ended here
                        self._finish()
                    elif self.size < 0 or self.offset >= self.size:
                        self._finish()
                    else:
                        self._next()
                except (OSError, _Cut) as e:
                    self._recover(self._fault_code(e))
        except OTAError:
            self.close()
            raise
        if self._state == _DONE:
            return 0
        raise OTAError(ESP_ERR_INVALID_STATE, "download not started or closed")

    def close(self):
        self._drop()
        self._state = _IDLE

    # -- body framing -----------------------------------------------------

    def _want(self, n):
        # How many bytes the next body read may ask for; 0 = this response's
        # body is done. Reads chunk-size lines when they are due.
        if self._chunk and self._chunk != _LAST and not self._left:
            self._chunk_head()
        if self._left < 0:
            return n
        return n if n < self._left else self._left

    def _chunk_head(self):
        # [CRLF after the previous chunk's data] "hex-size[;ext]" CRLF; size 0
        # is the last chunk: trailer lines up to an empty one follow.
        if self._chunk == _CRLF and self._readline():
            raise OTAError(ESP_ERR_INVALID_RESPONSE, "chunk data not followed by CRLF")
        n = self._readline()
        line = self._line
        size = 0
        i = 0
        while i < n and line[i] not in b"; \t":
            d = line[i] - 0x30 if line[i] <= 0x39 else (line[i] | 0x20) - 0x57
            if d < 0 or d > 15 or (line[i] > 0x39 and d < 10):
                raise OTAError(ESP_ERR_INVALID_RESPONSE, "bad chunk-size line")
            size = size * 16 + d
            i += 1
        if not i:
            raise OTAError(ESP_ERR_INVALID_RESPONSE, "bad chunk-size line")
        self._left = size
        self._chunk = _CRLF
        if not size:
            while self._readline():  # trailers
                pass
            self._chunk = _LAST

    def _readline(self):
        # One line into self._line (CRLF stripped) by single-byte reads: for
        # heads and chunk-size lines only, never body data. Returns its length.
        line = self._line
        b1 = self._b1
        n = 0
        while True:
            if not self._rd(b1, 1):
                raise _Cut()
            c = b1[0]
            if c == 0x0A:
                return n - 1 if n and line[n - 1] == 0x0D else n
            if n == len(line):
                if n >= _MAX_LINE:
                    raise OTAError(ESP_ERR_INVALID_RESPONSE, "header line too long")
                line.extend(bytes(n))
            line[n] = c
            n += 1

    # -- continuing a download ----------------------------------------------

    def _finish(self):
        self._drop()
        self._state = _DONE

    def _next(self):
        # This response ended before the entity: the next Range window (on
        # the same connection when kept alive), or the rest after a server
        # sent a shorter range than asked.
        if not self._keep:
            self._drop()
        try:
            self._open(False)
        except OTAError as e:
            if e.code not in (ESP_ERR_HTTP_CONNECT, ESP_ERR_TIMEOUT):
                raise
            self._recover(e.code)

    def _recover(self, code):
        # Resume after a cut or a stall: Range from self.offset with If-Range,
        # bounded attempts with back-off. The budget refills when bytes
        # arrive, so a long download survives many separate cuts, while one
        # that makes no progress gives up after `retries` attempts with the
        # code of the original fault.
        self._drop()
        while self._tries < self._retries:
            _sleep_ms(_BACKOFF_MS << self._tries)
            self._tries += 1
            try:
                self._open(False)
                return
            except OTAError as e:
                if e.code not in (ESP_ERR_HTTP_CONNECT, ESP_ERR_TIMEOUT):
                    raise
        raise OTAError(code, "gave up after %d resume attempts at byte %d of %d"
                       % (self._retries, self.offset, self.size))

    def _fault_code(self, e):
        if isinstance(e, _TIMEOUT_TYPE) or (isinstance(e, OSError) and e.args
                                            and e.args[0] in _TIMEOUT_ERRNOS):
            return ESP_ERR_TIMEOUT
        return ESP_ERR_HTTP_INCOMPLETE_DATA

    # -- requests -----------------------------------------------------------

    def _open(self, first):
        # Request the entity from self.offset, following redirects, and read
        # the head of the answer. first: the start() request, where a 200 to
        # a Range request means "start over"; later a 200 means the image
        # changed under us.
        url = self.url
        for _ in range(MAX_REDIRECTS + 1):
            status = self._request(url)
            if status not in (301, 302, 303, 307, 308):
                break
            if not self._loc:
                self._drop()
                raise OTAError(ESP_ERR_INVALID_RESPONSE, "redirect without Location")
            url = join_url(url, self._loc)
            self._drop()
        else:
            self._drop()
            raise OTAError(ESP_ERR_HTTP_MAX_REDIRECT, "more than %d redirects" % MAX_REDIRECTS)
        self.url = url
        if status == 200:
            self._accept_full(first)
        elif status == 206:
            self._accept_part()
        else:
            self._drop()
            if status == 304:
                raise OTAError(ESP_ERR_HTTP_NOT_MODIFIED, "304 Not Modified")
            raise OTAError(ESP_FAIL, "HTTP %d from %s" % (status, url), status)
        self._state = _BODY

    def _accept_full(self, first):
        if self.offset and not first:
            self._drop()
            if self.etag and self._etag and self._etag != self.etag:
                raise OTAError(ESP_ERR_INVALID_RESPONSE, "the image changed on the server")
            raise OTAError(ESP_ERR_INVALID_RESPONSE, "a resume was answered with the whole image")
        self.offset = 0
        self.size = self._len
        self.etag = self._etag
        self._body(self._len)

    def _accept_part(self):
        cr = self._crange or ""
        try:
            start = int(cr[cr.index(" ") + 1:cr.index("-")])
            end = int(cr[cr.index("-") + 1:cr.index("/")]) + 1
            total = cr[cr.index("/") + 1:]
            total = -1 if total == "*" else int(total)
        except ValueError:
            self._drop()
            raise OTAError(ESP_ERR_INVALID_RESPONSE, "bad Content-Range: %r" % cr)
        bad = None
        if start != self.offset or end <= start or self._len not in (-1, end - start):
            bad = "206 for bytes %d-%d when %d- was asked" % (start, end - 1, self.offset)
        elif (self.size >= 0 and total >= 0 and total != self.size) or \
                (self.etag and self._etag and self._etag != self.etag):
            bad = "the image changed on the server"
        if bad:
            self._drop()
            raise OTAError(ESP_ERR_INVALID_RESPONSE, bad)
        if total >= 0:
            self.size = total
        if self._etag:
            self.etag = self._etag
        self._body(end - start)

    def _body(self, length):
        self._chunk = _SIZE if self._te_chunked else _PLAIN
        self._left = 0 if self._te_chunked else length

    def _request(self, url):
        # One GET and the head of its answer, on the kept-alive connection
        # when there is one (the server may have closed it meanwhile: then
        # once more on a new one). Returns the status.
        if self._sock and self._keep:
            try:
                return self._exchange(url)
            except (OSError, _Cut, OTAError):
                self._drop()
        self._connect(url)
        try:
            return self._exchange(url)
        except (OSError, _Cut, OTAError) as e:
            self._drop()
            if isinstance(e, OTAError):
                raise
            if self._fault_code(e) == ESP_ERR_TIMEOUT:
                raise OTAError(ESP_ERR_TIMEOUT, "no answer from %s within timeout_ms" % url)
            raise OTAError(ESP_ERR_HTTP_CONNECT, "connection to %s lost: %r" % (url, e))

    def _exchange(self, url):
        scheme, host, port, path = parse_url(url)
        req = ["GET ", path, " HTTP/1.1\r\nHost: ", _host_header(host, port, scheme),
               "\r\nUser-Agent: micropython-ota\r\n"]
        if self.offset or self._range:
            last = str(self.offset + self._range - 1) if self._range else ""
            req.append("Range: bytes=%d-%s\r\n" % (self.offset, last))
            if _strong(self.etag):
                req.append("If-Range: %s\r\n" % self.etag)
        if not self._range:
            req.append("Connection: close\r\n")
        for k in self._headers:
            req.append("%s: %s\r\n" % (k, self._headers[k]))
        req.append("\r\n")
        self._sock.sendall("".join(req).encode())
        return self._head()

    def _head(self):
        # Status line and the headers this client uses; the rest are skipped.
        line = self._text(self._readline())
        if not line.startswith("HTTP/1.") or len(line) < 12 or not line[9:12].isdigit():
            raise OTAError(ESP_ERR_INVALID_RESPONSE, "bad status line: %r" % line[:40])
        status = self.http_status = int(line[9:12])
        keep = line[7] == "1"
        self._len = -1
        self._crange = self._etag = self._loc = None
        self._te_chunked = False
        while True:
            n = self._readline()
            if not n:
                break
            line = self._text(n)
            i = line.find(":")
            name = line[:i].strip().lower()
            value = line[i + 1:].strip()
            if name == "content-length":
                if not value.isdigit():
                    raise OTAError(ESP_ERR_INVALID_RESPONSE, "bad Content-Length: %r" % value)
                self._len = int(value)
            elif name == "content-range":
                self._crange = value
            elif name == "etag":
                self._etag = value
            elif name == "location":
                self._loc = value
            elif name == "transfer-encoding":
                self._te_chunked = value.lower().endswith("chunked")
            elif name == "connection":
                keep = "close" not in value.lower()
        # Only Range windows reuse a connection, and only one whose body
        # framing tells where the next answer starts.
        self._keep = bool(self._range) and keep and (self._len >= 0 or self._te_chunked)
        return status

    def _text(self, n):
        try:
            return self._line[:n].decode()
        except UnicodeError:
            raise OTAError(ESP_ERR_INVALID_RESPONSE, "non-text bytes in the response head")

    def _connect(self, url):
        self._drop()
        scheme, host, port, _ = parse_url(url)
        if scheme == "http" and not self._allow_http:
            raise OTAError(ESP_ERR_INVALID_ARG, "redirected to http:// without allow_http")
        if scheme == "https" and not self._certs:
            raise OTAError(ESP_ERR_INVALID_ARG, "redirected to https:// without cert_pem")
        sock = None
        try:
            err = OSError(errno.ENOENT)  # no address at all
            for af, typ, proto, _, addr in socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM):
                sock = socket.socket(af, typ, proto)
                sock.settimeout(self._timeout)
                try:
                    sock.connect(addr)
                    break
                except OSError as e:
                    sock.close()
                    sock, err = None, e
            if sock is None:
                raise err
            if scheme == "https":
                sock = self._tls_ctx().wrap_socket(sock, server_hostname=host)
        except (OSError, ValueError) as e:
            # ValueError: how MicroPython reports a rejected certificate.
            if sock:
                sock.close()
            raise OTAError(ESP_ERR_HTTP_CONNECT, "cannot connect to %s port %d: %r" % (host, port, e))
        self._sock = sock
        # MicroPython streams: readinto(buf, n) fills n bytes (fewer only at
        # EOF) and allocates nothing. CPython sockets: recv_into(buf, n).
        self._rd = getattr(sock, "readinto", None) or sock.recv_into

    def _drop(self):
        s = self._sock
        self._sock = self._rd = None
        self._keep = False
        if s:
            try:
                s.close()
            except OSError:
                pass

    def _tls_ctx(self):
        if self._ctx is None:
            ctx = _tls.SSLContext(_tls.PROTOCOL_TLS_CLIENT)
            ctx.verify_mode = _tls.CERT_REQUIRED
            for der in self._certs:
                # Each call adds one CA to the trust list, in mbedtls as in
                # OpenSSL; mbedtls would read only the first of a concatenation.
                if _MPY_TLS:
                    ctx.load_verify_locations(der)
                else:
                    ctx.load_verify_locations(cadata=der)
            self._ctx = ctx
        return self._ctx
