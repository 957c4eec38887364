"""`otatool serve`, the development update server, seen by a real HTTP client
(http.client): what any production server must do for the board's client."""
import http.client
import os
import socket
import ssl
import subprocess
import sys
import time

import pytest

from conftest import logged
from otatool.serve import ensure_certs, start_server

DATA = bytes(range(256)) * 400  # 102400 bytes


@pytest.fixture
def served(tmp_path):
    www = tmp_path / "www"
    www.mkdir()
    (www / "fw.bin").write_bytes(DATA)
    (www / "sub").mkdir()
    (tmp_path / "secret.txt").write_text("outside the served directory")
    logs = []
    server, base, _ = start_server(str(www), log=logs.append)
    yield dict(port=server.server_address[1], base=base, dir=www, logs=logs)
    server.shutdown()


def get(port, path, headers=None, method="GET", conn=None):
    c = conn or http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    c.request(method, path, headers=headers or {})
    r = c.getresponse()
    body = r.read()
    return r.status, dict((k.lower(), v) for k, v in r.getheaders()), body


def test_a_file_is_served_with_length_etag_and_accept_ranges(served):
    status, h, body = get(served["port"], "/fw.bin")
    assert (status, body) == (200, DATA)
    assert h["content-length"] == str(len(DATA))
    assert h["accept-ranges"] == "bytes"
    assert h["etag"].startswith('"') and not h["etag"].startswith("W/")


@pytest.mark.parametrize("rng, start, end", [
    ("bytes=1000-1999", 1000, 2000),
    ("bytes=100000-", 100000, len(DATA)),
    ("bytes=-500", len(DATA) - 500, len(DATA)),
    ("bytes=102000-999999", 102000, len(DATA)),  # clipped to the end
])
def test_a_range_is_answered_with_206_and_only_those_bytes(served, rng, start, end):
    status, h, body = get(served["port"], "/fw.bin", {"Range": rng})
    assert (status, body) == (206, DATA[start:end])
    assert h["content-range"] == "bytes %d-%d/%d" % (start, end - 1, len(DATA))
    assert h["content-length"] == str(end - start)


def test_a_range_past_the_end_is_416_with_the_size(served):
    status, h, body = get(served["port"], "/fw.bin", {"Range": "bytes=%d-" % len(DATA)})
    assert (status, body) == (416, b"")
    assert h["content-range"] == "bytes */%d" % len(DATA)


def test_several_ranges_are_ignored_and_the_whole_file_sent(served):
    status, _, body = get(served["port"], "/fw.bin", {"Range": "bytes=0-1,5-6"})
    assert (status, body) == (200, DATA)


def test_head_gives_the_headers_without_a_body(served):
    status, h, body = get(served["port"], "/fw.bin", method="HEAD")
    assert (status, body, h["content-length"]) == (200, b"", str(len(DATA)))


def test_if_range_resumes_only_while_the_file_is_unchanged(served):
    etag = get(served["port"], "/fw.bin", method="HEAD")[1]["etag"]
    status, _, body = get(served["port"], "/fw.bin", {"Range": "bytes=100-", "If-Range": etag})
    assert (status, body) == (206, DATA[100:])
    new = DATA[::-1]
    path = served["dir"] / "fw.bin"
    path.write_bytes(new)
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 10**9))  # a visibly newer file
    status, h, body = get(served["port"], "/fw.bin", {"Range": "bytes=100-", "If-Range": etag})
    assert (status, body) == (200, new)
    assert h["etag"] != etag


def test_if_none_match_with_the_current_etag_is_304(served):
    etag = get(served["port"], "/fw.bin", method="HEAD")[1]["etag"]
    status, _, body = get(served["port"], "/fw.bin", {"If-None-Match": etag})
    assert (status, body) == (304, b"")
    assert get(served["port"], "/fw.bin", {"If-None-Match": '"other"'})[0] == 200


@pytest.mark.parametrize("path", ["/missing.bin", "/sub", "/sub/", "/../secret.txt", "/%2e%2e/secret.txt"])
def test_missing_files_directories_and_escapes_are_404(served, path):
    assert get(served["port"], path)[0] == 404


def test_a_path_with_a_nul_byte_is_404_not_a_dropped_connection(served):
    assert get(served["port"], "/fw.bin%00.txt")[0] == 404
    assert get(served["port"], "/fw.bin")[0] == 200  # and the server still serves


def test_control_characters_in_a_path_are_escaped_in_the_log(served):
    with socket.create_connection(("127.0.0.1", served["port"]), timeout=10) as s:
        s.sendall(b"GET /x\x1b[2J\x07 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        while s.recv(4096):
            pass
    (line,) = logged(served["logs"], 1)
    assert "\x1b" not in line and "\x07" not in line
    assert " GET /x\\x1b[2J\\x07 404 " in line


def test_one_connection_carries_several_requests(served):
    c = http.client.HTTPConnection("127.0.0.1", served["port"], timeout=10)
    a = get(served["port"], "/fw.bin", {"Range": "bytes=0-9"}, conn=c)
    sock = c.sock
    b = get(served["port"], "/fw.bin", {"Range": "bytes=10-19"}, conn=c)
    assert (a[2], b[2]) == (DATA[:10], DATA[10:20])
    assert c.sock is sock  # not reconnected


def test_each_download_logs_path_status_bytes_and_duration(served):
    get(served["port"], "/fw.bin", {"Range": "bytes=0-99"})
    get(served["port"], "/missing.bin")
    ok, missing = logged(served["logs"], 2)
    assert " GET /fw.bin 206 100 bytes " in ok and ok.endswith(" s")
    assert " GET /missing.bin 404 0 bytes " in missing


# --- TLS -----------------------------------------------------------------------

def test_tls_makes_a_ca_once_and_clients_trusting_it_connect(tmp_path):
    (tmp_path / "fw.bin").write_bytes(DATA)
    certs = tmp_path / "certs"
    server, base, ca = start_server(str(tmp_path), tls=True, cert_dir=str(certs), log=lambda s: None)
    try:
        assert base.startswith("https://127.0.0.1:") and ca == str(certs / "ca.pem")
        ctx = ssl.create_default_context(cafile=ca)
        for host in ("127.0.0.1", "localhost"):
            c = http.client.HTTPSConnection(host, server.server_address[1], context=ctx, timeout=10)
            assert get(None, "/fw.bin", conn=c)[::2] == (200, DATA)
        untrusting = ssl.create_default_context()
        with pytest.raises(ssl.SSLCertVerificationError):
            c = http.client.HTTPSConnection("127.0.0.1", server.server_address[1], context=untrusting)
            c.request("GET", "/fw.bin")
    finally:
        server.shutdown()
    first = (certs / "ca.pem").read_bytes()
    server, _, ca2 = start_server(str(tmp_path), tls=True, cert_dir=str(certs), log=lambda s: None)
    server.shutdown()
    assert (certs / "ca.pem").read_bytes() == first  # the board's CA stays valid


def test_a_new_name_reissues_the_server_certificate_under_the_same_ca(tmp_path):
    from cryptography import x509
    ca, cert, _ = ensure_certs(str(tmp_path))
    ca_bytes = open(ca, "rb").read()
    ensure_certs(str(tmp_path), names=["localhost", "127.0.0.1", "::1", "ota.lan"])
    san = x509.load_pem_x509_certificate(open(cert, "rb").read()).extensions.get_extension_for_class(
        x509.SubjectAlternativeName).value
    assert "ota.lan" in san.get_values_for_type(x509.DNSName)
    assert open(ca, "rb").read() == ca_bytes


def test_the_command_prints_the_url_and_the_ca_to_give_the_board(tmp_path):
    (tmp_path / "fw.bin").write_bytes(DATA)
    p = subprocess.Popen([sys.executable, "-m", "otatool", "serve", str(tmp_path), "--port", "0", "--tls",
                          "--cert-dir", str(tmp_path / "certs")],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        url_line = p.stdout.readline()
        ca_line = p.stdout.readline()
        assert ca_line.startswith("CA certificate for the board (cert_pem): ")
        ca = ca_line.split(": ", 1)[1].strip()
        assert ca == str(tmp_path / "certs" / "ca.pem") and os.path.isfile(ca)
        port = int(url_line.rsplit(":", 1)[1].strip().rstrip("/"))
        c = http.client.HTTPSConnection("127.0.0.1", port, context=ssl.create_default_context(cafile=ca),
                                        timeout=10)
        assert get(None, "/fw.bin", conn=c)[::2] == (200, DATA)
        time.sleep(0.2)
    finally:
        p.terminate()
        out, _ = p.communicate(timeout=10)
    assert " GET /fw.bin 200 %d bytes " % len(DATA) in out
