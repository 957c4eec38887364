"""Admin authentication: HTTP Basic checked against the stored scrypt
hashes, with failed logins throttled per client address.

admin_auth is the middleware: every /admin/ request either carries the
admin's name (request[ADMIN]) or is answered 401, or 429 with Retry-After
for an address with LOGIN_FAILURES failed logins within LOGIN_WINDOW seconds.
"""
import asyncio
import base64
import hashlib
import ipaddress
import math
import time

from aiohttp import web

from otatool.server import store
from otatool.server.appkeys import ADMIN, AUTH_CACHE, DB, HASHER, THROTTLE

LOGIN_FAILURES = 5      # failed admin logins from one address ...
LOGIN_WINDOW = 300      # ... within this many seconds: 429 until the oldest is this old
_THROTTLED_MAX = 10000  # addresses remembered; beyond, the longest-known is forgotten


@web.middleware
async def admin_auth(request, handler):
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
    name = await checked_login(request, *_basic_credentials(header))
    if name is None:
        raise _unauthorized()
    if len(seen) > 100:
        seen.clear()
    seen[key] = (now + 60, name)
    return name


async def checked_login(request, name, password):
    """`name` when it is an admin and `password` is theirs, else None. Every
    attempt counts against the client's address (the API's Basic header and
    the dashboard's sign-in form alike); an address with too many recent
    failures gets HTTPTooManyRequests with Retry-After, its password unchecked."""
    throttle, client = request.app[THROTTLE], client_key(request.remote)
    wait = throttle.retry_after(client)
    if wait:
        raise web.HTTPTooManyRequests(headers={"Retry-After": str(wait)})
    attempt = throttle.failing(client)
    if name is None or not await _password_ok(request.app, name, password):
        return None
    throttle.succeeded(client, attempt)
    return name


def _basic_credentials(header):
    """(name, password) of an HTTP Basic header; (None, None) when it is not one."""
    kind, _, value = header.partition(" ")
    if kind.lower() != "basic" or len(value) > 1024:
        return None, None
    try:
        name, sep, password = base64.b64decode(value, validate=True).decode().partition(":")
    except ValueError:  # not ASCII, not base64 (binascii.Error), not UTF-8
        return None, None
    return (name, password) if sep else (None, None)


async def _password_ok(app, name, password):
    if "\0" in name:  # no admin has a NUL in their name (PostgreSQL text cannot hold one)
        return False
    stored = await app[DB].admin_hash(name)
    # In a small pool of its own: the event loop keeps serving devices, and
    # a flood of guesses queues instead of taking every core and 16 MiB each.
    # store.check_password is looked up at each call, so that replacing it
    # (tests count and slow the checks) reaches the server.
    return await asyncio.get_running_loop().run_in_executor(
        app[HASHER], store.check_password, password, stored)


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
