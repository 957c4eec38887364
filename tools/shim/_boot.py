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
import _chip

FS = _chip.DIR + "/fs"
_host = vfs.VfsPosix()  # no root: takes host paths as they are


class _BoardFs(vfs.VfsPosix):
    # VfsPosix builds both paths of a rename in one buffer, so two absolute
    # paths fail (HOST-BOARD-NOTES.md); littlefs on a board has no such bug.
    def rename(self, old, new):
        _host.rename(*[FS + p if p[0] == "/" else p for p in (old, new)])


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
    vfs.mount(_BoardFs(FS), "/")
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
