"""The typed keys under which make_app leaves what the handlers share: on
the application the store (and DB, its methods run off the event loop),
the configuration, the login throttle, its cache of proven credentials
and the password-hashing pool; on each admin request the admin's name.
They live below every handler so that no handler imports the app that
routes to it.
"""
import concurrent.futures

from aiohttp import web

from otatool.server.store import AsyncStore, Store

STORE = web.AppKey("store", Store)
DB = web.AppKey("db", AsyncStore)  # the same store, called from the event loop
CONFIG = web.AppKey("config", dict)
ADMIN = web.RequestKey("admin", str)
AUTH_CACHE = web.AppKey("auth_cache", dict)
THROTTLE = web.AppKey("throttle", object)
HASHER = web.AppKey("hasher", concurrent.futures.Executor)
