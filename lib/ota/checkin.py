# ota.checkin: talk to a campaign server (`otatool server`). ota.check() is
# check() here; the module is not called "check" because importing a
# submodule ota.check would replace the function ota.check by the module.
#
#   offer = ota.check("https://ota.example.com", TOKEN, cert_pem=CA)
#   if offer:   # {url, version, size, sha256, kind, campaign, compressed
#               #  [, wire_size][, manifest]}
#       ...ota.update(offer["url"], sha256=offer["sha256"], size=offer["size"], ...)
#       ota.checkin.report(server, TOKEN, offer["campaign"], "installed")
#
# `manifest`, when the admin uploaded one with the image, is the URL of its
# signed manifest: a board with a public key installs through it instead,
# ota.begin(offer["manifest"], public_key=KEY, ...) (see main.py).
#
# `compressed` (always in the offer; False unless the server says so): the
# url is a compressed update (docs/COMPRESSED.md) of `wire_size` bytes;
# `size` and `sha256` stay those of the image as installed, checked against
# the inflated bytes.
#
# The check-in says which version runs; the server alone decides whether an
# update is due, so a board never compares versions itself. The device token
# travels in a header (X-OTA-Token), not in the URL that proxies log, and
# never to another origin a redirect names (ota.http drops it there).
# Same transport as the image (ota.http): verified TLS, timeouts, no requests.
import json

from ota import OTAError, ESP_ERR_HTTP_CONNECT, ESP_ERR_INVALID_RESPONSE, ESP_FAIL
from ota.certs import pem_to_der
from ota.http import Download
from ota.url import parse_url
from ota.http_extra import read_body

_MAX_ANSWER = 1024  # a check answer is a few hundred bytes
_FIELDS = (("url", str), ("version", str), ("size", int), ("sha256", str),
           ("kind", str), ("campaign", int))


def check(server, token, cert_pem=None, version=None, timeout_ms=10000, allow_http=False):
    # -> the offer as a dict, or None when nothing is due (HTTP 204).
    build = None
    if version is None:
        from ota import running_app
        desc = running_app()
        version = desc["version"]
        build = "%s %s" % (desc.get("date", ""), desc.get("time", ""))
    query = "version=" + _quote(version)
    if build:
        query += "&build=" + _quote(build)
    chip = _chip()
    if chip:
        query += "&chip=" + chip
    dl = Download(_base(server) + "/ota/check?" + query,
                  cert_der=pem_to_der(cert_pem) if cert_pem else None,
                  headers={"X-OTA-Token": token}, timeout_ms=timeout_ms,
                  allow_http=allow_http, retries=0)
    try:
        try:
            dl.start()
        except OTAError as e:
            if e.http_status == 204:
                return None
            raise
        return _offer(_read_answer(dl))
    finally:
        dl.close()


def report(server, token, campaign, state, error=None, progress=None,
           cert_pem=None, timeout_ms=10000, allow_http=False):
    # Tell the server how the update of `campaign` goes. state: downloading,
    # installed (before the reboot into it), confirmed (after
    # ota.mark_app_valid()), rolled_back or failed (with `error`).
    body = json.dumps({"token": token, "campaign": campaign, "state": state,
                       "error": error, "progress": progress}).encode()
    post = _Post(_base(server) + "/ota/report",
                 cert_der=pem_to_der(cert_pem) if cert_pem else None,
                 timeout_ms=timeout_ms, allow_http=allow_http)
    status = post.send(body)
    if status != 204:
        raise OTAError(ESP_FAIL, "report: HTTP %d" % status, status)


def _base(server):
    return server[:-1] if server.endswith("/") else server


_UNRESERVED = tuple(b"-._~")    # with ASCII letters and digits (RFC 3986)


def _quote(s):
    # Percent-encoding of everything but RFC 3986 unreserved characters, by
    # bytes: each character made by chr() would be interned for good.
    out = bytearray()
    for b in s.encode():
        if 48 <= b <= 57 or 65 <= b <= 90 or 97 <= b <= 122 or b in _UNRESERVED:
            out.append(b)
        else:
            out += ("%%%02X" % b).encode()
    return out.decode()


def _chip():
    # "Generic ESP32S3 module with ESP32S3" -> "esp32s3"; None on the unix port.
    import sys
    m = getattr(sys.implementation, "_machine", "")
    i = m.rfind(" with ")
    return m[i + 6:].strip().lower() if i >= 0 else None


def _read_answer(dl):
    raw = read_body(dl, _MAX_ANSWER)
    if raw is None:
        raise OTAError(ESP_ERR_INVALID_RESPONSE, "check answer over %d bytes" % _MAX_ANSWER)
    return raw


def _offer(raw):
    try:
        offer = json.loads(raw)
    except (ValueError, RuntimeError):  # RuntimeError: nested too deep (CPython)
        offer = None
    if not isinstance(offer, dict):
        raise OTAError(ESP_ERR_INVALID_RESPONSE, "check answer is not a JSON object")
    for name, typ in _FIELDS:
        if not isinstance(offer.get(name), typ):
            raise OTAError(ESP_ERR_INVALID_RESPONSE, "check answer without %s" % name)
    if not isinstance(offer.get("manifest", ""), str):
        raise OTAError(ESP_ERR_INVALID_RESPONSE, "check answer: manifest is not a URL")
    z = offer.get("compressed", False)
    if not isinstance(z, bool) or z and not isinstance(offer.get("wire_size"), int):
        raise OTAError(ESP_ERR_INVALID_RESPONSE, "check answer: bad compressed or wire_size")
    offer["compressed"] = z
    return offer


class _Post(Download):
    # One POST with a small body over Download's connection (TLS with the CA,
    # timeouts, ESP_ERR_HTTP_CONNECT on failure); only the status line is
    # read. No redirects: the server that answered the check takes the report.
    def send(self, body):
        scheme, host, port, path = parse_url(self.url)
        if port != (443 if scheme == "https" else 80):
            host = "%s:%d" % ("[%s]" % host if ":" in host else host, port)
        self._connect(self.url)
        try:
            self._sock.sendall(("POST %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: micropython-ota\r\n"
                                "Content-Type: application/json\r\nContent-Length: %d\r\n"
                                "Connection: close\r\n\r\n" % (path, host, len(body))).encode() + body)
            line = bytearray(12)  # "HTTP/1.1 204"
            mv = memoryview(line)
            n = 0
            while n < 12:
                k = self._rd(mv[n:], 12 - n)
                if not k:
                    break
                n += k
        except OSError as e:
            raise OTAError(ESP_ERR_HTTP_CONNECT, "report to %s failed: %r" % (host, e))
        finally:
            self.close()
        if n < 12 or line[:7] != b"HTTP/1." or not line[9:12].isdigit():
            raise OTAError(ESP_ERR_INVALID_RESPONSE, "bad answer to a report")
        return int(line[9:12])
