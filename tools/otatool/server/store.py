"""The campaign server's state and decisions: who gets which update, when.

Everything the server knows lives in one SQL database, so a restart loses
nothing (Blynk kept campaigns in memory). SQLite is the default: one file, no
service to run. When a fleet outgrows one machine, point `db` at PostgreSQL
(`postgresql://user:pw@host/dbname`, needs `pip install psycopg`) and run several
servers behind a load balancer, with the images on shared storage or a CDN
(campaigns with `url=`). Only SQLite is tested; the SQL here stays portable
(`?` placeholders rewritten for psycopg, BIGINT times, no SQLite-only syntax,
`RETURNING` which both have). The tables themselves are in migrations.py.

Rollout states of one device in one campaign:

    (no row)     targeted, not offered: status shows "pending", or
                 "up_to_date" / "other_chip" when it will not be offered
    offered      told where the image is (attempts += 1)
    downloading  reported by the device (progress)
    installed    reported (right before the reboot into the new image), or
                 the device checked in running the new version
    confirmed    reported after ota.mark_app_valid(): done
    failed       reported by the device (error)
    rolled_back  reported, or seen at check-in: old -> new -> old

A device is offered an image again only after a back-off that doubles with
each attempt, and never after `max_attempts` offers: a board whose new image
dies before it can report anything still stops asking (Blynk's reboot loop).
"""
import base64
import contextlib
import hashlib
import hmac
import os
import re
import secrets
import sqlite3
import time

from otatool import device_module
from otatool.server.migrations import schema

STATES = ("downloading", "installed", "confirmed", "rolled_back", "failed")
FAILED = ("failed", "rolled_back")


class NotFound(LookupError):
    """Unknown token, user, project, file or campaign (HTTP 404)."""


class Invalid(ValueError):
    """A request that cannot be right whatever the state (HTTP 400)."""


class Conflict(ValueError):
    """The name is taken (HTTP 409)."""


class Unavailable(Exception):
    """The database cannot be opened or is not one: the server cannot start."""


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


# --- the store --------------------------------------------------------------

def connect(db):
    """(DB-API connection, dialect) for a path or database URL. ValueError
    for a URL of a database this is not written for; Unavailable when the
    database cannot be opened."""
    if db.startswith(("postgresql://", "postgres://")):
        try:
            import psycopg  # optional: only fleets that outgrow SQLite need it
        except ImportError:
            raise Unavailable("%s: PostgreSQL needs `pip install psycopg`" % without_password(db))
        try:
            return psycopg.connect(db, autocommit=False), "postgresql"
        except psycopg.Error as e:
            raise Unavailable("database %s: %s" % (without_password(db), " ".join(str(e).split())))
    path = sqlite_path(db)
    if path is None:
        raise ValueError("database %s is not supported: give a SQLite file (or sqlite:///PATH)"
                         " or a postgresql:// URL" % without_password(db))
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):  # else SQLite only says "unable to open database file"
        raise Unavailable("database %s: directory %s does not exist" % (path, folder))
    try:
        # The server runs its handlers on one event loop thread, which may not
        # be the thread that opened the store (tests start the server in a thread).
        return sqlite3.connect(path, check_same_thread=False), "sqlite"
    except sqlite3.Error as e:
        raise Unavailable("database %s: %s" % (path, e))


def sqlite_path(db):
    """The file of a SQLite `db` setting (a path or sqlite:///PATH), None
    for a URL of another kind."""
    if db.startswith("sqlite:///"):
        return db[len("sqlite:///"):]
    return None if "://" in db else db


def without_password(url):
    """`url` fit for a message or a log: a password in it is starred out."""
    return re.sub(r"(//[^/:@]*:)[^/]*@", r"\1***@", url)


class Store:
    """All campaign state. Each public method is one transaction."""

    def __init__(self, db, clock=time.time, backoff_base=60, backoff_max=86400):
        self.conn, self.dialect = connect(db)
        self.clock = clock
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        try:
            with self._tx():
                for ddl in schema(self.dialect):
                    self._exec(ddl)
        except sqlite3.Error as e:  # not a database, read-only, a directory...
            self.conn.close()
            raise Unavailable("database %s: %s" % (without_password(db), e))

    def close(self):
        self.conn.close()

    @contextlib.contextmanager
    def _tx(self):
        # Not `with conn:`: psycopg's connection context manager closes it.
        try:
            yield
        except BaseException:
            self.conn.rollback()
            raise
        self.conn.commit()

    def _now(self):
        return int(self.clock())

    def _exec(self, sql, args=()):
        if self.dialect != "sqlite":
            sql = sql.replace("?", "%s")
        cur = self.conn.cursor()
        cur.execute(sql, args)
        return cur

    def _rows(self, sql, args=()):
        cur = self._exec(sql, args)
        names = [d[0] for d in cur.description]
        return [dict(zip(names, row)) for row in cur.fetchall()]

    def _row(self, sql, args=()):
        rows = self._rows(sql, args)
        return rows[0] if rows else None

    # admins

    def ensure_admin(self, name="admin"):
        """Create the first admin with a random password and return that
        password (the caller shows it once); None when an admin exists."""
        if self._row("SELECT name FROM admins"):
            return None
        return self.set_password(name)

    def set_password(self, name, password=None):
        password = password or secrets.token_urlsafe(18)
        with self._tx():
            self._exec("DELETE FROM admins WHERE name = ?", (name,))
            self._exec("INSERT INTO admins (name, hash) VALUES (?, ?)", (name, hash_password(password)))
        return password

    def reset_password(self, name):
        """A new random password for the existing admin `name`; NotFound when
        there is none (a mistyped name must not create a second admin)."""
        if self.admin_hash(name) is None:
            names = [r["name"] for r in self._rows("SELECT name FROM admins ORDER BY name")]
            raise NotFound("no admin %r (admins: %s)" % (name, ", ".join(names) or "none"))
        return self.set_password(name)

    def admin_hash(self, name):
        row = self._row("SELECT hash FROM admins WHERE name = ?", (name,))
        return row["hash"] if row else None

    # users, projects, devices

    def add_user(self, name):
        _check_name("user", name)
        if self._row("SELECT name FROM users WHERE name = ?", (name,)):
            raise Conflict("user %r exists" % name)
        with self._tx():
            self._exec("INSERT INTO users (name, created) VALUES (?, ?)", (name, self._now()))

    def add_project(self, user, name):
        _check_name("project", name)
        self._need_user(user)
        if self._project(user, name):
            raise Conflict("project %r of %r exists" % (name, user))
        with self._tx():
            self._exec("INSERT INTO projects (user_name, name, created) VALUES (?, ?, ?)",
                       (user, name, self._now()))

    def add_device(self, user, project=None, name=None, token=None):
        """Register a device; returns its token (generated unless given)."""
        self._need_user(user)
        if project is not None and not self._project(user, project):
            raise NotFound("no project %r for user %r" % (project, user))
        token = token or secrets.token_urlsafe(24)
        _check_name("token", token)
        if self.device(token):
            raise Conflict("token exists")
        with self._tx():
            self._exec("INSERT INTO devices (token, user_name, project, name, created)"
                       " VALUES (?, ?, ?, ?, ?)", (token, user, project, name, self._now()))
        return token

    def remove_device(self, token):
        if not self.device(token):
            raise NotFound("no such device")
        with self._tx():
            self._exec("DELETE FROM rollouts WHERE token = ?", (token,))
            self._exec("DELETE FROM devices WHERE token = ?", (token,))

    def device(self, token):
        return self._row("SELECT * FROM devices WHERE token = ?", (token,))

    def devices(self, user=None, project=None):
        sql, args = _target_where(None, user, project)
        return self._rows("SELECT * FROM devices" + sql + " ORDER BY created, token", args)

    def users(self):
        return self._rows("SELECT * FROM users ORDER BY name")

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

    def add_file(self, file_name, info):
        """Record an uploaded, already checked image. `info`: kind, chip,
        version, project_name, size, sha256. Returns the file row; its id
        (content-addressed) names the blob on disk and in /ota/fw/<id>."""
        fid = info["sha256"][:32]
        with self._tx():
            self._exec("DELETE FROM files WHERE id = ?", (fid,))
            self._exec("INSERT INTO files (id, file_name, kind, chip, version, project_name,"
                       " size, sha256, uploaded) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                       (fid, file_name, info["kind"], info.get("chip"), info["version"],
                        info.get("project_name"), info["size"], info["sha256"], self._now()))
        return self.file(fid)

    def file(self, fid):
        return self._row("SELECT * FROM files WHERE id = ?", (fid,))

    def files(self):
        """Every uploaded image, newest first (the dashboard's Images page)."""
        return self._rows("SELECT * FROM files ORDER BY uploaded DESC, file_name")

    def file_by_name(self, file_name):
        row = self._row("SELECT * FROM files WHERE file_name = ? ORDER BY uploaded DESC LIMIT 1",
                        (file_name,))
        if not row:
            raise NotFound("no uploaded file %r" % file_name)
        return row

    # campaigns

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
        with self._tx():
            cur = self._exec("INSERT INTO campaigns (file_id, url, target_token, target_user,"
                             " target_project, allow_downgrade, max_attempts, started)"
                             " VALUES (?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
                             (file_id, url, token, user, project, int(bool(allow_downgrade)),
                              max_attempts, self._now()))
            return cur.fetchone()[0]

    def stop(self, campaign_id=None):
        """Stop one campaign or all running ones; returns the ids stopped."""
        if campaign_id is not None:
            c = self.campaign(campaign_id)
            ids = [c["id"]] if c["stopped"] is None else []
        else:
            ids = [r["id"] for r in self._rows("SELECT id FROM campaigns WHERE stopped IS NULL")]
        with self._tx():
            for cid in ids:
                self._exec("UPDATE campaigns SET stopped = ? WHERE id = ?", (self._now(), cid))
        return ids

    def campaign(self, campaign_id):
        row = self._row("SELECT c.*, f.file_name, f.kind, f.chip, f.version, f.size, f.sha256"
                        " FROM campaigns c JOIN files f ON f.id = c.file_id WHERE c.id = ?",
                        (campaign_id,))
        if not row:
            raise NotFound("no campaign %s" % campaign_id)
        return row

    def campaigns(self, active_only=False):
        where = " WHERE c.stopped IS NULL" if active_only else ""
        return self._rows("SELECT c.*, f.file_name, f.kind, f.chip, f.version, f.size, f.sha256"
                          " FROM campaigns c JOIN files f ON f.id = c.file_id" + where +
                          " ORDER BY c.id DESC")

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
                "url": c["url"], "allow_downgrade": bool(c["allow_downgrade"]),
                "max_attempts": c["max_attempts"], "counts": counts, "devices": devices}

    # devices talking

    def check_in(self, token, version, build=None, chip=None):
        """A device reports what it runs. Returns the campaign row (joined with
        its file) the device should install now, or None."""
        dev = self.device(token)
        if not dev:
            raise NotFound("unknown token")
        now = self._now()
        chip = chip or dev["chip"]
        with self._tx():
            self._exec("UPDATE devices SET last_seen = ?, version = ?, build = ?, chip = ?"
                       " WHERE token = ?", (now, version, build, chip, token))
            self._note_version(token, version, now)
            for c in self.campaigns(active_only=True):
                # The newest campaign aimed at this device (and its chip)
                # decides, even when it decides "nothing": an older campaign
                # never overrides it.
                if _targets(c, dev) and not (c["chip"] and chip and c["chip"] != chip):
                    if self._should_offer(c, token, version, now):
                        self._offer(c, token, version, now)
                        return c
                    return None
        return None

    def _note_version(self, token, version, now):
        """Track old -> new -> old at check-in: a board that installed or ran
        the new image and comes back on an older version rolled back, whether
        or not it lived long enough to say so."""
        rows = self._rows("SELECT r.*, f.version AS target FROM rollouts r"
                          " JOIN campaigns c ON c.id = r.campaign_id"
                          " JOIN files f ON f.id = c.file_id WHERE r.token = ?", (token,))
        for r in rows:
            if same_version(version, r["target"]):
                state = "installed" if r["state"] in ("offered", "downloading") else r["state"]
                self._exec("UPDATE rollouts SET seen_new = 1, state = ?, updated = ?"
                           " WHERE campaign_id = ? AND token = ?",
                           (state, now, r["campaign_id"], token))
            elif ((r["seen_new"] or r["state"] in ("installed", "confirmed"))
                  and not is_newer(version, r["target"])):
                self._fail(r["campaign_id"], token, "rolled_back",
                           "checked in on %s after installing %s" % (version, r["target"]), now)

    def _should_offer(self, c, token, version, now):
        if same_version(version, c["version"]):
            return False
        if not (is_newer(c["version"], version) or c["allow_downgrade"]):
            return False
        r = self._row("SELECT * FROM rollouts WHERE campaign_id = ? AND token = ?", (c["id"], token))
        if r is None:
            return True
        if now < r["next_offer"]:
            return False
        if r["attempts"] < c["max_attempts"]:
            return True
        if r["state"] not in FAILED:
            # The last offer's back-off is over and the device still runs the
            # old version: that attempt failed without a word.
            self._fail(c["id"], token, "failed", "no success after %d offers" % r["attempts"], now)
        return False

    def _offer(self, c, token, version, now):
        r = self._row("SELECT attempts FROM rollouts WHERE campaign_id = ? AND token = ?",
                      (c["id"], token))
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

    def _fail(self, campaign_id, token, state, error, now):
        r = self._row("SELECT attempts, next_offer FROM rollouts WHERE campaign_id = ? AND token = ?",
                      (campaign_id, token))
        nxt = max(r["next_offer"], now + backoff(r["attempts"], self.backoff_base, self.backoff_max))
        self._exec("UPDATE rollouts SET state = ?, error = ?, next_offer = ?, updated = ?"
                   " WHERE campaign_id = ? AND token = ?", (state, error, nxt, now, campaign_id, token))

    def report(self, token, campaign_id, state, error=None, progress=None):
        """A device tells how its update goes (see STATES)."""
        if state not in STATES:
            raise Invalid("state must be one of " + ", ".join(STATES))
        if not self.device(token):
            raise NotFound("unknown token")
        if not self._row("SELECT state FROM rollouts WHERE campaign_id = ? AND token = ?",
                         (campaign_id, token)):
            raise NotFound("no update of campaign %s was offered to this device" % campaign_id)
        now = self._now()
        with self._tx():
            if state in FAILED:
                self._fail(campaign_id, token, state, error, now)
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
