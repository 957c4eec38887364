"""The board against hostile servers and hostile inputs: each test is an
attack that worked before the fix it covers.

Device code runs on the MicroPython unix port (and, where it is the same
code path, on CPython too) against loopback servers (faultserver.py) that
record what they received.

* A public key of small order "verifies" forged manifests: refused where the
  key is configured, before any download.
* The caller's headers (Authorization, the device token) followed a
  redirect to another origin.
* A server could keep the board reading its response head forever, or
  trickle a body so that the update at boot never ended and the app never
  started (now: an 8 KiB head, and ota.deadline around the boot update).
* CR, LF and other control characters of a URL or a Location header reached
  the request line.
* A bundle whose version or project name is not text broke the update with
  a UnicodeError instead of an OTAError.
* An image signed for Secure Boot (signature block after the image) was
  refused, and is now installed with its signature.
"""
import base64
import hashlib
import json
import os
import ssl
import subprocess
import sys

import pytest

from conftest import run_cpython, run_mpy
from faultserver import FaultServer
from otatool.appimage import make_app_image
from otatool.bundle import build
from otatool.serve import ensure_certs
from otatool.sign import canonical_bytes
from test_bundle import V0, digest_tree, run, script, shown, write_files
from test_firmware_ota import update
from test_http import download
from test_signing import IDENTITY, SMALL_ORDER

ESP_ERR_INVALID_ARG = 0x102
ESP_ERR_TIMEOUT = 0x107
ESP_ERR_OTA_VALIDATE_FAILED = 0x1503
ESP_ERR_HTTP_FETCH_HEADER = 0x7004


@pytest.fixture
def srv():
    with FaultServer() as s:
        yield s


@pytest.fixture
def other():
    """A second server: another origin (another port of 127.0.0.1)."""
    with FaultServer() as s:
        yield s


@pytest.fixture(scope="module")
def tls_ctx(tmp_path_factory):
    ca, cert, key = ensure_certs(str(tmp_path_factory.mktemp("tls")))
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    return ctx, open(ca).read()


@pytest.fixture(scope="module")
def image():
    return make_app_image(version="2.0.0", project_name="greenhouse", size=24 * 1024)


# --- Ed25519 keys of small order ------------------------------------------------

BEGIN = """
import ota
try:
    ota.begin(%r, public_key=%r, allow_http=True)
    print("accepted")
except ota.OTAError as e:
    print(e.name)
"""


def b64(hexkey):
    return base64.b64encode(bytes.fromhex(hexkey)).decode()


def forged_manifest(**fields):
    """A manifest "signed" without any private key: R = identity, S = 0,
    which the verification equation accepts for the identity key."""
    f = {"kind": "bundle", "version": "9.0.0", "project": "evil", "chip": "any",
         "secure_version": 0, "size": 10, "sha256": "00" * 32, "url": "evil.otab"}
    f.update(fields)
    return json.dumps({"manifest": base64.b64encode(canonical_bytes(f)).decode(),
                       "sig": b64(IDENTITY + "00" * 32)}).encode()


def test_ota_begin_refuses_a_small_order_public_key_before_fetching_anything(srv, board_dir, image):
    # With such a key a forged manifest (R = identity, S = 0) verifies for
    # any image: the key itself is the configuration error.
    srv.route("/m.json", forged_manifest(kind="firmware", chip="esp32", size=len(image),
                                         url="evil.bin"))
    srv.route("/evil.bin", image)
    for key in [b64(IDENTITY), b64("00" * 32)] + [b64(pk) for pk, _ in SMALL_ORDER[4:6]]:
        p = run_mpy(BEGIN % (srv.url("/m.json"), key), board_dir)
        assert p.stdout.split() == ["ESP_ERR_INVALID_ARG"], p.stdout + p.stderr
    assert srv.connections == 0


def test_a_manifest_checked_against_a_small_order_key_is_refused(board_dir):
    (board_dir / "m.json").write_bytes(forged_manifest())
    src = ("from ota import OTAError\nfrom ota.manifest import parse_manifest\n"
           "try:\n    print(parse_manifest(open('m.json', 'rb').read(), %r)['project'])\n"
           "except OTAError as e:\n    print(e.name)\n" % b64(IDENTITY))
    p = run_mpy(src, board_dir)
    assert p.stdout.split() == ["ESP_ERR_INVALID_ARG"], p.stdout + p.stderr


def test_the_boot_update_with_a_bad_key_in_its_config_stops_before_any_network(srv, board_dir):
    srv.route("/m.json", b"{}")
    (board_dir / "ota_config.json").write_text(json.dumps(
        {"url": srv.url("/m.json"), "allow_http": True, "public_key": b64("00" * 32)}))
    p = run_mpy("import ota.updater\nota.updater.run()\n", board_dir)
    assert "ota: update failed: ESP_ERR_INVALID_ARG" in p.stdout, p.stdout + p.stderr
    assert srv.connections == 0


# --- credentials across redirects ---------------------------------------------------

SECRETS = {"Authorization": "Bearer s3cret", "X-Api-Key": "k3y"}


@pytest.mark.parametrize("runtime", ["mpy", "cpython"])
def test_a_redirect_to_another_port_gets_none_of_the_callers_headers(srv, other, image, board_dir,
                                                                     runtime):
    srv.route("/fw.bin", redirect=(302, other.url("/fw.bin")))
    other.route("/fw.bin", image)
    r = download(srv.url("/fw.bin"), board_dir, runtime, headers=SECRETS)
    assert r["ok"], r
    assert srv.log[0]["headers"]["authorization"] == "Bearer s3cret"
    sent = other.log[0]["headers"]
    assert "authorization" not in sent and "x-api-key" not in sent, sent


def test_a_redirect_on_the_same_origin_keeps_the_callers_headers(srv, image, board_dir):
    srv.route("/latest", redirect=(302, "/fw.bin"))
    srv.route("/fw.bin", image)
    r = download(srv.url("/latest"), board_dir, headers=SECRETS)
    assert r["ok"], r
    assert [e["headers"].get("authorization") for e in srv.log] == ["Bearer s3cret"] * 2


def test_headers_dropped_at_another_origin_stay_dropped_when_it_redirects_back(
        srv, other, image, board_dir):
    srv.route("/latest", redirect=(302, other.url("/hop")))
    other.route("/hop", redirect=(302, srv.url("/fw.bin")))
    srv.route("/fw.bin", image)
    r = download(srv.url("/latest"), board_dir, headers=SECRETS)
    assert r["ok"], r
    assert [e["headers"].get("authorization") for e in srv.log] == ["Bearer s3cret", None]


def test_an_https_to_http_redirect_needs_allow_http_and_then_gets_no_headers(
        tls_ctx, other, image, board_dir):
    ctx, ca = tls_ctx
    other.route("/fw.bin", image)
    with FaultServer(ssl_context=ctx) as tls:
        tls.route("/fw.bin", redirect=(302, other.url("/fw.bin")))
        refused = download(tls.url("/fw.bin"), board_dir, cert_pem=ca, headers=SECRETS)
        assert (refused["ok"], refused["code"]) == (False, ESP_ERR_INVALID_ARG)
        assert other.connections == 0
        r = download(tls.url("/fw.bin"), board_dir, cert_pem=ca, headers=SECRETS, allow_http=True)
    assert r["ok"], r
    assert "authorization" not in other.log[0]["headers"]


def test_the_check_in_token_is_not_sent_where_a_redirect_points(srv, other, board_dir):
    srv.route("/ota/check", redirect=(307, other.url("/ota/check")))
    other.route("/ota/check", status=204)
    src = ("import ota\nprint(ota.check(%r, 'dev-t0ken', version='1.0.0', allow_http=True))\n"
           % srv.url(""))
    p = run_mpy(src, board_dir)
    assert p.stdout.split() == ["None"], p.stdout + p.stderr
    assert srv.log[0]["headers"]["x-ota-token"] == "dev-t0ken"
    assert "x-ota-token" not in other.log[0]["headers"]


# --- unbounded response heads and the deadline at boot -------------------------------

def test_a_server_sending_header_lines_forever_gets_fetch_header(srv, board_dir):
    srv.route("/fw.bin", head_forever=0)
    r = download(srv.url("/fw.bin"), board_dir, timeout=30)
    assert (r["ok"], r["code"]) == (False, ESP_ERR_HTTP_FETCH_HEADER), r


@pytest.mark.parametrize("runtime", ["mpy", "cpython"])
def test_a_header_line_over_4_kib_gets_fetch_header(srv, image, board_dir, runtime):
    srv.route("/fw.bin", image, extra_head=["X-Big: " + "b" * 5000])
    r = download(srv.url("/fw.bin"), board_dir, runtime)
    assert (r["ok"], r["code"]) == (False, ESP_ERR_HTTP_FETCH_HEADER), r


def test_a_long_head_of_ordinary_headers_under_8_kib_is_read(srv, image, board_dir):
    srv.route("/fw.bin", image, extra_head=["X-Pad-%03d: %s" % (i, "p" * 60) for i in range(100)])
    r = download(srv.url("/fw.bin"), board_dir)
    assert r["ok"] and r["n"] == len(image), r


def boot_update(board_dir, config):
    """main.py's update (ota.updater.run) with this ota_config.json: what it
    printed. The subprocess is given far less time than the hostile server
    would hold it without a deadline."""
    (board_dir / "ota_config.json").write_text(json.dumps(config))
    p = run_mpy("import ota.updater\nota.updater.run()\nprint('app starts')\n", board_dir,
                timeout=40)
    assert p.returncode == 0, p.stdout + p.stderr
    return p.stdout


def test_the_boot_update_gives_up_at_its_deadline_on_a_trickling_body(srv, image, board_dir):
    # One byte every 0.2 s: each byte well within the read timeout, the image
    # in ~80 minutes.
    srv.route("/fw.bin", image, trickle=0.2)
    out = boot_update(board_dir, {"url": srv.url("/fw.bin"), "allow_http": True, "deadline_s": 3})
    assert "ota: update failed: ESP_ERR_TIMEOUT" in out, out
    assert out.split()[-2:] == ["app", "starts"]
    assert 0 < srv.log[0]["sent"] < len(image)


def test_the_boot_check_in_gives_up_at_its_deadline_on_a_head_sent_a_byte_at_a_time(srv, board_dir):
    srv.route("/ota/check", head_drip=0.5)
    out = boot_update(board_dir, {"server": srv.url(""), "token": "t", "allow_http": True,
                                  "deadline_s": 2})
    assert "ota: update failed: ESP_ERR_TIMEOUT" in out, out
    assert srv.log[0]["head_sent"] > 1


@pytest.mark.parametrize("runtime", ["mpy", "cpython"])
def test_a_download_under_a_deadline_still_delivers_every_byte(srv, board_dir, runtime, tls_ctx):
    # Reads under a deadline take what has arrived (non-blocking on the
    # unix port): nothing may be lost or reordered, over TCP and TLS.
    data = os.urandom(300_000)
    srv.route("/fw.bin", data, drop_at=123_457)
    prelude = "import ota.deadline\nota.deadline.start(60000)\n"
    r = download(srv.url("/fw.bin"), board_dir, runtime, prelude=prelude)
    assert (r["ok"], r["n"]) == (True, len(data)), r
    ctx, ca = tls_ctx
    with FaultServer(ssl_context=ctx) as tls:
        tls.route("/fw.bin", data, chunked=7000)
        r2 = download(tls.url("/fw.bin"), board_dir, runtime, prelude=prelude, cert_pem=ca)
    assert r["sha"] == r2["sha"] == hashlib.sha256(data).hexdigest(), r2


def test_a_stalled_read_under_a_deadline_still_times_out_and_resumes(srv, image, board_dir):
    srv.route("/fw.bin", image, stall_at=10_000, stall_s=20)
    prelude = "import ota.deadline\nota.deadline.start(60000)\n"
    r = download(srv.url("/fw.bin"), board_dir, prelude=prelude, timeout_ms=300, timeout=30)
    assert (r["ok"], r["n"]) == (True, len(image)), r
    assert [e["fault"] for e in srv.log] == ["stall", None]


# --- control characters in URLs ---------------------------------------------------

BAD_CHARS = ["\r\nX-Injected: 1", "\n", "\r", "\x00", " ", "\t", "\x7f", "\x1b", "\x85"]

URLS = """
import json
from ota import OTAError
from ota.http import Download
out = []
for url in json.loads(%r):
    try:
        Download(url, allow_http=True, timeout_ms=2000).start()
        out.append("sent")
    except OTAError as e:
        out.append(e.name)
print(json.dumps(out))
"""


@pytest.mark.parametrize("runtime", ["mpy", "cpython"])
def test_a_url_with_a_control_character_or_space_is_refused_before_connecting(srv, board_dir,
                                                                             runtime):
    urls = [srv.url("/fw.bin") + c + "x" for c in BAD_CHARS] + \
        ["http://127.0.0.1:%d\r\n/fw.bin" % srv.port, "http://127.0.0.1\x00:%d/" % srv.port]
    p = (run_mpy if runtime == "mpy" else run_cpython)(URLS % json.dumps(urls), board_dir)
    assert json.loads(p.stdout) == ["ESP_ERR_INVALID_ARG"] * len(urls), p.stdout + p.stderr
    assert srv.connections == 0


# What a Location value can hold (a line feed ends the header line).
IN_LOCATION = [c for c in BAD_CHARS if "\n" not in c]


@pytest.mark.parametrize("bad", IN_LOCATION, ids=[repr(c) for c in IN_LOCATION])
def test_a_location_with_a_control_character_is_refused_before_anything_is_sent(
        srv, other, board_dir, bad):
    other.route("/fw.bin", b"x")
    srv.route("/abs", redirect=(302, other.url("/fw.bin") + bad + "y"))
    srv.route("/rel", redirect=(302, "/fw.bin" + bad + "y"))
    for path in ("/abs", "/rel"):
        r = download(srv.url(path), board_dir)
        assert (r["ok"], r["code"]) == (False, ESP_ERR_HTTP_FETCH_HEADER), (path, r)
    assert other.connections == 0
    assert [e["path"] for e in srv.log] == ["/abs", "/rel"]


def test_a_location_that_is_no_http_url_is_the_servers_fault(srv, board_dir):
    srv.route("/a", redirect=(302, "ftp://127.0.0.1/fw.bin"))
    srv.route("/b", redirect=(302, "http://user:pw@127.0.0.1:%d/fw.bin" % srv.port))
    for path in ("/a", "/b"):
        r = download(srv.url(path), board_dir)
        assert (r["ok"], r["code"]) == (False, ESP_ERR_HTTP_FETCH_HEADER), r
    assert len(srv.log) == 2


# --- bundle text fields -----------------------------------------------------------

def patched(bundle, at, raw):
    """The bundle with header bytes at..at+len(raw) replaced and its header
    SHA-256 made right again: only the field itself is wrong."""
    b = bytearray(bundle)
    b[at:at + len(raw)] = raw
    hlen = b[6] | b[7] << 8
    b[hlen - 32:hlen] = hashlib.sha256(bytes(b[:hlen - 32])).digest()
    return bytes(b)


def test_a_bundle_whose_version_or_project_is_not_text_is_refused_and_nothing_is_staged(tmp_path):
    good = build({"main.py": b"print('evil')\n"}, "2.0.0", "demo")
    field = lambda raw: raw + bytes(32 - len(raw))   # noqa: E731 (NUL-padded, as written)
    cases = {
        "version not UTF-8": patched(good, 16, field(b"\xff\xfe2.0")),
        "project not UTF-8": patched(good, 48, field(b"de\xc3\x28mo")),
        "version with an escape sequence": patched(good, 16, field(b"2.0\x1b[2J")),
        "version empty": patched(good, 16, field(b"")),
        "version without its NUL": patched(good, 16, b"2" * 32),
        "bytes after the version's NUL": patched(good, 16, field(b"2.0\0junk")),
        "project of non-ASCII UTF-8": patched(good, 48, field("démo".encode())),
    }
    board = tmp_path / "board"
    write_files(str(board / "fs" / "app"), V0)
    body = ("import json\nout = []\nfor name in json.loads(%r):\n"
            "    try:\n        feed(ota.AppBundle('/app'), open('/host' + name, 'rb').read())\n"
            "        out.append('installed')\n"
            "    except ota.OTAError as e:\n        out.append(e.name)\n"
            "    except Exception as e:\n        out.append(type(e).__name__)\n"
            "show('out', out)\nshow('tree', tree('/app'))\n"
            "show('staged', journal.exists('/app.ota/new'))\n")
    names = []
    for i, data in enumerate(cases.values()):
        (tmp_path / ("c%d.otab" % i)).write_bytes(data)
        names.append(str(tmp_path / ("c%d.otab" % i)))
    r = run(script(board, body % json.dumps(names)), board)
    assert dict(zip(cases, shown(r, "out"))) == {k: "ESP_ERR_OTA_VALIDATE_FAILED" for k in cases}
    assert shown(r, "tree") == digest_tree(V0)
    assert shown(r, "staged") is False


# --- images signed for Secure Boot ---------------------------------------------------

FLASHED = """
import esp32, hashlib, binascii
p = esp32.Partition(esp32.Partition.BOOT)
buf = bytearray(4096)
h = hashlib.sha256()
n = %d
i = 0
while n > 0:
    p.readblocks(i, buf)
    h.update(buf if n >= 4096 else buf[:n])
    n -= 4096
    i += 1
print(p.info()[4], binascii.hexlify(h.digest()).decode())
"""


@pytest.mark.parametrize("version", ["1", "2"])
def test_an_image_signed_for_secure_boot_installs_with_its_signature(srv, board_dir, tmp_path,
                                                                     version):
    espsecure = os.path.join(os.path.dirname(sys.executable), "espsecure")
    app, key, out = tmp_path / "app.bin", tmp_path / "key.pem", tmp_path / "signed.bin"
    app.write_bytes(make_app_image(version="3.0.0", project_name="secure", size=30000))
    for args in (["generate-signing-key", "--version", version]
                 + (["--scheme", "ecdsa256"] if version == "2" else []) + [str(key)],
                 ["sign-data", "--version", version, "--keyfile", str(key), "-o", str(out),
                  str(app)]):
        p = subprocess.run([espsecure] + args, capture_output=True, text=True, timeout=120)
        assert p.returncode == 0, p.stdout + p.stderr
    signed = out.read_bytes()
    srv.route("/fw.bin", signed)
    r = update(board_dir, srv.url("/fw.bin"))
    assert r["ok"] and r["read"] == len(signed) and r["version"] == "3.0.0", r
    p = run_mpy(FLASHED % len(signed), board_dir)
    assert p.stdout.split() == [r["boot"], hashlib.sha256(signed).hexdigest()], p.stdout + p.stderr
