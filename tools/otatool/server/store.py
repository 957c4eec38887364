"""The campaign server's state and decisions: who gets which update, when.

Everything the server knows lives in one SQL database, so a restart loses
nothing (Blynk kept campaigns in memory). SQLite is the default: one file, no
service to run. When a fleet outgrows one machine, point `db` at PostgreSQL
(`postgresql://user:pw@host/dbname`, needs otatool[postgres]) and run several
servers behind a load balancer, with the images on shared storage or a CDN
(campaigns with `url=`). Nothing is kept in a server's memory between
requests, so the servers agree at once. The tests run on both; the SQL here
stays portable (`?` placeholders rewritten for psycopg, BIGINT times, no
SQLite-only syntax, `RETURNING` which both have). The tables are made and
upgraded by migrations.py.

psycopg 3 (with psycopg_pool) rather than asyncpg: it speaks DB-API like
sqlite3, so one body of SQL and one code path serve both databases, and the
server runs them in a thread pool (AsyncStore) instead of on its event
loop; psycopg's binary wheel brings its own libpq, and its pool hands each
connection back committed or rolled back, never idle in a transaction.

Rollout states of one device in one campaign:

    (no row)     targeted, not offered: status shows "pending", or
                 "up_to_date" / "other_chip" when it will not be offered
    offered      told where the image is (attempts += 1; check-ins of one
                 device take its row's lock, so several servers count once)
    downloading  reported by the device (progress)
    installed    reported (right before the reboot into the new image), or
                 the device checked in running the new version
    confirmed    reported after ota.mark_app_valid(): done
    failed       reported by the device (error)
    rolled_back  reported, or seen at check-in: old -> new -> old. Final for
                 this campaign: its image is not offered to the device again
                 (a newer campaign may offer one)

A device is offered an image again only after a back-off that doubles with
each attempt, and never after `max_attempts` offers: a board whose new image
dies before it can report anything still stops asking (Blynk's reboot loop).
"""
import base64
import concurrent.futures
import asyncio
import contextlib
import functools
import hashlib
import hmac
import os
import re
import secrets
import sqlite3
import threading
import time

from otatool import device_module
from otatool.server.migrations import (SCHEMA_LOCK, SCHEMA_VERSION_TABLE, latest_version,
                                        migrations_after)

STATES = ("downloading", "installed", "confirmed", "rolled_back", "failed")
FAILED = ("failed", "rolled_back")
_PURGE_BATCH = 100  # expired sessions deleted at each sign-in, at most


class NotFound(LookupError):
    """Unknown token, user, project, file or campaign (HTTP 404)."""


class Invalid(ValueError):
    """A request that cannot be right whatever the state (HTTP 400)."""


class Conflict(ValueError):
    """The name is taken (HTTP 409)."""


class Unavailable(Exception):
    """The database cannot be opened, is not one, or cannot be reached: the
    server cannot start, or (once running) answers 503 until it is back."""


# --- versions ---------------------------------------------------------------

def version_key(text):
    """Sort key of a semantic version ("1.10.0" > "1.9.3", "2.0.0-rc1" <
    "2.0.0", "1.2" == "1.2.0"), or None when `text` is not one. The board's
    own ordering (lib/ota/version.py), so the server offers only what a
    board accepts as newer."""
    if not text:
        return None
    try:
        return device_module("ota.version").version_key(text.strip())
    except ValueError:
        return None


def same_version(a, b):
    """Equal strings, or equal semantic versions ("1.2" and "1.2.0")."""
    return a == b or (version_key(a) is not None and version_key(a) == version_key(b))


def is_newer(candidate, running):
    """True only when both parse and `candidate` is strictly newer: never
    the plain "not equal" that made Blynk downgrade boards."""
    a, b = version_key(candidate), version_key(running)
    return a is not None and b is not None and a > b


def backoff(attempts, base, cap):
    """Seconds before offer number attempts+1: base, 2*base, 4*base ... cap."""
    return min(base * (1 << min(max(attempts - 1, 0), 30)), cap)


# --- admin passwords --------------------------------------------------------

_SCRYPT = (1 << 14, 8, 1)


def hash_password(password):
    salt = secrets.token_bytes(16)
    n, r, p = _SCRYPT
    dk = hashlib.scrypt(password.encode(), salt=salt, n=n, r=r, p=p, dklen=32)
    return "scrypt$%d$%d$%d$%s$%s" % (n, r, p, base64.b64encode(salt).decode(),
                                       base64.b64encode(dk).decode())


def check_password(password, stored):
    """Constant-time check of `password` against a hash_password() string; a
    missing user is checked against a dummy hash so timing tells nothing."""
    if stored is None:
        stored, password = _DUMMY, ""
    _, n, r, p, salt, dk = stored.split("$")
    got = hashlib.scrypt(password.encode(), salt=base64.b64decode(salt), n=int(n),
                         r=int(r), p=int(p), dklen=32)
    return hmac.compare_digest(got, base64.b64decode(dk)) and stored is not _DUMMY


_DUMMY = hash_password(secrets.token_hex(16))


def _password_sha256(stored):
    """What a session keeps of its admin's password hash: enough to see
    that the password changed, nothing to test a guess against."""
    return hashlib.sha256(stored.encode()).hexdigest()


# --- the store --------------------------------------------------------------

def dialect(db):
    """"postgresql" or "sqlite" for a `db` setting; ValueError for a URL of
    a database this is not written for."""
    if db.startswith(("postgresql://", "postgres://")):
        return "postgresql"
    if sqlite_path(db) is None:
        raise ValueError("database %s is not supported: give a SQLite file (or sqlite:///PATH)"
                         " or a postgresql:// URL" % without_password(db))
    return "sqlite"


def sqlite_path(db):
    """The file of a SQLite `db` setting (a path or sqlite:///PATH), None
    for a URL of another kind."""
    if db.startswith("sqlite:///"):
        return db[len("sqlite:///"):]
    return None if "://" in db else db


def without_password(url):
    """`url` fit for a message or a log: a password in it is starred out."""
    return re.sub(r"(//[^/:@]*:)[^/]*@", r"\1***@", url)


class _SqliteConnections:
    """One SQLite connection per thread (a connection is not for two
    threads at once), in WAL mode: readers never wait for the writer, and
    a commit appends to the log instead of rewriting pages with two fsyncs.
    Writers take the lock when they begin (BEGIN IMMEDIATE), so a check-in
    that reads then writes never fails half-way on a busy database; they
    wait up to BUSY_WAIT seconds for another writer, in their own thread."""

    BUSY_WAIT = 10

    def __init__(self, path):
        folder = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(folder):  # else SQLite only says "unable to open database file"
            raise Unavailable("database %s: directory %s does not exist" % (path, folder))
        self.path = path
        self._local = threading.local()
        self._all = []
        self._lock = threading.Lock()
        self._connection()  # fails now, in one line, for a file that is no database

    def _connection(self):
        conn = getattr(self._local, "conn", None)
        if conn is None:
            try:
                conn = sqlite3.connect(self.path, timeout=self.BUSY_WAIT, isolation_level=None,
                                       check_same_thread=False)  # closed by close(), any thread
                conn.row_factory = sqlite3.Row
                conn.execute("PRAGMA journal_mode=WAL")
                # In WAL mode NORMAL loses no committed data when the process
                # dies; only a power cut can lose the last commits.
                conn.execute("PRAGMA synchronous=NORMAL")
            except sqlite3.Error as e:  # not a database, read-only, a directory...
                raise Unavailable("database %s: %s" % (self.path, e))
            self._local.conn = conn
            with self._lock:
                self._all.append(conn)
        return conn

    @contextlib.contextmanager
    def transaction(self, write):
        conn = self._connection()
        self._execute(conn, "BEGIN IMMEDIATE" if write else "BEGIN")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        self._execute(conn, "COMMIT")

    def _execute(self, conn, statement):
        # Where another process holding the file for longer than BUSY_WAIT
        # shows (a backup, a disk that failed): a moment's outage, not a bug.
        try:
            conn.execute(statement)
        except sqlite3.OperationalError as e:
            raise Unavailable("database %s: %s" % (self.path, e))

    def close(self):
        with self._lock:
            for conn in self._all:
                conn.close()
            self._all.clear()


class _PostgresConnections:
    """A pool of PostgreSQL connections (psycopg_pool): each transaction
    takes one and gives it back committed or rolled back, so no connection
    is left idle in a transaction. Check-ins of one device are serialized by
    the lock on its row, not here, so several servers may share the database."""

    WAIT = 10

    def __init__(self, url, size):
        try:
            import psycopg  # optional: `pip install otatool[postgres]`
            import psycopg_pool
            from psycopg.rows import dict_row
        except ImportError:
            raise Unavailable("%s: PostgreSQL needs `pip install psycopg psycopg-pool`"
                              " (or otatool[postgres])" % without_password(url))
        self.url = url
        try:  # one connection first: its error says why (the pool's only "timed out")
            psycopg.connect(url, connect_timeout=10).close()
        except psycopg.Error as e:
            raise Unavailable("database %s: %s" % (without_password(url), " ".join(str(e).split())))
        # A request waits at most WAIT seconds for a connection; while the
        # database is down that is how long it takes to be told so (503).
        self._pool = psycopg_pool.ConnectionPool(url, min_size=1, max_size=size, open=True,
                                                 kwargs={"autocommit": False, "row_factory": dict_row},
                                                 timeout=self.WAIT)
        self._outage = (psycopg.OperationalError, psycopg_pool.PoolTimeout)

    @contextlib.contextmanager
    def transaction(self, write):
        # The pool commits when the block ends and rolls back on an exception;
        # a connection the server dropped is discarded when it comes back.
        try:
            with self._pool.connection() as conn:
                yield conn
        except self._outage as e:
            raise Unavailable("database %s: %s" % (without_password(self.url),
                                                   " ".join(str(e).split())))

    def close(self):
        self._pool.close()


def _open(db, pool_size):
    if dialect(db) == "postgresql":
        return _PostgresConnections(db, pool_size), "postgresql"
    return _SqliteConnections(sqlite_path(db)), "sqlite"


def _reads(method):
    """Runs `method` in one read transaction (or in the caller's)."""
    return _in_transaction(method, write=False)


def _writes(method):
    """Runs `method` in one transaction that writes (or in the caller's)."""
    return _in_transaction(method, write=True)


def _in_transaction(method, write):
    @functools.wraps(method)
    def run(self, *args, **kwargs):
        with self._transaction(write):
            return method(self, *args, **kwargs)
    return run


class Store:
    """All campaign state. Each public method is one transaction (session()
    two: see there), on a connection of its own thread, so the server may
    call them from a thread pool (AsyncStore) and several servers may share
    one PostgreSQL database."""

    def __init__(self, db, clock=time.time, backoff_base=60, backoff_max=86400, pool_size=8):
        self.clock = clock
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self._local = threading.local()
        self._connections, self.dialect = _open(db, pool_size)
        try:
            self._migrate()
        except sqlite3.Error as e:  # read-only, locked for too long...
            self.close()
            raise Unavailable("database %s: %s" % (without_password(db), e))
        except BaseException:
            self.close()
            raise

    def close(self):
        self._connections.close()

    @contextlib.contextmanager
    def _transaction(self, write):
        """The thread's open transaction, or a new one for the outermost call."""
        if getattr(self._local, "conn", None) is not None:
            yield self._local.conn
            return
        with self._connections.transaction(write) as conn:
            self._local.conn = conn
            try:
                yield conn
            finally:
                self._local.conn = None

    def _lock_schema(self):
        """Within a write transaction: the servers sharing a database create
        its tables and first admin one at a time (SQLite's BEGIN IMMEDIATE
        already allows only one writer)."""
        if self.dialect == "postgresql":
            self._exec("SELECT pg_advisory_xact_lock(?)", (SCHEMA_LOCK,))

    @_writes
    def _migrate(self):
        self._lock_schema()
        self._exec(SCHEMA_VERSION_TABLE)
        row = self._row("SELECT MAX(version) AS v FROM schema_version")
        current = row["v"] or 0
        if current > latest_version():
            raise Unavailable("database schema version %d is newer than this otatool's (%d):"
                              " upgrade otatool" % (current, latest_version()))
        for version, statements in migrations_after(current, self.dialect):
            for ddl in statements:
                self._exec(ddl)
            self._exec("INSERT INTO schema_version (version, applied) VALUES (?, ?)",
                       (version, self._now()))

    def schema_version(self):
        row = self._row("SELECT MAX(version) AS v FROM schema_version")
        return row["v"]

    def _now(self):
        return int(self.clock())

    def _exec(self, sql, args=()):
        if any(isinstance(a, str) and "\0" in a for a in args):
            # PostgreSQL's text cannot hold one (SQLite's can): refused alike
            # on both, whatever the caller let through (a path, a login name).
            raise Invalid("text with a NUL character")
        if self.dialect != "sqlite":
            sql = sql.replace("?", "%s")
        with self._transaction(write=False) as conn:  # a lone query: a read of its own
            cur = conn.cursor()
            cur.execute(sql, args)
            return cur

    def _rows(self, sql, args=()):
        with self._transaction(write=False):
            return [dict(row) for row in self._exec(sql, args).fetchall()]

    def _row(self, sql, args=()):
        rows = self._rows(sql, args)
        return rows[0] if rows else None

    # admins

    @_writes
    def ensure_admin(self, name="admin"):
        """Create the first admin with a random password and return that
        password (the caller shows it once); None when an admin exists."""
        self._lock_schema()  # two servers starting at once: one admin, one password shown
        if self._row("SELECT name FROM admins"):
            return None
        return self.set_password(name)

    @_writes
    def set_password(self, name, password=None):
        password = password or secrets.token_urlsafe(18)
        self._exec("DELETE FROM admins WHERE name = ?", (name,))
        self._exec("INSERT INTO admins (name, hash) VALUES (?, ?)", (name, hash_password(password)))
        return password

    @_writes
    def reset_password(self, name):
        """A new random password for the existing admin `name`; NotFound when
        there is none (a mistyped name must not create a second admin)."""
        if self.admin_hash(name) is None:
            names = [r["name"] for r in self._rows("SELECT name FROM admins ORDER BY name")]
            raise NotFound("no admin %r (admins: %s)" % (name, ", ".join(names) or "none"))
        return self.set_password(name)

    @_reads
    def admin_hash(self, name):
        row = self._row("SELECT hash FROM admins WHERE name = ?", (name,))
        return row["hash"] if row else None

    # the dashboard's sign-in sessions (sessions.py says what they are)

    @_writes
    def open_session(self, secret_sha256, admin, csrf, lifetime, keep):
        """Record a session of `admin`, made with their password as it is
        now, open for `lifetime` seconds; of the admin's other sessions the
        newest keep-1 stay open. Expired sessions of anyone are deleted, up
        to _PURGE_BATCH: each session needs a sign-in, so none pile up."""
        now = self._now()
        stored = self.admin_hash(admin)
        if stored is None:
            raise NotFound("no admin %r" % admin)
        self._exec("DELETE FROM sessions WHERE secret_sha256 IN (SELECT secret_sha256"
                   " FROM sessions WHERE expires <= ? LIMIT ?)", (now, _PURGE_BATCH))
        others = self._rows("SELECT secret_sha256 FROM sessions WHERE admin = ?"
                            " ORDER BY created, secret_sha256", (admin,))
        for row in others[:max(len(others) - keep + 1, 0)]:
            self.end_session(row["secret_sha256"])
        self._exec("INSERT INTO sessions (secret_sha256, admin, password_sha256, csrf, created,"
                   " expires) VALUES (?, ?, ?, ?, ?, ?)",
                   (secret_sha256, admin, _password_sha256(stored), csrf, now, now + lifetime))

    def session(self, secret_sha256):
        """{admin, csrf} of the open session whose cookie's secret has this
        SHA-256, or None. One that has expired, or whose admin has another
        password since (set through any server), is deleted: a second
        transaction, so that the lookup every page makes stays a read."""
        row = self._session(secret_sha256)
        if row is None:
            return None
        if row["expires"] <= self._now() or row["hash"] is None \
                or row["password_sha256"] != _password_sha256(row["hash"]):
            self.end_session(secret_sha256)
            return None
        return {"admin": row["admin"], "csrf": row["csrf"]}

    @_reads
    def _session(self, secret_sha256):
        return self._row("SELECT s.*, a.hash FROM sessions s LEFT JOIN admins a"
                         " ON a.name = s.admin WHERE s.secret_sha256 = ?", (secret_sha256,))

    @_writes
    def end_session(self, secret_sha256):
        self._exec("DELETE FROM sessions WHERE secret_sha256 = ?", (secret_sha256,))

    # users, projects, devices

    @_writes
    def add_user(self, name):
        _check_name("user", name)
        if self._row("SELECT name FROM users WHERE name = ?", (name,)):
            raise Conflict("user %r exists" % name)
        self._exec("INSERT INTO users (name, created) VALUES (?, ?)", (name, self._now()))

    @_writes
    def add_project(self, user, name):
        _check_name("project", name)
        self._need_user(user)
        if self._project(user, name):
            raise Conflict("project %r of %r exists" % (name, user))
        self._exec("INSERT INTO projects (user_name, name, created) VALUES (?, ?, ?)",
                   (user, name, self._now()))

    @_writes
    def add_device(self, user, project=None, name=None, token=None):
        """Register a device; returns its token (generated unless given)."""
        self._need_user(user)
        if project is not None and not self._project(user, project):
            raise NotFound("no project %r for user %r" % (project, user))
        token = token or secrets.token_urlsafe(24)
        _check_name("token", token)
        if self.device(token):
            raise Conflict("token exists")
        self._exec("INSERT INTO devices (token, user_name, project, name, created)"
                   " VALUES (?, ?, ?, ?, ?)", (token, user, project, name, self._now()))
        return token

    @_writes
    def remove_device(self, token):
        if not self.device(token):
            raise NotFound("no such device")
        self._exec("DELETE FROM rollouts WHERE token = ?", (token,))
        self._exec("DELETE FROM devices WHERE token = ?", (token,))

    @_reads
    def device(self, token):
        return self._row("SELECT * FROM devices WHERE token = ?", (token,))

    @_reads
    def devices(self, user=None, project=None):
        sql, args = _target_where(None, user, project)
        return self._rows("SELECT * FROM devices" + sql + " ORDER BY created, token", args)

    @_reads
    def users(self):
        return self._rows("SELECT * FROM users ORDER BY name")

    @_reads
    def projects(self, user=None):
        if user is None:
            return self._rows("SELECT * FROM projects ORDER BY user_name, name")
        return self._rows("SELECT * FROM projects WHERE user_name = ? ORDER BY name", (user,))

    def _need_user(self, user):
        if not self._row("SELECT name FROM users WHERE name = ?", (user,)):
            raise NotFound("no user %r" % user)

    def _project(self, user, name):
        return self._row("SELECT name FROM projects WHERE user_name = ? AND name = ?", (user, name))

    # files

    @_writes
    def add_file(self, file_name, info):
        """Record an uploaded, already checked image. `info`: kind, chip,
        version, project_name, size, sha256 (of the image as installed),
        wire_size, wire_sha256 (of the file kept and downloaded: compressed
        or the same), window_bits (None unless compressed). Returns the file
        row; its id (the kept file's content) names the blob on disk and in
        /ota/fw/<id>."""
        fid = info["wire_sha256"][:32]
        self._exec("DELETE FROM files WHERE id = ?", (fid,))
        self._exec("INSERT INTO files (id, file_name, kind, chip, version, project_name,"
                   " size, sha256, uploaded, wire_size, wire_sha256, window_bits)"
                   " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                   (fid, file_name, info["kind"], info.get("chip"), info["version"],
                    info.get("project_name"), info["size"], info["sha256"], self._now(),
                    info["wire_size"], info["wire_sha256"], info.get("window_bits")))
        return self.file(fid)

    @_reads
    def file(self, fid):
        return self._row("SELECT * FROM files WHERE id = ?", (fid,))

    @_reads
    def files(self):
        """Every uploaded image, newest first (the dashboard's Images page)."""
        return self._rows("SELECT * FROM files ORDER BY uploaded DESC, file_name")

    @_reads
    def file_by_name(self, file_name):
        row = self._row("SELECT * FROM files WHERE file_name = ? ORDER BY uploaded DESC LIMIT 1",
                        (file_name,))
        if not row:
            raise NotFound("no uploaded file %r" % file_name)
        return row

    # campaigns

    @_writes
    def start(self, file_id, token=None, user=None, project=None, url=None,
              allow_downgrade=False, max_attempts=3):
        """Start a campaign for one device, one user's devices, one user's
        project, or (all None) every device. Returns its id."""
        if token is not None and (user or project):
            raise Invalid("give token, or user [+ project], not both")
        if project is not None and user is None:
            raise Invalid("project needs user")
        if token is not None and not self.device(token):
            raise NotFound("no such device")
        if user is not None:
            self._need_user(user)
        if project is not None and not self._project(user, project):
            raise NotFound("no project %r for user %r" % (project, user))
        f = self.file(file_id)
        if not allow_downgrade and version_key(f["version"]) is None:
            raise Invalid("version %r is not semantic (x.y.z): cannot tell newer from older;"
                          " start with allow_downgrade=1 to offer it to every other version"
                          % f["version"])
        if not 1 <= max_attempts <= 100:
            raise Invalid("max_attempts must be 1..100")
        cur = self._exec("INSERT INTO campaigns (file_id, url, target_token, target_user,"
                         " target_project, allow_downgrade, max_attempts, started)"
                         " VALUES (?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
                         (file_id, url, token, user, project, int(bool(allow_downgrade)),
                          max_attempts, self._now()))
        return cur.fetchone()["id"]

    @_writes
    def stop(self, campaign_id=None):
        """Stop one campaign or all running ones; returns the ids stopped."""
        if campaign_id is not None:
            c = self.campaign(campaign_id)
            ids = [c["id"]] if c["stopped"] is None else []
        else:
            ids = [r["id"] for r in self._rows("SELECT id FROM campaigns WHERE stopped IS NULL")]
        for cid in ids:
            self._exec("UPDATE campaigns SET stopped = ? WHERE id = ?", (self._now(), cid))
        return ids

    @_reads
    def campaign(self, campaign_id):
        row = self._row("SELECT c.*, f.file_name, f.kind, f.chip, f.version, f.size, f.sha256,"
                        " f.wire_size, f.window_bits"
                        " FROM campaigns c JOIN files f ON f.id = c.file_id WHERE c.id = ?",
                        (campaign_id,))
        if not row:
            raise NotFound("no campaign %s" % campaign_id)
        return row

    @_reads
    def campaigns(self, active_only=False):
        where = " WHERE c.stopped IS NULL" if active_only else ""
        return self._rows("SELECT c.*, f.file_name, f.kind, f.chip, f.version, f.size, f.sha256,"
                          " f.wire_size, f.window_bits"
                          " FROM campaigns c JOIN files f ON f.id = c.file_id" + where +
                          " ORDER BY c.id DESC")

    @_reads
    def status(self, campaign_id=None):
        """Per campaign: settings, state counts and every targeted device."""
        cs = [self.campaign(campaign_id)] if campaign_id is not None else self.campaigns()
        return [self._campaign_status(c) for c in cs]

    def _campaign_status(self, c):
        rows = {r["token"]: r for r in self._rows(
            "SELECT * FROM rollouts WHERE campaign_id = ?", (c["id"],))}
        sql, args = _target_where(c["target_token"], c["target_user"], c["target_project"])
        devices, counts = [], {}
        for d in self._rows("SELECT * FROM devices" + sql + " ORDER BY created, token", args):
            r = rows.get(d["token"]) or {}
            state = r.get("state") or _idle_state(c, d)
            counts[state] = counts.get(state, 0) + 1
            devices.append({"token": d["token"], "name": d["name"], "user": d["user_name"],
                            "project": d["project"], "state": state,
                            "attempts": r.get("attempts", 0),
                            "gave_up": r.get("attempts", 0) >= c["max_attempts"]
                            and state in FAILED,
                            "next_offer": r.get("next_offer"), "error": r.get("error"),
                            "progress": r.get("progress"), "from_version": r.get("from_version"),
                            "version": d["version"], "build": d["build"],
                            "last_seen": d["last_seen"], "updated": r.get("updated")})
        target = {"token": c["target_token"], "user": c["target_user"],
                  "project": c["target_project"]}
        return {"campaign": c["id"], "active": c["stopped"] is None, "started": c["started"],
                "stopped": c["stopped"], "target": {k: v for k, v in target.items() if v} or "all",
                "file": c["file_name"], "file_id": c["file_id"], "kind": c["kind"],
                "version": c["version"], "size": c["size"], "sha256": c["sha256"],
                "wire_size": c["wire_size"], "compressed": c["window_bits"] is not None,
                "url": c["url"], "allow_downgrade": bool(c["allow_downgrade"]),
                "max_attempts": c["max_attempts"], "counts": counts, "devices": devices}

    # devices talking

    @_writes
    def check_in(self, token, version, build=None, chip=None):
        """A device reports what it runs. Returns the campaign row (joined with
        its file) the device should install now, or None."""
        now = self._now()
        # The device's row first: updating it locks it until the commit, so
        # check-ins of one device, on any of the servers sharing the
        # database, follow one another and each offer is counted once.
        dev = self._row("UPDATE devices SET last_seen = ?, version = ?, build = ?,"
                        " chip = COALESCE(?, chip) WHERE token = ? RETURNING *",
                        (now, version, build, chip, token))
        if not dev:
            raise NotFound("unknown token")
        chip = dev["chip"]
        rollouts = self._note_version(token, version, now)
        for c in self.campaigns(active_only=True):
            # The newest campaign aimed at this device (and its chip)
            # decides, even when it decides "nothing": an older campaign
            # never overrides it.
            if _targets(c, dev) and not (c["chip"] and chip and c["chip"] != chip):
                r = rollouts.get(c["id"])
                if self._should_offer(c, r, version, now):
                    self._offer(c, r, token, version, now)
                    return c
                return None
        return None

    def _note_version(self, token, version, now):
        """Track old -> new -> old at check-in: a board that installed or ran
        the new image and comes back on an older version rolled back, whether
        or not it lived long enough to say so. Returns the device's rollouts
        as they are now, by campaign id (each check-in reads them once)."""
        rows = self._rows("SELECT r.*, f.version AS target FROM rollouts r"
                          " JOIN campaigns c ON c.id = r.campaign_id"
                          " JOIN files f ON f.id = c.file_id WHERE r.token = ?", (token,))
        for r in rows:
            if same_version(version, r["target"]):
                state = "installed" if r["state"] in ("offered", "downloading") else r["state"]
                if (state, r["seen_new"]) != (r["state"], 1):  # else nothing to write
                    self._exec("UPDATE rollouts SET seen_new = 1, state = ?, updated = ?"
                               " WHERE campaign_id = ? AND token = ?",
                               (state, now, r["campaign_id"], token))
                    r.update(state=state, seen_new=1, updated=now)
            elif (r["state"] != "rolled_back"  # already known: keep the board's own words
                  and (r["seen_new"] or r["state"] in ("installed", "confirmed"))
                  and not is_newer(version, r["target"])):
                self._fail(r, "rolled_back",
                           "checked in on %s after installing %s" % (version, r["target"]), now)
        return {r["campaign_id"]: r for r in rows}

    def _should_offer(self, c, r, version, now):
        """Whether campaign `c` offers its image now to a device running
        `version` whose rollout of it is `r` (None: never offered)."""
        if same_version(version, c["version"]):
            return False
        if not (is_newer(c["version"], version) or c["allow_downgrade"]):
            return False
        if r is None:
            return True
        if r["state"] == "rolled_back":
            # The board went back to its old image: this one failed on it,
            # and offering it again would loop. A newer campaign may try.
            return False
        if now < r["next_offer"]:
            return False
        if r["attempts"] < c["max_attempts"]:
            return True
        if r["state"] not in FAILED:
            # The last offer's back-off is over and the device still runs the
            # old version: that attempt failed without a word.
            self._fail(r, "failed", "no success after %d offers" % r["attempts"], now)
        return False

    def _offer(self, c, r, token, version, now):
        attempts = (r["attempts"] if r else 0) + 1
        # The next offer waits even if the device never reports: a board that
        # dies in the new image before reporting must not loop.
        nxt = now + backoff(attempts, self.backoff_base, self.backoff_max)
        if r:
            self._exec("UPDATE rollouts SET state = 'offered', attempts = ?, next_offer = ?,"
                       " seen_new = 0, from_version = ?, error = NULL, progress = NULL,"
                       " updated = ? WHERE campaign_id = ? AND token = ?",
                       (attempts, nxt, version, now, c["id"], token))
        else:
            self._exec("INSERT INTO rollouts (campaign_id, token, state, attempts, next_offer,"
                       " seen_new, from_version, updated) VALUES (?, ?, 'offered', ?, ?, 0, ?, ?)",
                       (c["id"], token, attempts, nxt, version, now))

    def _fail(self, r, state, error, now):
        """Rollout `r` (a row, updated in place) ends in `state`."""
        nxt = max(r["next_offer"], now + backoff(r["attempts"], self.backoff_base, self.backoff_max))
        self._exec("UPDATE rollouts SET state = ?, error = ?, next_offer = ?, updated = ?"
                   " WHERE campaign_id = ? AND token = ?",
                   (state, error, nxt, now, r["campaign_id"], r["token"]))
        r.update(state=state, error=error, next_offer=nxt, updated=now)

    @_writes
    def report(self, token, campaign_id, state, error=None, progress=None):
        """A device tells how its update goes (see STATES)."""
        if state not in STATES:
            raise Invalid("state must be one of " + ", ".join(STATES))
        now = self._now()
        # A report is a sign of life; updating the device's row also locks
        # it, as a check-in does, so the two never interleave on one device.
        if not self._row("UPDATE devices SET last_seen = ? WHERE token = ? RETURNING token",
                         (now, token)):
            raise NotFound("unknown token")
        r = self._row("SELECT * FROM rollouts WHERE campaign_id = ? AND token = ?",
                      (campaign_id, token))
        if r is None:
            raise NotFound("no update of campaign %s was offered to this device" % campaign_id)
        if state in FAILED:
            self._fail(r, state, error, now)
        else:
            self._exec("UPDATE rollouts SET state = ?, error = ?, progress = ?, updated = ?"
                       " WHERE campaign_id = ? AND token = ?",
                       (state, error, progress, now, campaign_id, token))


def _idle_state(c, d):
    """Status of a targeted device that was never offered this campaign."""
    if c["chip"] and d["chip"] and c["chip"] != d["chip"]:
        return "other_chip"
    if d["version"] and (same_version(d["version"], c["version"]) or not (
            c["allow_downgrade"] or is_newer(c["version"], d["version"]))):
        return "up_to_date"
    return "pending"


def _check_name(what, name):
    if not isinstance(name, str) or not 1 <= len(name) <= 64 or not name.isprintable():
        raise Invalid("%s must be 1..64 printable characters" % what)


def _target_where(token, user, project):
    if token is not None:
        return " WHERE token = ?", (token,)
    if user is not None and project is not None:
        return " WHERE user_name = ? AND project = ?", (user, project)
    if user is not None:
        return " WHERE user_name = ?", (user,)
    return "", ()


def _targets(c, dev):
    if c["target_token"] is not None:
        return c["target_token"] == dev["token"]
    if c["target_user"] is not None and c["target_user"] != dev["user_name"]:
        return False
    return c["target_project"] is None or c["target_project"] == dev["project"]


class AsyncStore:
    """A Store's methods as coroutines, each run in a thread of a pool no
    larger than the store's connections: the event loop never waits for the
    database (a SQLite commit's fsync, a lock another process holds, a
    PostgreSQL round trip), so requests that need none answer at once."""

    def __init__(self, store, threads):
        self.store = store
        self._threads = concurrent.futures.ThreadPoolExecutor(threads, "otatool-db")

    def __getattr__(self, name):
        method = getattr(self.store, name)  # looked up at each call: tests replace some

        async def in_thread(*args, **kwargs):
            return await asyncio.get_running_loop().run_in_executor(
                self._threads, functools.partial(method, *args, **kwargs))
        return in_thread

    def close(self):
        self._threads.shutdown(wait=True, cancel_futures=True)
        self.store.close()
