# The `machine` module of the emulated board (shadows the unix port's
# built-in one): the names of _machine.py, loaded precompiled (see _mpy.py).
import _mpy

if _mpy.load:  # the first import of esp32 or machine: the power-on
    _mpy.load()
from _machine import *  # noqa: E402,F401,F403

del _mpy
