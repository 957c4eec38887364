"""The campaign server (`otatool server`): an admin starts updates for one
device, a user, a project or the whole fleet; devices check in and are told
what to fetch; nothing Blynk's OTA got wrong happens here.

The server runs for real on 127.0.0.1 in a thread; requests go through
http.client. Time is a fake clock, so back-off is tested without sleeping."""
import base64
import contextlib
import hashlib
import http.client
import io
import json
import logging
import secrets
import socket
import ssl
import threading
import urllib.parse

import pytest

from otatool import server
from otatool.server import store as campaigns
from otatool.appimage import make_app_image
from otatool.server.command import server_command
from otatool.server.store import is_newer, version_key

PASSWORD = "correct horse battery staple 42"


class Clock:
    def __init__(self):
        self.t = 1_700_000_000

    def __call__(self):
        return self.t


class Api:
    """Talks to one running server like curl would."""

    def __init__(self, srv, password=PASSWORD, source="127.0.0.1"):
        self.srv = srv
        self.auth = "Basic " + base64.b64encode(("admin:" + password).encode()).decode()
        self.source = source  # the client's address: all of 127/8 reaches the server

    def request(self, method, path, query=None, body=None, headers=None, auth=True, raw=False):
        conn = http.client.HTTPConnection("127.0.0.1", self.srv.port, timeout=30,
                                          source_address=(self.source, 0))
        h = dict(headers or {})
        if auth is True:
            h["Authorization"] = self.auth
        elif auth:
            h["Authorization"] = auth
        if query:
            path += "?" + urllib.parse.urlencode(query)
        if isinstance(body, dict):
            body = json.dumps(body).encode()
            h["Content-Type"] = "application/json"
        conn.request(method, path, body=body, headers=h)
        resp = conn.getresponse()
        data = resp.read()
        conn.close()
        if raw:
            return resp.status, data, resp
        ctype = resp.getheader("Content-Type") or ""
        return resp.status, json.loads(data) if ctype.startswith("application/json") else data

    def upload(self, path, image, name="app.bin", **fields):
        boundary = secrets.token_hex(12)
        out = io.BytesIO()
        for k, v in fields.items():
            out.write(b'--%s\r\nContent-Disposition: form-data; name="%s"\r\n\r\n%s\r\n'
                      % (boundary.encode(), k.encode(), str(v).encode()))
        out.write(b'--%s\r\nContent-Disposition: form-data; name="upfile"; filename="%s"\r\n'
                  b'Content-Type: application/octet-stream\r\n\r\n' % (boundary.encode(), name.encode()))
        out.write(image + b"\r\n--%s--\r\n" % boundary.encode())
        return self.request("POST", path, body=out.getvalue(),
                            headers={"Content-Type": "multipart/form-data; boundary=" + boundary})

    def start(self, image, **fields):
        status, body = self.upload("/admin/ota/start", image, **fields)
        assert status == 201, body
        return body["campaign"]

    def check(self, token, version, **extra):
        return self.request("GET", "/ota/check", dict(token=token, version=version, **extra),
                            auth=False)

    def report(self, token, campaign, state, **extra):
        return self.request("POST", "/ota/report",
                            body=dict(token=token, campaign=campaign, state=state, **extra),
                            auth=False)

    def status(self, campaign=None):
        status, body = self.request("GET", "/admin/ota/status",
                                    {"campaign": campaign} if campaign is not None else None)
        assert status == 200, body
        return body["campaigns"]

    def device_status(self, campaign, token):
        (c,) = self.status(campaign)
        return next(d for d in c["devices"] if d["token"] == token)


def image(version, chip="esp32"):
    return make_app_image(version=version, chip=chip)


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def config(tmp_path, clock, database):
    """A server's settings, on each database (conftest's `database`)."""
    db = database
    store = campaigns.Store(db)
    store.set_password("admin", PASSWORD)
    store.close()
    return {"db": db, "files": str(tmp_path / "files"), "clock": clock, "backoff_base": 60,
            "backoff_max": 3600, "max_upload": 1024 * 1024}


@pytest.fixture
def srv(config):
    with server.ServerThread(config) as s:
        yield s


@pytest.fixture
def api(srv):
    return Api(srv)


@pytest.fixture
def fleet(api):
    """alice: garden (a1, a2), kitchen (a3); bob: b1 without a project."""
    for u in ("alice", "bob"):
        assert api.request("POST", "/admin/users", body={"name": u})[0] == 201
    for p in ("garden", "kitchen"):
        assert api.request("POST", "/admin/projects", body={"user": "alice", "name": p})[0] == 201
    for token, user, project in [("a1", "alice", "garden"), ("a2", "alice", "garden"),
                                 ("a3", "alice", "kitchen"), ("b1", "bob", None)]:
        status, body = api.request("POST", "/admin/devices",
                                   body={"user": user, "project": project, "token": token})
        assert status == 201 and body["token"] == token
    return ["a1", "a2", "a3", "b1"]


# --- admin authentication -----------------------------------------------------

def test_admin_api_answers_wrong_or_missing_credentials_with_a_bare_401(api):
    wrong_pw = "Basic " + base64.b64encode(b"admin:guess").decode()
    wrong_user = "Basic " + base64.b64encode(("root:" + PASSWORD).encode()).decode()
    answers = [api.request("GET", "/admin/ota/status", auth=a, raw=True)
               for a in (False, wrong_pw, wrong_user, "Basic !!!notbase64", "Bearer x")]
    for status, body, resp in answers:
        assert status == 401
        assert json.loads(body) == {"error": "unauthorized", "detail": {}}
        assert resp.getheader("WWW-Authenticate") == 'Basic realm="ota"'
    assert api.request("GET", "/admin/ota/status")[0] == 200


def test_first_start_prints_a_generated_password_once_and_stores_only_its_hash(tmp_path, capsys):
    cfg = {"db": str(tmp_path / "fresh.sqlite"), "files": str(tmp_path / "f")}
    with server.ServerThread(cfg) as srv:
        printed = capsys.readouterr().out
        password = printed.split("password ")[1].split()[0]
        assert Api(srv, password).request("GET", "/admin/ota/status")[0] == 200
        assert Api(srv, "admin").request("GET", "/admin/ota/status")[0] == 401
    with server.ServerThread(cfg):
        assert capsys.readouterr().out == ""  # second start: nothing shown again
    db = (tmp_path / "fresh.sqlite").read_bytes()
    assert password.encode() not in db and b"scrypt$" in db


def test_passwords_and_authorization_headers_never_reach_the_logs(srv, api, fleet, caplog, capsys):
    caplog.set_level(logging.DEBUG)
    api.request("GET", "/admin/ota/status")
    api.request("GET", "/admin/ota/status", auth="Basic " + base64.b64encode(b"admin:nope").decode())
    api.start(image("1.1.0"), token="a1")
    api.check("a1", "1.0.0")
    srv.stop()  # every log line is written
    logs = caplog.text + capsys.readouterr().err
    assert "/admin/ota/status" in logs  # the access log did record the requests
    assert "/ota/check" in logs and "token=" not in logs  # device tokens stay out too
    for secret in (PASSWORD, api.auth, api.auth.split()[1], "nope",
                   base64.b64encode(b"admin:nope").decode()):
        assert secret not in logs


# --- targeting ------------------------------------------------------------------

@pytest.mark.parametrize("target, reached", [
    ({"token": "a2"}, {"a2"}),
    ({"user": "alice"}, {"a1", "a2", "a3"}),
    ({"user": "alice", "project": "kitchen"}, {"a3"}),
    ({}, {"a1", "a2", "a3", "b1"}),
])
def test_a_campaign_reaches_exactly_the_devices_it_targets(api, fleet, target, reached):
    cid = api.start(image("1.1.0"), **target)
    offered = set()
    for token in fleet:
        status, body = api.check(token, "1.0.0")
        if status == 200:
            assert body["campaign"] == cid and body["version"] == "1.1.0"
            offered.add(token)
        else:
            assert status == 204
    assert offered == reached
    (c,) = api.status(cid)
    assert {d["token"] for d in c["devices"]} == reached
    assert c["counts"] == {"offered": len(reached)}


def test_check_answer_points_at_an_image_that_downloads_whole_and_resumes_by_range(api, fleet):
    img = image("1.1.0")
    api.start(img, token="a1")
    status, offer = api.check("a1", "1.0.0", chip="esp32", build="Jan  1 2025 00:00:00")
    assert status == 200
    assert offer["size"] == len(img) and offer["sha256"] == hashlib.sha256(img).hexdigest()
    assert offer["kind"] == "firmware"
    assert set(offer) == {"url", "version", "size", "sha256", "kind", "campaign"}
    assert len(json.dumps(offer)) <= 1024  # the board reads at most 1 KB
    path = urllib.parse.urlsplit(offer["url"]).path
    status, body, resp = api.request("GET", path, auth=False, raw=True)
    assert status == 200 and body == img
    etag = resp.getheader("ETag")
    assert etag == '"%s"' % offer["sha256"]
    status, body, resp = api.request("GET", path, auth=False, raw=True,
                                     headers={"Range": "bytes=1000-", "If-Range": etag})
    assert status == 206 and body == img[1000:]
    assert resp.getheader("Content-Range") == "bytes 1000-%d/%d" % (len(img) - 1, len(img))
    assert resp.getheader("Content-Length") == str(len(img) - 1000)
    # An If-Range for another entity: the range is ignored, the whole image comes.
    status, body, _ = api.request("GET", path, auth=False, raw=True,
                                  headers={"Range": "bytes=1000-", "If-Range": '"other"'})
    assert status == 200 and body == img
    status, body = api.request("GET", path, auth=False, headers={"If-None-Match": etag})
    assert status == 304 and body == b""
    status, _, resp = api.request("GET", path, auth=False, raw=True,
                                  headers={"Range": "bytes=%d-" % len(img)})
    assert status == 416 and resp.getheader("Content-Range") == "bytes */%d" % len(img)
    assert api.request("GET", "/ota/fw/doesnotexist", auth=False)[0] == 404


def test_device_token_may_come_in_a_header_instead_of_the_query(api, fleet):
    api.start(image("1.1.0"), token="b1")
    status, body = api.request("GET", "/ota/check", {"version": "1.0.0"}, auth=False,
                               headers={"X-OTA-Token": "b1"})
    assert status == 200 and body["version"] == "1.1.0"


def test_a_campaign_can_send_devices_to_a_static_host(api, fleet):
    img = image("1.1.0")
    api.start(img, user="bob", url="https://cdn.example.com/fw/app-1.1.0.bin")
    status, offer = api.check("b1", "1.0.0")
    assert status == 200 and offer["url"] == "https://cdn.example.com/fw/app-1.1.0.bin"
    assert offer["sha256"] == hashlib.sha256(img).hexdigest()  # from the checked upload


def test_an_uploaded_file_can_be_started_later_by_name(api, fleet):
    status, f = api.upload("/admin/ota/upload", image("1.2.0"), name="garden-1.2.0.bin")
    assert status == 201 and f["version"] == "1.2.0" and f["chip"] == "esp32"
    assert api.check("a1", "1.0.0")[0] == 204  # uploading alone starts nothing
    status, c = api.request("GET", "/admin/ota/start",
                            {"fileName": "garden-1.2.0.bin", "user": "alice", "project": "garden"})
    assert status == 201 and c["target"] == {"user": "alice", "project": "garden"}
    assert api.check("a1", "1.0.0")[1]["version"] == "1.2.0"
    assert api.request("GET", "/admin/ota/start", {"fileName": "nope.bin"})[0] == 404


def test_firmware_for_another_chip_is_not_offered(api, fleet):
    cid = api.start(image("1.1.0", chip="esp32s3"))
    assert api.check("a1", "1.0.0", chip="esp32")[0] == 204
    assert api.check("a2", "1.0.0", chip="esp32s3")[0] == 200
    assert api.status(cid)[0]["counts"] == {"other_chip": 1, "offered": 1, "pending": 2}


# --- versions -------------------------------------------------------------------

def test_versions_compare_as_semantic_versions_not_as_strings():
    assert is_newer("1.10.0", "1.9.0") and not is_newer("1.9.0", "1.10.0")
    assert is_newer("v2.0.0", "2.0.0-rc.2") and is_newer("2.0.0-rc.10", "2.0.0-rc.2")
    assert version_key("1.2") == version_key("1.2.0") == version_key("v1.2.0+build7")
    assert version_key("Nov 20 2020") is None
    assert not is_newer("abc", "1.0.0") and not is_newer("1.0.0", "abc")


def test_an_older_image_is_never_offered_unless_the_campaign_allows_downgrade(api, fleet):
    api.start(image("1.9.0"), token="a1")
    assert api.check("a1", "1.10.0")[0] == 204  # Blynk's "not equal" would downgrade here
    assert api.check("a1", "1.9.0")[0] == 204
    assert api.status()[0]["counts"] == {"up_to_date": 1}
    cid = api.start(image("1.9.0"), token="a1", allow_downgrade=1)
    status, offer = api.check("a1", "1.10.0")
    assert status == 200 and offer["campaign"] == cid


def test_a_non_semantic_version_needs_an_explicit_downgrade_permission(api, fleet):
    status, body = api.upload("/admin/ota/start", image("build-77"), token="a1")
    assert status == 400 and "allow_downgrade" in body["error"]
    api.start(image("build-77"), token="a1", allow_downgrade="yes")
    assert api.check("a1", "build-76")[0] == 200


# --- stop -----------------------------------------------------------------------

def test_stop_ends_one_campaign_or_all_of_them(api, fleet):
    c1 = api.start(image("1.1.0"), token="a1")
    c2 = api.start(image("1.1.0"), token="b1")
    status, body = api.request("GET", "/admin/ota/stop", {"campaign": c1})
    assert status == 200 and body["stopped"] == [c1]
    assert api.check("a1", "1.0.0")[0] == 204
    assert api.check("b1", "1.0.0")[0] == 200
    assert api.request("GET", "/admin/ota/stop")[1]["stopped"] == [c2]
    assert api.check("b1", "1.0.0")[0] == 204
    assert [c["active"] for c in api.status()] == [False, False]
    assert api.request("GET", "/admin/ota/stop", {"campaign": 999})[0] == 404


def test_the_newest_campaign_for_a_device_decides(api, fleet):
    api.start(image("1.1.0"))
    newest = api.start(image("1.2.0"), user="alice")
    assert api.check("a1", "1.0.0")[1]["campaign"] == newest
    assert api.check("b1", "1.0.0")[1]["version"] == "1.1.0"


# --- attempts, reports, rollback --------------------------------------------------

def test_a_failing_device_waits_a_doubling_backoff_and_gives_up_after_max_attempts(api, fleet, clock):
    cid = api.start(image("1.1.0"), token="a1", max_attempts=3)
    offers = []
    for step in range(12):  # 12 check-ins, 30 s apart, failing every time
        status, _ = api.check("a1", "1.0.0")
        if status == 200:
            offers.append(clock.t)
            assert api.report("a1", cid, "failed", error="flash write failed")[0] == 204
        clock.t += 30
    start = offers[0]
    assert [t - start for t in offers] == [0, 60, 180]  # then 60 s, then 120 s later
    d = api.device_status(cid, "a1")
    assert (d["state"], d["attempts"], d["gave_up"], d["error"]) == (
        "failed", 3, True, "flash write failed")
    clock.t += 10 * 86400
    assert api.check("a1", "1.0.0")[0] == 204  # never again for this campaign


def test_a_board_that_dies_in_the_new_image_without_a_word_is_not_offered_forever(api, fleet, clock):
    # Blynk's reboot loop: the device takes the offer, reboots, crashes,
    # comes back on the old version and asks again, for ever.
    cid = api.start(image("1.1.0"), token="a2", max_attempts=2)
    offers = 0
    for _ in range(20):
        offers += api.check("a2", "1.0.0")[0] == 200
        clock.t += 3600
    assert offers == 2
    d = api.device_status(cid, "a2")
    assert d["state"] == "failed" and d["gave_up"] and "no success" in d["error"]


def test_old_new_old_checkins_are_recorded_as_a_rollback(api, fleet, clock):
    cid = api.start(image("1.1.0"), token="a3")
    assert api.check("a3", "1.0.0")[0] == 200
    assert api.check("a3", "1.1.0")[0] == 204
    assert api.device_status(cid, "a3")["state"] == "installed"
    clock.t += 10
    assert api.check("a3", "1.0.0")[0] == 204  # the back-off holds the next offer
    d = api.device_status(cid, "a3")
    assert d["state"] == "rolled_back" and "1.0.0 after installing 1.1.0" in d["error"]
    assert d["version"] == "1.0.0" and d["attempts"] == 1


def test_reports_walk_a_device_through_the_states_shown_by_status(api, fleet):
    cid = api.start(image("1.1.0"), user="alice")
    api.check("a1", "1.0.0")
    api.check("a2", "1.0.0")
    assert api.report("a1", cid, "downloading", progress=4096)[0] == 204
    assert api.device_status(cid, "a1")["progress"] == 4096
    assert api.report("a1", cid, "installed")[0] == 204
    assert api.report("a1", cid, "confirmed")[0] == 204
    assert api.report("a2", cid, "rolled_back", error="app did not confirm")[0] == 204
    (c,) = api.status(cid)
    assert c["counts"] == {"confirmed": 1, "rolled_back": 1, "pending": 1}
    assert api.check("a1", "1.1.0")[0] == 204
    assert api.device_status(cid, "a1")["state"] == "confirmed"


def test_bad_reports_are_refused(api, fleet):
    cid = api.start(image("1.1.0"), token="a1")
    assert api.report("a1", cid, "downloading")[0] == 404  # nothing was offered yet
    api.check("a1", "1.0.0")
    assert api.report("a1", cid, "exploded")[0] == 400
    assert api.report("zz", cid, "failed")[0] == 404
    assert api.report("a1", "1", "failed")[0] == 400
    assert api.request("POST", "/ota/report", body=b"{not json", auth=False)[0] == 400
    big = {"token": "a1", "campaign": cid, "state": "failed", "error": "x" * 5000}
    assert api.request("POST", "/ota/report", body=big, auth=False)[0] == 413


# --- restart ----------------------------------------------------------------------

def test_campaigns_attempts_and_devices_survive_a_server_restart(config, clock):
    with server.ServerThread(config) as srv:
        api = Api(srv)
        api.request("POST", "/admin/users", body={"name": "carol"})
        for t in ("c1", "c2"):
            api.request("POST", "/admin/devices", body={"user": "carol", "token": t})
        cid = api.start(image("1.1.0"), user="carol")
        assert api.check("c1", "1.0.0")[0] == 200
    with server.ServerThread(config) as srv:
        api = Api(srv)
        (c,) = api.status()
        assert c["campaign"] == cid and c["active"] and c["counts"] == {"offered": 1, "pending": 1}
        assert api.check("c1", "1.0.0")[0] == 204  # its back-off was remembered
        status, offer = api.check("c2", "1.0.0")
        assert status == 200 and offer["campaign"] == cid
        img = api.request("GET", urllib.parse.urlsplit(offer["url"]).path, auth=False)[1]
        assert hashlib.sha256(img).hexdigest() == offer["sha256"]


# --- registration -----------------------------------------------------------------

def test_devices_users_and_projects_are_registered_and_listed(api, fleet):
    assert api.request("POST", "/admin/users", body={"name": "alice"})[0] == 409
    assert api.request("POST", "/admin/devices", body={"user": "alice", "project": "attic"})[0] == 404
    assert api.request("POST", "/admin/devices", body={"user": "nobody"})[0] == 404
    assert api.request("POST", "/admin/devices", body={"project": "garden"})[0] == 400
    status, dev = api.request("POST", "/admin/devices", body={"user": "bob", "name": "porch"})
    assert status == 201 and len(dev["token"]) >= 24  # generated
    status, devs = api.request("GET", "/admin/devices", {"user": "alice", "project": "garden"})
    assert [d["token"] for d in devs] == ["a1", "a2"]
    assert api.request("DELETE", "/admin/devices/" + dev["token"])[0] == 204
    assert api.check(dev["token"], "1.0.0")[0] == 404
    assert [p["name"] for p in api.request("GET", "/admin/projects", {"user": "alice"})[1]] == [
        "garden", "kitchen"]
    assert [u["name"] for u in api.request("GET", "/admin/users")[1]] == ["alice", "bob"]


# --- bad input --------------------------------------------------------------------

def test_check_with_an_unknown_token_or_a_malformed_query_is_refused(api, fleet):
    assert api.check("nobody", "1.0.0")[0] == 404
    assert api.request("GET", "/ota/check", {"token": "a1"}, auth=False)[0] == 400
    assert api.request("GET", "/ota/check", {"version": "1.0.0"}, auth=False)[0] == 400
    assert api.check("a1", "1" * 500)[0] == 400
    assert api.check("a1", "1.0\n0")[0] == 400


def test_uploads_that_are_not_images_are_refused(api, fleet):
    status, body = api.upload("/admin/ota/start", b"#!/bin/sh\nrm -rf /\n", token="a1")
    assert status == 400 and "not a firmware image" in body["error"]
    broken = bytearray(image("1.1.0"))
    broken[24 + 8: 24 + 12] = b"\0\0\0\0"  # the app descriptor's magic
    assert api.upload("/admin/ota/start", bytes(broken), token="a1")[0] == 400
    assert api.upload("/admin/ota/start", image("1.1.0"), token="a1", user="alice")[0] == 400
    assert api.upload("/admin/ota/start", image("1.1.0"), user="carol")[0] == 404
    assert api.upload("/admin/ota/start", image("1.1.0"), token="a1", max_attempts="x")[0] == 400
    assert api.upload("/admin/ota/start", image("1.1.0"), token="a1", url="ftp://x/y")[0] == 400
    assert api.status() == []


def test_an_oversized_upload_is_refused_before_it_is_read(srv, api, config):
    with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as s:
        s.sendall(b"POST /admin/ota/start HTTP/1.1\r\nHost: x\r\nAuthorization: %s\r\n"
                  b"Content-Type: multipart/form-data; boundary=b\r\nContent-Length: %d\r\n\r\n"
                  % (api.auth.encode(), 1 << 30))  # announces 1 GiB, sends nothing
        assert s.recv(4096).startswith(b"HTTP/1.1 413")
    # A body within the framing allowance whose file is over the limit.
    big = image("1.1.0") + b"\0" * (config["max_upload"] + 1)
    assert api.upload("/admin/ota/start", big, token="a1")[0] == 413


def test_a_half_sent_request_does_not_hold_up_other_clients(srv, api, fleet):
    slow = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
    try:
        slow.sendall(b"GET /ota/check?token=a1&ver")  # ... and nothing more
        api.start(image("1.1.0"), token="b1")
        assert api.check("b1", "1.0.0")[0] == 200
        assert api.check("a2", "1.0.0")[0] == 204
    finally:
        slow.close()


# --- configuration, HTTPS, CLI ------------------------------------------------------

def test_settings_come_from_the_file_then_the_environment_then_the_command_line(tmp_path):
    f = tmp_path / "server.toml"
    f.write_text('port = 9000\ndb = "/srv/ota.sqlite"\nmax_upload = 1000\n')
    cfg = server.load_config(str(f), environ={"OTA_SERVER_PORT": "9100"}, max_upload=2000)
    assert (cfg["port"], cfg["db"], cfg["max_upload"]) == (9100, "/srv/ota.sqlite", 2000)
    assert cfg["files"] == "/srv/ota-files"
    f.write_text('prot = 9000\n')
    with pytest.raises(ValueError, match="prot"):
        server.load_config(str(f), environ={})


@pytest.mark.sqlite_only  # the board's or TLS's story: any database tells it
def test_https_is_served_when_given_a_certificate_and_key(tmp_path, config):
    cert, key = _self_signed(tmp_path)
    config.update(tls_cert=cert, tls_key=key)
    with server.ServerThread(config) as srv:
        assert srv.url.startswith("https://127.0.0.1:")
        ctx = ssl.create_default_context(cafile=cert)
        conn = http.client.HTTPSConnection("127.0.0.1", srv.port, context=ctx, timeout=30)
        conn.request("GET", "/admin/ota/status", headers={"Authorization": Api(srv).auth})
        assert conn.getresponse().status == 200
        conn.close()


def test_otatool_has_a_server_command():
    from otatool.cli import build_parser
    args = build_parser().parse_args(["server", "--db", "x.sqlite", "--port", "0"])
    assert args.func is server_command and args.db == "x.sqlite"


def _self_signed(tmp_path):
    import datetime
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID
    import ipaddress
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return str(cert_path), str(key_path)


def test_a_bundle_is_offered_to_any_chip_and_a_damaged_one_is_refused(api, fleet):
    from otatool.bundle import build
    bundle = build({"main.py": b"print('garden 1.1')\n", "lib/pump.py": b"ON = 1\n"}, "1.1.0", "garden")
    status, f = api.upload("/admin/ota/upload", bundle, name="garden-1.1.0.otab")
    assert status == 201 and (f["kind"], f["chip"], f["version"]) == ("bundle", None, "1.1.0")
    for damaged in (bundle[:-1], bundle[:-2] + b"X\n"):  # cut short; a file's bytes changed
        assert api.upload("/admin/ota/upload", damaged)[0] == 400
    api.request("GET", "/admin/ota/start", {"fileName": "garden-1.1.0.otab", "user": "alice"})
    status, offer = api.check("a1", "1.0.0", chip="esp8266")
    assert status == 200 and offer["kind"] == "bundle" and offer["size"] == len(bundle)


# --- the board's side: ota.check (ota.checkin.check) and ota.checkin.report ------------

from conftest import run_cpython, run_mpy  # noqa: E402

BOARD_SCRIPT = """
import json, ota
from ota import OTAError
from ota.checkin import check, report
S = %r
def show(f):
    try:
        print(json.dumps(f()))
    except OTAError as e:
        print(json.dumps([e.name, e.http_status]))
"""


def board_lines(out):
    assert out.returncode == 0, out.stdout + out.stderr
    return [json.loads(line) for line in out.stdout.splitlines()]


@pytest.mark.parametrize("runtime", [run_mpy, run_cpython])
@pytest.mark.sqlite_only  # the board's or TLS's story: any database tells it
def test_a_board_checks_in_reports_and_is_refused_without_a_valid_token(runtime, srv, api, fleet,
                                                                      board_dir):
    img = image("1.1.0")
    cid = api.start(img, user="alice", project="garden")
    out = runtime(BOARD_SCRIPT % srv.url + """
show(lambda: check(S, "a1", version="1.0.0", allow_http=True))
show(lambda: report(S, "a1", %d, "downloading", progress=2048, allow_http=True))
show(lambda: check(S + "/", "a3", version="1.0.0", allow_http=True))
show(lambda: check(S, "stolen", version="1.0.0", allow_http=True))
show(lambda: report(S, "a3", %d, "failed", allow_http=True))
show(lambda: check(S, "a1", version="1.0.0"))
show(lambda: check(S.replace("http:", "https:"), "a1", version="1.0.0"))
""" % (cid, cid), board_dir)
    offer, reported, none, unknown, not_offered, no_http, no_cert = board_lines(out)
    assert offer == {"url": srv.url + "/ota/fw/" + hashlib.sha256(img).hexdigest()[:32],
                     "version": "1.1.0", "size": len(img), "sha256": hashlib.sha256(img).hexdigest(),
                     "kind": "firmware", "campaign": cid, "compressed": False}
    assert reported is None and none is None
    assert unknown == ["ESP_FAIL", 404] and not_offered == ["ESP_FAIL", 404]
    assert no_http == no_cert == ["ESP_ERR_INVALID_ARG", None]
    d = api.device_status(cid, "a1")
    assert (d["state"], d["progress"], d["version"]) == ("downloading", 2048, "1.0.0")


@pytest.mark.sqlite_only  # the board's or TLS's story: any database tells it
def test_a_board_checks_in_over_verified_https(tmp_path, config, board_dir):
    cert, key = _self_signed(tmp_path)
    config.update(tls_cert=cert, tls_key=key)
    with server.ServerThread(config) as srv:
        out = run_mpy(BOARD_SCRIPT % srv.url + """
CA = open(%r).read()
show(lambda: check(S, "nobody", version="1.0.0", cert_pem=CA))
show(lambda: report(S, "nobody", 1, "failed", cert_pem=CA))
""" % cert, board_dir)
    # The TLS sessions worked; the token did not.
    assert board_lines(out) == [["ESP_FAIL", 404], ["ESP_FAIL", 404]]


def test_a_board_refuses_a_check_answer_that_is_too_big_or_not_an_offer(board_dir):
    answers = [b'{"url": "' + b"x" * 2000 + b'"}', b"<html>hello</html>",
               b'{"url": "http://x/fw", "version": "1.1.0"}']
    with _canned_server(answers) as url:
        out = run_mpy(BOARD_SCRIPT % url + """
for _ in range(3):
    show(lambda: check(S, "a1", version="1.0.0", allow_http=True))
""", board_dir)
    assert board_lines(out) == [["ESP_ERR_INVALID_RESPONSE", None]] * 3


@contextlib.contextmanager
def _canned_server(bodies):
    """Answers one connection per body with 200 and that body, then stops."""
    lsock = socket.create_server(("127.0.0.1", 0))
    lsock.settimeout(30)

    def serve():
        for body in bodies:
            try:
                conn, _ = lsock.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(10)
                data = b""
                while b"\r\n\r\n" not in data:
                    data += conn.recv(4096) or b"\r\n\r\n"
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                             b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body) + body)

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        yield "http://127.0.0.1:%d" % lsock.getsockname()[1]
    finally:
        lsock.close()
        t.join(30)


@pytest.mark.sqlite_only  # the board's or TLS's story: any database tells it
def test_ota_check_can_be_called_again_and_again(srv, api, fleet, board_dir):
    # A board checks in periodically: the public ota.check must stay callable
    # (a submodule named ota/check.py would replace it after the first call).
    out = run_mpy(BOARD_SCRIPT % srv.url + """
for _ in range(3):
    show(lambda: ota.check(S, "a1", version="1.0.0", allow_http=True))
""", board_dir)
    assert board_lines(out) == [None] * 3
