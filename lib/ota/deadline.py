# ota.deadline: one overall deadline for every download, for the update
# main.py runs at boot (ota.updater): whatever a server does, the app
# starts at most this late.
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
# A Download made while a deadline runs checks it (ota.http looks this
# module up in sys.modules, never imports it): a board that never sets a
# deadline (an ESP8266 with 32 KiB of heap doing ota.update) does not give
# it heap, and this module imports no download code. Not covered: the TLS
# handshake itself (mbedtls reads it inside wrap_socket), bounded by
# timeout_ms per read only.
import errno
import time

from ota import const, OTAError

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


def start(ms):
    """From now on no download goes on for more than `ms` milliseconds."""
    global _until
    _until = ticks_add(ticks_ms(), ms)


def stop():
    global _until
    _until = None


def running():
    return _until is not None


def left():
    """Milliseconds to the deadline; ESP_ERR_TIMEOUT once it has passed."""
    ms = ticks_diff(_until, ticks_ms()) if _until is not None else 1 << 30
    if ms <= 0:
        raise OTAError(_TIMEOUT, "update deadline reached")
    return ms


def reader(sock, raw, rd, timeout):
    # The read function (rd's signature: (mv, n) -> bytes read) of a
    # connection under the deadline: sock is what the download reads (TLS
    # or TCP), raw the TCP socket under it, rd sock's own read, timeout
    # (s) the download's wait for data. A CPython socket's recv_into returns
    # what has arrived anyway: its timeout is enough.
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
