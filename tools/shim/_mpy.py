# The shim's app-side modules, precompiled for the MicroPython unix port.
#
# Compiling a module from source takes several times its size in heap for a
# moment, so the shim's .py files would not even import on a 32 KB heap (the
# firmware's esp32 module costs a board's heap next to nothing). So on
# MicroPython, esp32.py imports its code from __pycache__/*.mpy, which this
# module (re)builds with the mpy-cross next to the interpreter whenever a .py
# is newer. CACHE is that directory, or None: no mpy-cross, or CPython, where
# the sources are imported as usual.
import os
import sys

SHIM = __file__.rsplit("/", 1)[0] if "/" in __file__ else "."
if SHIM[0] != "/":
    SHIM = os.getcwd() + "/" + SHIM
CACHE = SHIM + "/__pycache__"


def _mtime(path):
    try:
        return os.stat(path)[8]
    except OSError:
        return -1


_cross = sys.executable.rsplit("/", 1)[0] + "/mpy-cross"
if sys.implementation.name != "micropython" or _mtime(_cross) < 0:
    CACHE = None
else:
    try:
        os.mkdir(CACHE)
    except OSError:
        pass
    for _m in ("_chip", "_flash", "_power", "_esp32", "_machine"):
        _src, _out = "%s/%s.py" % (SHIM, _m), "%s/%s.mpy" % (CACHE, _m)
        # a private name, then a rename: parallel boards may build at once
        if _mtime(_out) < _mtime(_src) and os.system(
                "t='%s'.$$ && '%s' -march=host -o \"$t\" '%s' && mv \"$t\" '%s'"
                % (_out, _cross, _src, _out)):
            CACHE = None
            break
del _mtime


def imp(name, into):
    # Put the public names of shim module `name` into the dict `into` (a
    # public module's globals), loading it precompiled when there is a cache.
    # Meanwhile the bottom of the heap is held by one block: what the shim
    # keeps ends up above it, and the app gets it back in one piece, not
    # riddled with the shim's objects (a board's esp32 module costs nothing).
    hold = None
    if CACHE:
        import gc

        gc.collect()
        hold = bytearray(max(0, gc.mem_free() - 14000))
        sys.path.insert(0, CACHE)
    try:
        m = __import__(name)
    finally:
        if CACHE:
            sys.path.remove(CACHE)
    del hold
    for k in dir(m):
        if k[0] != "_":
            into[k] = getattr(m, k)
