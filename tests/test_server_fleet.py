"""The campaign server for a fleet: on SQLite and on a real PostgreSQL that
the tests start (conftest's `postgres`), several servers sharing one
database, a schema that upgrades itself in numbered steps, a device that
rolled back left alone, an event loop that a busy database never stops,
and a dashboard sign-in that every server on the database honours.
"""
import concurrent.futures
import contextlib
import json
import os
import re
import sqlite3
import subprocess
import sys
import time
import types

import psycopg
import pytest

from otatool import server
from otatool.server import store as campaigns
from otatool.server.migrations import MIGRATIONS, latest_version
from pgserver import free_port, wait_until_listening
from test_campaign_server import PASSWORD, Api, api, clock, config, fleet, image, srv  # noqa: F401
from test_dashboard_pages import Visitor, csrf_of, owner  # noqa: F401 (a fixture)

OTATOOL = os.path.join(os.path.dirname(sys.executable), "otatool")


# --- rolled back means no --------------------------------------------------------

def test_a_device_that_rolled_back_is_not_offered_that_image_again_even_after_a_restart(
        config, clock):
    with server.ServerThread(config) as srv:
        api = Api(srv)
        api.request("POST", "/admin/users", body={"name": "dora"})
        api.request("POST", "/admin/devices", body={"user": "dora", "token": "d1"})
        cid = api.start(image("1.1.0"), token="d1", max_attempts=3)
        assert api.check("d1", "1.0.0")[0] == 200
        assert api.report("d1", cid, "installed")[0] == 204
        assert api.report("d1", cid, "rolled_back", error="self-test failed")[0] == 204
        clock.t += 30 * 86400  # every back-off is long over
        assert api.check("d1", "1.0.0")[0] == 204
        d = api.device_status(cid, "d1")
        assert (d["state"], d["error"], d["attempts"]) == ("rolled_back", "self-test failed", 1)
    with server.ServerThread(config) as srv:
        api = Api(srv)
        assert api.check("d1", "1.0.0")[0] == 204
        assert api.device_status(cid, "d1")["state"] == "rolled_back"
        newer = api.start(image("1.2.0"), token="d1")
        status, offer = api.check("d1", "1.0.0")
        assert status == 200 and (offer["campaign"], offer["version"]) == (newer, "1.2.0")


def test_a_rollback_seen_only_at_check_in_also_ends_the_offers(api, fleet, clock):
    cid = api.start(image("1.1.0"), token="a1", max_attempts=5)
    assert api.check("a1", "1.0.0")[0] == 200
    assert api.check("a1", "1.1.0")[0] == 204  # it ran the new image ...
    clock.t += 30 * 86400
    assert api.check("a1", "1.0.0")[0] == 204  # ... and came back on the old one
    assert api.check("a1", "1.0.0")[0] == 204
    assert api.device_status(cid, "a1")["state"] == "rolled_back"


# --- the schema -------------------------------------------------------------------

def applied(store):
    return [r["version"] for r in store._rows("SELECT version FROM schema_version ORDER BY version")]


def test_a_new_database_gets_every_migration_once_in_order(database):
    for _ in range(2):  # the second opening applies nothing
        store = campaigns.Store(database)
        try:
            assert applied(store) == [n for n, _ in MIGRATIONS] == list(range(1, latest_version() + 1))
        finally:
            store.close()


def test_a_database_from_a_newer_otatool_is_refused_in_one_line(database):
    store = campaigns.Store(database)
    with store._transaction(write=True):
        store._exec("INSERT INTO schema_version (version, applied) VALUES (?, 0)",
                    (latest_version() + 1,))
    store.close()
    with pytest.raises(campaigns.Unavailable, match="newer than this otatool's"):
        campaigns.Store(database)


@pytest.mark.sqlite_only
def test_a_database_made_before_schema_versions_is_upgraded_and_keeps_its_data(database):
    conn = sqlite3.connect(database)
    for ddl in MIGRATIONS[0][1]:  # the tables as the first releases made them
        conn.execute(ddl % {"serial": "INTEGER PRIMARY KEY"})
    conn.execute("INSERT INTO users (name, created) VALUES ('erin', 1)")
    conn.commit()
    conn.close()
    store = campaigns.Store(database)
    try:
        assert applied(store) == list(range(1, latest_version() + 1)) and [u["name"] for u in store.users()] == ["erin"]
        assert store._row("SELECT name FROM sqlite_master WHERE name = 'rollouts_by_token'")
    finally:
        store.close()


# --- a busy database does not stop the server -------------------------------------

@contextlib.contextmanager
def another_process_holding(db):
    """A process that holds the SQLite file `db` exclusively until the block ends."""
    locker = subprocess.Popen(
        [sys.executable, "-c", "import sqlite3, sys\n"
         "c = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
         "c.execute('BEGIN EXCLUSIVE'); print('locked', flush=True); sys.stdin.read()",
         db], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert locker.stdout.readline() == "locked\n"
        yield locker
    finally:
        locker.kill()
        locker.wait()


@pytest.mark.sqlite_only
def test_requests_that_need_no_database_answer_while_another_process_holds_it(srv, api, fleet,
                                                                            config):
    with another_process_holding(config["db"]) as locker:
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            check_in = pool.submit(api.check, "a1", "1.0.0")  # a write: it waits for the lock
            status, body = api.request("GET", "/no/such/path", auth=False)
            assert status == 404 and body["error"] == "no such path"
            assert api.request("GET", "/admin/users", auth=False)[0] == 401
            assert not check_in.done()  # still waiting, yet the others were answered
            locker.stdin.close()  # the other process lets go
            assert check_in.result(timeout=30)[0] == 204


# --- a database that is down: 503, then back to work ------------------------------

@pytest.mark.sqlite_only
def test_a_database_held_past_the_busy_wait_answers_503_until_it_is_let_go(config,
                                                                           monkeypatch):
    monkeypatch.setattr(campaigns._SqliteConnections, "BUSY_WAIT", 1)
    with server.ServerThread(config) as srv:
        api = Api(srv, PASSWORD)
        assert api.request("POST", "/admin/users", body={"name": "fleet"})[0] == 201
        assert api.request("POST", "/admin/devices",
                           body={"user": "fleet", "token": "d1"})[0] == 201
        with another_process_holding(config["db"]):
            status, body = api.check("d1", "1.0.0")
            assert status == 503 and body["error"] == "database unavailable, try again later"
        assert api.check("d1", "1.0.0")[0] == 204


def test_while_postgresql_is_down_the_server_answers_503_and_recovers_when_it_is_back(
        tmp_path, monkeypatch):
    from pgserver import PostgresServer
    monkeypatch.setattr(campaigns._PostgresConnections, "WAIT", 2)  # how long a request waits
    with PostgresServer() as pg:
        db = pg.new_database()
        store = campaigns.Store(db)
        store.set_password("admin", PASSWORD)
        store.close()
        with server.ServerThread({"db": db, "files": str(tmp_path / "files")}) as srv:
            api = Api(srv, PASSWORD)
            assert api.request("POST", "/admin/users", body={"name": "fleet"})[0] == 201
            assert api.request("POST", "/admin/devices",
                               body={"user": "fleet", "token": "d1"})[0] == 201
            assert api.check("d1", "1.0.0")[0] == 204

            pg.pause()
            for _ in range(2):  # a pooled connection the server dropped, then none to be had
                status, body, resp = api.request("GET", "/ota/check",
                                                 {"token": "d1", "version": "1.0.0"},
                                                 auth=False, raw=True)
                assert status == 503, body
                assert json.loads(body) == {"error": "database unavailable, try again later",
                                            "detail": {"retry_after": 30}}
                assert resp.getheader("Retry-After") == "30"
            assert api.request("GET", "/admin/ota/status")[0] == 503
            assert api.request("GET", "/no/such/path", auth=False)[0] == 404  # no database needed

            pg.resume()
            for _ in range(60):  # the pool reconnects in the background
                status = api.check("d1", "1.0.0")[0]
                if status != 503:
                    break
                time.sleep(0.5)
            assert status == 204
            assert api.request("GET", "/admin/ota/status")[0] == 200


# --- several servers on one PostgreSQL --------------------------------------------

@pytest.fixture
def two_servers(postgres, tmp_path):
    """Two `otatool server` processes started at the same moment on one new
    PostgreSQL database, sharing the images' directory; no back-off, so a
    device may be offered again at once. Yields (url, [port, port], [stdout, stdout])."""
    url = postgres.new_database()
    (tmp_path / "server.toml").write_text("backoff_base = 0\nbackoff_max = 0\n")
    ports, outs, processes = [free_port(), free_port()], [], []
    try:
        for i, port in enumerate(ports):
            out = tmp_path / ("server%d.out" % i)
            outs.append(out)
            with out.open("w") as stdout:  # the child keeps its own copy
                processes.append(subprocess.Popen(
                    [OTATOOL, "server", "--config", str(tmp_path / "server.toml"), "--db", url,
                     "--files", str(tmp_path / "files"), "--host", "127.0.0.1",
                     "--port", str(port)], stdout=stdout, stderr=subprocess.STDOUT))
        for port, process in zip(ports, processes):
            wait_until_listening(port, process)
        yield url, ports, [out.read_text() for out in outs]
    finally:
        for process in processes:
            process.terminate()
            process.wait(30)


def printed_password(outs):
    """The first admin's password, which exactly one of the servers printed."""
    printed = [line for out in outs for line in out.splitlines() if "created admin user" in line]
    assert len(printed) == 1  # both came up; only one made the admin
    return printed[0].split("password ")[1].split()[0]


def test_two_servers_on_one_postgresql_share_campaigns_attempts_and_stops(two_servers):
    url, ports, outs = two_servers
    password = printed_password(outs)
    a, b = (Api(types.SimpleNamespace(port=p), password) for p in ports)
    assert a.request("POST", "/admin/users", body={"name": "fleet"})[0] == 201
    tokens = ["dev%02d" % i for i in range(24)]
    for token in tokens + ["late"]:
        assert b.request("POST", "/admin/devices", body={"user": "fleet", "token": token})[0] == 201
    cid = a.start(image("1.1.0"), user="fleet", max_attempts=3)

    # Each device asks six times at once, three times each server: with no
    # back-off, exactly max_attempts of the six are offers.
    def ask(token, server):
        return server.check(token, "1.0.0")[0]
    with concurrent.futures.ThreadPoolExecutor(48) as pool:
        answers = {t: [pool.submit(ask, t, (a, b)[i % 2]) for i in range(6)] for t in tokens}
        offers = {t: sorted(f.result() for f in futures) for t, futures in answers.items()}
    assert offers == {t: [200, 200, 200, 204, 204, 204] for t in tokens}
    assert {d["attempts"] for d in a.status(cid)[0]["devices"] if d["token"] in tokens} == {3}

    status, offer = b.check("late", "1.0.0")  # started through one, served by the other
    assert status == 200 and offer["campaign"] == cid
    assert b.request("GET", "/admin/ota/stop", {"campaign": cid})[1] == {"stopped": [cid]}
    assert a.check("late", "1.0.0")[0] == 204  # stopped through the other one

    with psycopg.connect(url) as conn:
        states = [s for (s,) in conn.execute(
            "SELECT state FROM pg_stat_activity WHERE datname = current_database()"
            " AND pid <> pg_backend_pid()")]
    assert states and not [s for s in states if s.startswith("idle in transaction")]


# --- one sign-in for every server on the database ---------------------------------

@pytest.fixture
def second_srv(config):
    """Another server on `srv`'s database, as behind a load balancer."""
    with server.ServerThread(config) as s:
        yield s


def same_browser(visitor, srv):
    """`visitor`'s browser, its next requests reaching `srv`: the cookies
    are one dict, whichever server sets them."""
    there = Visitor(srv)
    there.cookies = visitor.cookies
    return there


def test_a_sign_in_through_one_server_holds_on_another_for_pages_and_forms(api, fleet, owner,
                                                                           second_srv):
    cid = api.start(image("1.1.0"), user="alice")
    there = same_browser(owner, second_srv)
    for path in ("/", "/campaigns", "/campaigns/%d" % cid, "/images"):
        assert there.get(path)[0].status == 200, path
    _, page = owner.get("/campaigns/%d/stop" % cid)  # the form from one server,
    resp, _ = there.post("/campaigns/%d/stop" % cid, {"csrf": csrf_of(page)})  # sent to the other
    assert resp.status == 303 and not api.status(cid)[0]["active"]


def test_signing_out_through_one_server_ends_the_session_on_the_others(owner, second_srv):
    kept = dict(owner.cookies)  # as a stolen copy of the cookie would be
    resp, page = same_browser(owner, second_srv).get("/")
    assert resp.status == 200
    resp, _ = owner.post("/logout", {"csrf": csrf_of(page)})
    assert resp.status == 303 and "ota_session" not in owner.cookies
    thief = Visitor(second_srv)
    thief.cookies = kept
    assert thief.get("/")[0].status == 303


def test_otatool_server_reset_password_ends_the_admins_sessions_on_every_server(config, owner,
                                                                                second_srv):
    there = same_browser(owner, second_srv)
    assert there.get("/")[0].status == 200
    out = subprocess.run([OTATOOL, "server", "--db", config["db"], "--reset-password", "admin"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert there.get("/")[0].status == 303 and owner.get("/")[0].status == 303


def test_a_restart_signs_no_one_out_and_keeps_the_forms_tokens(config):
    with server.ServerThread(config) as before:
        api = Api(before)
        assert api.request("POST", "/admin/users", body={"name": "alice"})[0] == 201
        cid = api.start(image("1.1.0"), user="alice")
        owner = Visitor(before)
        assert owner.sign_in()[0].status == 303
        _, page = owner.get("/campaigns/%d/stop" % cid)
    with server.ServerThread(config) as after:
        owner = same_browser(owner, after)
        assert owner.get("/")[0].status == 200
        resp, _ = owner.post("/campaigns/%d/stop" % cid, {"csrf": csrf_of(page)})
        assert resp.status == 303 and not Api(after).status(cid)[0]["active"]


def test_an_owner_behind_a_load_balancer_starts_a_campaign_across_two_server_processes(
        two_servers):
    url, ports, outs = two_servers
    a, b = (types.SimpleNamespace(port=p) for p in ports)
    owner = Visitor(a)
    assert owner.sign_in(printed_password(outs))[0].status == 303
    there = same_browser(owner, b)
    _, page = owner.get("/campaigns/new")  # each request to the other process in turn
    resp, page = there.post_file("/campaigns/new", {"csrf": csrf_of(page)}, "app-1.1.0.bin",
                                 image("1.1.0"))
    assert resp.status == 200, page
    file_id = re.search(r'name="file" value="([0-9a-f]+)"', page).group(1)
    resp, _ = owner.post("/campaigns", {"csrf": csrf_of(page), "file": file_id,
                                        "target": '["all"]', "max_attempts": "3"})
    assert resp.status == 303
    resp, page = there.get(resp.getheader("Location"))
    assert resp.status == 200 and "1.1.0" in page
