"""Compressed updates on the campaign server: an admin uploads a compressed
image or bundle; the server inflates it within the bound of a plain upload,
checks what it holds as it checks a plain one, keeps and serves it
compressed (Range at a block boundary resumes a board), and tells the admin
both sizes and the board that it gets a compressed file. Whatever lies in a
compressed upload is a 400 with one line, never a 500.

The server runs for real on 127.0.0.1 (fixtures of test_campaign_server),
on SQLite and PostgreSQL."""
import hashlib
import re
import struct
import urllib.parse
import zlib

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from otatool.appimage import make_app_image
from otatool.bundle import build
from otatool.compressed import CompressedHeader, compress, decompress
from otatool.server import store as campaigns
from otatool.server.pages import size
from otatool.server.migrations import MIGRATIONS, latest_version
from otatool.server.uploads import describe_upload
from otatool.sign import make_manifest, sign_manifest
from test_campaign_server import api, clock, config, fleet, srv  # noqa: F401 (fixtures)
from test_dashboard_pages import csrf_of, owner  # noqa: F401 (fixture)

LIMIT = 1024 * 1024  # config's max_upload


def _image():
    # esptool pads an image this size with a run of zeros: it compresses by ~45 %
    # (the random code of a synthetic image does not compress at all).
    return make_app_image(version="1.1.0", size=140000)


def _bundle():
    return build({"main.py": b"print('garden 1.2')\n" * 300,
                  "lib/pump.py": b"ON = 1\nOFF = 0\n" * 400}, "1.2.0", "garden")


def test_compressed_uploads_are_kept_compressed_and_reported_with_both_sizes(api, fleet):
    for plain, name, kind in ((_image(), "app-1.1.0.bin.z", "firmware"),
                              (_bundle(), "garden-1.2.0.otab.z", "bundle")):
        z = compress(plain, window_bits=11, block_size=4096)
        status, f = api.upload("/admin/ota/upload", z, name=name)
        assert status == 201, f
        assert (f["kind"], f["compressed"], f["window"]) == (kind, True, 2048)
        assert (f["size"], f["sha256"]) == (len(plain), hashlib.sha256(plain).hexdigest())
        assert (f["wire_size"], f["wire_sha256"]) == (len(z), hashlib.sha256(z).hexdigest())
        assert f["saving_percent"] == round(100 * (len(plain) - len(z)) / len(plain)) > 0
    status, f = api.upload("/admin/ota/upload", _image(), name="plain.bin")
    assert status == 201 and (f["compressed"], f["window"], f["saving_percent"]) == (False, None, 0)
    assert (f["wire_size"], f["wire_sha256"]) == (f["size"], f["sha256"])


def test_a_board_is_told_it_gets_a_compressed_file_and_resumes_it_at_a_block(api, fleet):
    img = _image()
    z = compress(img, block_size=4096)
    cid = api.start(z, name="app-1.1.0.bin.z", token="a1")
    status, offer = api.check("a1", "1.0.0")
    assert status == 200
    # size and sha256 are the image's as installed; the board downloads wire_size bytes.
    assert (offer["size"], offer["sha256"]) == (len(img), hashlib.sha256(img).hexdigest())
    assert offer["compressed"] is True and offer["wire_size"] == len(z)
    (c,) = api.status(cid)
    assert (c["size"], c["wire_size"], c["compressed"]) == (len(img), len(z), True)
    path = urllib.parse.urlsplit(offer["url"]).path
    status, body, resp = api.request("GET", path, auth=False, raw=True)
    assert status == 200 and body == z and decompress(body) == img
    etag = resp.getheader("ETag")
    assert etag == '"%s"' % hashlib.sha256(z).hexdigest()
    # A board that wrote blocks 0 and 1 asks for the rest from block 2.
    start, _ = CompressedHeader.from_bytes(z).block_range(2)
    status, body, resp = api.request("GET", path, auth=False, raw=True,
                                     headers={"Range": "bytes=%d-" % start, "If-Range": etag})
    assert status == 206 and body == z[start:]
    assert resp.getheader("Content-Range") == "bytes %d-%d/%d" % (start, len(z) - 1, len(z))
    status, _, resp = api.request("GET", path, auth=False, raw=True,
                                  headers={"Range": "bytes=%d-" % len(z)})
    assert status == 416 and resp.getheader("Content-Range") == "bytes */%d" % len(z)


def test_the_same_image_plain_and_compressed_are_two_files(api, fleet):
    img = _image()
    plain = api.upload("/admin/ota/upload", img, name="app.bin")[1]
    packed = api.upload("/admin/ota/upload", compress(img), name="app.bin.z")[1]
    assert plain["id"] != packed["id"] and plain["sha256"] == packed["sha256"]
    for f, body in ((plain, img), (packed, compress(img))):
        assert api.request("GET", "/ota/fw/" + f["id"], auth=False, raw=True)[1] == body


@pytest.mark.sqlite_only  # the manifest's story: any database tells it
def test_a_signed_manifest_of_a_compressed_file_describes_the_image_as_installed(api, fleet):
    img = _image()
    z = compress(img)
    key = Ed25519PrivateKey.generate()
    manifest = sign_manifest(make_manifest(z, "app-1.1.0.bin.z"), key).decode()
    status, f = api.upload("/admin/ota/upload", z, name="app-1.1.0.bin.z", manifest=manifest)
    assert status == 201 and f["signed"] and f["compressed"], f
    api.request("GET", "/admin/ota/start", {"fileName": "app-1.1.0.bin.z", "token": "a1"})
    status, offer = api.check("a1", "1.0.0")
    assert status == 200 and offer["compressed"] and offer["manifest"].endswith("/manifest.json")
    base = urllib.parse.urlsplit(offer["manifest"]).path.rsplit("/", 1)[0]
    assert api.request("GET", base + "/app-1.1.0.bin.z", auth=False, raw=True)[1] == z
    # One that describes the compressed bytes instead is not this image's.
    wrong = sign_manifest(dict(make_manifest(img, "app-1.1.0.bin.z"), size=len(z),
                               sha256=hashlib.sha256(z).hexdigest()), key).decode()
    status, body = api.upload("/admin/ota/upload", z, name="app.bin.z", manifest=wrong)
    assert status == 400 and "manifest: its size" in body["error"]
    # One that signs the image but not the compressed bytes leaves the download unbound.
    unbound = sign_manifest(make_manifest(img, "app-1.1.0.bin.z"), key).decode()
    status, body = api.upload("/admin/ota/upload", z, name="app.bin.z", manifest=unbound)
    assert status == 400 and "manifest: its compressed_size None" in body["error"]
    # And a plain image's manifest cannot claim compressed bytes.
    status, body = api.upload("/admin/ota/upload", img, name="app.bin", manifest=manifest)
    assert status == 400 and "manifest: its compressed_size" in body["error"]


def test_the_dashboard_shows_both_sizes_and_the_saving(api, fleet, owner):
    img = _image()
    z = compress(img)
    shown = "compressed to %s (%d%% smaller)" % (size(len(z)), round(100 * (len(img) - len(z)) / len(img)))
    _, page = owner.get("/campaigns/new")
    resp, page = owner.post_file("/campaigns/new", {"csrf": csrf_of(page)}, "app.bin.z", z)
    assert resp.status == 200, page
    facts = dict(re.findall(r"<dt>(.*?)</dt><dd[^>]*>(.*?)</dd>", page))
    assert facts["Size"] == "%s, %s" % (size(len(img)), shown)
    assert facts["Version"] == "1.1.0" and facts["Kind"] == "firmware"
    _, images = owner.get("/images")
    assert shown in images
    cid = api.start(z, name="app.bin.z", token="a1")
    _, page = owner.get("/campaigns/%d" % cid)
    assert shown in page


# --- what a compressed upload may not get away with ---------------------------------

def _recrc(z, offset, fmt, value):
    """z with one header field changed and the header's CRC made right."""
    header = CompressedHeader.from_bytes(z)
    head = bytearray(z[:header.length - 4])
    struct.pack_into(fmt, head, offset, value)
    return bytes(head) + struct.pack("<I", zlib.crc32(head)) + z[header.length:]


def _bomb_in_a_block():
    # Two 4 KiB blocks as the header says, but the first inflates to 1 MiB.
    def deflate(data):
        c = zlib.compressobj(9, zlib.DEFLATED, -12)
        return c.compress(data) + c.flush()
    blocks = [deflate(bytes(1 << 20)), deflate(bytes(4096))]
    header = CompressedHeader(12, 4096, 8192, hashlib.sha256(bytes(8192)).digest(), [0, 0, 0])
    header.offsets = [header.length, header.length + len(blocks[0]),
                      header.length + len(blocks[0]) + len(blocks[1])]
    return header.pack() + b"".join(blocks)


def _flipped(z, pos):
    bad = bytearray(z)
    bad[pos] ^= 0x01
    return bytes(bad)


def _damaged_image():
    img = bytearray(_image())
    img[-40] ^= 0xFF  # in the last segment: checksum and SHA-256 fail
    return bytes(img)


REFUSED = [
    ("a bomb: it would inflate past the largest upload",
     lambda: compress(bytes(LIMIT + 4096)), "would inflate to %d bytes" % (LIMIT + 4096)),
    ("a bomb hidden in one block", _bomb_in_a_block, "block 0 inflates to other than its 4096"),
    ("a header whose SHA-256 lies", lambda: _recrc(compress(_image()), 16, "<32s", b"\x01" * 32),
     "SHA-256 of the inflated bytes"),
    ("a header whose total size lies",
     lambda: _recrc(compress(_image()), 12, "<I", len(_image()) - 1), "inflates to other than"),
    ("a header cut short", lambda: compress(_image())[:40], "not a compressed update: 40 bytes"),
    ("a file cut short", lambda: compress(_image())[:-3], "its header says"),
    ("a file with bytes after its blocks", lambda: compress(_image()) + b"\0", "its header says"),
    ("a header CRC error", lambda: _flipped(compress(_image()), 13), "header CRC mismatch"),
    ("a block's bytes changed", lambda: _flipped(compress(_image()), -5), "bad compressed update"),
    ("no app image inside", lambda: compress(b"#!/bin/sh\nrm -rf /\n" * 100),
     "compressed update of no firmware image or app bundle: not an ESP app image"),
    ("a damaged app image inside", lambda: compress(_damaged_image()),
     "compressed update of no firmware image or app bundle"),
    ("a compressed update inside", lambda: compress(compress(_image())), "compressed twice"),
    ("a bundle cut short inside", lambda: compress(_bundle()[:-1]), "its header says"),
]


@pytest.mark.sqlite_only  # the upload's story: any database tells it
@pytest.mark.parametrize("what, make, said", REFUSED, ids=[r[0] for r in REFUSED])
def test_a_compressed_upload_that_lies_is_refused_in_one_line(api, fleet, what, make, said):
    status, body = api.upload("/admin/ota/start", make(), token="a1")
    assert status == 400, body
    assert said in body["error"] and "\n" not in body["error"], body["error"]
    assert api.status() == [] and api.check("a1", "1.0.0")[0] == 204


# --- the upload recognition path, at any bytes --------------------------------------

VALID = compress(_image(), block_size=4096)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=600))
def test_any_bytes_after_the_magic_are_refused_with_a_value_error(tail):
    with pytest.raises(ValueError):
        describe_upload(b"OTAZ" + tail, LIMIT)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, len(VALID) - 1), st.integers(1, 255))
def test_a_compressed_image_changed_anywhere_is_refused_or_still_the_same_image(pos, mask):
    bad = bytearray(VALID)
    bad[pos] ^= mask
    try:
        info = describe_upload(bytes(bad), LIMIT)
    except ValueError:
        return
    # Only where the format leaves room (a deflate block that decodes the same).
    assert info["sha256"] == hashlib.sha256(_image()).hexdigest()


# --- the schema ---------------------------------------------------------------------

@pytest.mark.sqlite_only
def test_files_uploaded_before_compression_keep_their_size_as_the_download(database):
    import sqlite3
    conn = sqlite3.connect(database)
    for _, statements in MIGRATIONS[:2]:
        for ddl in statements:
            conn.execute(ddl % {"serial": "INTEGER PRIMARY KEY"} if "%(" in ddl else ddl)
    conn.execute("CREATE TABLE schema_version (version INTEGER PRIMARY KEY, applied BIGINT NOT NULL)")
    conn.execute("INSERT INTO schema_version VALUES (1, 0), (2, 0)")
    conn.execute("INSERT INTO files (id, file_name, kind, version, size, sha256, uploaded)"
                 " VALUES ('f1', 'old.bin', 'firmware', '1.0.0', 3168, 'ab12', 1)")
    conn.commit()
    conn.close()
    store = campaigns.Store(database)
    try:
        assert store.schema_version() == latest_version()
        f = store.file("f1")
        assert (f["wire_size"], f["wire_sha256"], f["window_bits"]) == (3168, "ab12", None)
    finally:
        store.close()
