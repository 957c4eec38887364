"""otatool: host side of the `ota` MicroPython OTA library."""
import importlib
import os
import sys

# The repository root: tools/otatool/__init__.py -> ../..
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SHIM_DIR = os.path.join(REPO, "tools", "shim")
LIB_DIR = os.path.join(REPO, "lib")


def device_module(name):
    """A module of the device package (e.g. "ota.image"), imported here on
    CPython: the host tools judge images, manifests and versions with the
    board's own code."""
    if LIB_DIR not in sys.path:
        sys.path.insert(0, LIB_DIR)
    return importlib.import_module(name)
