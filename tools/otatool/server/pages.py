"""How the dashboard's pages are made: Jinja2 templates (escaping on for
every page, so a token, version or project name holding <script> is shown as
text), the filters they use, and page_errors, the middleware that answers a
page's failure with a page that says what went wrong in one line (never a
traceback, never the API's JSON).
"""
import datetime
import re

import aiohttp_jinja2
import jinja2
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from otatool import device_module
from otatool.cli import saving_percent
from otatool.server.logs import log, logged_path
from otatool.server.sessions import current_session
from otatool.server.store import Conflict, Invalid, NotFound

PAGE_ROUTE = "page:"    # the names of the dashboard's routes start so
BROKEN_FORM = "That form arrived broken: reload the page and try again."
# The rollout states in the order a device moves through them; status()
# also says when a targeted device will not be offered the image at all.
STATES = ("pending", "offered", "downloading", "installed", "confirmed", "failed", "rolled_back")
SKIPPED = ("up_to_date", "other_chip")
_FRIENDLY = {400: "That request cannot be right.", 403: "That is not allowed.",
             404: "There is nothing here.", 405: "That page does not take this kind of request.",
             413: "That file is too large for this server.",
             500: "Something went wrong on the server; it has been logged."}
_ERROR_NAME = re.compile(r"(ESP_[A-Z0-9_]+)\b:?\s*(.*)", re.S)
_ERROR_NUMBER = re.compile(r"(-?(?:0x[0-9A-Fa-f]+|\d+))\b:?\s*(.*)", re.S)


def setup_templates(app):
    env = aiohttp_jinja2.setup(app, loader=jinja2.PackageLoader("otatool.server", "templates"),
                               autoescape=True, undefined=jinja2.StrictUndefined,
                               trim_blocks=True, lstrip_blocks=True)
    env.filters.update(short_token=short_token, when=when, size=size, error_parts=error_parts,
                       state_name=state_name)
    env.globals.update(STATES=STATES, SKIPPED=SKIPPED, saving_percent=saving_percent)


def render(request, template, context, status=200):
    """A page; the signed-in admin's session (for the header and every
    form's CSRF token; None on the sign-in page) is passed to every template."""
    context = dict(context, session=context.get("session"))
    response = aiohttp_jinja2.render_template(template, request, context, status=status)
    response.headers["Content-Security-Policy"] = (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self';"
        " frame-ancestors 'none'; form-action 'self'; base-uri 'none'")
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Cache-Control"] = "no-store"  # pages show a fleet's tokens
    return response


class PageRefusal(Exception):
    """A page that cannot be shown or a form that cannot be taken, with the
    status and the one line to say."""

    def __init__(self, status, message):
        super().__init__(message)
        self.status = status


@web.middleware
async def page_errors(request, handler):
    route = request.match_info.route.name or ""
    if not route.startswith(PAGE_ROUTE):
        return await handler(request)  # the APIs: json_errors answers
    try:
        return await handler(request)
    except web.HTTPException as e:
        if e.status < 400:  # a redirect
            raise
        return await _error_page(request, e.status, _FRIENDLY.get(e.status, e.reason))
    except PageRefusal as e:
        return await _error_page(request, e.status, str(e))
    except NotFound as e:
        return await _error_page(request, 404, str(e))
    except (Invalid, Conflict) as e:
        return await _error_page(request, 400, str(e))
    except HttpProcessingError:  # a multipart body aiohttp could not parse
        return await _error_page(request, 400, BROKEN_FORM)
    except ConnectionError:
        raise  # the browser left: there is nobody to answer
    except Exception:
        log.exception("unexpected error in %s %s", request.method, logged_path(request))
        return await _error_page(request, 500, _FRIENDLY[500])


async def _error_page(request, status, message):
    try:
        session = await current_session(request)
    except Exception:  # the store itself failing: still say something
        session = None
    return render(request, "error.html", {"status": status, "message": message,
                                          "session": session}, status=status)


# --- filters ------------------------------------------------------------------

def short_token(token):
    """The first characters of a device token: enough to tell devices apart
    on a page, not enough to act as one."""
    return token if len(token) <= 10 else token[:8] + "…"


def when(timestamp):
    if timestamp is None:
        return "never"
    return datetime.datetime.fromtimestamp(timestamp, datetime.timezone.utc).strftime(
        "%Y-%m-%d %H:%M:%S UTC")


def size(n):
    if n is None:
        return ""
    if n < 10 * 1024:
        return "%d bytes" % n
    if n < 10 * 1024 * 1024:
        return "%.1f KiB" % (n / 1024)
    return "%.1f MiB" % (n / 1024 / 1024)


def state_name(state):
    return state.replace("_", " ")


def error_parts(text):
    """(code as 0x..., name, the rest) of a device's error report: boards
    report "ESP_ERR_OTA_VALIDATE_FAILED: ..." (OTAError's words), other
    clients perhaps a number; code and name are None when neither is known."""
    if not text:
        return None, None, ""
    codes = _error_codes()
    m = _ERROR_NAME.match(text)
    if m and m.group(1) in codes:
        return _hex(codes[m.group(1)]), m.group(1), m.group(2)
    m = _ERROR_NUMBER.match(text)
    if m:
        number = int(m.group(1), 0)
        names = [name for name, value in codes.items() if value == number]
        if names:
            return _hex(number), names[0], m.group(2)
    return None, None, text


def _hex(code):
    return "%d" % code if code < 0 else "0x%X" % code


_CODES = {}


def _error_codes():
    """ESP-IDF's error names and values, from the board's own constants."""
    if not _CODES:
        # ota.errors holds them (ota itself loads it on first use only)
        errors = device_module("ota.errors")
        _CODES.update({k: v for k, v in vars(errors).items()
                       if k.startswith("ESP_") and isinstance(v, int)})
        _CODES["ESP_ERR_HTTPS_OTA_IN_PROGRESS"] = device_module("ota").IN_PROGRESS
    return _CODES
