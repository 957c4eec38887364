"""make_app: the campaign server's aiohttp application. It opens the store
(making the first admin), and wires the routes to the admin and device
handlers behind the middlewares: JSON errors outermost, then the dashboard's
error pages (for its own routes only), then admin authentication; and adds
the dashboard.
"""
import concurrent.futures
import os
import time

from aiohttp import web

from otatool.server import admin_api, device_api
from otatool.server.appkeys import AUTH_CACHE, CONFIG, DB, HASHER, STORE, THROTTLE
from otatool.server.auth import LoginThrottle, admin_auth
from otatool.server.config import DEFAULTS, normalized, only_known
from otatool.server.errors import json_errors
from otatool.server.logs import AccessLogger, http_log
from otatool.server.dashboard import add_dashboard
from otatool.server.pages import page_errors
from otatool.server.store import AsyncStore, Store
from otatool.server.uploads import FORM_SLACK

_HASH_WORKERS = 2       # scrypt takes 16 MiB and tens of ms each: a few at a time


def make_app(config):
    """The aiohttp application for `config` (a dict; missing keys take
    DEFAULTS; the Python API also takes "clock", a time.time stand-in that
    the login throttle uses too)."""
    cfg = dict(DEFAULTS)
    cfg.update(config)
    clock = cfg.pop("clock", None)
    cfg = normalized(only_known(cfg, "config"))
    store = _open_store(cfg, clock)
    app = web.Application(middlewares=[json_errors, page_errors, admin_auth],
                          client_max_size=cfg["max_upload"] + FORM_SLACK,
                          handler_args={"access_log_class": AccessLogger, "logger": http_log})
    app[STORE] = store
    app[DB] = AsyncStore(store, cfg["db_connections"])
    app[CONFIG] = cfg
    app[AUTH_CACHE] = {}
    app[THROTTLE] = LoginThrottle(clock or time.monotonic)
    app[HASHER] = concurrent.futures.ThreadPoolExecutor(_HASH_WORKERS, "otatool-password")
    app.on_cleanup.append(_close)
    app.add_routes(_routes())
    add_dashboard(app)
    return app


def _open_store(cfg, clock):
    """The store, the files directory, and the first admin (its password
    printed once)."""
    kw = {"clock": clock} if clock else {}
    # The database first: one that cannot be opened leaves no files directory behind.
    store = Store(cfg["db"], backoff_base=cfg["backoff_base"], backoff_max=cfg["backoff_max"],
                  pool_size=cfg["db_connections"], **kw)
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
    return store


def _routes():
    return [
        web.post("/admin/users", admin_api.add_user),
        web.get("/admin/users", admin_api.list_users),
        web.post("/admin/projects", admin_api.add_project),
        web.get("/admin/projects", admin_api.list_projects),
        web.post("/admin/devices", admin_api.add_device),
        web.get("/admin/devices", admin_api.list_devices),
        web.delete("/admin/devices/{token}", admin_api.remove_device),
        web.post("/admin/ota/upload", admin_api.upload),
        web.post("/admin/ota/start", admin_api.start),
        web.get("/admin/ota/start", admin_api.start),
        web.get("/admin/ota/stop", admin_api.stop),
        web.get("/admin/ota/status", admin_api.status),
        web.get("/ota/check", device_api.check),
        web.get("/ota/fw/{id}", device_api.firmware),
        web.get("/ota/fw/{id}/{name}", device_api.signed_file),
        web.post("/ota/report", device_api.report),
    ]


async def _close(app):
    app[HASHER].shutdown(cancel_futures=True)
    app[DB].close()  # and the store
