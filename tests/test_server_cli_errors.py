"""`otatool serve` and `otatool server` started wrongly: each mistake is one
line on stderr naming the value at fault, exit status 2 for a command line
wrong in itself (a port out of range, a database URL of another kind) and 1
for one that failed (port in use, address not on this host, a file or user
that does not exist), and never a traceback.

Runs the installed `otatool` script in a subprocess, as a user would."""
import os
import socket
import subprocess
import sys

import pytest

from otatool.server import store as campaigns

OTATOOL = os.path.join(os.path.dirname(sys.executable), "otatool")
USAGE, FAILURE = 2, 1
NOT_HERE = "192.0.2.1"  # TEST-NET-1 (RFC 5737): never an address of this host
NO_SUCH_HOST = "nosuchhost.invalid"  # .invalid never resolves (RFC 6761)


@pytest.fixture
def place(tmp_path):
    """Files and a busy port the cases refer to as {name}."""
    (tmp_path / "www").mkdir()
    (tmp_path / "a-dir").mkdir()
    (tmp_path / "plain.txt").write_text("not a directory, not a database\n")
    (tmp_path / "damaged.pem").write_text("-----BEGIN CERTIFICATE-----\nnope\n")
    (tmp_path / "broken.toml").write_text("port = \n")
    (tmp_path / "typo.toml").write_text("prot = 9000\n")
    for driver in ("psycopg", "psycopg_pool"):
        (tmp_path / "no-driver" / driver).mkdir(parents=True)
        (tmp_path / "no-driver" / driver / "__init__.py").write_text(
            "raise ImportError('No module named %s')\n" % driver)
    store = campaigns.Store(str(tmp_path / "fleet.sqlite"))
    store.set_password("admin", "old password")
    store.close()
    busy = socket.create_server(("127.0.0.1", 0))  # listening: nobody else may bind it
    yield {"tmp": str(tmp_path), "busy": str(busy.getsockname()[1])}
    busy.close()


def otatool(args, place, env=None):
    # Every case exits at once; the timeout only bounds a regression that
    # starts serving (on loopback: every case names --host or fails before).
    return subprocess.run([OTATOOL] + [a.format(**place) for a in args], capture_output=True,
                          text=True, timeout=20, cwd=place["tmp"],
                          env=dict(os.environ, **{k: v.format(**place)
                                                  for k, v in (env or {}).items()}))


SERVE = ["serve", "{tmp}/www"]
SERVER = ["server", "--db", "{tmp}/new.sqlite", "--host", "127.0.0.1"]
LOOPBACK = ["--host", "127.0.0.1", "--port", "0"]
CASES = [
    # (what, arguments, environment, exit status, the value the line must name)
    ("serve: port in use", SERVE + ["--port", "{busy}"], {}, FAILURE, "{busy}"),
    ("serve: negative port", SERVE + ["--port", "-1"], {}, USAGE, "-1"),
    ("serve: port above 65535", SERVE + ["--port", "70000"], {}, USAGE, "70000"),
    ("serve: address not on this host", SERVE + ["--port", "0", "--bind", NOT_HERE], {},
     FAILURE, NOT_HERE),
    ("serve: host name that does not resolve", SERVE + ["--port", "0", "--bind", NO_SUCH_HOST], {},
     FAILURE, NO_SUCH_HOST),
    ("serve: --cert-dir is a file",
     SERVE + ["--port", "0", "--tls", "--cert-dir", "{tmp}/plain.txt"], {}, FAILURE, "plain.txt"),
    ("serve: DIR is a file", ["serve", "{tmp}/plain.txt", "--port", "0"], {}, FAILURE, "plain.txt"),
    ("server: port in use", SERVER + ["--port", "{busy}"], {}, FAILURE, "{busy}"),
    ("server: negative port", SERVER + ["--port", "-1"], {}, USAGE, "-1"),
    ("server: port above 65535", SERVER + ["--port", "70000"], {}, USAGE, "70000"),
    ("server: port not a number in the environment", SERVER, {"OTA_SERVER_PORT": "80a"}, USAGE,
     "80a"),
    ("server: address not on this host",
     ["server", "--db", "{tmp}/new.sqlite", "--port", "0", "--host", NOT_HERE], {}, FAILURE,
     NOT_HERE),
    ("server: host name that does not resolve",
     ["server", "--db", "{tmp}/new.sqlite", "--port", "0", "--host", NO_SUCH_HOST], {}, FAILURE,
     NO_SUCH_HOST),
    ("server: certificate file missing", SERVER + ["--port", "0", "--cert", "{tmp}/gone.pem",
                                                   "--key", "{tmp}/damaged.pem"], {}, FAILURE,
     "gone.pem"),
    ("server: key file missing", SERVER + ["--port", "0", "--cert", "{tmp}/damaged.pem",
                                           "--key", "{tmp}/gone-key.pem"], {}, FAILURE,
     "gone-key.pem"),
    ("server: certificate that is not one", SERVER + ["--port", "0", "--cert", "{tmp}/damaged.pem",
                                                      "--key", "{tmp}/damaged.pem"], {}, FAILURE,
     "damaged.pem"),
    ("server: certificate without a key", SERVER + ["--port", "0", "--cert", "{tmp}/damaged.pem"],
     {}, USAGE, "--key"),
    ("server: MySQL URL", ["server", "--db", "mysql://x"] + LOOPBACK, {}, USAGE, "mysql://x"),
    ("server: database in a directory that does not exist",
     ["server", "--db", "{tmp}/nowhere/ota.sqlite"] + LOOPBACK, {}, FAILURE, "nowhere"),
    ("server: database that is a directory", ["server", "--db", "{tmp}/a-dir"] + LOOPBACK, {},
     FAILURE, "a-dir"),
    ("server: database that is not one", ["server", "--db", "{tmp}/plain.txt"] + LOOPBACK, {},
     FAILURE, "plain.txt"),
    ("server: --reset-password of a user that does not exist",
     ["server", "--db", "{tmp}/fleet.sqlite", "--reset-password", "bob"], {}, FAILURE, "'bob'"),
    ("server: --reset-password on a database that does not exist",
     ["server", "--db", "{tmp}/gone.sqlite", "--reset-password", "admin"], {}, FAILURE,
     "gone.sqlite"),
    ("server: --config file missing", SERVER + ["--config", "{tmp}/gone.toml"], {}, FAILURE,
     "gone.toml"),
    ("server: --config file that is not TOML", SERVER + ["--config", "{tmp}/broken.toml"], {},
     USAGE, "broken.toml"),
    ("server: --config with an unknown setting", SERVER + ["--config", "{tmp}/typo.toml"], {},
     USAGE, "prot"),
    ("server: no room for waiting connections", SERVER + ["--port", "0"],
     {"OTA_SERVER_BACKLOG": "0"}, USAGE, "backlog"),
    ("server: no database connections", SERVER + ["--port", "0"],
     {"OTA_SERVER_DB_CONNECTIONS": "none"}, USAGE, "db_connections"),
]
# The driver is an extra (otatool[postgres]); {tmp}/no-driver hides it as if
# it were not installed.
CASES.append(("server: PostgreSQL without psycopg",
              ["server", "--db", "postgresql://ota:hunter2@localhost/ota"] + LOOPBACK,
              {"PYTHONPATH": "{tmp}/no-driver"}, FAILURE, "otatool[postgres]"))


@pytest.mark.parametrize("args, env, status, named", [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_a_wrong_start_is_one_line_naming_the_value(place, args, env, status, named):
    out = otatool(args, place, env)
    assert "Traceback" not in out.stderr + out.stdout
    lines = out.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("otatool: error: "), out.stderr
    assert named.format(**place) in lines[0]
    assert out.returncode == status, out.stderr


def test_a_database_password_is_not_repeated_in_the_error(place):
    out = otatool(["server", "--db", "postgresql://ota:hunter2@localhost:1/ota"] + LOOPBACK, place)
    assert out.returncode != 0 and "hunter2" not in out.stderr + out.stdout


def test_reset_password_never_creates_an_admin_or_a_database(place):
    assert otatool(["server", "--db", "{tmp}/fleet.sqlite", "--reset-password", "bob"],
                   place).returncode == FAILURE
    assert otatool(["server", "--db", "{tmp}/gone.sqlite", "--reset-password", "admin"],
                   place).returncode == FAILURE
    store = campaigns.Store(os.path.join(place["tmp"], "fleet.sqlite"))
    try:
        assert store.admin_hash("bob") is None
    finally:
        store.close()
    assert not os.path.exists(os.path.join(place["tmp"], "gone.sqlite"))


def test_reset_password_of_an_existing_admin_prints_a_new_one_that_works(place):
    out = otatool(["server", "--db", "{tmp}/fleet.sqlite", "--reset-password", "admin"], place)
    assert out.returncode == 0 and out.stderr == ""
    password = out.stdout.split("new password for admin: ")[1].strip()
    store = campaigns.Store(os.path.join(place["tmp"], "fleet.sqlite"))
    try:
        assert campaigns.check_password(password, store.admin_hash("admin"))
        assert not campaigns.check_password("old password", store.admin_hash("admin"))
    finally:
        store.close()


def test_a_database_in_a_missing_directory_leaves_nothing_behind(place):
    otatool(["server", "--db", "{tmp}/nowhere/ota.sqlite"] + LOOPBACK, place)
    assert not os.path.exists(os.path.join(place["tmp"], "nowhere"))
