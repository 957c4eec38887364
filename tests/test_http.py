"""ota.http.Download on the MicroPython unix port (and CPython for the core
paths) against a misbehaving loopback server (faultserver.py) and the
development server (`otatool serve`)."""
import hashlib
import json
import os
import random
import socket
import ssl
import subprocess
import sys

import pytest

from conftest import LIB, MICROPYTHON, REPO, compile_ota, logged, run_cpython, run_mpy
from faultserver import FaultServer
from otatool.serve import ensure_certs, start_server

sys.path.insert(0, LIB)
from ota.url import parse_url  # noqa: E402 (device code, importable on CPython)
from ota.http_extra import join_url  # noqa: E402

ESP_FAIL = -1
ESP_ERR_INVALID_ARG = 0x102
ESP_ERR_TIMEOUT = 0x107
ESP_ERR_INVALID_RESPONSE = 0x108
ESP_ERR_HTTP_MAX_REDIRECT = 0x7001
ESP_ERR_HTTP_CONNECT = 0x7002
ESP_ERR_HTTP_NOT_MODIFIED = 0x7009
ESP_ERR_HTTP_INCOMPLETE_DATA = 0x700C
RETRIES = 3

# The device-side loop a client runs: start, then readinto() until 0, hashing
# what arrives. Prints one JSON line.
SCRIPT = r'''
import json, hashlib, binascii
from ota import OTAError
from ota.certs import pem_to_der
from ota.http import Download
P = json.loads(%r)
kw = P["kw"]
if P.get("cert_pem"):
    kw["cert_der"] = pem_to_der(P["cert_pem"])
if P.get("cert_der"):
    kw["cert_der"] = binascii.unhexlify(P["cert_der"])
r = {}
h = hashlib.sha256()
t = 0
mv = memoryview(bytearray(P["buf"]))
d = None
try:
    d = Download(P["url"], **kw)
    d.start(**P["start"])
    r["start_offset"] = d.offset
    while True:
        n = d.readinto(mv)
        if not n:
            break
        h.update(mv[:n])
        t += n
    r["ok"] = True
except OTAError as e:
    r.update(ok=False, code=e.code, name=e.name, http_status=e.http_status, msg=str(e))
r.update(n=t, sha=binascii.hexlify(h.digest()).decode())
if d:
    r.update(size=d.size, offset=d.offset, etag=d.etag, url=d.url)
    d.close()
print("RESULT " + json.dumps(r))
'''


def download(url, board_dir, runtime="mpy", cert_pem=None, cert_der=None, start=None, buf=4096,
             timeout=60, prelude="", **kw):
    """SCRIPT on the board (prelude: device code run first): its RESULT."""
    kw.setdefault("allow_http", url.startswith("http:"))
    kw.setdefault("timeout_ms", 2000)
    params = dict(url=url, kw=kw, start=start or {}, buf=buf, cert_pem=cert_pem,
                  cert_der=cert_der.hex() if cert_der else None)
    run = run_mpy if runtime == "mpy" else run_cpython
    p = run(prelude + SCRIPT % json.dumps(params), board_dir, timeout=timeout)
    lines = [x for x in p.stdout.splitlines() if x.startswith("RESULT ")]
    assert lines, "no result:\n%s\n%s" % (p.stdout, p.stderr)
    return json.loads(lines[-1][7:])


def sha(data):
    return hashlib.sha256(data).hexdigest()


@pytest.fixture(scope="module")
def image():
    return random.Random(1).randbytes(200_000)


@pytest.fixture
def fault():
    with FaultServer() as srv:
        yield srv


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    """(ca.pem, server cert, server key) of a test CA, and another CA's PEM."""
    ca, cert, key = ensure_certs(str(tmp_path_factory.mktemp("tls")))
    wrong_ca = ensure_certs(str(tmp_path_factory.mktemp("tls-other")))[0]
    return ca, cert, key, wrong_ca


@pytest.fixture
def fault_tls(certs):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(certs[1], certs[2])
    with FaultServer(ssl_context=ctx) as srv:
        yield srv


@pytest.fixture(scope="module")
def served(tmp_path_factory, image):
    """`otatool serve` over plain HTTP and over TLS, both serving fw.bin."""
    d = tmp_path_factory.mktemp("www")
    (d / "fw.bin").write_bytes(image)
    logs = []
    plain = start_server(str(d), log=logs.append)
    tls = start_server(str(d), tls=True, cert_dir=str(tmp_path_factory.mktemp("serve-tls")),
                       log=logs.append)
    yield dict(http=plain[1], https=tls[1], ca=tls[2], logs=logs)
    plain[0].shutdown()
    tls[0].shutdown()


def read(path):
    with open(path, "rb") as f:
        return f.read()


# --- plain HTTP and the URL rules ------------------------------------------

@pytest.mark.parametrize("runtime", ["mpy", "cpython"])
def test_plain_http_download_delivers_every_byte(served, image, board_dir, runtime):
    r = download(served["http"] + "/fw.bin", board_dir, runtime)
    assert r["ok"], r
    assert (r["n"], r["size"], r["sha"], r["start_offset"]) == (len(image), len(image), sha(image), 0)
    assert r["etag"].startswith('"')


def test_http_url_is_refused_without_allow_http(fault, image, board_dir):
    fault.route("/fw.bin", image)
    r = download(fault.url("/fw.bin"), board_dir, allow_http=False)
    assert (r["ok"], r["code"]) == (False, ESP_ERR_INVALID_ARG)
    assert fault.log == []  # refused before connecting


def test_https_url_without_ca_is_refused(fault_tls, board_dir):
    r = download(fault_tls.url("/fw.bin"), board_dir)
    assert (r["ok"], r["code"]) == (False, ESP_ERR_INVALID_ARG)
    assert fault_tls.log == []


def test_redirect_from_https_to_http_needs_allow_http(fault_tls, fault, image, certs, board_dir):
    fault.route("/fw.bin", image)
    fault_tls.route("/go", redirect=(302, fault.url("/fw.bin")))
    r = download(fault_tls.url("/go"), board_dir, cert_pem=read(certs[0]).decode())
    assert (r["ok"], r["code"]) == (False, ESP_ERR_INVALID_ARG)
    assert fault.log == []


def test_connection_refused_is_a_connect_error(board_dir):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    r = download("http://127.0.0.1:%d/fw.bin" % port, board_dir)
    assert (r["ok"], r["code"]) == (False, ESP_ERR_HTTP_CONNECT)


def test_ipv6_loopback_works_when_the_host_has_it(image, board_dir):
    try:
        srv = FaultServer(host="::1")
    except OSError:
        pytest.skip("no IPv6 loopback on this host")
    with srv:
        srv.route("/fw.bin", image)
        assert srv.url("/fw.bin").startswith("http://[::1]:")
        r = download(srv.url("/fw.bin"), board_dir)
    assert r["ok"], r
    assert r["sha"] == sha(image)


# --- TLS -----------------------------------------------------------------------

@pytest.mark.parametrize("runtime", ["mpy", "cpython"])
def test_tls_download_verifies_the_server_with_a_pem_ca(served, image, board_dir, runtime):
    r = download(served["https"] + "/fw.bin", board_dir, runtime, cert_pem=read(served["ca"]).decode())
    assert r["ok"], r
    assert r["sha"] == sha(image)


def test_tls_download_accepts_the_ca_as_der(fault_tls, image, certs, board_dir):
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding
    der = x509.load_pem_x509_certificate(read(certs[0])).public_bytes(Encoding.DER)
    fault_tls.route("/fw.bin", image)
    r = download(fault_tls.url("/fw.bin"), board_dir, cert_der=der)
    assert r["ok"], r
    assert r["sha"] == sha(image)


def test_a_pem_bundle_trusts_every_ca_in_it(fault_tls, image, certs, board_dir):
    # The right CA second: mbedtls would ignore it if the DER were concatenated.
    fault_tls.route("/fw.bin", image)
    bundle = read(certs[3]) + read(certs[0])
    r = download(fault_tls.url("/fw.bin"), board_dir, cert_pem=bundle.decode())
    assert r["ok"], r


@pytest.mark.parametrize("runtime", ["mpy", "cpython"])
def test_a_server_signed_by_another_ca_is_refused(fault_tls, image, certs, board_dir, runtime):
    fault_tls.route("/fw.bin", image)
    r = download(fault_tls.url("/fw.bin"), board_dir, runtime, cert_pem=read(certs[3]).decode())
    assert (r["ok"], r["code"]) == (False, ESP_ERR_HTTP_CONNECT)
    assert fault_tls.log == []  # no request was sent over the untrusted connection


def test_a_certificate_for_another_host_is_refused(image, tmp_path, board_dir):
    ca, cert, key = ensure_certs(str(tmp_path / "tls"), names=["ota.example.test"])
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    with FaultServer(ssl_context=ctx) as srv:
        srv.route("/fw.bin", image)
        r = download(srv.url("/fw.bin"), board_dir, cert_pem=read(ca).decode())
    assert (r["ok"], r["code"]) == (False, ESP_ERR_HTTP_CONNECT)


def test_a_tls_download_cut_mid_body_resumes(fault_tls, image, certs, board_dir):
    fault_tls.route("/fw.bin", image, drop_at=77_777)
    r = download(fault_tls.url("/fw.bin"), board_dir, cert_pem=read(certs[0]).decode())
    assert r["ok"], r
    assert r["sha"] == sha(image)
    assert [e["range"] for e in fault_tls.requests("/fw.bin")] == [None, "bytes=77777-"]


# --- redirects -------------------------------------------------------------------

def test_absolute_and_relative_redirects_are_followed(fault, image, board_dir):
    fault.route("/fw.bin", image)
    fault.route("/latest", redirect=(302, fault.url("/a/b/step")))  # absolute
    fault.route("/a/b/step", redirect=(301, "../c/next?x=1"))  # relative with ..
    fault.route("/a/c/next", redirect=(307, "/a/d/last"))  # absolute path
    fault.route("/a/d/last", redirect=(308, "//%s:%d/fw.bin" % (fault.host, fault.port)))
    r = download(fault.url("/latest"), board_dir)
    assert r["ok"], r
    assert r["sha"] == sha(image)
    assert r["url"] == fault.url("/fw.bin")
    assert [e["path"] for e in fault.log] == ["/latest", "/a/b/step", "/a/b/../c/next?x=1",
                                              "/a/d/last", "/fw.bin"]


@pytest.mark.parametrize("hops, ok", [(10, True), (11, False)])
def test_ten_redirects_are_followed_but_not_eleven(fault, image, board_dir, hops, ok):
    fault.route("/fw.bin", image)
    for i in range(hops):
        fault.route("/r%d" % i, redirect=(302, "r%d" % (i + 1) if i + 1 < hops else "fw.bin"))
    r = download(fault.url("/r0"), board_dir)
    assert r["ok"] is ok, r
    if not ok:
        assert r["code"] == ESP_ERR_HTTP_MAX_REDIRECT
        assert fault.requests("/fw.bin") == []


def test_a_redirect_loop_ends_with_max_redirect(fault, board_dir):
    fault.route("/loop", redirect=(302, "loop"))
    r = download(fault.url("/loop"), board_dir)
    assert (r["ok"], r["code"]) == (False, ESP_ERR_HTTP_MAX_REDIRECT)
    assert len(fault.log) == 11  # the first request and ten redirects followed


# --- bodies: chunked, Content-Length -------------------------------------------

@pytest.mark.parametrize("runtime", ["mpy", "cpython"])
def test_a_chunked_body_is_decoded(fault, image, board_dir, runtime):
    fault.route("/fw.bin", image, chunked=5000)  # with chunk extensions and a trailer
    r = download(fault.url("/fw.bin"), board_dir, runtime)
    assert r["ok"], r
    assert (r["n"], r["sha"], r["size"]) == (len(image), sha(image), -1)


def test_a_chunked_body_cut_mid_chunk_resumes_with_range(fault, image, board_dir):
    fault.route("/fw.bin", image, chunked=5000, drop_at=12_345)
    r = download(fault.url("/fw.bin"), board_dir)
    assert r["ok"], r
    assert r["sha"] == sha(image)
    assert [e["range"] for e in fault.log] == [None, "bytes=12345-"]
    assert fault.sent("/fw.bin") == len(image)


def test_a_body_longer_than_content_length_is_read_only_to_content_length(fault, image, board_dir):
    fault.route("/fw.bin", image, cl_delta=-1000)
    r = download(fault.url("/fw.bin"), board_dir)
    assert r["ok"], r
    assert (r["n"], r["size"], r["sha"]) == (len(image) - 1000, len(image) - 1000, sha(image[:-1000]))
    assert fault.sent("/fw.bin") == len(image)  # the server did send more


def test_a_body_shorter_than_content_length_ends_in_incomplete_data(fault, image, board_dir):
    fault.route("/fw.bin", image, cl_delta=+1000)
    r = download(fault.url("/fw.bin"), board_dir)
    assert (r["ok"], r["code"]) == (False, ESP_ERR_HTTP_INCOMPLETE_DATA)
    assert r["n"] == len(image)
    reqs = fault.requests("/fw.bin")
    assert len(reqs) == 1 + RETRIES
    assert {e["range"] for e in reqs[1:]} == {"bytes=%d-" % len(image)}


# --- cuts, stalls, resume ------------------------------------------------------------

@pytest.mark.parametrize("runtime", ["mpy", "cpython"])
def test_a_cut_mid_body_resumes_fetching_only_the_missing_bytes(fault, image, board_dir, runtime):
    fault.route("/fw.bin", image, drop_at=100_000)
    r = download(fault.url("/fw.bin"), board_dir, runtime)
    assert r["ok"], r
    assert r["sha"] == sha(image)
    first, second = fault.requests("/fw.bin")
    assert (first["fault"], first["sent"]) == ("drop", 100_000)
    assert (second["range"], second["if_range"], second["status"]) == \
        ("bytes=100000-", fault.routes["/fw.bin"]["etag"], 206)
    assert fault.sent("/fw.bin") == len(image)  # not one byte fetched twice


def test_a_cut_repeated_at_the_same_byte_ends_in_incomplete_data(fault, image, board_dir):
    fault.route("/fw.bin", image, drop_at=50_000, drop_times=-1)
    r = download(fault.url("/fw.bin"), board_dir)
    assert (r["ok"], r["code"]) == (False, ESP_ERR_HTTP_INCOMPLETE_DATA)
    assert r["n"] == 50_000
    assert len(fault.requests("/fw.bin")) == 1 + RETRIES


def test_more_cuts_than_retries_still_complete_when_each_makes_progress(fault, image, board_dir):
    cuts = [20_000, 40_000, 60_000, 80_000, 100_000, 120_000]  # twice the retry budget
    fault.route("/fw.bin", image, drop_at=list(cuts))
    r = download(fault.url("/fw.bin"), board_dir)
    assert r["ok"], r
    assert r["sha"] == sha(image)
    assert [e["range"] for e in fault.requests("/fw.bin")] == [None] + ["bytes=%d-" % c for c in cuts]
    assert fault.sent("/fw.bin") == len(image)


def test_a_206_that_does_not_continue_where_the_client_is_is_rejected(fault, image, board_dir):
    fault.route("/fw.bin", image, drop_at=100_000, range_shift=-1000)
    r = download(fault.url("/fw.bin"), board_dir)
    assert (r["ok"], r["code"], r["n"]) == (False, ESP_ERR_INVALID_RESPONSE, 100_000)
    assert fault.requests("/fw.bin")[1]["status"] == 206


def test_a_stall_mid_body_resumes_after_timeout(fault, image, board_dir):
    fault.route("/fw.bin", image, stall_at=60_000, stall_s=30)
    r = download(fault.url("/fw.bin"), board_dir, timeout_ms=300, timeout=25)
    assert r["ok"], r
    assert r["sha"] == sha(image)
    first, second = fault.requests("/fw.bin")
    assert first["fault"] == "stall"
    resumed_at = int(second["range"][6:-1])
    # The read the stall interrupted is fetched again, nothing more.
    assert 60_000 - 4096 < resumed_at <= 60_000
    assert fault.sent("/fw.bin") == len(image) + 60_000 - resumed_at


def test_an_endless_stall_gives_timeout_in_bounded_time(fault, image, board_dir):
    # Every request stalls at the same byte for longer than the subprocess
    # may live: only the client's own timeout ends this run.
    fault.route("/fw.bin", image, stall_at=60_000, stall_times=-1, stall_s=60)
    r = download(fault.url("/fw.bin"), board_dir, timeout_ms=300, timeout=20)
    assert (r["ok"], r["code"]) == (False, ESP_ERR_TIMEOUT)
    assert len(fault.requests("/fw.bin")) == 1 + RETRIES


def test_a_server_that_never_answers_times_out(fault, board_dir):
    fault.route("/fw.bin", b"x", head_stall=True, stall_s=60)
    r = download(fault.url("/fw.bin"), board_dir, timeout_ms=300, timeout=20)
    assert (r["ok"], r["code"]) == (False, ESP_ERR_TIMEOUT)


def test_an_image_replaced_on_the_server_mid_download_is_an_error(fault, image, board_dir):
    fault.route("/fw.bin", image, drop_at=100_000, new_body=image[::-1], change_after=1)
    r = download(fault.url("/fw.bin"), board_dir)
    assert (r["ok"], r["code"]) == (False, ESP_ERR_INVALID_RESPONSE)
    assert "changed" in r["msg"]
    assert fault.requests("/fw.bin")[1]["status"] == 200  # If-Range did not match


def test_a_server_ignoring_range_cannot_resume(fault, image, board_dir):
    fault.route("/fw.bin", image, drop_at=100_000, ignore_range=True)
    r = download(fault.url("/fw.bin"), board_dir)
    assert (r["ok"], r["code"]) == (False, ESP_ERR_INVALID_RESPONSE)
    assert r["n"] == 100_000


def test_resuming_from_a_journal_fetches_the_rest_when_the_etag_matches(fault, image, board_dir):
    r0 = fault.route("/fw.bin", image)
    r = download(fault.url("/fw.bin"), board_dir, start=dict(offset=150_000, etag=r0["etag"]))
    assert r["ok"], r
    assert (r["start_offset"], r["n"], r["size"]) == (150_000, len(image) - 150_000, len(image))
    assert r["sha"] == sha(image[150_000:])
    assert fault.log[0]["if_range"] == r0["etag"]


def test_resuming_from_a_journal_starts_over_when_the_image_changed(fault, image, board_dir):
    fault.route("/fw.bin", image)
    r = download(fault.url("/fw.bin"), board_dir, start=dict(offset=150_000, etag='"old"'))
    assert r["ok"], r
    assert (r["start_offset"], r["n"], r["sha"]) == (0, len(image), sha(image))


# --- Range windows (partial_http_download) ------------------------------------------

def test_range_windows_fetch_the_image_in_pieces_on_one_connection(fault, image, board_dir):
    fault.route("/fw.bin", image)
    r = download(fault.url("/fw.bin"), board_dir, range_size=64 * 1024)
    assert r["ok"], r
    assert r["sha"] == sha(image)
    reqs = fault.requests("/fw.bin")
    assert [e["range"] for e in reqs] == ["bytes=0-65535", "bytes=65536-131071",
                                          "bytes=131072-196607", "bytes=196608-262143"]
    assert {e["status"] for e in reqs} == {206}
    assert {e["conn"] for e in reqs} == {reqs[0]["conn"]}  # kept alive
    assert fault.sent("/fw.bin") == len(image)


def test_range_windows_over_tls_from_the_dev_server(served, image, board_dir):
    before = len(served["logs"])
    r = download(served["https"] + "/fw.bin", board_dir, cert_pem=read(served["ca"]).decode(),
                 range_size=50_000)
    assert r["ok"], r
    assert r["sha"] == sha(image)
    lines = logged(served["logs"], before + 4)[before:]
    assert len(lines) == 4 and all(" GET /fw.bin 206 50000 bytes " in x for x in lines), lines


def test_a_window_cut_mid_way_resumes_inside_the_window(fault, image, board_dir):
    fault.route("/fw.bin", image, drop_at=70_000)
    r = download(fault.url("/fw.bin"), board_dir, range_size=64 * 1024)
    assert r["ok"], r
    assert r["sha"] == sha(image)
    assert [e["range"] for e in fault.requests("/fw.bin")][1:4] == \
        ["bytes=65536-131071", "bytes=70000-135535", "bytes=135536-201071"]
    assert fault.sent("/fw.bin") == len(image)


def test_a_kept_connection_closed_by_the_server_is_replaced_silently(fault, image, board_dir):
    fault.route("/fw.bin", image, close_after=True)
    r = download(fault.url("/fw.bin"), board_dir, range_size=64 * 1024, retries=0)
    assert r["ok"], r
    assert r["sha"] == sha(image)
    reqs = fault.requests("/fw.bin")
    assert len({e["conn"] for e in reqs}) == 4  # a new connection for each window
    assert fault.sent("/fw.bin") == len(image)


def test_a_server_without_range_support_serves_windows_as_one_body(fault, image, board_dir):
    fault.route("/fw.bin", image, ignore_range=True)
    r = download(fault.url("/fw.bin"), board_dir, range_size=64 * 1024)
    assert r["ok"], r
    assert r["sha"] == sha(image)
    assert len(fault.log) == 1


# --- status codes -----------------------------------------------------------------

@pytest.mark.parametrize("status", [404, 500])
def test_an_http_error_status_raises_esp_fail_with_the_status(fault, board_dir, status):
    fault.route("/fw.bin", status=status, error_body=b"<html>nope</html>")
    r = download(fault.url("/fw.bin"), board_dir)
    assert (r["ok"], r["code"], r["http_status"]) == (False, ESP_FAIL, status)


def test_not_modified_is_its_own_error(fault, board_dir):
    fault.route("/fw.bin", status=304)
    r = download(fault.url("/fw.bin"), board_dir, headers={"If-None-Match": '"abc"'})
    assert (r["ok"], r["code"]) == (False, ESP_ERR_HTTP_NOT_MODIFIED)


def test_the_callers_headers_are_sent(fault, image, board_dir):
    fault.route("/fw.bin", image)
    r = download(fault.url("/fw.bin"), board_dir, headers={"Authorization": "Bearer t0k3n"})
    assert r["ok"], r
    sent = fault.log[0]["headers"]
    assert sent["authorization"] == "Bearer t0k3n"
    assert sent["host"] == "127.0.0.1:%d" % fault.port
    assert sent["connection"] == "close"


# --- certificates and URLs (pure functions) ----------------------------------------

def test_pem_to_der_takes_str_bytes_der_and_bundles(certs, board_dir):
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding
    pems = [read(certs[0]), read(certs[3])]
    ders = [x509.load_pem_x509_certificate(p).public_bytes(Encoding.DER) for p in pems]
    script = r'''
import binascii, json
from ota import OTAError
from ota.certs import pem_to_der, der_certs
a, b = %r, %r
def hexder(pem):
    return binascii.hexlify(pem_to_der(pem)).decode()
out = [hexder(a), hexder(a.encode() + b.encode()), hexder(pem_to_der(a)), len(der_certs(pem_to_der(a + b)))]
for bad in ("not a cert", b"\x30\x82\x05", "-----BEGIN CERTIFICATE-----\nMIIB!!\n",
            "-----BEGIN PRIVATE KEY-----\nMIIB\n-----END PRIVATE KEY-----\n"):
    try:
        der_certs(pem_to_der(bad))
        out.append("accepted")
    except OTAError as e:
        out.append(e.name)
print(json.dumps(out))
''' % (pems[0].decode(), pems[1].decode())
    p = run_mpy(script, board_dir)
    out = json.loads(p.stdout.strip().splitlines()[-1])
    assert out[:3] == [ders[0].hex(), (ders[0] + ders[1]).hex(), ders[0].hex()]
    assert out[3:] == [2] + ["ESP_ERR_INVALID_ARG"] * 4


@pytest.mark.parametrize("base, loc, want", [
    ("http://h/a/b/c", "d", "http://h/a/b/d"),
    ("http://h/a/b/c", "../d", "http://h/a/b/../d"),  # the server resolves dot segments
    ("http://h/a/b/c?q=1", "/x?y", "http://h/x?y"),
    ("http://h:8080/a/b", "?v=2", "http://h:8080/a/b?v=2"),
    ("https://h/a", "//cdn.example/fw.bin", "https://cdn.example/fw.bin"),
    ("http://h/a", "https://other/x", "https://other/x"),
    ("http://[::1]:81/a/b", "c", "http://[::1]:81/a/c"),
    ("http://h", "fw.bin", "http://h/fw.bin"),
])
def test_redirect_locations_resolve_against_the_redirecting_url(base, loc, want):
    assert join_url(base, loc) == want


def test_urls_parse_into_host_port_and_path():
    assert parse_url("https://[::1]:8443/x?y") == ("https", "::1", 8443, "/x?y")
    assert parse_url("http://example.com") == ("http", "example.com", 80, "/")
    assert parse_url("HTTPS://h?a=1#frag") == ("https", "h", 443, "/?a=1")


# --- memory: a board-sized heap ---------------------------------------------------

def test_a_1_5_mib_download_fits_a_24k_heap_as_mpy(tmp_path, board_dir):
    big = random.Random(2).randbytes(1536 * 1024)
    (tmp_path / "www").mkdir()
    (tmp_path / "www" / "fw.bin").write_bytes(big)
    compile_ota(tmp_path / "mpy", ("__init__", "url", "http"))
    server, base, _ = start_server(str(tmp_path / "www"), log=lambda line: None)
    try:
        p = subprocess.run([MICROPYTHON, "-X", "heapsize=24k", "-c", HEAP_SCRIPT % (base + "/fw.bin")],
                           env=dict(os.environ, MICROPYPATH="%s:.frozen" % (tmp_path / "mpy")),
                           capture_output=True, text=True, timeout=60, cwd=REPO)
    finally:
        server.shutdown()
    assert p.stdout.split() == ["ok", str(len(big)), str(len(big))], p.stdout + p.stderr


# What a board does with the stream: one 4 KiB sector buffer, allocated
# first, before imports fragment the heap (at 24k a later 4096-byte block may
# find no hole), and nothing else.
HEAP_SCRIPT = r'''
buf = bytearray(4096)
mv = memoryview(buf)
from ota.http import Download
d = Download(%r, allow_http=True)
d.start()
t = 0
while True:
    n = d.readinto(mv)
    if not n:
        break
    t += n
print("ok", t, d.size)
'''
