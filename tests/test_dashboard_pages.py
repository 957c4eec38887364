"""The dashboard (`otatool server` at /) as plain HTTP sees it: an owner
signs in with the admin's credentials and gets a session cookie no script
can read, whose secret the database never holds; every page needs one;
every form that changes something needs its CSRF token; what devices and
uploads say is shown as text; each page has a language, one h1 and a label
for each input; whatever a visitor sends, a page answers in HTML, never a
500.

The server runs for real on 127.0.0.1 (fixtures of test_campaign_server);
test_dashboard_browser.py drives the same pages in Chromium."""
import hashlib
import html.parser
import http.client
import io
import os
import re
import secrets
import ssl
import urllib.parse

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from otatool import server
from otatool.server import auth, sessions
from otatool.server import store as campaigns
from otatool.server.sessions import SESSION_SECONDS
from test_campaign_server import PASSWORD, Api, _self_signed, image
from test_campaign_server import api, clock, config, fleet, srv  # noqa: F401 (fixtures)

MARKUP = "<img src=x onerror=alert(1)>"


class Visitor:
    """A browser reduced to what these tests need: cookies kept per name,
    forms posted urlencoded or multipart."""

    def __init__(self, srv, context=None):
        self.srv, self.context, self.cookies = srv, context, {}

    def request(self, method, path, body=None, headers=None):
        if self.context:
            conn = http.client.HTTPSConnection("127.0.0.1", self.srv.port, timeout=30,
                                               context=self.context)
        else:
            conn = http.client.HTTPConnection("127.0.0.1", self.srv.port, timeout=30)
        h = dict(headers or {})
        if self.cookies:
            h["Cookie"] = "; ".join("%s=%s" % kv for kv in self.cookies.items())
        conn.request(method, path, body=body, headers=h)
        resp = conn.getresponse()
        text = resp.read().decode()
        conn.close()
        for header in resp.headers.get_all("Set-Cookie") or []:
            name, value = header.split(";")[0].split("=", 1)
            if "Max-Age=0" in header:
                self.cookies.pop(name, None)
            else:
                self.cookies[name] = value
        return resp, text

    def get(self, path):
        return self.request("GET", path)

    def post(self, path, fields):
        return self.request("POST", path, urllib.parse.urlencode(fields),
                            {"Content-Type": "application/x-www-form-urlencoded"})

    def post_file(self, path, fields, name, data):
        boundary = secrets.token_hex(12)
        out = io.BytesIO()
        for k, v in fields.items():
            out.write(b'--%s\r\nContent-Disposition: form-data; name="%s"\r\n\r\n%s\r\n'
                      % (boundary.encode(), k.encode(), v.encode()))
        out.write(b'--%s\r\nContent-Disposition: form-data; name="file"; filename="%s"\r\n'
                  b'Content-Type: application/octet-stream\r\n\r\n' % (boundary.encode(),
                                                                      name.encode()))
        out.write(data + b"\r\n--%s--\r\n" % boundary.encode())
        return self.request("POST", path, out.getvalue(),
                            {"Content-Type": "multipart/form-data; boundary=" + boundary})

    def sign_in(self, password=PASSWORD, name="admin"):
        _, page = self.get("/login")
        return self.post("/login", {"csrf": csrf_of(page), "name": name, "password": password,
                                    "next": "/"})


def csrf_of(page):
    return re.search(r'name="csrf" value="([^"]+)"', page).group(1)


@pytest.fixture
def owner(srv):
    """A visitor signed in as the admin."""
    v = Visitor(srv)
    resp, _ = v.sign_in()
    assert resp.status == 303 and "ota_session" in v.cookies
    return v


def cookie_header(resp, name):
    return next(h for h in resp.headers.get_all("Set-Cookie") if h.startswith(name + "="))


# --- signing in -----------------------------------------------------------------

def test_signing_in_gives_a_cookie_no_script_reads_and_signing_out_ends_the_session(srv):
    v = Visitor(srv)
    resp, _ = v.get("/campaigns")
    assert resp.status == 303 and resp.getheader("Location") == "/login?next=/campaigns"
    _, page = v.get("/login?next=%2Fcampaigns")
    resp, _ = v.post("/login", {"csrf": csrf_of(page), "name": "admin", "password": PASSWORD,
                                "next": "/campaigns"})
    assert resp.status == 303 and resp.getheader("Location") == "/campaigns"
    cookie = cookie_header(resp, "ota_session")
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Secure" not in cookie
    resp, page = v.get("/campaigns")
    assert resp.status == 200 and "<h1>Campaigns</h1>" in page
    resp, _ = v.post("/logout", {"csrf": csrf_of(page)})
    assert resp.status == 303 and "ota_session" not in v.cookies
    assert v.get("/campaigns")[0].status == 303


def test_the_session_cookie_is_secure_over_https(tmp_path, config):
    cert, key = _self_signed(tmp_path)
    config.update(tls_cert=cert, tls_key=key)
    with server.ServerThread(config) as srv:
        v = Visitor(srv, ssl.create_default_context(cafile=cert))
        resp, _ = v.sign_in()
        assert resp.status == 303 and "Secure" in cookie_header(resp, "ota_session")


def test_a_sign_in_link_never_sends_the_owner_to_another_site(srv):
    v = Visitor(srv)
    _, page = v.get("/login?next=//evil.example/")
    resp, _ = v.post("/login", {"csrf": csrf_of(page), "name": "admin", "password": PASSWORD,
                                "next": "https://evil.example/"})
    assert resp.status == 303 and resp.getheader("Location") == "/"


def test_a_wrong_password_is_refused_and_counts_against_the_apis_login_throttle(srv, api):
    v = Visitor(srv)
    for _ in range(auth.LOGIN_FAILURES):
        resp, page = v.sign_in("guess")
        assert resp.status == 401 and "Wrong name or password." in page
    assert "ota_session" not in v.cookies
    resp, page = v.sign_in()  # the right password, but the address must wait now
    assert resp.status == 429 and "Too many failed sign-ins" in page
    assert api.request("GET", "/admin/users")[0] == 429  # the API from the same address too


def test_a_password_reset_ends_the_sessions_signed_in_with_the_old_password(owner, config):
    assert owner.get("/")[0].status == 200
    store = campaigns.Store(config["db"])
    store.reset_password("admin")
    store.close()
    assert owner.get("/")[0].status == 303


def stored_sessions(config):
    """The rows of the database's sessions, oldest first."""
    store = campaigns.Store(config["db"])
    try:
        return store._rows("SELECT * FROM sessions ORDER BY created, secret_sha256")
    finally:
        store.close()


def everything_stored(db):
    """All a leak of the database `db` would show: a SQLite file with its
    write-ahead log, or every row of every table of a PostgreSQL database."""
    if campaigns.dialect(db) == "postgresql":
        with psycopg.connect(db) as conn:
            tables = [t for (t,) in conn.execute(
                "SELECT table_name FROM information_schema.tables"
                " WHERE table_schema = current_schema()")]
            return repr([conn.execute("SELECT * FROM %s" % t).fetchall()
                         for t in tables]).encode()
    return b"".join(open(db + suffix, "rb").read() for suffix in ("", "-wal")
                    if os.path.exists(db + suffix))


def test_the_database_keeps_only_a_hash_of_the_session_cookie(config, owner):
    secret = owner.cookies["ota_session"]
    leaked = everything_stored(config["db"])
    assert hashlib.sha256(secret.encode()).hexdigest().encode() in leaked  # the session is there
    assert secret.encode() not in leaked  # but not what opens it
    (row,) = stored_sessions(config)
    thief = Visitor(owner.srv)
    thief.cookies["ota_session"] = row["secret_sha256"]
    assert thief.get("/")[0].status == 303 and owner.get("/")[0].status == 200


def test_an_expired_session_is_refused_and_deleted_even_if_never_used_again(srv, config, clock,
                                                                             owner):
    gone = Visitor(srv)  # signs in, then never comes back
    gone.sign_in()
    assert owner.get("/")[0].status == 200 and len(stored_sessions(config)) == 2
    clock.t += SESSION_SECONDS
    assert owner.get("/")[0].status == 303
    assert len(stored_sessions(config)) == 1  # the owner's row went with the refusal
    newcomer = Visitor(srv)
    newcomer.sign_in()  # a sign-in deletes expired rows
    assert [r["secret_sha256"] for r in stored_sessions(config)] == [
        hashlib.sha256(newcomer.cookies["ota_session"].encode()).hexdigest()]
    assert newcomer.get("/")[0].status == 200


def test_an_admin_has_a_bounded_number_of_sessions_and_the_oldest_ends_first(srv, clock,
                                                                             monkeypatch):
    monkeypatch.setattr(sessions, "_SESSIONS_PER_ADMIN", 2)
    browsers = [Visitor(srv) for _ in range(3)]
    for b in browsers:
        assert b.sign_in()[0].status == 303
        clock.t += 1
    assert [b.get("/")[0].status for b in browsers] == [303, 200, 200]


def test_a_form_without_its_csrf_token_or_with_another_sessions_is_refused(srv, api, fleet,
                                                                           owner):
    cid = api.start(image("1.1.0"), user="alice")
    other = Visitor(srv)
    other.sign_in()
    _, theirs = other.get("/campaigns/%d/stop" % cid)
    for fields in ({}, {"csrf": ""}, {"csrf": csrf_of(theirs)}):
        resp, page = owner.post("/campaigns/%d/stop" % cid, fields)
        assert resp.status == 403 and "This form has expired" in page
    _, sign_in_page = Visitor(srv).get("/login")  # a token from someone else's sign-in page
    resp, _ = Visitor(srv).post("/login", {"csrf": csrf_of(sign_in_page), "name": "admin",
                                           "password": PASSWORD})
    assert resp.status == 403
    assert api.status(cid)[0]["active"]
    resp, page = owner.post("/campaigns/%d/stop" % cid, {"csrf": csrf_of(page)})
    assert resp.status == 303 and not api.status(cid)[0]["active"]


def test_a_signed_out_visitor_cannot_post_a_form(srv, api, fleet):
    cid = api.start(image("1.1.0"), user="alice")
    resp, page = Visitor(srv).post("/campaigns/%d/stop" % cid, {"csrf": "x"})
    assert resp.status == 403 and "signed out" in page and api.status(cid)[0]["active"]


# --- what the pages show --------------------------------------------------------------

def test_an_upload_is_checked_and_shown_before_a_campaign_for_a_project_starts(api, fleet,
                                                                               owner):
    _, page = owner.get("/campaigns/new")
    resp, page = owner.post_file("/campaigns/new", {"csrf": csrf_of(page)}, "garden-1.2.0.bin",
                                 image("1.2.0", chip="esp32s3"))
    assert resp.status == 200
    facts = dict(re.findall(r"<dt>(.*?)</dt><dd[^>]*>(.*?)</dd>", page))
    assert facts["Version"] == "1.2.0" and facts["Chip"] == "esp32s3"
    assert facts["Kind"] == "firmware" and facts["Size"].endswith("bytes")
    file_id = re.search(r'name="file" value="([0-9a-f]+)"', page).group(1)
    target = re.search(r'<option value="([^"]+)">alice/garden</option>', page).group(1)
    resp, _ = owner.post("/campaigns", {"csrf": csrf_of(page), "file": file_id,
                                        "target": html.unescape(target), "max_attempts": "2"})
    assert resp.status == 303
    cid = int(resp.getheader("Location").rsplit("/", 1)[1])
    (c,) = api.status(cid)
    assert c["target"] == {"user": "alice", "project": "garden"} and c["max_attempts"] == 2
    assert c["version"] == "1.2.0" and not c["allow_downgrade"]
    _, images = owner.get("/images")
    assert "garden-1.2.0.bin" in images and '<a href="/campaigns/%d">#%d</a>' % (cid, cid) in images


def test_a_file_that_is_not_an_image_is_refused_with_the_apis_reason(owner):
    _, page = owner.get("/campaigns/new")
    resp, page = owner.post_file("/campaigns/new", {"csrf": csrf_of(page)}, "notes.txt",
                                 b"hello, not firmware")
    assert resp.status == 400 and "not a firmware image or app bundle" in page


def test_a_campaign_that_cannot_start_says_why_on_the_same_form(api, fleet, owner):
    name = api.upload("/admin/ota/upload", image("1.0"), name="old.bin")[1]["id"]
    _, page = owner.get("/campaigns/new")
    resp, page = owner.post("/campaigns", {"csrf": csrf_of(page), "file": name,
                                           "target": '["user", "nobody"]', "max_attempts": "3"})
    assert resp.status == 400 and "no user &#39;nobody&#39;" in page and "Start campaign" in page
    resp, page = owner.post("/campaigns", {"csrf": csrf_of(page), "file": name,
                                           "target": "all", "max_attempts": "3"})
    assert resp.status == 400 and "choose a target" in page


def test_the_fleet_shows_each_devices_latest_campaign_and_filters(api, fleet, owner):
    cid = api.start(image("1.1.0"), user="alice", project="garden")
    api.check("a1", "1.0.0", chip="esp32")
    api.report("a1", cid, "failed", error="ESP_ERR_OTA_VALIDATE_FAILED: image checksum")
    _, page = owner.get("/")
    assert page.count("<tr>") == 1 + 4  # the head and a1, a2, a3, b1
    _, page = owner.get("/?user=alice&project=garden")
    assert page.count("<tr>") == 1 + 2
    _, page = owner.get("/?state=failed")
    assert page.count("<tr>") == 1 + 1 and "<code>a1</code>" in page
    assert '<a href="/campaigns/%d">#%d</a>' % (cid, cid) in page
    _, page = owner.get("/?state=none")
    assert page.count("<tr>") == 1 + 2  # a3 and b1: not targeted


def test_long_device_tokens_are_shown_shortened(api, fleet, owner):
    token = "garden-pump-5f2c9a77d1e04b"
    api.request("POST", "/admin/devices", body={"user": "alice", "token": token})
    cid = api.start(image("1.1.0"), token=token)
    for path in ("/", "/campaigns", "/campaigns/%d" % cid):
        page = owner.get(path)[1]
        assert "garden-p…" in page and token not in page, path


def test_a_campaigns_page_names_the_error_codes_devices_report(api, fleet, owner):
    cid = api.start(image("1.1.0"), user="alice")
    for token in ("a1", "a2", "a3"):
        api.check(token, "1.0.0")
    api.report("a1", cid, "failed", error="ESP_ERR_OTA_VALIDATE_FAILED: image checksum")
    api.report("a2", cid, "failed", error="0x7002 connect refused")
    api.report("a3", cid, "downloading", progress=1024)
    _, page = owner.get("/campaigns/%d" % cid)
    assert ("<code>0x1503</code> <code>ESP_ERR_OTA_VALIDATE_FAILED</code></span> image checksum"
            in page)
    assert "<code>0x7002</code> <code>ESP_ERR_HTTP_CONNECT</code></span> connect refused" in page
    assert re.search(r'<progress max="\d+" value="1024"', page)
    _, live = owner.get("/campaigns/%d/live" % cid)
    assert "ESP_ERR_HTTP_CONNECT" in live and "<h1>" not in live


def test_what_devices_and_uploads_say_is_shown_as_text(api, owner):
    assert api.request("POST", "/admin/users", body={"name": MARKUP})[0] == 201
    assert api.request("POST", "/admin/projects", body={"user": MARKUP, "name": "<b>p"})[0] == 201
    api.request("POST", "/admin/devices", body={"user": MARKUP, "project": "<b>p",
                                                "token": "<script>t", "name": "<i>n"})
    cid = api.start(image("1.1.0"), user=MARKUP, name="<svg onload=x>.bin", allow_downgrade=1)
    assert api.check("<script>t", MARKUP)[0] == 200
    api.report("<script>t", cid, "failed", error="</td><script>alert(1)</script>")
    api.check("<script>t", MARKUP, chip="<u>chip")
    pages = [owner.get(path)[1] for path in ("/", "/campaigns", "/campaigns/%d" % cid,
                                             "/images", "/campaigns/%d/stop" % cid)]
    for page in pages:
        assert not re.search(r"<(img|script>t|svg onload|b>p|i>n|u>chip|script>alert)", page), page
    assert "&lt;img src=x onerror=alert(1)&gt;" in pages[0]
    assert "&lt;/td&gt;&lt;script&gt;alert(1)&lt;/script&gt;" in pages[2]


def test_a_page_that_cannot_be_found_or_asked_for_is_a_page_not_json(api, owner):
    for path, status in (("/campaigns/99", 404), ("/campaigns/x", 400),
                         ("/campaigns/99999999999999999999", 400), ("/static/app.py", 404)):
        resp, page = owner.get(path)
        assert resp.status == status, path
        assert resp.getheader("Content-Type").startswith("text/html") and "<h1>" in page
        assert "Traceback" not in page
    resp, _ = owner.get("/no/such/path")  # not a page: the API's JSON answer, as before
    assert resp.status == 404 and resp.getheader("Content-Type").startswith("application/json")


# --- the pages' HTML ---------------------------------------------------------------------

class PageShape(html.parser.HTMLParser):
    """What the basics need: the html element's lang, the h1s, each form
    control and the labels that name one."""

    def __init__(self, page):
        super().__init__()
        self.lang, self.h1s, self.controls, self.labelled = None, 0, [], set()
        self.in_label = 0
        self.feed(page)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "html":
            self.lang = a.get("lang")
        elif tag == "h1":
            self.h1s += 1
        elif tag == "label":
            self.in_label += 1
            if a.get("for"):
                self.labelled.add(a["for"])
        elif tag in ("input", "select", "textarea") and a.get("type") not in ("hidden", "submit"):
            if not (self.in_label or a.get("aria-label")):
                self.controls.append(a.get("id") or a.get("name"))

    def handle_endtag(self, tag):
        if tag == "label":
            self.in_label -= 1


def test_every_page_has_a_language_one_h1_and_a_label_for_each_input(srv, api, fleet, owner):
    cid = api.start(image("1.1.0"), user="alice")
    _, new = owner.get("/campaigns/new")
    _, start = owner.post_file("/campaigns/new", {"csrf": csrf_of(new)}, "a.bin", image("1.2.0"))
    pages = {"sign in": Visitor(srv).get("/login")[1], "new campaign": new, "start": start,
             "missing": owner.get("/campaigns/99")[1]}
    for path in ("/", "/campaigns", "/campaigns/%d" % cid, "/campaigns/%d/stop" % cid, "/images"):
        pages[path] = owner.get(path)[1]
    for name, page in pages.items():
        shape = PageShape(page)
        assert shape.lang == "en", name
        assert shape.h1s == 1, name
        assert set(shape.controls) <= shape.labelled, (name, shape.controls)
    assert PageShape(start).controls  # the check sees the form's inputs


# --- anything a visitor sends ---------------------------------------------------------------

PAGES = [("GET", "/"), ("GET", "/campaigns"), ("POST", "/campaigns"), ("GET", "/campaigns/{}"),
         ("GET", "/campaigns/{}/live"), ("GET", "/campaigns/{}/stop"),
         ("POST", "/campaigns/{}/stop"), ("GET", "/campaigns/new"), ("POST", "/campaigns/new"),
         ("GET", "/images"), ("GET", "/login"), ("POST", "/login"), ("POST", "/logout"),
         ("GET", "/static/{}")]
text = st.text(st.characters(exclude_categories=()), max_size=20)
field_names = st.sampled_from(["csrf", "file", "target", "max_attempts", "allow_downgrade",
                               "name", "password", "next", "user", "project", "state"]) | text


def multipart_body(fields, file_field, data):
    """A multipart form: text fields, and a file where `file_field` belongs."""
    parts = [b'--b0undary\r\nContent-Disposition: form-data; name="%s"\r\n\r\n%s\r\n'
             % (k.encode(), v.encode()) for k, v in fields.items()]
    parts.append(b'--b0undary\r\nContent-Disposition: form-data; name="%s"; filename="a"\r\n'
                 b"\r\n%s\r\n" % (file_field.encode("utf-8", "surrogatepass"), data))
    return b"".join(parts) + b"--b0undary--\r\n"


@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(route=st.sampled_from(PAGES), param=text | st.sampled_from(["1", "0", "dashboard.css"]),
       fields=st.dictionaries(field_names, text | st.sampled_from(['["all"]', "1", "-1"]),
                              max_size=5),
       with_csrf=st.booleans(),
       file=st.none() | st.tuples(field_names, st.binary(max_size=200) | st.just(image("1.1.0"))))
def test_any_request_to_a_page_gets_a_page_never_a_500(api, fleet, owner, route, param, fields,
                                                       with_csrf, file):
    method, path = route
    path = path.format(urllib.parse.quote(param.encode("utf-8", "surrogatepass"), safe=""))
    fields = {k.encode("utf-8", "surrogatepass").decode("utf-8", "replace"):
              v.encode("utf-8", "surrogatepass").decode("utf-8", "replace")
              for k, v in fields.items()}
    if with_csrf:
        fields["csrf"] = csrf_of(owner.get("/images")[1])
    if method == "GET":
        path, body, ctype = path + "?" + urllib.parse.urlencode(fields), None, None
    elif file is None:
        body, ctype = urllib.parse.urlencode(fields), "application/x-www-form-urlencoded"
    else:  # a file where a text field belongs, or where the upload does
        body, ctype = multipart_body(fields, *file), "multipart/form-data; boundary=b0undary"
    resp, page = owner.request(method, path, body, {"Content-Type": ctype} if ctype else {})
    assert resp.status < 500, page[:300]
    if resp.getheader("Content-Type").startswith("application/json"):
        assert resp.status == 404 and "no such path" in page  # not a page's path at all
    elif resp.status >= 400:
        assert resp.getheader("Content-Type").startswith("text/html") and "<h1>" in page
    if "ota_session" not in owner.cookies:  # it signed out: in again, for the next example
        assert owner.sign_in()[0].status == 303
