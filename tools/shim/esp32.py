# The `esp32` module of the emulated board: Partition, from _esp32.py,
# loaded precompiled (see _mpy.py).
import _mpy

_mpy.imp("_esp32", globals())
del _mpy
