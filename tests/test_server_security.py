"""The campaign server (`otatool server`) facing an attacker: whatever a
client sends, the answer is a 4xx in one JSON shape, never a 500; no device
token or credential reaches the logs; password guessing is throttled per
client address and never stalls the devices.

The server runs for real on 127.0.0.1 in a thread (fixtures of
test_campaign_server). A second client address is 127.0.0.2: all of 127/8
is loopback. Property tests send what hypothesis makes up over real HTTP."""
import base64
import http.client
import json
import logging
import re
import socket
import threading
import time
import urllib.parse

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from otatool import server
from otatool.server import auth, logs
from otatool.server import store as campaigns
from test_campaign_server import Api, image
from test_campaign_server import api, clock, config, fleet, srv  # noqa: F401 (fixtures)

# Malformed Content-Disposition headers are sent on purpose.
pytestmark = pytest.mark.filterwarnings("ignore::aiohttp.multipart.BadContentDispositionHeader")
ERROR_KEYS = {"error", "detail"}


def assert_error_shape(status, body, resp):
    """A refusal as every client may expect it: JSON with a one-line error
    and a detail object."""
    assert 400 <= status < 500, (status, body[:300])
    assert resp.getheader("Content-Type", "").startswith("application/json"), body[:300]
    doc = json.loads(body)
    assert set(doc) == ERROR_KEYS, doc
    assert isinstance(doc["error"], str) and "\n" not in doc["error"], doc
    assert isinstance(doc["detail"], dict), doc
    return doc


def send_raw(srv, data):
    """Bytes straight onto the socket; the answer's head and body."""
    with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as s:
        s.sendall(data)
        out = b""
        for _ in range(100):
            head, sep, body = out.partition(b"\r\n\r\n")
            length = re.search(rb"(?i)content-length: *(\d+)", head)
            if sep and length and len(body) >= int(length.group(1)):
                break
            out += s.recv(65536)
    return out


# --- one error shape ------------------------------------------------------------

def test_aiohttp_own_refusals_come_in_the_same_json_shape(api, fleet):
    status, body, resp = api.request("GET", "/no/such/path", raw=True, auth=False)
    assert status == 404 and assert_error_shape(status, body, resp)["error"] == "no such path"

    status, body, resp = api.request("PUT", "/ota/check", raw=True, auth=False)
    doc = assert_error_shape(status, body, resp)
    assert status == 405 and doc["detail"] == {"allowed": ["GET", "HEAD"]}
    assert resp.getheader("Allow") == "GET,HEAD"

    too_big = {"token": "a1", "campaign": 1, "state": "failed", "error": "x" * 5000}
    status, body, resp = api.request("POST", "/ota/report", body=too_big, raw=True, auth=False)
    assert status == 413 and "1024" in assert_error_shape(status, body, resp)["error"]

    status, body, resp = api.request("GET", "/ota/fw/" + "0" * 32, raw=True, auth=False)
    assert status == 404 and assert_error_shape(status, body, resp)["error"] == "no such image"


def test_an_upload_announcing_too_many_bytes_is_refused_in_json_before_it_is_read(srv, api):
    answer = send_raw(srv, b"POST /admin/ota/upload HTTP/1.1\r\nHost: x\r\nAuthorization: %s\r\n"
                           b"Content-Type: multipart/form-data; boundary=b\r\nConnection: close\r\n"
                           b"Content-Length: %d\r\n\r\n" % (api.auth.encode(), 1 << 40))
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413 ") and b"application/json" in head
    assert set(json.loads(body)) == ERROR_KEYS


MULTIPART = {"Content-Type": "multipart/form-data; boundary=b"}


@pytest.mark.parametrize("status, method, path, query, body, headers", [
    # integers of any length where an id is expected (SQLite holds 63 bits)
    (400, "GET", "/admin/ota/status", {"campaign": "9" * 30}, None, {}),
    (400, "GET", "/admin/ota/stop", {"campaign": "9" * 30}, None, {}),
    (400, "GET", "/admin/ota/status", {"campaign": "9" * 5000}, None, {}),
    (400, "GET", "/admin/ota/status", {"campaign": "-1"}, None, {}),
    (400, "POST", "/ota/report", None, {"token": "a1", "campaign": 10 ** 30, "state": "failed"},
     {}),
    (400, "POST", "/ota/report", None, {"token": "a1", "campaign": 1, "state": "downloading",
                                        "progress": 10 ** 30}, {}),
    # JSON nested deeper than Python's recursion limit
    (400, "POST", "/admin/users", None, b"[" * 5000 + b"]" * 5000, {}),
    (400, "POST", "/admin/devices", None, b'{"user":' * 3000 + b"1" + b"}" * 3000, {}),
    # not UTF-8
    (400, "POST", "/admin/users", None, b'{"name": "\xff\xfe"}', {}),
    (400, "POST", "/ota/report", None, b"\xff" * 100, {}),
    # wrong JSON types, lone surrogates
    (400, "POST", "/admin/users", None, {"name": 5}, {}),
    (400, "POST", "/admin/users", None, {"name": ["alice"]}, {}),
    (400, "POST", "/admin/users", None, {"name": "\ud800"}, {}),
    (400, "POST", "/admin/projects", None, {"user": {"a": 1}, "name": "x"}, {}),
    (400, "POST", "/admin/devices", None, {"user": "alice", "token": 12}, {}),
    (400, "POST", "/admin/devices", None, {"user": "alice", "name": "\ud800"}, {}),
    (400, "POST", "/ota/report", None, {"token": ["a1"], "campaign": 1, "state": "failed"}, {}),
    (400, "POST", "/ota/report", None, {"token": "a1", "campaign": True, "state": "failed"}, {}),
    (400, "POST", "/ota/report", None, {"token": "\ud800", "campaign": 1, "state": "failed"}, {}),
    (400, "POST", "/ota/report", None, {"token": "a1", "campaign": 1, "state": {"x": []}}, {}),
    (400, "POST", "/ota/report", None, [1, 2, 3], {}),
    # malformed multipart
    (400, "POST", "/admin/ota/upload", None, b'--b\r\nContent-Disposition: form-data; name="f"',
     MULTIPART),
    (400, "POST", "/admin/ota/upload", None, b"garbage", {"Content-Type": "multipart/form-data"}),
    (400, "POST", "/admin/ota/start", None, b"--b\r\n\r\n\r\n--b--\r\n", MULTIPART),
    (400, "POST", "/admin/ota/upload", None,
     b'--b\r\nContent-Disposition: form-data; name="token"\r\nContent-Type: text/plain; '
     b"charset=nonesuch\r\n\r\nx\r\n--b--\r\n", MULTIPART),
    (400, "POST", "/admin/ota/upload", None,
     b'--b\r\nContent-Disposition: form-data; name="token"\r\n\r\n\xff\xfe\r\n--b--\r\n',
     MULTIPART),
    (400, "POST", "/admin/ota/upload", None,
     b'--b\r\nContent-Disposition: form-data; name="f"; filename="\x1b[2J.bin"\r\n\r\n'
     b"\xe9\r\n--b--\r\n", MULTIPART),
    (400, "POST", "/admin/ota/upload", None,
     b'--b\r\nContent-Disposition: form-data; name="url"\r\nContent-Transfer-Encoding: x\r\n\r\n'
     b"y\r\n--b--\r\n", MULTIPART),
    # not UTF-8 in a query or a header
    (404, "GET", "/ota/check?token=%FF%FE&version=%C0", None, None, {}),
    (400, "GET", "/admin/devices?user=%00%ff", None, None, {}),
    (400, "GET", "/ota/check", {"version": "1.0.0"}, None, {"X-OTA-Token": "\xff\xfe"}),
    (401, "GET", "/admin/users", None, None, {"Authorization": "Basic \xff\xfe"}),
    (401, "GET", "/admin/users", None, None, {"Authorization": "Basic //46cA=="}),  # b"\xff\xfe:p"
    # a NUL, which PostgreSQL's text cannot hold, where no check stops it first
    (400, "GET", "/ota/fw/%00", None, None, {}),
    (400, "GET", "/ota/fw/%00/manifest.json", None, None, {}),
    (400, "DELETE", "/admin/devices/a%00", None, None, {}),
    (401, "GET", "/admin/users", None, None, {"Authorization": "Basic YQBiOnA="}),  # b"a\0b:p"
])
def test_malformed_requests_are_refused_never_500s(api, fleet, status, method, path, query, body,
                                                   headers):
    if isinstance(body, (dict, list)):
        body = json.dumps(body).encode()  # "\ud800" becomes the escape a client may send
    answer = api.request(method, path, query, body=body, headers=headers, raw=True,
                         auth=headers.get("Authorization", True))
    assert_error_shape(*answer)
    assert answer[0] == status, answer[:2]


def test_an_unexpected_failure_is_a_logged_500_that_tells_the_client_nothing(srv, api, monkeypatch,
                                                                           caplog):
    def broken():
        raise RuntimeError("disk on fire at /srv/secret/path")
    monkeypatch.setattr(srv.app[server.STORE], "users", broken)
    status, body, resp = api.request("GET", "/admin/users", raw=True)
    assert status == 500 and resp.getheader("Content-Type").startswith("application/json")
    assert json.loads(body) == {"error": "internal error (logged)", "detail": {}}
    assert "disk on fire" in caplog.text and "Traceback" in caplog.text


# --- no secret in any log ---------------------------------------------------------

DEVICE_TOKEN = "dev-Tok3n-only-the-board-knows"
ADMIN_PASSWORD_2 = "second admin's password 7"


def test_tokens_and_credentials_stay_out_of_every_log_line(srv, api, fleet, caplog, capsys):
    caplog.set_level(logging.DEBUG)
    api.request("POST", "/admin/devices", body={"user": "bob", "token": DEVICE_TOKEN})
    srv.app[server.STORE].set_password("ops", ADMIN_PASSWORD_2)
    ops = "Basic " + base64.b64encode(("ops:" + ADMIN_PASSWORD_2).encode()).decode()
    # A normal check-in and report with the token in the query and in a header.
    assert api.check(DEVICE_TOKEN, "1.0.0")[0] == 204
    assert api.request("GET", "/ota/check", {"version": "1.0.0"}, auth=False,
                       headers={"X-OTA-Token": DEVICE_TOKEN})[0] == 204
    # An admin request with its Authorization header, and one deleting the device by token.
    assert api.request("GET", "/admin/users", auth=ops)[0] == 200
    # Requests aiohttp's parser refuses, quoting what it read: a request line
    # over 8190 bytes carrying the token, an over-long Authorization header,
    # and headers with a control character after the secret.
    long_line = send_raw(srv, b"GET /ota/check?token=%s&version=%s HTTP/1.1\r\nHost: x\r\n\r\n"
                              % (DEVICE_TOKEN.encode(), b"1" * 9000))
    long_auth = send_raw(srv, b"GET /admin/users HTTP/1.1\r\nHost: x\r\n"
                              b"Authorization: %s%s\r\n\r\n" % (ops.encode(), b"A" * 9000))
    bad_auth = send_raw(srv, b"GET /admin/users HTTP/1.1\r\nHost: x\r\n"
                             b"Authorization: %s\x01\r\n\r\n" % ops.encode())
    bad_token = send_raw(srv, b"GET /ota/check HTTP/1.1\r\nHost: x\r\nX-OTA-Token: %s\x7f\r\n\r\n"
                              % DEVICE_TOKEN.encode())
    for answer in (long_line, long_auth, bad_auth, bad_token):
        assert answer.startswith(b"HTTP/1.0 400 ")
    assert api.request("DELETE", "/admin/devices/" + DEVICE_TOKEN)[0] == 204
    srv.stop()  # every line is written
    logs = caplog.text + capsys.readouterr().err
    # The log did see all of it ...
    assert logs.count("/ota/check") >= 2 and "/admin/users" in logs
    assert "LineTooLong: Got more than 8190 bytes when reading" in logs
    assert "BadHttpMessage: Invalid header value char" in logs
    # ... and none of the secrets.
    for secret in (DEVICE_TOKEN, ADMIN_PASSWORD_2, ops.split()[1], ops.split()[1][:20]):
        assert secret not in logs


def test_a_request_path_cannot_forge_log_lines(srv, api, caplog):
    caplog.set_level(logging.INFO)
    api.request("GET", "/x%0A1.2.3.4%20%22GET%20/admin%22%20200", auth=False)
    srv.stop()  # the access line is written
    lines = [r.getMessage() for r in caplog.records if r.name == "aiohttp.access"]
    assert len(lines) == 1 and "\n" not in lines[0] and "/x%0A1.2.3.4" in lines[0]


@pytest.mark.parametrize("text, shown", [
    ("GET /ota/check?token=abc&version=1", "GET /ota/check?token=[redacted]&version=1"),
    ("b'Authorization: Basic YWRtaW46cHc='", "b'Authorization: [redacted]'"),
    ("b'Basic YWRtaW46cHc=AAAA...'", "b'Basic [redacted]'"),
    ("X-OTA-Token: abc", "X-OTA-Token: [redacted]"),
    ("DELETE /admin/devices/abc-123", "DELETE /admin/devices/[redacted]"),
])
def test_redact_removes_tokens_and_credentials(text, shown):
    assert logs.redact(text) == shown


# --- admin logins: throttled per address, hashed off the event loop ------------------

def wrong(password="guess"):
    return "Basic " + base64.b64encode(("admin:" + password).encode()).decode()


def counting_password_checks(monkeypatch):
    calls = []
    real = campaigns.check_password

    def check(password, stored):
        calls.append(password)
        return real(password, stored)
    monkeypatch.setattr(campaigns, "check_password", check)
    return calls


def test_after_five_bad_passwords_an_address_waits_and_nothing_more_is_checked(srv, clock,
                                                                             monkeypatch):
    attacker, admin = Api(srv, source="127.0.0.1"), Api(srv, source="127.0.0.2")
    checked = counting_password_checks(monkeypatch)
    for i in range(auth.LOGIN_FAILURES):
        assert attacker.request("GET", "/admin/users", auth=wrong("guess%d" % i))[0] == 401
    status, body, resp = attacker.request("GET", "/admin/users", auth=wrong(), raw=True)
    doc = assert_error_shape(status, body, resp)
    assert status == 429 and 1 <= int(resp.getheader("Retry-After")) <= auth.LOGIN_WINDOW
    assert doc["detail"] == {"retry_after": int(resp.getheader("Retry-After"))}
    # Even the right password is not checked from there now ...
    assert attacker.request("GET", "/admin/users")[0] == 429
    assert len(checked) == auth.LOGIN_FAILURES
    # ... while the admin at another address logs in as usual.
    assert admin.request("GET", "/admin/users")[0] == 200
    clock.t += auth.LOGIN_WINDOW  # the failures age out: guesses are checked again
    assert attacker.request("GET", "/admin/users", auth=wrong())[0] == 401
    assert len(checked) == auth.LOGIN_FAILURES + 2


def test_an_admin_already_logged_in_is_not_locked_out_by_guesses_from_the_same_address(srv):
    admin = Api(srv)
    assert admin.request("GET", "/admin/users")[0] == 200
    for _ in range(auth.LOGIN_FAILURES + 1):
        admin.request("GET", "/admin/users", auth=wrong())
    assert admin.request("GET", "/admin/users", auth=wrong())[0] == 429
    assert admin.request("GET", "/admin/users")[0] == 200


def test_guesses_sent_in_parallel_are_bounded_too(srv, monkeypatch):
    gate = threading.Event()
    real = campaigns.check_password

    def slow_check(password, stored):
        gate.wait(10)
        return real(password, stored)
    monkeypatch.setattr(campaigns, "check_password", slow_check)
    attacker = Api(srv)
    statuses = []
    threads = [threading.Thread(target=lambda i=i: statuses.append(
        attacker.request("GET", "/admin/users", auth=wrong("p%d" % i))[0])) for i in range(8)]
    for t in threads:
        t.start()
    # The 6th to 8th are refused while the first five are still being checked.
    for _ in range(1000):
        if len(statuses) >= 3:
            break
        time.sleep(0.01)
    gate.set()
    for t in threads:
        t.join(30)
    assert sorted(statuses) == [401] * 5 + [429] * 3


def test_checking_a_password_does_not_hold_up_the_devices(srv, api, fleet, monkeypatch):
    entered, released = threading.Event(), threading.Event()
    outcome = {}
    real = campaigns.check_password

    def slow_check(password, stored):
        entered.set()
        outcome["released"] = released.wait(10)
        return real(password, stored)
    monkeypatch.setattr(campaigns, "check_password", slow_check)
    guess = threading.Thread(target=lambda: outcome.update(
        status=api.request("GET", "/admin/users", auth=wrong())[0]))
    guess.start()
    assert entered.wait(10)
    # While that password is being hashed, a board checks in and is answered.
    assert api.check("a1", "1.0.0")[0] == 204
    released.set()
    guess.join(30)
    assert outcome == {"released": True, "status": 401}


@pytest.mark.parametrize("remote, key", [
    ("192.0.2.7", "192.0.2.7"),
    ("::ffff:192.0.2.7", "192.0.2.7"),
    ("2001:db8:1:2:aaaa::1", "2001:db8:1:2::/64"),
    ("2001:db8:1:2:bbbb::9", "2001:db8:1:2::/64"),  # the same host, as far as guessing goes
    (None, "None"),
])
def test_failures_are_counted_per_ipv4_address_and_per_ipv6_64(remote, key):
    assert auth.client_key(remote) == key


def test_an_attacker_with_many_addresses_cannot_grow_the_throttle_without_bound(monkeypatch):
    monkeypatch.setattr(auth, "_THROTTLED_MAX", 10)
    throttle = auth.LoginThrottle(clock=lambda: 1000.0)
    for i in range(100):
        throttle.failing("10.0.%d.%d" % (i // 256, i % 256))
    assert len(throttle._failures) <= 11


# --- property tests: whatever arrives, a well-formed answer ---------------------------
#
# Each field gets values that pass (so requests go deep into the handlers:
# a known token, a campaign that exists) mixed with hostile ones: any JSON
# type, integers of any length, lone surrogates, control characters,
# nesting deeper than Python's recursion limit, bytes that are not UTF-8.

ROUTES = [("GET", "/ota/check"), ("POST", "/ota/report"), ("GET", "/ota/fw/{}"),
          ("GET", "/ota/fw/{}/manifest.json"), ("GET", "/ota/fw/{}/{}"),
          ("POST", "/admin/users"), ("GET", "/admin/users"),
          ("POST", "/admin/projects"), ("GET", "/admin/projects"),
          ("POST", "/admin/devices"), ("GET", "/admin/devices"), ("DELETE", "/admin/devices/{}"),
          ("POST", "/admin/ota/upload"), ("POST", "/admin/ota/start"), ("GET", "/admin/ota/start"),
          ("GET", "/admin/ota/stop"), ("GET", "/admin/ota/status")]
JSON_ROUTES = [r for r in ROUTES if r[0] == "POST" and "/ota/" not in r[1] or r[1] == "/ota/report"]
PASSING = {"token": ["a1", "b1"], "version": ["1.0.0", "1.1.0"], "campaign": [1, 2],
           "state": list(campaigns.STATES), "progress": [0, 4096], "name": ["n1", "n2"],
           "user": ["alice", "bob"], "project": ["garden"], "fileName": ["app.bin"],
           "url": ["https://cdn.example.com/a.bin"], "allow_downgrade": ["1", "0"],
           "max_attempts": [1, 3], "chip": ["esp32"], "build": ["b"], "error": ["oops"],
           "manifest": ["{}"]}
PROPERTY = settings(max_examples=400, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture,
                                           HealthCheck.too_slow])
IMAGE = image("1.1.0")

any_text = st.text(st.characters(exclude_categories=()), max_size=20)  # lone surrogates too
huge = st.integers(-10 ** 40, 10 ** 40) | st.integers(2 ** 63 - 2, 2 ** 64)
nested = st.integers(1, 4000).map(lambda n: "[" * n + "]" * n)
json_values = st.recursive(
    st.none() | st.booleans() | huge | st.floats() | any_text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(any_text, inner, max_size=3),
    max_leaves=8)


def field_value(key):
    return st.sampled_from(PASSING[key]) | json_values


json_objects = st.fixed_dictionaries({}, optional={k: field_value(k) for k in PASSING})
json_bodies = st.one_of(
    json_objects.map(json.dumps), json_values.map(json.dumps), nested,
    nested.map(lambda n: '{"name": %s}' % n)).map(lambda text: text.encode())


def as_query_bytes(value):
    if isinstance(value, bytes):
        return value
    return (value if isinstance(value, str) else json.dumps(value)).encode("utf-8", "surrogatepass")


query_value = {k: (field_value(k) | st.binary(max_size=20) | huge).map(as_query_bytes)
               for k in PASSING}


@st.composite
def queries(draw):
    pairs = [(k.encode(), draw(query_value[k]))
             for k in draw(st.sets(st.sampled_from(sorted(PASSING))))]
    pairs += draw(st.lists(st.tuples(any_text.map(as_query_bytes), st.binary(max_size=20)),
                           max_size=2))
    return "&".join(urllib.parse.quote_from_bytes(k, safe="") + "=" +
                    urllib.parse.quote_from_bytes(v, safe="") for k, v in pairs)


@st.composite
def multiparts(draw):
    """(content type, body) of a multipart form, often broken."""
    # A boundary with a control character would make the header itself not
    # HTTP: aiohttp's parser refuses those before any handler runs.
    boundary = draw(st.sampled_from([b"b0undary", b"x", b""]) | st.text(
        st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1,
        max_size=8).map(str.encode))
    parts = []
    for name in draw(st.lists(st.sampled_from(sorted(PASSING) + ["file"]) | any_text, max_size=4)):
        disposition = b'form-data; name="%s"' % as_query_bytes(name)
        if name == "file" or draw(st.booleans()):
            disposition += b'; filename="%s"' % as_query_bytes(draw(any_text))
        extra = draw(st.sampled_from([b"", b"Content-Type: text/plain; charset=utf-16\r\n",
                                      b"Content-Transfer-Encoding: base64\r\n",
                                      b"Content-Type: text/plain; charset=nonesuch\r\n"]))
        value = draw(query_value[name] if name in PASSING else
                     st.sampled_from([IMAGE, IMAGE[:100]]) | st.binary(max_size=100))
        parts.append(b"--%s\r\nContent-Disposition: %s\r\n%s\r\n%s\r\n"
                     % (boundary, disposition, extra, value))
    body = b"".join(parts) + draw(st.sampled_from([b"--%s--\r\n" % boundary, b""]))
    if draw(st.booleans()):
        body = body[:draw(st.integers(0, len(body)))]
    return "multipart/form-data; boundary=" + boundary.decode("latin-1"), body


bodies = st.one_of(
    st.tuples(st.just("application/json"), json_bodies),
    st.tuples(st.sampled_from(["application/json", "text/plain", "multipart/form-data", ""]),
              st.binary(max_size=300)),
    multiparts(),
)
path_params = any_text | st.sampled_from(["a1", "0" * 32, "9" * 30, "manifest.json", "%", ".."])
# What a header value may hold (RFC 9110 field-vchar and space); http.client
# sends it as Latin-1, so 0x80..0xFF arrive as bytes that are not UTF-8.
header_text = st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF,
                                    exclude_characters="\x7f"), max_size=40)
headers = st.fixed_dictionaries({}, optional={
    "X-OTA-Token": st.sampled_from(["a1", "b1", "nobody", "x" * 500]) | header_text,
    "Range": st.sampled_from(["bytes=0-", "bytes=-0", "bytes=9-1", "bytes=99999999999999999999-",
                              "bytes=0-1,2-3", "chars=0-1", "bytes=abc"]) | header_text,
    "If-Range": st.just('"x"') | header_text,
    "Authorization": st.sampled_from(["Basic !!", "Basic " + "QQ==" * 300, "Bearer x"])
    | header_text.map("Basic ".__add__),
})


def send(api, method, path, query, ctype, body, extra_headers):
    """One request over its own connection; (status, body, response)."""
    h = {"Authorization": api.auth}
    h.update(extra_headers)
    if ctype:
        h["Content-Type"] = ctype
    conn = http.client.HTTPConnection("127.0.0.1", api.srv.port, timeout=30)
    try:
        conn.request(method, path + ("?" + query if query else ""), body=body, headers=h)
        resp = conn.getresponse()
        return resp.status, resp.read(), resp
    finally:
        conn.close()


def assert_answered(status, body, resp):
    assert status != 500, body[:300]
    if status >= 400:
        assert_error_shape(status, body, resp)


@pytest.fixture
def campaigns_running(api, fleet):
    """Campaigns 1 and 2 exist, and a1 was offered campaign 2, so reports
    and status requests reach the store."""
    api.start(IMAGE, user="alice")
    api.start(IMAGE, token="a1")
    assert api.check("a1", "1.0.0")[0] == 200


def quoted(text):
    return urllib.parse.quote(as_query_bytes(text), safe="")


@PROPERTY
@given(route=st.sampled_from(ROUTES), params=st.tuples(path_params, path_params),
       query=queries(), body=bodies, extra=headers)
def test_any_request_to_any_handler_gets_a_well_formed_answer(api, campaigns_running, route,
                                                              params, query, body, extra):
    method, path = route
    path = path.format(*map(quoted, params))
    assert_answered(*send(api, method, path, query, *body, extra))


@PROPERTY
@given(route=st.sampled_from(JSON_ROUTES), body=json_bodies | st.binary(max_size=2000))
def test_any_json_or_bytes_to_a_json_handler_is_refused_cleanly(api, campaigns_running, route,
                                                                body):
    assert_answered(*send(api, *route, "", "application/json", body, {}))


@PROPERTY
@given(route=st.sampled_from([r for r in ROUTES if r[0] == "GET" and "{}" not in r[1]]),
       query=queries())
def test_any_query_string_is_refused_cleanly(api, campaigns_running, route, query):
    assert_answered(*send(api, *route, query, "", None, {}))


@PROPERTY
@given(route=st.sampled_from([("POST", "/admin/ota/upload"), ("POST", "/admin/ota/start")]),
       query=queries(), form=multiparts())
def test_any_multipart_upload_is_refused_cleanly(api, campaigns_running, route, query, form):
    assert_answered(*send(api, *route, query, *form, {}))
