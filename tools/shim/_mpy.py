# Loads the board's modules, precompiled for the MicroPython unix port:
# esp32.py and machine.py call load(), and the first call is the power-on.
# This module sits above the board's modules: of them it imports only _env,
# _machine and _esp32.
#
# Compiling a module from source takes several times its size in heap for a
# moment, so the shim's .py files would not even import on a 32 KB heap (the
# firmware's esp32 module costs a board's heap next to nothing). So on
# MicroPython, the board's modules come from
# __pycache__/mpy<sys.implementation._mpy>/*.mpy next to this file, which
# this module (re)builds with the mpy-cross next to the interpreter whenever a
# .py is newer. CACHE is that directory, or None: no mpy-cross, or CPython,
# where the sources are imported as usual.
import os
import sys

_dir = __file__.rsplit("/", 1)[0] if "/" in __file__ else "."
CACHE = _dir + "/__pycache__"


def _mtime(path):
    try:
        return os.stat(path)[8]
    except OSError:
        return -1


_cross = sys.executable.rsplit("/", 1)[0] + "/mpy-cross"
if sys.implementation.name != "micropython" or _mtime(_cross) < 0:
    CACHE = None
else:
    for _d in (CACHE, CACHE + "/mpy%d" % sys.implementation._mpy):  # per .mpy format
        try:
            os.mkdir(_d)
        except OSError:
            pass
    CACHE = _d
    # the app's side of the board
    for _m in ("_env", "_flash", "_part", "_chip", "_esp32", "_machine"):
        _src, _out = "%s/%s.py" % (_dir, _m), "%s/%s.mpy" % (CACHE, _m)
        # a private name, then a rename: parallel boards may build at once
        if _mtime(_out) < _mtime(_src) and os.system(
                "t='%s'.$$ && '%s' -march=host -o \"$t\" '%s' && mv \"$t\" '%s'"
                % (_out, _cross, _src, _out)):
            CACHE = None
            break
    del _d, _m, _src, _out
del _dir, _mtime, _cross


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
