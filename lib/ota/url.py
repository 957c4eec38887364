# ota.url: the http(s) URLs a download may fetch, split and checked. Used
# by ota.http for every request and by ota.http_extra for redirects, so
# that neither imports the other's code at module level.
from ota import const, OTAError

_INVALID_ARG = const(0x102)

# Texts of its failures: numbers into ota.texts.TEXTS (error texts load
# only when a failure is shown).
_T_URL = const(14)


def split(url):
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
    origin, path = split(url)
    i = origin.find("://")
    scheme = origin[:i].lower()
    hostport = origin[i + 3:]
    try:
        if i < 0 or scheme not in ("http", "https") or "@" in hostport:
            raise ValueError
        # CR, LF, NUL, space... would end up in the request. Bytes, not
        # characters: each character of a str would be interned, and a new
        # one ("z" of ".bin.z") can cost a whole new block of names.
        for c in url.encode():
            if c <= 32 or c > 126:
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
        raise OTAError(_INVALID_ARG, (_T_URL, url))
    return scheme, host, port, path
