"""The campaign server's logs: nothing secret, nothing forged.

Every record of the server's loggers is redacted before any handler sees it
(device tokens, credentials, also where aiohttp quotes a request it could
not parse), and the access line leaves out the query and the headers.
"""
import logging
import re
import traceback

from aiohttp.abc import AbstractAccessLogger
from aiohttp.http_exceptions import HttpProcessingError

log = logging.getLogger("otatool.server")
# aiohttp's own messages about connections and requests it could not parse.
http_log = logging.getLogger("otatool.server.http")

_SECRETS = [
    (re.compile(r"(?i)(token=)[^&\s'\"\\]+"), r"\1[redacted]"),
    (re.compile(r"(?i)\b(authorization|x-ota-token)(\s*:\s*)[^\r\n'\"\\]+"), r"\1\2[redacted]"),
    (re.compile(r"(?i)\b(basic|bearer)(\s+)[A-Za-z0-9+/=._~-]+"), r"\1\2[redacted]"),
    (re.compile(r"(/admin/devices/)[^\s?'\"\\]+"), r"\1[redacted]"),
]


def redact(text):
    """`text` without device tokens or credentials (query parameters,
    headers, /admin/devices/<token>)."""
    for pattern, replacement in _SECRETS:
        text = pattern.sub(replacement, text)
    return text


class _Redacting(logging.Filter):
    """Rewrites every record of the server's loggers before any handler sees
    it. aiohttp's parser errors quote the bytes they choked on (a request
    line with ?token=, an Authorization header): their first words say
    enough, the traceback (always the parser's) says nothing, and a
    client's malformed request is a warning, not the server's error."""

    def filter(self, record):
        message = record.getMessage()
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError):
            message += ": %s: %s" % (type(exc).__name__, complaint(exc))
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        elif exc is not None:
            record.exc_text = redact("".join(traceback.format_exception(exc)).rstrip("\n"))
        record.msg, record.args, record.exc_info = redact(message), (), None
        return True


def complaint(exc):
    """What aiohttp's parser found wrong, without the bytes it quotes."""
    return exc.message.split(":", 1)[0].strip()


for _logger in (log, http_log):
    _logger.addFilter(_Redacting())


def logged_path(request):
    """The path as a log shows it: as sent (percent-encoded, so no line
    breaks or terminal escapes), a device token in it replaced."""
    path = request.rel_url.raw_path.encode("unicode_escape").decode("ascii")
    return redact(path[:256])


class AccessLogger(AbstractAccessLogger):
    """Address, method, path, status, bytes, seconds; no query (device
    tokens travel there) and no headers (so no Authorization)."""

    def log(self, request, response, elapsed):
        self.logger.info('%s "%s %s" %s %s %.3fs', request.remote, request.method,
                         logged_path(request), response.status, response.body_length, elapsed)
