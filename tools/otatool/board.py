"""`otatool board`: an emulated ESP32 board, booted on the MicroPython unix port.

The board is a directory (see tools/shim/_chip.py): `flash.bin` (4 MiB,
ESP32_GENERIC-OTA layout, created on first use) and `fs/`, the board's
filesystem. Each boot is one power-on: one micropython process, in which the
shim's bootloader picks the app from otadata and tools/shim/_boot.py mounts
`fs/` as `/` and runs boot.py, then main.py, with the chip's free heap as the
GC heap. `machine.reset()` (or a panic, or a power cut from OTA_POWER_CUT_AT)
ends the process and the board boots again, up to `--boots` times;
`machine.soft_reset()` restarts boot.py/main.py on the same app.

Python API for tests and demos:

    b = Board(tmp_path / "board", chip="esp32")
    first = b.boot()              # -> Boot: .reason, .stdout, .stderr, .slot
    boots = b.run(boots=5)        # boots again after resets; -> [Boot]
    b.run_script("import esp32; print(esp32.Partition(1).info())")
    b.running_slot(), b.otadata_states(), b.partitions(), b.flash_path
"""
import importlib.util
import os
import re
import signal
import subprocess
import sys
import threading

import argparse

import otatool
from otatool.cli import directory, int_range

# GC heap of a board in its stock ESP32_GENERIC* / ESP8266_GENERIC firmware
# (gc.mem_free() after boot, roughly; no SPIRAM)
HEAPS = {"esp32": "110k", "esp32s3": "180k", "esp32c3": "150k", "esp8266": "32k"}
# How a boot ended, and whether the board then boots again
REBOOTS = {"reset": True, "panic": True, "soft_reset": True, "power_cut": True,
           "exit": False, "exception": False, "no_app": False, "timeout": False,
           "crash": False}
FAULTS = ("OTA_POWER_CUT_AT", "OTA_FAIL_ERASE_AT", "OTA_FAIL_WRITE_AT")
_LOADED = re.compile(r"boot: Loaded app from partition at offset 0x([0-9a-f]+)")


def shim_module(name):
    """A shim module (format code shared with the board) for the host, under
    a private name so the host's `import esp32` never meets the shim."""
    spec = importlib.util.spec_from_file_location(
        "otatool._shim_" + name, os.path.join(otatool.SHIM_DIR, name + ".py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class Boot:
    """One power-on: `reason` is how it ended (see REBOOTS), `slot` the
    label of the app the bootloader loaded (None after a soft reset)."""

    def __init__(self, reason, stdout, stderr, returncode, slot):
        self.reason, self.stdout, self.stderr = reason, stdout, stderr
        self.returncode, self.slot = returncode, slot

    def __repr__(self):
        return "<Boot %s slot=%s>" % (self.reason, self.slot)


class Board:
    def __init__(self, path=None, chip=None, heap=None, lib=False):
        """path: board directory ($OTA_BOARD, default ./.ota-board); chip:
        esp32, esp32s3, esp32c3 or esp8266 ($OTA_CHIP); heap: GC heap
        ("110k"), default the chip's; lib: mount this repository's lib/ as
        /lib (development) instead of the board's own fs/lib."""
        self.path = os.path.abspath(str(path or os.environ.get("OTA_BOARD") or ".ota-board"))
        self.chip = chip or os.environ.get("OTA_CHIP") or "esp32"
        if self.chip not in HEAPS:
            raise ValueError("unknown chip %r (one of %s)" % (self.chip, ", ".join(HEAPS)))
        self.heap = heap or HEAPS[self.chip]
        self.lib = otatool.LIB_DIR if lib else None
        self.flash_path = os.path.join(self.path, "flash.bin")
        self.fs_dir = os.path.join(self.path, "fs")
        self._last_slot = None

    def heap_bytes(self):
        return heap_bytes(self.heap)

    # ---- power-ons ----

    def create(self, app=None):
        """Flash a fresh board (if there is none yet): ESP32_GENERIC-OTA
        layout, `app` (image bytes, default the shim's default app) in ota_0,
        otadata blank."""
        if os.path.exists(self.flash_path) or self.chip == "esp8266":
            os.makedirs(self.fs_dir, exist_ok=True)
            return
        os.makedirs(self.path, exist_ok=True)
        path = None
        if app is not None:
            path = os.path.join(self.path, "app.bin.tmp")
            with open(path, "wb") as f:
                f.write(app)
        # the shim's own factory, as the board runs it on first use
        subprocess.run([sys.executable, "-c", "import _factory; _factory.create(%r, %r, %r, %r)"
                        % (self.path, self.chip, otatool.SHIM_DIR, path)],
                       env=dict(os.environ, PYTHONPATH=otatool.SHIM_DIR), check=True)
        if path:
            os.remove(path)

    def boot(self, env=None, timeout=60, script=None, capture=True, on_line=None):
        """One power-on running boot.py and main.py (or `script`, source
        text, instead); `env` adds to the environment; `on_line(text)` sees
        each line the board prints as it prints it. -> Boot"""
        self.create()
        full = dict(os.environ)
        full.update(MICROPYPATH=otatool.SHIM_DIR + ":.frozen", OTA_BOARD=self.path,
                    OTA_CHIP=self.chip, OTA_BOOT_LOG="1")
        full.update(env or {})
        args = "lib=%r" % self.lib + (", script=%r" % script if script is not None else "")
        cmd = [_micropython(), "-X", "heapsize=%s" % self.heap,
               "-c", "import _boot; _boot.run(%s)" % args]
        out = subprocess.PIPE if capture or on_line else None
        with subprocess.Popen(cmd, env=full, cwd=self.fs_dir, stdout=out, stderr=out,
                              text=True) as proc:
            fired = []

            def kill():
                fired.append(True)
                proc.kill()

            watchdog = threading.Timer(timeout, kill)
            watchdog.start()
            try:
                lines = []
                if on_line:
                    for line in proc.stdout:
                        lines.append(line)
                        on_line(line.rstrip("\n"))
                stdout, stderr = proc.communicate()
                stdout = "".join(lines) + (stdout or "")
            finally:
                watchdog.cancel()
            reason = "timeout" if fired else self._reason(proc.returncode)
        found = _LOADED.findall(stderr or "")
        slot = self._label(int(found[-1], 16)) if found else None
        self._last_slot = slot or self._last_slot
        return Boot(reason, stdout, stderr, proc.returncode, slot)

    def run(self, boots=3, env=None, timeout=60, capture=True, on_boot=None, on_line=None):
        """Boot, and boot again after each reset, panic, soft reset or power
        cut, at most `boots` times. The fault variables in `env`
        (OTA_POWER_CUT_AT, ...) apply to the first boot only. -> [Boot]"""
        done = []
        env = dict(env or {})
        while len(done) < boots:
            b = self.boot(env, timeout, capture=capture, on_line=on_line)
            done.append(b)
            if on_boot:
                on_boot(len(done), b)
            if not REBOOTS[b.reason]:
                break
            env.update({k: "" for k in FAULTS})
        return done

    def run_script(self, src, env=None, timeout=60):
        """One power-on that runs `src` (with the board's fs as /) instead of
        boot.py and main.py. -> Boot"""
        return self.boot(env, timeout, script=src)

    def _reason(self, returncode):
        # what the board left in its RTC file on the way out (_chip.die)
        try:
            with open(os.path.join(self.path, "rtc")) as f:
                rtc = (f.read().split() or [""])[0]
        except OSError:
            rtc = ""
        if returncode == -signal.SIGKILL:
            return {"reset": "reset", "panic": "panic", "bootloop": "no_app"}.get(rtc, "power_cut")
        if returncode == 0:
            return "soft_reset" if rtc == "soft" else "exit"
        return "exception" if returncode == 1 else "crash"

    # ---- looking at the board from outside ----

    def read_flash(self, addr, n):
        with open(self.flash_path, "rb") as f:
            f.seek(addr)
            return f.read(n)

    def partitions(self):
        """[(type, subtype, address, size, label, encrypted)] from the table."""
        with open(self.flash_path, "rb") as f:
            def read(addr, buf):
                f.seek(addr)
                buf[:] = f.read(len(buf))
            parts = shim_module("_table").parse(read)
        if parts is None:
            raise ValueError("%s: broken partition table" % self.flash_path)
        return parts

    def _label(self, addr):
        return next((p[4] for p in self.partitions() if p[2] == addr), None)

    def running_slot(self):
        """Label of the app the last boot's bootloader loaded (kept over
        soft resets), None before the first boot."""
        return self._last_slot

    def otadata_states(self):
        """The two otadata entries: [(ota_seq, state name, crc ok)]; a blank
        sector is (0xFFFFFFFF, "UNDEFINED", False)."""
        od = shim_module("_otadata")
        otadata = next(p for p in self.partitions() if p[0] == 1 and p[1] == 0)
        out = []
        for i in (0, 1):
            seq, _, state, crc = od.unpack(self.read_flash(otadata[2] + i * 4096, 32))
            out.append((seq, od.STATE_NAMES.get(state, hex(state)), crc == od.crc(seq)))
        return out

    def write_flash(self, addr, data):
        """What `esptool write_flash` does: erase the sectors, write `data`
        (no NOR bookkeeping, no flash operation counted: the board is off)."""
        end = addr + len(data)
        first, last = addr // 4096 * 4096, (end + 4095) // 4096 * 4096
        with open(self.flash_path, "r+b") as f:
            f.seek(first)
            f.write(b"\xff" * (last - first))
            f.seek(addr)
            f.write(data)


def _micropython():
    from otatool.ptyboard import micropython_binary
    return micropython_binary()


def heap_bytes(text):
    """A heap size as `micropython -X heapsize=` takes it ("110k", "1m",
    "65536") in bytes; ValueError if it is not one."""
    m = re.fullmatch(r"([0-9]+)([kKmM]?)", text)
    if not m:
        raise ValueError(text)
    return int(m.group(1)) << {"": 0, "k": 10, "m": 20}[m.group(2).lower()]


def heap_size(text):
    """An argparse type: a GC heap the unix port can start with."""
    try:
        size = heap_bytes(text)
    except ValueError:
        size = -1
    if not 16 << 10 <= size <= 64 << 20:
        raise argparse.ArgumentTypeError("%r is not a heap size from 16k to 64m (e.g. 110k)" % text)
    return text


def unix_port_mpy():
    """sys.implementation._mpy of the unix port: the .mpy format and native
    architecture an emulated board loads."""
    return int(subprocess.run([_micropython(), "-c", "import sys; print(sys.implementation._mpy)"],
                              capture_output=True, text=True, timeout=30, check=True).stdout)


def register(subparsers):
    p = subparsers.add_parser(
        "board", help="boot an emulated ESP32 board on the MicroPython unix port",
        description="Power on an emulated board (flash image + filesystem directory): the "
                    "bootloader picks the app from otadata, then boot.py and main.py run from "
                    "DIR/fs as /. machine.reset() boots it again, up to --boots times.")
    p.add_argument("--board", metavar="DIR", type=directory,
                   help="board directory ($OTA_BOARD, default ./.ota-board)")
    p.add_argument("--chip", choices=sorted(HEAPS), help="chip ($OTA_CHIP, default esp32)")
    p.add_argument("--boots", type=int_range(1, 1000), default=3,
                   help="most power-ons in this run (default 3)")
    p.add_argument("--heap", type=heap_size, help="GC heap, e.g. 110k (default: the chip's free heap)")
    p.add_argument("--lib", action="store_true",
                   help="mount this repository's lib/ as /lib (development)")
    p.add_argument("--timeout", type=int_range(1, 86400), default=300,
                   help="seconds per boot (default 300)")
    p.set_defaults(func=board_command)


def board_command(args):
    board = Board(args.board, args.chip, args.heap, args.lib)

    def report(n, b):
        print("otatool board: boot %d ended: %s" % (n, b.reason), file=sys.stderr)

    boots = board.run(args.boots, timeout=args.timeout, capture=False, on_boot=report)
    return 0 if boots[-1].reason == "exit" else 1
