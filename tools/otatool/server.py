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
`otatool server --reset-password NAME` makes a new one). Errors are JSON
{"error": ...}; 401 says nothing more.

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
import binascii
import hashlib
import json
import logging
import os
import re
import ssl
import sys
import threading
import time

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

from otatool import campaigns
from otatool.campaigns import Conflict, Invalid, NotFound, Store
from otatool.serve import byte_range

log = logging.getLogger("otatool.server")

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
STORE = web.AppKey("store", Store)
CONFIG = web.AppKey("config", dict)
ADMIN = web.RequestKey("admin", str)
AUTH_CACHE = web.AppKey("auth_cache", dict)


def load_config(path=None, environ=None, **overrides):
    """The merged configuration (see the module docstring)."""
    import tomllib
    cfg = dict(DEFAULTS)
    if path:
        with open(path, "rb") as f:
            cfg.update(_known(tomllib.load(f), path))
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
        cfg[k] = int(cfg[k])
    if cfg["files"] is None:
        base = "." if "://" in cfg["db"] else os.path.dirname(os.path.abspath(cfg["db"]))
        cfg["files"] = os.path.join(base, "ota-files")
    if bool(cfg["tls_cert"]) != bool(cfg["tls_key"]):
        raise ValueError("HTTPS needs both tls_cert and tls_key")
    return cfg


# --- the application --------------------------------------------------------

def make_app(config):
    """The aiohttp application for `config` (a dict; missing keys take
    DEFAULTS; the Python API also takes "clock", a time.time stand-in)."""
    cfg = dict(DEFAULTS)
    cfg.update(config)
    clock = cfg.pop("clock", None)
    cfg = _normalized(_known(cfg, "config"))
    os.makedirs(cfg["files"], exist_ok=True)
    kw = {"clock": clock} if clock else {}
    store = Store(cfg["db"], backoff_base=cfg["backoff_base"], backoff_max=cfg["backoff_max"], **kw)
    password = store.ensure_admin()
    if password:
        # Shown once on the console, never logged; only the hash is stored.
        print("otatool server: created admin user 'admin' with password %s"
              " (shown only now; `otatool server --reset-password admin` makes a new one)"
              % password, flush=True)
    app = web.Application(middlewares=[_errors_and_auth],
                          client_max_size=cfg["max_upload"] + _FORM_SLACK,
                          handler_args={"access_log_class": _AccessLogger})
    app[STORE] = store
    app[CONFIG] = cfg
    app[AUTH_CACHE] = {}
    app.on_cleanup.append(_close_store)
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


async def _close_store(app):
    app[STORE].close()


class _AccessLogger(AbstractAccessLogger):
    """Method, path and status; no query (device tokens travel there), no
    token in /admin/devices/<token>, no headers (so no Authorization)."""

    def log(self, request, response, elapsed):
        path = request.path
        if path.startswith("/admin/devices/"):
            path = "/admin/devices/..."
        self.logger.info('%s "%s %s" %s %s %.3fs', request.remote, request.method, path,
                         response.status, response.body_length, elapsed)


def _error(status, message):
    return web.json_response({"error": message}, status=status)


@web.middleware
async def _errors_and_auth(request, handler):
    if request.path.startswith("/admin/"):
        user = await _admin(request)
        if user is None:
            return web.Response(status=401, text="unauthorized",
                                headers={"WWW-Authenticate": 'Basic realm="ota"'})
        request[ADMIN] = user
    try:
        return await handler(request)
    except NotFound as e:
        return _error(404, str(e))
    except Conflict as e:
        return _error(409, str(e))
    except Invalid as e:
        return _error(400, str(e))


async def _admin(request):
    """The admin's name if the Basic credentials check out, else None."""
    kind, _, value = request.headers.get("Authorization", "").partition(" ")
    if kind.lower() != "basic" or len(value) > 1024:
        return None
    try:
        name, sep, password = base64.b64decode(value, validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    if not sep:
        return None
    # scrypt is slow on purpose, so a good header is remembered for a minute
    # (by its digest, in memory only); a password reset takes effect by then.
    seen = request.app[AUTH_CACHE]
    key = hashlib.sha256(value.encode()).digest()
    now = time.monotonic()
    if seen.get(key, (0, None))[0] > now:
        return seen[key][1]
    stored = request.app[STORE].admin_hash(name)
    ok = await asyncio.get_running_loop().run_in_executor(
        None, campaigns.check_password, password, stored)
    if not ok:
        return None
    if len(seen) > 100:
        seen.clear()
    seen[key] = (now + 60, name)
    return name


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
        data = json.loads(body)
    except ValueError:
        raise Invalid("body must be JSON")
    if not isinstance(data, dict):
        raise Invalid("body must be a JSON object")
    return data


def _str(d, key, required=True):
    v = d.get(key)
    if v is None and not required:
        return None
    if not isinstance(v, str) or not v:
        raise Invalid("%s: a non-empty string is required" % key)
    return v


async def add_user(request):
    d = await _json(request)
    request.app[STORE].add_user(_str(d, "name"))
    log.info("admin %s added user %s", request[ADMIN], d["name"])
    return web.json_response({"name": d["name"]}, status=201)


async def add_project(request):
    d = await _json(request)
    request.app[STORE].add_project(_str(d, "user"), _str(d, "name"))
    log.info("admin %s added project %s/%s", request[ADMIN], d["user"], d["name"])
    return web.json_response({"user": d["user"], "name": d["name"]}, status=201)


async def add_device(request):
    d = await _json(request)
    token = request.app[STORE].add_device(_str(d, "user"), _str(d, "project", False),
                                          _str(d, "name", False), _str(d, "token", False))
    log.info("admin %s added a device for %s/%s", request[ADMIN], d["user"], d.get("project"))
    return web.json_response({"token": token, "user": d["user"], "project": d.get("project"),
                              "name": d.get("name")}, status=201)


async def list_users(request):
    return web.json_response(request.app[STORE].users())


async def list_projects(request):
    return web.json_response(request.app[STORE].projects(request.query.get("user")))


async def list_devices(request):
    q = request.query
    return web.json_response(request.app[STORE].devices(q.get("user"), q.get("project")))


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
    form = await request.post()  # bounded by client_max_size
    fields, upload = dict(request.query), None
    for key, value in form.items():
        if isinstance(value, web.FileField):
            data = value.file.read(limit + 1)
            if len(data) > limit:
                raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=len(data))
            if key == "manifest":
                fields[key] = data
            else:
                upload = (os.path.basename(value.filename or "upload.bin"), data)
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


def _int(fields, key, default):
    try:
        return int(fields.get(key, default))
    except ValueError:
        raise Invalid("%s must be an integer" % key)


async def start(request):
    fields, up = await _form(request)
    store = request.app[STORE]
    if up is not None:
        row = _store_upload(request.app, *up, fields.get("manifest"))
    elif fields.get("fileName"):
        row = store.file_by_name(fields["fileName"])
    else:
        raise Invalid("upload a file, or name an uploaded one with fileName=")
    url = fields.get("url") or None
    if url is not None and (not url.startswith(("http://", "https://")) or len(url) > 512):
        raise Invalid("url must be an http(s) URL of at most 512 characters")
    cid = store.start(row["id"], token=fields.get("token") or None,
                      user=fields.get("user") or None, project=fields.get("project") or None,
                      url=url, allow_downgrade=_flag(fields, "allow_downgrade"),
                      max_attempts=_int(fields, "max_attempts",
                                        request.app[CONFIG]["max_attempts"]))
    c = store.status(cid)[0]
    log.info("admin %s started campaign %s: %s %s to %s", request[ADMIN], cid, c["kind"],
             c["version"], "a device" if fields.get("token") else c["target"])
    return web.json_response(c, status=201)


async def stop(request):
    cid = _int(request.query, "campaign", -1) if "campaign" in request.query else None
    ids = request.app[STORE].stop(cid)
    log.info("admin %s stopped campaign(s) %s", request[ADMIN], ids)
    return web.json_response({"stopped": ids})


async def status(request):
    cid = _int(request.query, "campaign", -1) if "campaign" in request.query else None
    return web.json_response({"campaigns": request.app[STORE].status(cid)})


# --- devices ----------------------------------------------------------------

def _field(value, name, required=False):
    if value is None or value == "":
        if required:
            raise Invalid("%s is required" % name)
        return None
    if len(value) > _FIELD_MAX or not value.isprintable():
        raise Invalid("%s: at most %d printable characters" % (name, _FIELD_MAX))
    return value


async def check(request):
    q = request.query
    token = _field(q.get("token") or request.headers.get("X-OTA-Token"), "token", True)
    version = _field(q.get("version"), "version", True)
    c = request.app[STORE].check_in(token, version, _field(q.get("build"), "build"),
                                    _field(q.get("chip"), "chip"))
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
        with open(_blob(request.app, row["id"]), "rb") as f:
            f.seek(start)
            left = end - start
            while left:
                chunk = f.read(min(left, 64 * 1024))
                if not chunk:
                    break
                await resp.write(chunk)  # waits while the client is slow
                left -= len(chunk)
    await resp.write_eof()
    return resp


async def report(request):
    d = await _json(request, _REPORT_MAX)
    token = d.get("token") or request.headers.get("X-OTA-Token")
    campaign, progress, error = d.get("campaign"), d.get("progress"), d.get("error")
    if not isinstance(token, str) or not isinstance(campaign, int):
        raise Invalid("token (string) and campaign (integer) are required")
    if progress is not None and not isinstance(progress, int):
        raise Invalid("progress must be an integer")
    if error is not None and not isinstance(error, str):
        raise Invalid("error must be a string")
    request.app[STORE].report(token, campaign, d.get("state"), error and error[:200], progress)
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
                   help="give admin NAME a new random password, print it and exit")
    p.set_defaults(func=_main)


def _main(args):
    from otatool.cli import CliError
    try:
        cfg = load_config(args.config, host=args.host, port=args.port, db=args.db,
                          files=args.files, public_url=args.public_url,
                          tls_cert=args.tls_cert, tls_key=args.tls_key)
    except (OSError, ValueError) as e:
        raise CliError(str(e))
    if args.reset_password:
        store = Store(cfg["db"])
        print("new password for %s: %s" % (args.reset_password,
                                           store.set_password(args.reset_password)))
        store.close()
        return 0
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(name)s %(message)s")
    web.run_app(make_app(cfg), host=cfg["host"], port=cfg["port"],
                ssl_context=_ssl_context(cfg), print=lambda s: print(s, flush=True))
    return 0
