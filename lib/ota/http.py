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
#   pem_to_der() converts);
# * bodies framed by Content-Length or chunked encoding, read with
#   readinto(buf, n) straight into the caller's buffer: no allocation per read;
# * redirects, absolute and relative, at most 10 (as esp_http_client);
# * transparent resume of a cut or stalled body (Range + If-Range), and Range
#   windows of a fixed size (esp_https_ota's partial_http_download) on one
#   kept-alive connection where the server allows it.
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
    from micropython import const
except ImportError:  # CPython
    def const(x):
        return x

try:
    import tls as _tls  # MicroPython
except ImportError:
    import ssl as _tls  # CPython

_MAX_REDIRECTS = const(10)
_BACKOFF_MS = const(100)  # before the first resume attempt; doubles each time
_MAX_LINE = const(4096)  # longest head or chunk-size line accepted

# States (explicit, as in esp_https_ota.c).
_IDLE = const(0)  # not started, or closed, or failed
_BODY = const(1)  # a response head is read; its body, or the next request, follows
_DONE = const(2)  # the whole entity was delivered; the connection is closed

# Body framing (_chunk); _left counts the bytes to go in the body or chunk.
_PLAIN = const(0)  # Content-Length (or a Content-Range); _left -1: until EOF
_SIZE = const(1)  # chunked: the first chunk-size line is due
_CRLF = const(2)  # chunked: when _left is 0, CRLF and the next size line are due
_LAST = const(3)  # chunked: the last chunk and the trailers are read


def pem_to_der(pem):
    # CA certificate(s), PEM (str/bytes) or DER -> DER. Several PEM blocks
    # give their DER forms one after another; Download loads each.
    if isinstance(pem, str):
        pem = pem.encode()
    pem = bytes(pem)
    if b"-----BEGIN" not in pem:
        return pem
    der = b""
    try:
        for block in pem.split(b"-----BEGIN CERTIFICATE-----")[1:]:
            der += binascii.a2b_base64(block[:block.index(b"-----END")])
    except ValueError:  # no END line, or not base64
        der = b""
    if not der:
        raise OTAError(ESP_ERR_INVALID_ARG, "no certificate in cert_pem")
    return der


def der_certs(der):
    # Split concatenated DER certificates (ASN.1 SEQUENCEs): mbedtls would
    # read only the first of them from one load_verify_locations().
    certs = []
    while der:
        n = der[1] if len(der) > 1 and der[0] == 0x30 else -1
        head = 2
        if n >= 0x80:  # long form: the low bits count the length bytes
            head += n & 0x7F
            n = int.from_bytes(der[2:head], "big")
        if n < 0 or head + n > len(der):
            raise OTAError(ESP_ERR_INVALID_ARG, "cert_pem is neither PEM nor DER")
        certs.append(der[:head + n])
        der = der[head + n:]
    return certs


def _split(url):
    # "scheme://host:port/path?q#f" -> ("scheme://host:port", "/path?q")
    i = url.find("://") + 3
    j = len(url)
    for c in "/?#":
        k = url.find(c, i)
        if 0 <= k < j:
            j = k
    path = url[j:].split("#")[0]
    return url[:j], path if path.startswith("/") else "/" + path


def parse_url(url):
    # -> (scheme, host, port, path); host without the [] of an IPv6 literal.
    origin, path = _split(url)
    i = origin.find("://")
    scheme = origin[:i].lower()
    hostport = origin[i + 3:]
    try:
        if i < 0 or scheme not in ("http", "https") or "@" in hostport:
            raise ValueError
        port = 443 if scheme == "https" else 80
        k = hostport.rfind(":")
        if k > hostport.rfind("]"):
            port = int(hostport[k + 1:])
            hostport = hostport[:k]
        host = hostport.strip("[]")
        if not host:
            raise ValueError
    except ValueError:
        raise OTAError(ESP_ERR_INVALID_ARG, "bad URL " + url)
    return scheme, host, port, path


def join_url(base, loc):
    # A Location header resolved against the URL that sent it (RFC 3986 5.2:
    # absolute, scheme-relative, absolute-path, relative path, query). Dot
    # segments are left to the server, which normalizes them anyway.
    i = loc.find("://")
    if i > 0 and loc[:i].isalpha():
        return loc
    origin, path = _split(base)
    if loc.startswith("//"):
        return origin[:origin.find(":") + 1] + loc
    path = path.split("?")[0]
    if loc.startswith("?"):
        return origin + path + loc
    if loc.startswith("/"):
        return origin + loc
    return origin + path[:path.rfind("/") + 1] + loc


def _fault(e):
    # The error code a failed read or connection means. CPython raises
    # socket.timeout (no errno); MicroPython OSError(ETIMEDOUT), or EAGAIN on
    # ports where a socket's timeout runs out that way.
    if isinstance(e, getattr(socket, "timeout", ())) or \
            (e.args and e.args[0] in (errno.ETIMEDOUT, errno.EAGAIN)):
        return ESP_ERR_TIMEOUT
    return ESP_ERR_HTTP_INCOMPLETE_DATA


class Download:
    def __init__(self, url, cert_der=None, headers=None, timeout_ms=10000,
                 allow_http=False, range_size=None, retries=3):
        scheme = parse_url(url)[0]
        if scheme == "http" and not allow_http:
            raise OTAError(ESP_ERR_INVALID_ARG, "http:// refused without allow_http=True")
        if scheme == "https" and not cert_der:
            raise OTAError(ESP_ERR_INVALID_ARG, "https:// needs cert_pem")
        if range_size is not None and range_size < 1:
            raise OTAError(ESP_ERR_INVALID_ARG, "range_size must be > 0")
        self.url = url
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
        self._state = _IDLE
        self._sock = self._rd = None
        self._left = 0
        self._chunk = _PLAIN
        self._keep = False  # the connection may carry the next request
        self._tries = 0
        self._line = bytearray(128)
        self._b1 = bytearray(1)

    def start(self, offset=0, etag=None):
        # The first request (or a restart from a journal). With offset > 0, a
        # 200 answer means "start over": self.offset becomes 0.
        self.close()
        self.offset = offset
        self.etag = etag
        self.size = -1
        self._tries = 0
        try:
            self._open(True)
        except OTAError:
            self.close()
            raise

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
                            raise OSError(errno.ECONNRESET)  # closed early
                        self.size = self.offset  # a body framed by EOF ended
                    if self.size < 0 or self.offset >= self.size:
                        self._drop()
                        self._state = _DONE
                    else:
                        self._resume(None)
                except OSError as e:
                    self._resume(_fault(e))
        except OTAError:
            self.close()
            raise
        if self._state == _DONE:
            return 0
        raise OTAError(ESP_ERR_INVALID_STATE, "no download in progress")

    def close(self):
        self._drop()
        self._state = _IDLE

    # -- body framing -----------------------------------------------------

    def _want(self, n):
        # How many bytes the next body read may ask for; 0: this response's
        # body is done. Reads a chunk-size line when one is due.
        if self._chunk and self._chunk != _LAST and not self._left:
            self._chunk_head()
        return n if self._left < 0 or n < self._left else self._left

    def _chunk_head(self):
        # [CRLF ending the previous chunk] "hex-size[;ext]" CRLF; size 0 is the
        # last chunk, and trailer lines up to an empty one follow.
        if self._chunk == _CRLF and self._readline():
            n = 0  # data where the CRLF should be
        else:
            n = self._readline()
        line = self._line
        size = i = 0
        while i < n and line[i] not in b"; \t":
            d = line[i] - 0x30 if line[i] <= 0x39 else (line[i] | 0x20) - 0x57
            if d < 0 or d > 15 or (line[i] > 0x39 and d < 10):
                break
            size = size * 16 + d
            i += 1
        if not i or (i < n and line[i] not in b"; \t"):
            raise OTAError(ESP_ERR_INVALID_RESPONSE, "bad chunk")
        self._left = size
        self._chunk = _CRLF
        if not size:
            while self._readline():  # trailers
                pass
            self._chunk = _LAST

    def _readline(self):
        # One line into self._line (CRLF stripped) by one-byte reads: heads
        # and chunk-size lines only, never body data. Returns its length.
        line = self._line
        b1 = self._b1
        n = 0
        while True:
            if not self._rd(b1, 1):
                raise OSError(errno.ECONNRESET)  # closed early
            if b1[0] == 0x0A:
                return n - 1 if n and line[n - 1] == 0x0D else n
            if n == len(line):
                if n >= _MAX_LINE:
                    raise OTAError(ESP_ERR_INVALID_RESPONSE, "line too long")
                line.extend(bytes(n))
            line[n] = b1[0]
            n += 1

    # -- requests -------------------------------------------------------------

    def _resume(self, code):
        # Ask for the rest from self.offset. code None: the response ended
        # before the entity (the next Range window, or a server that sent
        # less than asked): at once, on the kept-alive connection if any.
        # Otherwise a cut or stall (code says which): Range with If-Range,
        # bounded attempts with back-off; the budget refills when bytes
        # arrive, so a long download survives many separate cuts, and one
        # that makes no progress fails with the code of its first fault.
        while True:
            if code:
                self._drop()
                if self._tries >= self._retries:
                    raise OTAError(code, "gave up after %d resume attempts at byte %d of %d"
                                   % (self._retries, self.offset, self.size))
                time.sleep(_BACKOFF_MS / 1000 * (1 << self._tries))
                self._tries += 1
            elif not self._keep:
                self._drop()
            try:
                return self._open(False)
            except OTAError as e:
                if e.code not in (ESP_ERR_HTTP_CONNECT, ESP_ERR_TIMEOUT):  # worth a retry
                    raise
                code = code or e.code

    def _open(self, first):
        # Request the entity from self.offset, follow redirects, read the head
        # and check it continues what was delivered. first: the start()
        # request, where a 200 to a Range request means "start over"; later,
        # a 200 (If-Range failed) means the image changed under us.
        url = self.url
        for _ in range(_MAX_REDIRECTS + 1):
            status, h = self._request(url)
            if status not in (301, 302, 303, 307, 308) or "location" not in h:
                break
            url = join_url(url, h["location"])
            self._drop()
        else:
            raise OTAError(ESP_ERR_HTTP_MAX_REDIRECT, "more than %d redirects" % _MAX_REDIRECTS)
        self.url = url
        etag = h.get("etag")
        changed = self.etag and etag and etag != self.etag
        clen = h.get("content-length")
        if clen and not clen.isdigit():
            raise OTAError(ESP_ERR_INVALID_RESPONSE, "bad Content-Length")
        left = int(clen) if clen else -1
        if status == 200 and (first or not self.offset):
            self.offset = 0
            self.size = left
            self.etag = etag
        elif status == 206:
            cr = h.get("content-range", "")
            try:
                a = int(cr[cr.index(" ") + 1:cr.index("-")])
                left = int(cr[cr.index("-") + 1:cr.index("/")]) + 1 - a
                total = cr[cr.index("/") + 1:]
                total = -1 if total == "*" else int(total)
            except ValueError:
                a = -1
            if a != self.offset or left < 1 or (clen and int(clen) != left):
                raise OTAError(ESP_ERR_INVALID_RESPONSE, "206 not at byte %d: %s" % (self.offset, cr))
            if changed or (total >= 0 and self.size >= 0 and total != self.size):
                raise OTAError(ESP_ERR_INVALID_RESPONSE, "the image changed on the server")
            if total >= 0:
                self.size = total
            self.etag = etag or self.etag
        elif status == 200:
            raise OTAError(ESP_ERR_INVALID_RESPONSE, "the image changed on the server" if changed
                           else "the server ignored Range")
        elif status == 304:
            raise OTAError(ESP_ERR_HTTP_NOT_MODIFIED, "304 Not Modified")
        else:
            raise OTAError(ESP_FAIL, "HTTP %d from %s" % (status, url), status)
        chunked = h.get("transfer-encoding", "").lower().endswith("chunked")
        self._chunk = _SIZE if chunked else _PLAIN
        self._left = 0 if chunked else left
        self._state = _BODY

    def _request(self, url):
        # One GET and the head of its answer, on the kept-alive connection
        # if the server has not closed it meanwhile, else on a new one.
        if self._sock and self._keep:
            try:
                return self._exchange(url)
            except (OSError, OTAError):
                pass
        self._connect(url)
        try:
            return self._exchange(url)
        except OSError as e:
            raise OTAError(ESP_ERR_TIMEOUT if _fault(e) == ESP_ERR_TIMEOUT else ESP_ERR_HTTP_CONNECT,
                           "no response from %s: %r" % (url, e))

    def _exchange(self, url):
        # Send the GET; return (status, {header: value}) for the headers
        # this client uses (names in lower case).
        scheme, host, port, path = parse_url(url)
        if ":" in host:
            host = "[%s]" % host
        if port != (443 if scheme == "https" else 80):
            host += ":%d" % port
        req = "GET %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: micropython-ota\r\n" % (path, host)
        if self.offset or self._range:
            req += "Range: bytes=%d-%s\r\n" % (
                self.offset, self.offset + self._range - 1 if self._range else "")
            if self.etag and not self.etag.startswith("W/"):  # weak ones cannot
                req += "If-Range: %s\r\n" % self.etag
        if not self._range:
            req += "Connection: close\r\n"
        for k in self._headers:
            req += "%s: %s\r\n" % (k, self._headers[k])
        self._sock.sendall((req + "\r\n").encode())
        line = self._text()
        if not line.startswith("HTTP/1.") or not line[9:12].isdigit():
            raise OTAError(ESP_ERR_INVALID_RESPONSE, "bad status line")
        status = int(line[9:12])
        h = {"connection": "keep-alive" if line[7] == "1" else "close"}
        line = self._text()
        while line:
            i = line.find(":")
            name = line[:i].strip().lower()
            if name in ("content-length", "content-range", "etag", "location",
                        "transfer-encoding", "connection"):  # the ones used here
                h[name] = line[i + 1:].strip()
            line = self._text()
        # Only Range windows reuse a connection, and only one whose body
        # framing says where the next answer starts.
        self._keep = self._range and "close" not in h["connection"].lower() and \
            ("content-length" in h or "transfer-encoding" in h)
        return status, h

    def _text(self):
        n = self._readline()
        try:
            return self._line[:n].decode()
        except UnicodeError:
            raise OTAError(ESP_ERR_INVALID_RESPONSE, "bad head")

    def _connect(self, url):
        self._drop()
        scheme, host, port, _ = parse_url(url)
        if (scheme == "http" and not self._allow_http) or (scheme == "https" and not self._certs):
            raise OTAError(ESP_ERR_INVALID_ARG, "redirect to %s:// refused" % scheme)
        sock = None
        try:
            addrs = socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM)
            for ai in addrs:  # e.g. ::1 then 127.0.0.1 for "localhost"
                sock = socket.socket(ai[0], ai[1], ai[2])
                sock.settimeout(self._timeout)
                try:
                    sock.connect(ai[-1])
                    break
                except OSError:
                    sock.close()
                    sock = None
                    if ai is addrs[-1]:
                        raise
            if scheme == "https":
                if self._ctx is None:
                    ctx = _tls.SSLContext(_tls.PROTOCOL_TLS_CLIENT)
                    ctx.verify_mode = _tls.CERT_REQUIRED
                    for der in self._certs:  # each call adds a CA (mbedtls, OpenSSL)
                        if _tls.__name__ == "tls":  # MicroPython: positional only
                            ctx.load_verify_locations(der)
                        else:
                            ctx.load_verify_locations(cadata=der)
                    self._ctx = ctx
                sock = self._ctx.wrap_socket(sock, server_hostname=host)
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
