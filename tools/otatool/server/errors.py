"""Every error answer in one JSON shape: {"error": what went wrong (one
line), "detail": {facts a program may use}}.

json_errors is the outermost middleware: aiohttp's own refusals (404, 405,
413 ...), the store's exceptions (NotFound, Conflict, Invalid; Unavailable,
a database that is down, 503 with Retry-After) and bodies
aiohttp could not parse all leave in that shape; a bug leaves as a bare 500
and a traceback in the log, never shown to the client.
"""
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from otatool.server.logs import complaint, log, logged_path
from otatool.server.store import Conflict, Invalid, NotFound, Unavailable

RETRY_AFTER_OUTAGE = 30  # seconds a client is told to wait while the database is down
_MESSAGES = {401: "unauthorized", 404: "no such path", 405: "method not allowed here",
             416: "range not satisfiable"}


def _error(status, message, headers=None):
    """{"error": message, "detail": {...}}: detail repeats in the body what
    the headers tell (allowed methods, seconds to wait)."""
    headers = dict(headers or {})
    detail = {}
    if "Allow" in headers:
        detail["allowed"] = sorted(headers["Allow"].split(","))
    if "Retry-After" in headers:
        detail["retry_after"] = int(headers["Retry-After"])
    return web.json_response({"error": message, "detail": detail}, status=status, headers=headers)


def _from_http_exception(e):
    """aiohttp's own error answers (404, 405, 413 ...) in the JSON shape."""
    headers = {k: v for k, v in e.headers.items()
               if k.lower() not in ("content-type", "content-length")}
    return _error(e.status, _MESSAGES.get(e.status) or e.text, headers)


@web.middleware
async def json_errors(request, handler):
    try:
        return await handler(request)
    except web.HTTPException as e:
        if e.status < 400:  # 304 and redirects are answers, not errors
            raise
        return _from_http_exception(e)
    except NotFound as e:
        return _error(404, str(e))
    except Conflict as e:
        return _error(409, str(e))
    except Invalid as e:
        return _error(400, str(e))
    except Unavailable as e:
        # The database is down or held by another process: the log says
        # which and why, the client only when to come back.
        log.warning("%s %s: %s", request.method, logged_path(request), e)
        return _error(503, "database unavailable, try again later",
                      {"Retry-After": str(RETRY_AFTER_OUTAGE)})
    except HttpProcessingError as e:  # a multipart or chunked body aiohttp could not parse
        return _error(400, "malformed request: %s" % complaint(e))
    except ConnectionError:
        raise  # the client left: there is nobody to answer
    except Exception:
        # A bug: the log gets the traceback, the client only the status.
        log.exception("unexpected error in %s %s", request.method, logged_path(request))
        return _error(500, "internal error (logged)")
