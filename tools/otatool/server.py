"""`otatool server`: a campaign server for fleets, in the style of Blynk's admin
OTA API, without its traps (campaigns lost on restart, downgrades by "not
equal", endless reboot loops, no status, passwords in logs).

aiohttp, because one dependency gives async HTTP (a slow client never blocks
the others), multipart uploads, TLS and streamed responses, and the project
already pins it for `otatool serve`, the development server.

Configuration: defaults < `--config FILE` (TOML, keys as in DEFAULTS) <
environment (OTA_SERVER_DB, OTA_SERVER_PORT, ... see ENV) < command line.

    db          SQLite file (default ota-server.sqlite) or postgresql://...
                (see campaigns.py: the path for a fleet beyond one machine)
    files       directory of uploaded images (default: ota-files next to db)
    public_url  how devices reach this server, e.g. https://ota.example.com
                (default: scheme and Host of each check request)
    tls_cert, tls_key   PEM files: serve HTTPS
    max_upload  largest image accepted, bytes (413 above)

Admin API (HTTP Basic auth; the first start creates user "admin" with a random
password, prints it once and stores only its scrypt hash;
`otatool server --reset-password NAME` makes a new one for an existing admin).
A client address with LOGIN_FAILURES failed logins within LOGIN_WINDOW
seconds gets 429 with Retry-After, without its passwords being checked.

    POST /admin/users      {"name"}                                -> 201
    POST /admin/projects   {"user", "name"}                        -> 201
    POST /admin/devices    {"user", "project"?, "name"?, "token"?} -> 201 {"token"}
    GET  /admin/users | /admin/projects[?user=] | /admin/devices[?user=&project=]
    DELETE /admin/devices/<token>
    POST /admin/ota/upload multipart file [+ manifest]             -> 201 file
    POST /admin/ota/start  multipart file [+ manifest] + fields (or query): -> 201
         token=T | user=U [project=P] | none (every device);
         allow_downgrade=1, max_attempts=N, url=U (devices fetch the image
         there, e.g. a CDN, instead of /ota/fw/<id>)
    GET  /admin/ota/start?fileName=F&... the same for an uploaded file
    GET  /admin/ota/stop[?campaign=ID]  stop one, or every running campaign
    GET  /admin/ota/status[?campaign=ID] per campaign, per device (JSON)

Device API (the device token is its credential, in the query or the
X-OTA-Token header):

    GET  /ota/check?token=&version=&build=&chip=
         -> 204 nothing due | 200 {url, version, size, sha256, kind, campaign
                                   [, manifest]}
    GET  /ota/fw/<id>   the image; Range/206, If-Range, ETag = "sha256"
    GET  /ota/fw/<id>/manifest.json   its signed manifest, if one was uploaded
    GET  /ota/fw/<id>/<name>          the image again, when <name> is the
                                      manifest's relative url
    POST /ota/report    {token, campaign, state, error?, progress?} -> 204
         state: downloading | installed | confirmed | rolled_back | failed

Every error answer is JSON {"error": what went wrong (one line),
"detail": {facts a program may use: "allowed" methods, "retry_after"
seconds}}: 400 malformed or invalid request, 401 no valid admin credentials
(nothing more said), 404 unknown token, id or path, 405 wrong method, 409
name taken, 413 body too large, 416 range past the end, 429 too many failed
logins, 500 a bug (logged with its traceback, never shown). Only bytes that
are not HTTP at all (a request line or header aiohttp's parser refuses, e.g.
one over 8190 bytes) get aiohttp's plain-text 400: no request exists yet.

Logs: one access line per request (address, method, path without the
query, status, bytes, seconds); device tokens and credentials are never
logged, including in aiohttp's messages about requests it cannot parse.

Signed updates: the private key never comes here. The publisher signs on
their own machine (`otatool sign app.bin --key K --url app.bin` writes
app.manifest.json) and uploads the manifest with the image, as the multipart
field `manifest` (`curl -F file=@app.bin -F manifest=@app.manifest.json`).
The server checks that the manifest describes that image (kind, version,
size, sha256; the signature is the boards' to check) and that its url is
absolute or a bare file name, which it then serves next to the manifest.
The check answer carries the manifest's URL, not the manifest: the answer
stays a few hundred bytes for a board with little RAM, and the board fetches
the manifest with the same call as from static hosting
(ota.begin(manifest_url, public_key=...)). A board with a public key takes
the image from the signed manifest's url and ignores the offer's `url`.
"""
import asyncio
import base64
import concurrent.futures
import hashlib
import ipaddress
import json
import logging
import math
import os
import re
import ssl
import sys
import threading
import time
import traceback

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.http_exceptions import HttpProcessingError

from otatool import campaigns
from otatool.campaigns import Conflict, Invalid, NotFound, Store, Unavailable
from otatool.cli import CliError, CliFailure
from otatool.serve import byte_range, cannot_listen, check_port, reason

log = logging.getLogger("otatool.server")
# aiohttp's own messages about connections and requests it could not parse.
http_log = logging.getLogger("otatool.server.http")

DEFAULTS = {
    "host": "0.0.0.0",
    "port": 8080,
    "db": "ota-server.sqlite",
    "files": None,
    "public_url": None,
    "tls_cert": None,
    "tls_key": None,
    "max_upload": 4 * 1024 * 1024,
    "max_attempts": 3,
    "backoff_base": 60,
    "backoff_max": 86400,
}
ENV = {
    "OTA_SERVER_HOST": "host",
    "OTA_SERVER_PORT": "port",
    "OTA_SERVER_DB": "db",
    "OTA_SERVER_FILES": "files",
    "OTA_SERVER_PUBLIC_URL": "public_url",
    "OTA_SERVER_CERT": "tls_cert",
    "OTA_SERVER_KEY": "tls_key",
    "OTA_SERVER_MAX_UPLOAD": "max_upload",
}
_INTS = ("port", "max_upload", "max_attempts", "backoff_base", "backoff_max")
_JSON_MAX = 64 * 1024   # admin JSON bodies
_REPORT_MAX = 1024      # device reports
_FIELD_MAX = 128        # token, version, build, chip
_FORM_SLACK = 64 * 1024  # multipart framing and fields around the file
_MANIFEST_MAX = 2048    # what a board reads of a manifest (lib/ota/manifest.py)
MANIFEST_NAME = "manifest.json"
_MANIFEST_URL = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*")  # a bare file name
_SQL_INT_MAX = (1 << 63) - 1  # SQLite's INTEGER: a larger id would overflow, not just miss
LOGIN_FAILURES = 5      # failed admin logins from one address ...
LOGIN_WINDOW = 300      # ... within this many seconds: 429 until the oldest is this old
_THROTTLED_MAX = 10000  # addresses remembered; beyond, the longest-known is forgotten
_HASH_WORKERS = 2       # scrypt takes 16 MiB and tens of ms each: a few at a time
STORE = web.AppKey("store", Store)
CONFIG = web.AppKey("config", dict)
ADMIN = web.RequestKey("admin", str)
AUTH_CACHE = web.AppKey("auth_cache", dict)
THROTTLE = web.AppKey("throttle", object)
HASHER = web.AppKey("hasher", concurrent.futures.Executor)


def load_config(path=None, environ=None, **overrides):
    """The merged configuration (see the module docstring)."""
    import tomllib
    cfg = dict(DEFAULTS)
    if path:
        with open(path, "rb") as f:
            try:
                settings = tomllib.load(f)
            except tomllib.TOMLDecodeError as e:
                raise ValueError("%s: %s" % (path, e)) from None
        cfg.update(_known(settings, path))
    env = os.environ if environ is None else environ
    cfg.update({key: env[var] for var, key in ENV.items() if env.get(var)})
    cfg.update({k: v for k, v in overrides.items() if v is not None})
    return _normalized(cfg)


def _known(d, where):
    unknown = set(d) - set(DEFAULTS)
    if unknown:
        raise ValueError("%s: unknown setting(s) %s" % (where, ", ".join(sorted(unknown))))
    return d


def _normalized(cfg):
    for k in _INTS:
        cfg[k] = _setting_int(k, cfg[k])
    check_port(cfg["port"])
    if cfg["files"] is None:
        base = "." if "://" in cfg["db"] else os.path.dirname(os.path.abspath(cfg["db"]))
        cfg["files"] = os.path.join(base, "ota-files")
    if bool(cfg["tls_cert"]) != bool(cfg["tls_key"]):
        raise ValueError("HTTPS needs both tls_cert and tls_key (--cert and --key)")
    return cfg


def _setting_int(key, value):
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ValueError("%s: %r is not an integer" % (key, value)) from None


# --- the application --------------------------------------------------------

def make_app(config):
    """The aiohttp application for `config` (a dict; missing keys take
    DEFAULTS; the Python API also takes "clock", a time.time stand-in that
    the login throttle uses too)."""
    cfg = dict(DEFAULTS)
    cfg.update(config)
    clock = cfg.pop("clock", None)
    cfg = _normalized(_known(cfg, "config"))
    kw = {"clock": clock} if clock else {}
    # The database first: one that cannot be opened leaves no files directory behind.
    store = Store(cfg["db"], backoff_base=cfg["backoff_base"], backoff_max=cfg["backoff_max"], **kw)
    try:
        os.makedirs(cfg["files"], exist_ok=True)
        password = store.ensure_admin()
    except BaseException:
        store.close()
        raise
    if password:
        # Shown once on the console, never logged; only the hash is stored.
        print("otatool server: created admin user 'admin' with password %s"
              " (shown only now; `otatool server --reset-password admin` makes a new one)"
              % password, flush=True)
    app = web.Application(middlewares=[_json_errors, _admin_auth],
                          client_max_size=cfg["max_upload"] + _FORM_SLACK,
                          handler_args={"access_log_class": _AccessLogger, "logger": http_log})
    app[STORE] = store
    app[CONFIG] = cfg
    app[AUTH_CACHE] = {}
    app[THROTTLE] = LoginThrottle(clock or time.monotonic)
    app[HASHER] = concurrent.futures.ThreadPoolExecutor(_HASH_WORKERS, "otatool-password")
    app.on_cleanup.append(_close)
    app.add_routes([
        web.post("/admin/users", add_user), web.get("/admin/users", list_users),
        web.post("/admin/projects", add_project), web.get("/admin/projects", list_projects),
        web.post("/admin/devices", add_device), web.get("/admin/devices", list_devices),
        web.delete("/admin/devices/{token}", remove_device),
        web.post("/admin/ota/upload", upload),
        web.post("/admin/ota/start", start), web.get("/admin/ota/start", start),
        web.get("/admin/ota/stop", stop),
        web.get("/admin/ota/status", status),
        web.get("/ota/check", check),
        web.get("/ota/fw/{id}", firmware),
        web.get("/ota/fw/{id}/{name}", signed_file),
        web.post("/ota/report", report),
    ])
    return app


async def _close(app):
    app[HASHER].shutdown(cancel_futures=True)
    app[STORE].close()


# --- logs: nothing secret, nothing forged ------------------------------------

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
            message += ": %s: %s" % (type(exc).__name__, _complaint(exc))
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        elif exc is not None:
            record.exc_text = redact("".join(traceback.format_exception(exc)).rstrip("\n"))
        record.msg, record.args, record.exc_info = redact(message), (), None
        return True


def _complaint(exc):
    """What aiohttp's parser found wrong, without the bytes it quotes."""
    return exc.message.split(":", 1)[0].strip()


for _logger in (log, http_log):
    _logger.addFilter(_Redacting())


def _logged_path(request):
    """The path as a log shows it: as sent (percent-encoded, so no line
    breaks or terminal escapes), a device token in it replaced."""
    path = request.rel_url.raw_path.encode("unicode_escape").decode("ascii")
    return redact(path[:256])


class _AccessLogger(AbstractAccessLogger):
    """Address, method, path, status, bytes, seconds; no query (device
    tokens travel there) and no headers (so no Authorization)."""

    def log(self, request, response, elapsed):
        self.logger.info('%s "%s %s" %s %s %.3fs', request.remote, request.method,
                         _logged_path(request), response.status, response.body_length, elapsed)


# --- errors: one JSON shape ---------------------------------------------------

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
async def _json_errors(request, handler):
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
    except HttpProcessingError as e:  # a multipart or chunked body aiohttp could not parse
        return _error(400, "malformed request: %s" % _complaint(e))
    except ConnectionError:
        raise  # the client left: there is nobody to answer
    except Exception:
        # A bug: the log gets the traceback, the client only the status.
        log.exception("unexpected error in %s %s", request.method, _logged_path(request))
        return _error(500, "internal error (logged)")


# --- admin authentication -----------------------------------------------------

@web.middleware
async def _admin_auth(request, handler):
    if request.path.startswith("/admin/"):
        request[ADMIN] = await _admin(request)
    return await handler(request)


def _unauthorized():
    return web.HTTPUnauthorized(headers={"WWW-Authenticate": 'Basic realm="ota"'})


async def _admin(request):
    """The admin's name when the Basic credentials check out; else raises
    401, or 429 for an address with too many recent failures."""
    header = request.headers.get("Authorization", "")
    # scrypt is slow on purpose, so a good header is remembered for a minute
    # (by its digest, in memory only); a password reset takes effect by then.
    # Remembered headers pass a throttled address: they were proven already.
    seen = request.app[AUTH_CACHE]
    key = hashlib.sha256(header.encode("utf-8", "surrogateescape")).digest()  # bytes as sent
    now = time.monotonic()
    if seen.get(key, (0, None))[0] > now:
        return seen[key][1]
    if not header:
        raise _unauthorized()  # not a guess: not counted
    throttle, client = request.app[THROTTLE], client_key(request.remote)
    wait = throttle.retry_after(client)
    if wait:
        raise web.HTTPTooManyRequests(headers={"Retry-After": str(wait)})
    attempt = throttle.failing(client)
    name = await _check_credentials(request.app, header)
    if name is None:
        raise _unauthorized()
    throttle.succeeded(client, attempt)
    if len(seen) > 100:
        seen.clear()
    seen[key] = (now + 60, name)
    return name


async def _check_credentials(app, header):
    """The admin's name if `header` holds the right Basic credentials."""
    kind, _, value = header.partition(" ")
    if kind.lower() != "basic" or len(value) > 1024:
        return None
    try:
        name, sep, password = base64.b64decode(value, validate=True).decode().partition(":")
    except ValueError:  # not ASCII, not base64 (binascii.Error), not UTF-8
        return None
    if not sep:
        return None
    stored = app[STORE].admin_hash(name)
    # In a small pool of its own: the event loop keeps serving devices, and
    # a flood of guesses queues instead of taking every core and 16 MiB each.
    ok = await asyncio.get_running_loop().run_in_executor(
        app[HASHER], campaigns.check_password, password, stored)
    return name if ok else None


def client_key(remote):
    """Whose failures count together: one IPv4 address, or one IPv6 /64 (a
    single host may own all of one, so its addresses cost an attacker nothing)."""
    try:
        address = ipaddress.ip_address(remote)
    except (TypeError, ValueError):  # a Unix socket
        return str(remote)
    if address.version == 4:
        return str(address)
    if address.ipv4_mapped:
        return str(address.ipv4_mapped)
    return str(ipaddress.ip_network("%s/64" % address, strict=False))


class LoginThrottle:
    """Failed admin logins per client (client_key). With LOGIN_FAILURES of
    them in the last LOGIN_WINDOW seconds the client waits until the oldest
    leaves the window. An attempt counts as failed from the moment its check
    starts, so guesses sent in parallel are bounded as well."""

    def __init__(self, clock, limit=LOGIN_FAILURES, window=LOGIN_WINDOW):
        self.clock, self.limit, self.window = clock, limit, window
        self._failures = {}  # client -> times of its recent failures, oldest first

    def retry_after(self, client):
        """Seconds `client` must wait before its next attempt; 0: go ahead."""
        recent = self._recent(client)
        if len(recent) < self.limit:
            return 0
        return max(1, math.ceil(recent[0] + self.window - self.clock()))

    def failing(self, client):
        """Count an attempt as failed until succeeded(); returns its mark."""
        if len(self._failures) > _THROTTLED_MAX:
            self._forget()
        mark = self.clock()
        self._failures[client] = self._recent(client) + [mark]
        return mark

    def succeeded(self, client, mark):
        times = self._failures.get(client, [])
        if mark in times:  # else already forgotten
            times.remove(mark)

    def _recent(self, client):
        cutoff = self.clock() - self.window
        return [t for t in self._failures.get(client, ()) if t > cutoff]

    def _forget(self):
        now = self.clock()
        for client in [c for c, times in self._failures.items()
                       if not times or times[-1] <= now - self.window]:
            del self._failures[client]
        while len(self._failures) > _THROTTLED_MAX:
            del self._failures[next(iter(self._failures))]


# --- admin: registry --------------------------------------------------------

async def _json(request, limit=_JSON_MAX):
    body = bytearray()
    while len(body) <= limit:  # read() may return less than asked
        chunk = await request.content.read(limit + 1 - len(body))
        if not chunk:
            break
        body += chunk
    if len(body) > limit:
        raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=len(body))
    try:
        data = json.loads(body)  # bytes: UTF-8 (or -16, -32) checked by json
    except (ValueError, RecursionError):  # RecursionError: [[[[... nested too deep
        raise Invalid("body must be JSON")
    if not isinstance(data, dict):
        raise Invalid("body must be a JSON object")
    return data


def _text(value, name, required=True):
    """`value` if it is a short printable string (None when absent and not
    required); the one check for every string that reaches the store, so no
    control character or lone surrogate gets in (SQLite cannot encode one)."""
    if value is None or value == "":
        if required:
            raise Invalid("%s is required" % name)
        return None
    if not isinstance(value, str) or len(value) > _FIELD_MAX or not value.isprintable():
        raise Invalid("%s: a string of at most %d printable characters" % (name, _FIELD_MAX))
    return value


async def add_user(request):
    name = _text((await _json(request)).get("name"), "name")
    request.app[STORE].add_user(name)
    log.info("admin %s added user %s", request[ADMIN], name)
    return web.json_response({"name": name}, status=201)


async def add_project(request):
    d = await _json(request)
    user, name = _text(d.get("user"), "user"), _text(d.get("name"), "name")
    request.app[STORE].add_project(user, name)
    log.info("admin %s added project %s/%s", request[ADMIN], user, name)
    return web.json_response({"user": user, "name": name}, status=201)


async def add_device(request):
    d = await _json(request)
    user, project = _text(d.get("user"), "user"), _text(d.get("project"), "project", False)
    name = _text(d.get("name"), "name", False)
    token = request.app[STORE].add_device(user, project, name,
                                          _text(d.get("token"), "token", False))
    log.info("admin %s added a device for %s/%s", request[ADMIN], user, project)
    return web.json_response({"token": token, "user": user, "project": project, "name": name},
                             status=201)


async def list_users(request):
    return web.json_response(request.app[STORE].users())


async def list_projects(request):
    user = _text(request.query.get("user"), "user", False)
    return web.json_response(request.app[STORE].projects(user))


async def list_devices(request):
    q = request.query
    return web.json_response(request.app[STORE].devices(_text(q.get("user"), "user", False),
                                                        _text(q.get("project"), "project", False)))


async def remove_device(request):
    request.app[STORE].remove_device(request.match_info["token"])
    return web.Response(status=204)


# --- admin: images and campaigns --------------------------------------------

def describe_upload(data):
    """kind, chip, version, project_name of a firmware image or app bundle;
    ValueError for anything else (a whole flash dump, a text file, ...)."""
    if data[:1] == b"\xe9":
        from otatool.image import describe_image
        d = describe_image(data)
        return {"kind": "firmware", "chip": d.get("chip"), "version": d["version"],
                "project_name": d.get("project_name")}
    from otatool.bundle import read_bundle_header
    h = read_bundle_header(data)
    if h["size"] != len(data):
        raise ValueError("bundle has %d bytes, its header says %d" % (len(data), h["size"]))
    pos = h["header_size"]
    for f in h["files"]:
        if hashlib.sha256(data[pos:pos + f["size"]]).hexdigest() != f["sha256"]:
            raise ValueError("%s: SHA-256 does not match the header" % f["name"])
        pos += f["size"]
    return {"kind": "bundle", "chip": None, "version": h["version"],
            "project_name": h.get("project_name")}


async def _form(request):
    """(fields, (file name, bytes) or None) of a multipart request, bounded.
    A signed manifest (file or text field `manifest`) is fields["manifest"]."""
    limit = request.app[CONFIG]["max_upload"]
    if request.content_length is not None and request.content_length > limit + _FORM_SLACK:
        # Refuse before reading: the body may be gigabytes.
        raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=request.content_length)
    if not request.content_type.startswith("multipart/"):
        return dict(request.query), None
    try:
        form = await request.post()  # bounded by client_max_size
    except (ValueError, LookupError, RuntimeError) as e:
        # No boundary, broken framing, an unknown charset (LookupError) or
        # transfer encoding (aiohttp raises RuntimeError for that).
        raise Invalid("malformed multipart body: %s" % reason(e)) from None
    try:
        return _fields_and_upload(request.query, form, limit)
    finally:  # also when a field is refused: the files may be on disk
        for value in form.values():
            if isinstance(value, web.FileField):
                value.file.close()


def _fields_and_upload(query, form, limit):
    fields, upload = dict(query), None
    for key, value in form.items():
        if isinstance(value, web.FileField):
            data = value.file.read(limit + 1)
            if len(data) > limit:
                raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=len(data))
            if key == "manifest":
                fields[key] = data
            else:
                name = os.path.basename(value.filename or "upload.bin")
                upload = (_text(name, "file name"), data)
        else:
            fields[key] = value
    return fields, upload


def check_manifest(data, info):
    """The signed fields of a manifest (`otatool sign` output) uploaded with
    the image described by `info`; ValueError unless it describes exactly
    that image and a board could fetch the image from its url. The signature
    is not checked: that is the boards' job, with their public key."""
    if len(data) > _MANIFEST_MAX:
        raise ValueError("larger than the %d bytes a board reads" % _MANIFEST_MAX)
    try:
        env = json.loads(data)
        fields = json.loads(base64.b64decode(env["manifest"], validate=True))
        base64.b64decode(env["sig"], validate=True)
        url = fields["url"]
    except (ValueError, KeyError, TypeError):  # binascii.Error is a ValueError
        raise ValueError("not a signed manifest (`otatool sign` makes one)") from None
    for key in ("kind", "version", "size", "sha256"):
        if fields.get(key) != info[key]:
            raise ValueError("its %s %r is not the image's %r" % (key, fields.get(key), info[key]))
    if not (isinstance(url, str) and (url.startswith(("http://", "https://"))
                                      or _MANIFEST_URL.fullmatch(url) and url != MANIFEST_NAME)):
        raise ValueError("its url %r is neither absolute nor a bare file name" % (url,))
    return fields


def _blob(app, fid, manifest=False):
    return os.path.join(app[CONFIG]["files"], fid + (".manifest.json" if manifest else ".bin"))


def _write(path, data):
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def _store_upload(app, name, data, manifest=None):
    try:
        info = describe_upload(data)
    except ValueError as e:
        raise Invalid("not a firmware image or app bundle: %s" % e)
    info["size"] = len(data)
    info["sha256"] = hashlib.sha256(data).hexdigest()
    if isinstance(manifest, str):
        manifest = manifest.encode()
    if manifest is not None:
        try:
            check_manifest(manifest, info)
        except ValueError as e:
            raise Invalid("manifest: %s" % e)
    row = app[STORE].add_file(name, info)
    _write(_blob(app, row["id"]), data)
    # Without a new manifest an earlier one stays: the id is the image's
    # content, so it still describes it.
    if manifest is not None:
        _write(_blob(app, row["id"], manifest=True), manifest)
    return row


async def upload(request):
    fields, up = await _form(request)
    if up is None:
        raise Invalid("multipart upload with a file is required")
    row = _store_upload(request.app, *up, fields.get("manifest"))
    log.info("admin %s uploaded %s (%s %s)", request[ADMIN], row["file_name"], row["kind"],
             row["version"])
    return web.json_response(_file_json(request.app, row), status=201)


def _file_json(app, row):
    d = {k: row[k] for k in ("id", "file_name", "kind", "chip", "version", "project_name",
                             "size", "sha256")}
    d["signed"] = os.path.exists(_blob(app, row["id"], manifest=True))
    return d


def _flag(fields, key):
    v = fields.get(key, "0").lower()
    if v in ("1", "true", "yes", "on"):
        return True
    if v in ("0", "false", "no", "off", ""):
        return False
    raise Invalid("%s: give 1 or 0" % key)


def _int(value, name):
    """`value` if it is an integer SQLite can store (0..2**63-1): a larger
    one would not miss, it would overflow."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _SQL_INT_MAX:
        raise Invalid("%s must be an integer from 0 to %d" % (name, _SQL_INT_MAX))
    return value


def _parsed_int(text, name):
    """_int of a query or form field."""
    try:
        value = int(text)
    except (TypeError, ValueError):  # ValueError also for over 4300 digits
        raise Invalid("%s must be an integer" % name) from None
    return _int(value, name)


def _campaign_id(query):
    return _parsed_int(query["campaign"], "campaign") if "campaign" in query else None


async def start(request):
    fields, up = await _form(request)
    store = request.app[STORE]
    file_name = _text(fields.get("fileName"), "fileName", False)
    if up is not None:
        row = _store_upload(request.app, *up, fields.get("manifest"))
    elif file_name:
        row = store.file_by_name(file_name)
    else:
        raise Invalid("upload a file, or name an uploaded one with fileName=")
    url = fields.get("url") or None
    if url is not None and (not url.startswith(("http://", "https://")) or len(url) > 512
                            or not url.isprintable()):
        raise Invalid("url must be an http(s) URL of at most 512 characters")
    token = _text(fields.get("token"), "token", False)
    cid = store.start(row["id"], token=token, user=_text(fields.get("user"), "user", False),
                      project=_text(fields.get("project"), "project", False),
                      url=url, allow_downgrade=_flag(fields, "allow_downgrade"),
                      max_attempts=_parsed_int(fields.get("max_attempts",
                                                          request.app[CONFIG]["max_attempts"]),
                                               "max_attempts"))
    c = store.status(cid)[0]
    log.info("admin %s started campaign %s: %s %s to %s", request[ADMIN], cid, c["kind"],
             c["version"], "a device" if token else c["target"])
    return web.json_response(c, status=201)


async def stop(request):
    ids = request.app[STORE].stop(_campaign_id(request.query))
    log.info("admin %s stopped campaign(s) %s", request[ADMIN], ids)
    return web.json_response({"stopped": ids})


async def status(request):
    return web.json_response({"campaigns": request.app[STORE].status(_campaign_id(request.query))})


# --- devices ----------------------------------------------------------------

async def check(request):
    q = request.query
    token = _text(q.get("token") or request.headers.get("X-OTA-Token"), "token")
    version = _text(q.get("version"), "version")
    c = request.app[STORE].check_in(token, version, _text(q.get("build"), "build", False),
                                    _text(q.get("chip"), "chip", False))
    if c is None:
        return web.Response(status=204)
    base = request.app[CONFIG]["public_url"] or "%s://%s" % (request.scheme, request.host)
    fw = "%s/ota/fw/%s" % (base.rstrip("/"), c["file_id"])
    offer = {"url": c["url"] or fw, "version": c["version"], "size": c["size"],
             "sha256": c["sha256"], "kind": c["kind"], "campaign": c["id"]}
    if os.path.exists(_blob(request.app, c["file_id"], manifest=True)):
        offer["manifest"] = "%s/%s" % (fw, MANIFEST_NAME)
    return web.json_response(offer)


def _byte_range(header, size):
    """serve.byte_range, with a 416 raised as aiohttp wants it."""
    r = byte_range(header, size)
    if r == "unsatisfiable":
        raise web.HTTPRequestRangeNotSatisfiable(headers={"Content-Range": "bytes */%d" % size})
    return r


async def signed_file(request):
    """/ota/fw/<id>/manifest.json, and the image under the name the
    manifest's relative url gives it."""
    row = request.app[STORE].file(request.match_info["id"])
    if row is None:  # else the id is a known one, safe in a path
        raise NotFound("no such image")
    try:
        with open(_blob(request.app, row["id"], manifest=True), "rb") as f:
            manifest = f.read()
    except OSError:
        raise NotFound("no manifest for this image")
    name = request.match_info["name"]
    if name == MANIFEST_NAME:
        return web.Response(body=manifest, content_type="application/json")
    if json.loads(base64.b64decode(json.loads(manifest)["manifest"]))["url"] != name:
        raise NotFound("no such file")
    return await firmware(request)


async def firmware(request):
    row = request.app[STORE].file(request.match_info["id"])
    if row is None:
        raise NotFound("no such image")
    size, etag = row["size"], '"%s"' % row["sha256"]
    headers = {"ETag": etag, "Accept-Ranges": "bytes", "Content-Type": "application/octet-stream"}
    if request.headers.get("If-None-Match") == etag:
        return web.Response(status=304, headers=headers)
    start, end, status = 0, size, 200
    rng = request.headers.get("Range")
    # If-Range: resume only if the entity is still the one the client has.
    if rng and request.headers.get("If-Range", etag) == etag:
        r = _byte_range(rng, size)
        if r:
            (start, end), status = r, 206
            headers["Content-Range"] = "bytes %d-%d/%d" % (start, end - 1, size)
    headers["Content-Length"] = str(end - start)
    resp = web.StreamResponse(status=status, headers=headers)
    await resp.prepare(request)
    if request.method != "HEAD":
        try:
            await _send_file(resp, _blob(request.app, row["id"]), start, end - start)
        except ConnectionError:
            return resp  # the board left; it resumes with Range. Not an error to log.
    await resp.write_eof()
    return resp


async def _send_file(resp, path, start, length):
    with open(path, "rb") as f:
        f.seek(start)
        while length:
            chunk = f.read(min(length, 64 * 1024))
            if not chunk:
                break
            await resp.write(chunk)  # waits while the client is slow
            length -= len(chunk)


async def report(request):
    d = await _json(request, _REPORT_MAX)
    token = _text(d.get("token") or request.headers.get("X-OTA-Token"), "token")
    campaign = _int(d.get("campaign"), "campaign")
    progress = None if d.get("progress") is None else _int(d["progress"], "progress")
    error = d.get("error")
    if error is not None and not isinstance(error, str):
        raise Invalid("error must be a string")
    if error:
        # A board's own words, kept even when they hold a newline or worse.
        error = "".join(c if c.isprintable() else "?" for c in error[:200])
    request.app[STORE].report(token, campaign, d.get("state"), error, progress)
    return web.Response(status=204)


# --- running ----------------------------------------------------------------

def _ssl_context(cfg):
    if not cfg["tls_cert"]:
        return None
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cfg["tls_cert"], cfg["tls_key"])
    return ctx


class ServerThread:
    """The server on its own event loop in a thread, for tests and scripts:

        with ServerThread({"db": path, "port": 0}) as srv:
            urlopen(srv.url + "/ota/check?...")

    Binds 127.0.0.1 unless config["host"] says otherwise; port 0 picks a
    free port (srv.port)."""

    def __init__(self, config):
        self.config = dict(config)
        self.config.setdefault("host", "127.0.0.1")
        self.config.setdefault("port", 0)
        self.port = None
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._error = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    @property
    def url(self):
        scheme = "https" if self.config.get("tls_cert") else "http"
        return "%s://%s:%d" % (scheme, self.config["host"], self.port)

    def _run(self):
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._start())
        except BaseException as e:  # handed to start()
            self._error = e
            self._ready.set()
            return
        self._ready.set()
        self._loop.run_forever()
        self._loop.run_until_complete(self._runner.cleanup())
        self._loop.close()

    async def _start(self):
        app = make_app(self.config)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        cfg = app[CONFIG]
        site = web.TCPSite(self._runner, cfg["host"], cfg["port"], ssl_context=_ssl_context(cfg))
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]
        self.app = app

    def start(self):
        self._thread.start()
        self._ready.wait(30)
        if self._error:
            raise self._error
        return self

    def stop(self):
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(30)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


def register(sub):
    p = sub.add_parser("server", help="run the campaign server (fleet OTA)",
                       description=__doc__.split("\n\n")[0])
    p.add_argument("--config", help="TOML file with the settings of the module docstring")
    p.add_argument("--host")
    p.add_argument("--port", type=int)
    p.add_argument("--db", help="SQLite file or postgresql:// URL")
    p.add_argument("--files", help="directory for uploaded images")
    p.add_argument("--public-url", dest="public_url")
    p.add_argument("--cert", dest="tls_cert", help="PEM certificate: serve HTTPS")
    p.add_argument("--key", dest="tls_key", help="PEM private key of --cert")
    p.add_argument("--reset-password", metavar="NAME",
                   help="give the existing admin NAME a new random password, print it and exit")
    p.set_defaults(func=_main)


def _main(args):
    try:
        cfg = load_config(args.config, host=args.host, port=args.port, db=args.db,
                          files=args.files, public_url=args.public_url,
                          tls_cert=args.tls_cert, tls_key=args.tls_key)
    except OSError as e:
        raise CliFailure("cannot read --config %s: %s" % (args.config, reason(e)))
    except ValueError as e:
        raise CliError(reason(e))
    if args.reset_password:
        return _reset_password(cfg["db"], args.reset_password)
    ssl_context = _checked_ssl_context(cfg)
    app = _checked_app(cfg)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(name)s %(message)s")
    try:
        web.run_app(app, host=cfg["host"], port=cfg["port"], ssl_context=ssl_context,
                    print=lambda s: print(s, flush=True))
    except OSError as e:  # in use, not an address of this host, no such name
        raise cannot_listen(cfg["host"], cfg["port"], e)
    return 0


def _reset_password(db, name):
    path = campaigns.sqlite_path(db)
    if path is not None and not os.path.isfile(path):  # else SQLite makes an empty one
        raise CliFailure("database %s does not exist" % path)
    store = _checked(Store, db)
    try:
        print("new password for %s: %s" % (name, store.reset_password(name)))
    except NotFound as e:
        raise CliFailure(str(e))
    finally:
        store.close()
    return 0


def _checked_ssl_context(cfg):
    for what, path in (("certificate", cfg["tls_cert"]), ("key", cfg["tls_key"])):
        if path and not os.path.isfile(path):
            raise CliFailure("%s file %s does not exist" % (what, path))
    try:
        return _ssl_context(cfg)
    except (OSError, ValueError) as e:  # ssl.SSLError is an OSError
        raise CliFailure("cannot use certificate %s with key %s: %s"
                         % (cfg["tls_cert"], cfg["tls_key"], reason(e)))


def _checked_app(cfg):
    try:
        return _checked(make_app, cfg)
    except OSError as e:
        raise CliFailure("cannot make the files directory %s: %s" % (cfg["files"], reason(e)))


def _checked(open_store, *args):
    """open_store(*args) with the database's errors as one-line CLI errors."""
    try:
        return open_store(*args)
    except Unavailable as e:
        raise CliFailure(str(e))
    except ValueError as e:  # a database URL of another kind
        raise CliError(str(e))
