# The `machine` module of the emulated board (shadows the unix port's
# built-in one): the names of _machine.py, loaded precompiled (see _mpy.py).
import _mpy

_mpy.imp("_machine", globals())
del _mpy
