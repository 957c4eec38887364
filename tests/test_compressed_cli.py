"""Compressed updates from the command line: `otatool image compress` takes
an esptool-made app image or an app bundle a board accepts and writes the
compressed update (both sizes and the saving printed), `otatool bundle
--compress` writes a compressed bundle, `otatool image info` shows the
compressed header and then what it holds, and `otatool serve` serves the
file like any other, Range included. (Bad command lines: test_cli_errors.py.)"""
import http.client
import subprocess
import sys

import pytest

from otatool.appimage import make_app_image
from otatool.bundle import check_bundle, make_bundle
from otatool.compressed import CompressedHeader, decompress
from otatool.serve import start_server


def otatool(*argv, cwd):
    proc = subprocess.run([sys.executable, "-m", "otatool", *argv], cwd=cwd,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    return proc.stdout


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    d = tmp_path_factory.mktemp("compress")
    img = make_app_image(version="1.4.0", size=200000)
    (d / "app.bin").write_bytes(img)
    return d, img


@pytest.mark.parametrize("options, window_bits, block_size", [
    ((), 12, 65536),
    (("--window", "2048"), 11, 65536),
    (("--window-bits", "13", "--block-size", "8192"), 13, 8192),
])
def test_an_esptool_made_image_is_compressed_and_inflates_to_the_same_bytes(app, options,
                                                                           window_bits, block_size):
    d, img = app
    out = otatool("image", "compress", "app.bin", "-o", "app.bin.z", *options, cwd=d)
    z = (d / "app.bin.z").read_bytes()
    assert decompress(z) == img
    header = CompressedHeader.from_bytes(z)
    assert (header.window_bits, header.block_size) == (window_bits, block_size)
    saving = round(100 * (len(img) - len(z)) / len(img))
    assert out == ("app.bin.z: esp32 app image 1.4.0, compressed: %d -> %d bytes (%d%% smaller),"
                   " window %d bytes, %d blocks of %d\n"
                   % (len(img), len(z), saving, 1 << window_bits, header.block_count, block_size))
    info = otatool("image", "info", "app.bin.z", cwd=d).splitlines()
    assert info[0] == out.replace(" esp32 app image 1.4.0,", "").rstrip()
    assert info[1] == "  inflated: esp32 app image, %d bytes, checksum and SHA-256 valid" % len(img)
    assert info[2].split() == ["version:", "1.4.0"]


def test_a_bundle_is_compressed_by_image_compress_and_by_bundle_compress(tmp_path):
    src = tmp_path / "app"
    (src / "lib").mkdir(parents=True)
    (src / "main.py").write_text("import pump\n" * 500)
    (src / "lib" / "pump.py").write_text("def on():\n    return 1\n" * 500)
    plain = make_bundle(str(src), "2.0.0", "garden")
    out = otatool("bundle", "app", "--version", "2.0.0", "--project", "garden", "--compress",
                  "--window", "2048", "-o", "garden.otab.z", cwd=tmp_path)
    z = (tmp_path / "garden.otab.z").read_bytes()
    assert decompress(z) == plain and CompressedHeader.from_bytes(z).window_bits == 11
    assert check_bundle(decompress(z))["version"] == "2.0.0"
    lines = out.splitlines()
    assert lines[0].endswith("%d bytes" % len(plain))
    assert lines[1].startswith("compressed: %d -> %d bytes (" % (len(plain), len(z)))
    (tmp_path / "garden.otab").write_bytes(plain)
    out = otatool("image", "compress", "garden.otab", "-o", "again.z", "--window", "2048",
                  cwd=tmp_path)
    assert (tmp_path / "again.z").read_bytes() == z
    assert out.startswith("again.z: app bundle 2.0.0, compressed: ")
    info = otatool("image", "info", "again.z", cwd=tmp_path).splitlines()
    assert info[1] == "  inflated: app bundle 2.0.0, 2 files (%d bytes), 0 deletions, %d bytes" \
        % (len(plain) - check_bundle(plain)["header_size"], len(plain))


def test_otatool_serve_serves_a_compressed_update_and_resumes_it_at_a_block(app, tmp_path):
    d, img = app
    otatool("image", "compress", "app.bin", "-o", str(tmp_path / "app.bin.z"),
            "--block-size", "16384", cwd=d)
    z = (tmp_path / "app.bin.z").read_bytes()
    start, _ = CompressedHeader.from_bytes(z).block_range(3)
    server, _, _ = start_server(str(tmp_path))
    try:
        conn = http.client.HTTPConnection("127.0.0.1", server.server_address[1], timeout=10)
        conn.request("GET", "/app.bin.z")
        resp = conn.getresponse()
        assert resp.status == 200 and resp.read() == z
        etag = resp.getheader("ETag")
        conn.request("GET", "/app.bin.z", headers={"Range": "bytes=%d-" % start, "If-Range": etag})
        resp = conn.getresponse()
        assert resp.status == 206 and resp.read() == z[start:]
        assert resp.getheader("Content-Range") == "bytes %d-%d/%d" % (start, len(z) - 1, len(z))
        conn.close()
    finally:
        server.shutdown()
