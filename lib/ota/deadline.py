# ota.deadline: one overall deadline for every download (ota.http), for the
# update main.py runs at boot (ota.updater): whatever a server does, the
# app starts at most this late.
#
#   import ota.deadline
#   ota.deadline.start(300_000)   # ms from now
#   ... ota.check(), ota.begin()..., ota.report() ...
#   ota.deadline.stop()
#
# timeout_ms alone does not bound an update: it limits each wait for data,
# and MicroPython's blocking readinto(buf, n) waits for all n bytes, each
# within the timeout, so a server sending a byte a second holds one 4 KiB
# read for an hour, and a head sent a byte at a time (up to 8 KiB) even
# longer. Under the deadline every read takes what has arrived (the TCP
# socket non-blocking just for it; a TLS socket then returns what it could
# decrypt) and polls for more, never past the deadline; connecting waits at
# most until it. Past it, ESP_ERR_TIMEOUT, as for a stall: a firmware
# download keeps its valid prefix for the next attempt.
#
# A module of its own, hooked into ota.http's Download while a deadline
# runs, and not code in ota.http: a board that never sets a deadline (an
# ESP8266 with 32 KiB of heap doing ota.update) does not give it heap.
# Not covered: the TLS handshake itself (mbedtls reads it inside
# wrap_socket), bounded by timeout_ms per read only.
import errno
import socket
import time

from ota import const, OTAError
import ota.http as http
import ota.http_extra as extra

_TIMEOUT = const(0x107)

try:
    from time import ticks_add, ticks_diff, ticks_ms
except ImportError:     # CPython
    def ticks_ms():
        return int(time.monotonic() * 1000)

    def ticks_add(t, ms):
        return t + ms

    def ticks_diff(a, b):
        return a - b

_until = None     # ticks_ms() of the deadline while one runs
_connect = http.Download._connect
_resume = extra.resume


class _Net:
    # ota.http's `socket` module while a deadline runs: the real one, but
    # the last socket made is kept, as the TCP socket under a TLS one is
    # what a read makes non-blocking.
    SOCK_STREAM = socket.SOCK_STREAM
    getaddrinfo = socket.getaddrinfo
    timeout = getattr(socket, "timeout", ())
    last = None

    def socket(*args):
        _Net.last = socket.socket(*args)
        return _Net.last


def start(ms):
    """From now on no download goes on for more than `ms` milliseconds."""
    global _until
    _until = ticks_add(ticks_ms(), ms)
    http.socket = _Net
    http.Download._connect = _bounded_connect
    extra.resume = _bounded_resume


def stop():
    global _until
    _until = None
    http.socket = socket
    http.Download._connect = _connect
    extra.resume = _resume
    _Net.last = None


def left():
    """Milliseconds to the deadline; ESP_ERR_TIMEOUT once it has passed."""
    ms = ticks_diff(_until, ticks_ms())
    if ms <= 0:
        raise OTAError(_TIMEOUT, "update deadline reached")
    return ms


def _bounded_connect(dl, url):
    # Download._connect: connect within what is left, then read through
    # _read. Past the deadline no resume attempt is worth making.
    t = dl._timeout
    try:
        dl._timeout = min(t, left() / 1000)
    except OTAError:
        dl._retries = 0
        raise
    try:
        _connect(dl, url)
    finally:
        dl._timeout = t
    dl._rd = _read(dl._sock, _Net.last, dl._rd, t)


def _bounded_resume(dl, code):
    # A resume that gave up because the deadline passed says so.
    try:
        return _resume(dl, code)
    except OTAError:
        left()
        raise


def _read(sock, raw, rd, timeout):
    # The dl._rd of a connection under the deadline. A CPython socket's
    # recv_into returns what has arrived anyway: its timeout is enough.
    native = hasattr(sock, "readinto")
    if native:
        import select
        poll = select.poll()
        poll.register(raw, select.POLLIN)

    def read(mv, n):
        while True:
            wait = min(timeout, left() / 1000)
            if not native:
                sock.settimeout(wait)
                return rd(mv, n)
            raw.settimeout(0)
            try:
                k = rd(mv, n)
            finally:
                raw.settimeout(timeout)
            if k is not None:
                return k
            if not poll.poll(int(wait * 1000)):
                raise OSError(errno.ETIMEDOUT)
    return read
