# Loads the board's modules, precompiled for the MicroPython unix port:
# esp32.py and machine.py call load(), and the first call is the power-on.
# This module sits above the board's modules: of them it imports only _env,
# _machine and _esp32.
#
# Compiling a module from source takes several times its size in heap for a
# moment, so the shim's .py files would not even import on a 32 KB heap (the
# firmware's esp32 module costs a board's heap next to nothing). So on
# MicroPython, the board's modules come from .mpy files that this module
# (re)builds with the mpy-cross next to the interpreter whenever a .py is
# newer, in a directory per .mpy format (mpy<sys.implementation._mpy>):
# __pycache__/ next to this file or, when the installed package is read-only
# (a system site-packages, a read-only container layer), the user's cache
# ($XDG_CACHE_HOME or ~/.cache, otatool/shim-mpy/<hash of this directory>).
# CACHE is that directory, or None: no mpy-cross, nowhere to write, or
# CPython, where the sources are imported as usual.
import os
import sys

_dir = __file__.rsplit("/", 1)[0] if "/" in __file__ else "."
if _dir[0] != "/":  # the user cache is keyed by this path, so it must name one place
    _dir = os.getcwd() + "/" + _dir
_cross = sys.executable.rsplit("/", 1)[0] + "/mpy-cross"


def _mtime(path):
    try:
        return os.stat(path)[8]
    except OSError:
        return -1


def _user_cache():
    # keyed by the install's directory: two installs (two venvs, a wheel and
    # a checkout) never load each other's .mpy files nor rebuild them in turn
    import binascii
    import hashlib

    path = os.getenv("XDG_CACHE_HOME") or ""
    if path[:1] != "/":  # the XDG rule: a relative path is ignored
        path = os.getenv("HOME")
        if not path:
            return None
        path += "/.cache"
    key = binascii.hexlify(hashlib.sha256(_dir).digest()[:8]).decode()
    return "%s/otatool/shim-mpy/%s" % (path, key)


def _built(path):
    # True when the app's side of the board is current in the directory
    # `path`, built there if need be; False when it cannot be written. Each
    # .mpy gets a private name, then a rename: parallel boards may build at
    # once, and none may load a half-written file. (The shell's complaints
    # about a read-only directory go nowhere: the next place is tried.)
    for m in ("_env", "_flash", "_part", "_chip", "_esp32", "_machine"):
        src, mpy = "%s/%s.py" % (_dir, m), "%s/%s.mpy" % (path, m)
        if _mtime(mpy) < _mtime(src) and os.system(
                "(mkdir -p '%s' && t='%s'.$$ && '%s' -march=host -o \"$t\" '%s' && mv \"$t\" '%s')"
                " 2>/dev/null" % (path, mpy, _cross, src, mpy)):
            return False
    return True


def _cache():
    # the first place the .mpy files are current in, or can be built in:
    # next to this file, else the user's cache
    if sys.implementation.name != "micropython" or _mtime(_cross) < 0:
        return None
    mpy = "/mpy%d" % sys.implementation._mpy
    if _built(_dir + "/__pycache__" + mpy):
        return _dir + "/__pycache__" + mpy
    path = _user_cache()
    if not (path and _built(path + mpy)):
        return None
    # _env finds the shim's directory (the helper process, the default apps)
    # from its own file, which is now in the user's cache: say it as a frozen
    # shim does
    if not os.getenv("OTA_SHIM"):
        os.putenv("OTA_SHIM", _dir)
    return path + mpy


CACHE = _cache()
del _dir, _cross, _mtime, _user_cache, _built, _cache


def load():
    # The board's modules, all at once like a firmware's built-in ones. The
    # bottom of the heap is held by one block meanwhile, so what the shim
    # keeps ends up above it and the app gets that memory back in one piece,
    # not riddled with the shim's objects (nor with this module's code: it
    # has run by now, and this function drops itself when done).
    global load
    hold = None
    if CACHE:
        import gc

        gc.collect()
        # all but what a power-on takes at most (less for the ESP8266
        # profile, which has no esp32 module; _env, which says so, is not
        # loaded yet); big heaps need no help (the unix port's default one
        # grows in pieces anyway)
        n = gc.mem_free() - (12000 if os.getenv("OTA_CHIP") == "esp8266" else 24000)
        n = min(n, 0x10000)
        while n > 1024 and hold is None:
            try:
                hold = bytearray(n)
            except MemoryError:  # free, but not in one piece
                n //= 2
        sys.path.insert(0, CACHE)
    try:
        while True:
            try:
                import _env

                __import__("_machine")
                if _env.ESP32:  # an ESP8266 has no esp32 module
                    __import__("_esp32")
                break
            except MemoryError:
                # The hold left too little in one piece (an app loaded first
                # and split the heap): the board's modules go where they fit.
                if hold is None:
                    raise
                hold = None
    finally:
        if CACHE:
            sys.path.remove(CACHE)
    # the other public module is then simply there, as a built-in one is
    for pub in ("machine", "esp32"):
        m = sys.modules.get("_" + pub)
        if m and pub not in sys.modules:
            m.__name__ = pub
            sys.modules[pub] = m
    load = None
