"""A real PostgreSQL server for the tests and the benchmark (and the
helpers both need to start servers on it), started from
the machine's PostgreSQL binaries in a temporary directory on a free port of
127.0.0.1, and removed afterwards. PostgreSQL refuses to run as root, so as
root it runs as the unprivileged user PG_USER (created when missing).

    with PostgresServer() as pg:
        url = pg.new_database()      # postgresql://... of an empty database
"""
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time

PG_USER = "otapg"


def pg_binary(name):
    """The path of PostgreSQL's `name` (initdb, pg_ctl), or None."""
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/" + name))
    return candidates[-1] if candidates else None


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_listening(port, process, seconds=60):
    """Returns once `process` (a Popen, e.g. an `otatool server` it started)
    accepts connections on 127.0.0.1:`port`; RuntimeError when it exits or
    `seconds` pass first."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError("the server on port %d exited with status %d"
                               % (port, process.returncode))
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("nothing listens on port %d after %d s" % (port, seconds))


def _as_server_user():
    """The command prefix that runs PostgreSQL's programs as a user it accepts."""
    if os.geteuid() != 0:
        return []
    try:
        pwd.getpwnam(PG_USER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", PG_USER], check=True)
    return ["runuser", "-u", PG_USER, "--"]


class PostgresServer:
    """A throwaway PostgreSQL cluster. Not durable (fsync off) unless
    `durable`: tests want it fast, a benchmark wants a server's real commits."""

    def __init__(self, max_connections=300, durable=False):
        self.max_connections = max_connections
        self.durable = durable
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="otatool-pg-")
        self._count = 0

    def start(self):
        run_as = _as_server_user()
        if run_as:
            os.chmod(self.dir, 0o755)
            shutil.chown(self.dir, PG_USER)
        subprocess.run(run_as + [pg_binary("initdb"), "-D", self._data(), "-U", "postgres",
                                 "-A", "trust", "--no-sync", "-E", "UTF8"],
                       check=True, capture_output=True)
        self.resume()
        return self

    def pause(self):
        """Shuts the server down, keeping its databases: an outage."""
        subprocess.run(_as_server_user() + [pg_binary("pg_ctl"), "-D", self._data(), "-m", "fast",
                                            "-w", "stop"], check=True, capture_output=True)

    def resume(self):
        """Starts the server (again) on the same port, with the same databases."""
        options = ("-c listen_addresses=127.0.0.1 -p %d -k %s -c max_connections=%d"
                   % (self.port, self.dir, self.max_connections))
        if not self.durable:
            options += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        subprocess.run(_as_server_user() + [pg_binary("pg_ctl"), "-D", self._data(), "-o", options,
                                            "-w", "-t", "60", "-l", os.path.join(self.dir, "log"),
                                            "start"], check=True, capture_output=True)

    def _data(self):
        return os.path.join(self.dir, "data")

    def url(self, database="postgres"):
        return "postgresql://postgres@127.0.0.1:%d/%s" % (self.port, database)

    def new_database(self):
        """The URL of a new, empty database."""
        import psycopg
        self._count += 1
        name = "ota%d" % self._count
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute("CREATE DATABASE %s" % name)
        return self.url(name)

    def stop(self):
        if os.path.isdir(self._data()):
            subprocess.run(_as_server_user() + [pg_binary("pg_ctl"), "-D", self._data(),
                                                "-m", "immediate", "-w", "stop"],
                           capture_output=True)
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self):
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc):
        self.stop()
