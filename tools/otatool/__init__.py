"""otatool: host side of the `ota` MicroPython OTA library."""
import os

# The repository root: tools/otatool/__init__.py -> ../..
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SHIM_DIR = os.path.join(REPO, "tools", "shim")
LIB_DIR = os.path.join(REPO, "lib")
