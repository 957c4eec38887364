# The firmware's start-up on the emulated board (MicroPython unix port only),
# what ports/esp32/main.c does once the bootloader has picked the app: the
# board's filesystem becomes /, sys.path becomes the firmware's, boot.py
# runs, then main.py if boot.py succeeded. Where a board would then sit in
# its REPL, this process ends. Started by `otatool board`:
#   micropython -X heapsize=... -c "import _boot; _boot.run()"
import os
import sys

import vfs

try:
    import esp32  # noqa: F401  power-on now: the shim is out of reach later
except ImportError:  # the ESP8266 profile
    pass
import machine  # noqa: F401
import _env

FS = _env.DIR + "/fs"
# A plain VfsPosix: the unix port cannot import modules from a mounted
# subclass of it (its import_stat then reads the wrong object), and imports
# from /lib matter more than the one trap that remains: os.rename with two
# absolute paths fails here (docs/HOST-BOARD.md), so board code renames
# with paths relative to the cwd "/", which littlefs boards handle alike.


def _run_file(name, g):
    # pyexec_file_if_exists(): True to go on with the next script
    try:
        os.stat(name)
    except OSError:
        return True
    return _run(lambda: execfile(name, g))


def _run(f):
    try:
        f()
        return True
    except SystemExit:
        return False  # sys.exit() or machine.soft_reset(): no main.py
    except BaseException as e:
        sys.print_exception(e)
        global _failed
        _failed = True
        return False


_failed = False


def run(script=None, lib=None):
    # script: source to run instead of boot.py/main.py; lib: a host
    # directory mounted as /lib (development: the repo's lib/)
    vfs.umount("/")
    vfs.mount(vfs.VfsPosix(FS), "/")
    if lib:
        vfs.mount(vfs.VfsPosix(lib), "/lib")
    os.chdir("/")
    sys.path[:] = ["", ".frozen", "/lib"]
    g = {"__name__": "__main__"}
    if script is not None:
        _run(lambda: exec(script, g))
    elif _run_file("boot.py", g):
        _run_file("main.py", g)
    if _failed:
        sys.exit(1)
