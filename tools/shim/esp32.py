# The `esp32` module of the emulated board: Partition, from _esp32.py,
# loaded precompiled (see _mpy.py).
import _mpy

if _mpy.load:  # the first import of esp32 or machine: the power-on
    _mpy.load()
import _env  # noqa: E402

if not _env.ESP32:
    raise ImportError("no module named 'esp32'")  # as on an ESP8266
from _esp32 import *  # noqa: E402,F401,F403

del _env, _mpy
