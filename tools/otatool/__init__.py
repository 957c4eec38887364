"""otatool: host side of the `ota` MicroPython OTA library."""
import importlib
import os
import sys
from importlib import resources

# Files that ship inside this package (pyproject.toml maps them in):
# device/ is what a board holds (boot.py, main.py, lib/ota/), shim/ the
# emulated ESP32. pip installs wheels unzipped, so these are real
# directories that micropython and mpremote can be pointed at.
_PACKAGE = resources.files(__name__)
DEVICE_DIR = str(_PACKAGE / "device")
LIB_DIR = os.path.join(DEVICE_DIR, "lib")
SHIM_DIR = str(_PACKAGE / "shim")
# FROZEN_MANIFEST= of a firmware build that freezes ota (docs/FREEZING.md)
FROZEN_MANIFEST = os.path.join(DEVICE_DIR, "manifest.py")


def device_module(name):
    """A module of the device package (e.g. "ota.image"), imported here on
    CPython: the host tools judge images, manifests and versions with the
    board's own code."""
    if LIB_DIR not in sys.path:
        sys.path.insert(0, LIB_DIR)
    return importlib.import_module(name)
