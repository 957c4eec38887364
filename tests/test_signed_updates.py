"""Signed updates end to end: a board whose ota_config.json holds the
publisher's public key installs only what `otatool sign` signed with the
matching private key, whether it fetches from static files (`otatool serve`)
or from the campaign server, firmware and app bundles alike. Everything else
is refused before it can ever boot.

The boards are emulated (otatool.board.Board) and run the repository's own
boot.py and main.py, as in test_campaign_e2e.py."""
import base64
import http.client
import json
import os
import secrets

import pytest

from otatool import cli
from otatool.appimage import make_app_image
from otatool.bundle import build as build_bundle
from otatool.serve import start_server
from otatool.compressed import compress
from otatool.sign import make_manifest, public_key_b64, sign_manifest, write_new_key

from test_campaign_e2e import board_lib, config, farm, make_board, power_on, srv  # noqa: F401

KINDS = ("firmware", "bundle")


@pytest.fixture(scope="module")
def publisher(tmp_path_factory):
    """(private key file, key, the public key as a board's config holds it:
    read from a file, so with its newline)."""
    path = str(tmp_path_factory.mktemp("keys") / "ota-signing-key.pem")
    key = write_new_key(path)
    return path, key, public_key_b64(key) + "\n"


def release(kind, version, evil=False):
    """(file name, bytes) of an update of `kind` that the factory board
    (1.0.0, never bundled) takes as newer; evil: other bytes, same size."""
    if kind == "firmware":
        return "app-%s.bin" % version, make_app_image(
            version=version, project_name="greenhacks" if evil else "greenhouse", size=24 * 1024)
    app = "print('%s app %s runs')\n" % ("hacked" if evil else "signed", version)
    return "app-%s.otab" % version, build_bundle({"app_main.py": app.encode()}, version,
                                                 "greenhouse")


def sign_cli(path, keyfile):
    """`otatool sign FILE --key K --url NAME`: the manifest next to the file,
    naming the image relatively. -> the manifest's path"""
    name = os.path.basename(path)
    assert cli.main(["sign", path, "--key", keyfile, "--url", name]) == 0
    out = os.path.splitext(path)[0] + ".manifest.json"   # the documented default name
    assert os.path.exists(out)
    return out


@pytest.fixture
def www(tmp_path):
    root = tmp_path / "www"
    root.mkdir()
    server, base, _ = start_server(str(root), log=lambda line: None)
    yield root, base
    server.shutdown()


def board_config(kind, pub, **more):
    cfg = {"allow_http": True, "public_key": pub, "kind": kind}
    cfg.update(more)
    return cfg


def installed_nothing(board, kind, out):
    """The board refused: one boot, no reset, the old app still in charge."""
    assert "ota: update failed:" in out
    if kind == "firmware":
        assert board.otadata_states()[1][0] == 0xFFFFFFFF   # boot choice never changed
    else:
        assert not os.path.exists(os.path.join(board.fs_dir, "app", "app_main.py"))
        assert not os.path.exists(os.path.join(board.fs_dir, "app.ota", "new"))  # no staging


# --- static files: otatool serve --------------------------------------------

@pytest.mark.parametrize("kind,chip", [("firmware", "esp32"), ("bundle", "esp32"),
                                       ("bundle", "esp8266")])
def test_a_board_with_a_key_updates_from_otatool_serve_through_a_signed_manifest(
        kind, chip, publisher, www, tmp_path, board_lib):
    keyfile, _, pub = publisher
    root, base = www
    name, data = release(kind, "1.1.0")
    (root / name).write_bytes(data)
    manifest = os.path.basename(sign_cli(str(root / name), keyfile))
    board = make_board(tmp_path / "b", board_lib, board_config(kind, pub, url=base + "/" + manifest),
                       chip=chip)
    (first, _, out1), (second, slot, out2) = power_on(board)
    assert (first, second) == ("reset", "exit")
    assert "ota: installing greenhouse 1.1.0" in out1
    # The same manifest at the next boot is not newer: nothing to do, no error.
    assert "ota: no update: manifest version 1.1.0 is not newer than the running 1.1.0" in out2
    if kind == "firmware":
        assert slot == "ota_1" and board.otadata_states()[1][1] == "VALID"
    else:
        assert out2.splitlines()[-1] == "signed app 1.1.0 runs"


def _edited(manifest, **changes):
    # The signed bytes changed, the signature kept.
    env = json.loads(manifest)
    body = json.loads(base64.b64decode(env["manifest"]))
    body.update(changes)
    env["manifest"] = base64.b64encode(json.dumps(body, sort_keys=True,
                                                  separators=(",", ":")).encode()).decode()
    return json.dumps(env).encode()


TAMPERING = {
    # what an attacker on the path or the server does -> what the board says
    "unsigned_image": "manifest",                     # the url names the image itself
    "manifest_edited": "signature does not verify",   # points the board at another image
    "other_key": "signature does not verify",
    "image_swapped": "sha256 of the download does not match",  # the manifest no longer fits
}


@pytest.mark.parametrize("case", sorted(TAMPERING))
@pytest.mark.parametrize("kind", KINDS)
def test_a_board_with_a_key_refuses_tampered_or_unsigned_updates_from_otatool_serve(
        kind, case, publisher, www, tmp_path, board_lib):
    keyfile, key, pub = publisher
    root, base = www
    name, data = release(kind, "1.1.0")
    evil_name, evil = release(kind, "1.1.0", evil=True)
    assert len(evil) == len(data) and evil != data
    (root / name).write_bytes(data)
    (root / ("evil-" + evil_name)).write_bytes(evil)
    manifest = sign_manifest(make_manifest(data, name), key)
    url = base + "/" + name[:name.rindex(".")] + ".manifest.json"
    if case == "unsigned_image":
        url = base + "/" + name
    elif case == "manifest_edited":
        manifest = _edited(manifest, url="evil-" + evil_name,
                           sha256=make_manifest(evil, "x")["sha256"])
    elif case == "other_key":
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
        manifest = sign_manifest(make_manifest(evil, "evil-" + evil_name),
                                 Ed25519PrivateKey.generate())
    elif case == "image_swapped":
        (root / name).write_bytes(evil)
    (root / (name[:name.rindex(".")] + ".manifest.json")).write_bytes(manifest)
    board = make_board(tmp_path / "b", board_lib, board_config(kind, pub, url=url))
    ((reason, slot, out),) = power_on(board)
    assert (reason, slot) == ("exit", "ota_0")
    assert TAMPERING[case] in out
    installed_nothing(board, kind, out)


def test_otatool_serve_serves_manifests_as_json_and_images_as_bytes(www):
    root, base = www
    (root / "app.manifest.json").write_bytes(b'{"manifest":"","sig":""}\n')
    (root / "app.bin").write_bytes(b"\xe9" + bytes(99))
    conn = http.client.HTTPConnection(base.split("//")[1], timeout=10)
    for path, ctype in [("/app.manifest.json", "application/json"),
                        ("/app.bin", "application/octet-stream")]:
        conn.request("GET", path)
        resp = conn.getresponse()
        assert (resp.status, resp.getheader("Content-Type")) == (200, ctype)
        assert resp.read() == (root / path[1:]).read_bytes()
    conn.close()


# --- the campaign server ------------------------------------------------------

def upload_signed(api, path, image, manifest, name, **fields):
    """What `curl -F file=@app.bin -F manifest=@app.manifest.json` sends."""
    boundary = secrets.token_hex(12).encode()
    parts = [b'--%s\r\nContent-Disposition: form-data; name="%s"\r\n\r\n%s\r\n'
             % (boundary, k.encode(), str(v).encode()) for k, v in fields.items()]
    for field, fname, data in (("file", name, image), ("manifest", "app.manifest.json", manifest)):
        parts.append(b'--%s\r\nContent-Disposition: form-data; name="%s"; filename="%s"\r\n'
                     b'Content-Type: application/octet-stream\r\n\r\n%s\r\n'
                     % (boundary, field.encode(), fname.encode(), data))
    return api.request("POST", path, body=b"".join(parts) + b"--%s--\r\n" % boundary,
                       headers={"Content-Type": "multipart/form-data; boundary=" + boundary.decode()})


@pytest.mark.parametrize("compressed", [False, True], ids=["plain", "compressed"])
@pytest.mark.parametrize("kind", KINDS)
def test_a_signed_campaign_updates_a_board_with_the_key_through_the_manifest_url(
        kind, compressed, publisher, srv, farm, tmp_path, board_lib):
    api = farm
    _, key, pub = publisher
    name, data = release(kind, "1.1.0")
    if compressed:  # the manifest then signs the compressed bytes and the installed ones
        name, data = name + ".z", compress(data, window_bits=11)
    status, body = upload_signed(api, "/admin/ota/start", data,
                                 sign_manifest(make_manifest(data, name), key), name, token="g1")
    assert status == 201, body
    c = body["campaign"]
    board = make_board(tmp_path / "g1", board_lib, board_config(kind, pub, **config(srv, "g1")))
    (first, _, out1), (second, _, out2) = power_on(board)
    assert (first, second) == ("reset", "exit")
    assert "ota: installing greenhouse 1.1.0" in out1
    assert "update failed" not in out1 + out2
    d = api.device_status(c, "g1")
    assert (d["state"], d["version"], d["error"]) == ("confirmed", "1.1.0", None)


def test_the_check_answer_names_the_manifest_which_serves_the_image_under_its_name(
        publisher, srv, farm):
    api = farm
    _, key, _ = publisher
    name, data = release("firmware", "1.1.0")
    manifest = sign_manifest(make_manifest(data, name), key)
    status, f = upload_signed(api, "/admin/ota/upload", data, manifest, name)
    assert status == 201 and f["signed"] is True
    status, body = api.request("GET", "/admin/ota/start", {"fileName": name, "token": "g1"})
    assert status == 201, body
    status, offer = api.check("g1", "1.0.0")
    fw = "%s/ota/fw/%s" % (srv.url, f["id"])
    assert status == 200 and offer["url"] == fw and offer["manifest"] == fw + "/manifest.json"
    for path, expected, ctype in [("/manifest.json", manifest, "application/json"),
                                  ("/" + name, data, "application/octet-stream")]:
        status, got, resp = api.request("GET", "/ota/fw/%s%s" % (f["id"], path), auth=False,
                                        raw=True)
        assert (status, got) == (200, expected)
        assert resp.getheader("Content-Type").startswith(ctype)
    assert api.request("GET", "/ota/fw/%s/other.bin" % f["id"], auth=False)[0] == 404


def test_an_unsigned_upload_has_no_manifest_and_a_board_with_a_key_refuses_it_and_says_so(
        publisher, srv, farm, tmp_path, board_lib):
    api = farm
    _, _, pub = publisher
    name, data = release("firmware", "1.1.0")
    c = api.start(data, token="g1", name=name)
    board = make_board(tmp_path / "g1", board_lib, board_config("firmware", pub, **config(srv, "g1")))
    ((reason, slot, out),) = power_on(board)
    assert (reason, slot) == ("exit", "ota_0")
    installed_nothing(board, "firmware", out)
    d = api.device_status(c, "g1")
    assert d["state"] == "failed"
    assert d["error"] == ("ESP_ERR_OTA_VALIDATE_FAILED: offer has no signed manifest and this "
                          "board has a public_key")
    (f,) = [f for f in api.status(c) if f["campaign"] == c]
    assert api.request("GET", "/ota/fw/%s/manifest.json" % f["file_id"], auth=False)[0] == 404


@pytest.mark.parametrize("change,words", [
    ({"sha256": "ab" * 32}, "sha256"),
    ({"size": 1}, "size"),
    ({"version": "9.9.9"}, "version"),
    ({"url": "../../admin/ota/stop"}, "url"),
    ({"url": "manifest.json"}, "url"),
])
def test_the_server_refuses_a_manifest_that_does_not_describe_the_uploaded_image(
        change, words, publisher, farm):
    _, key, _ = publisher
    name, data = release("firmware", "1.1.0")
    fields = make_manifest(data, name)
    fields.update(change)
    # Signed as it stands, so only the server's own check can catch it.
    from otatool.sign import canonical_bytes
    body = canonical_bytes(fields)
    manifest = json.dumps({"manifest": base64.b64encode(body).decode(),
                           "sig": base64.b64encode(key.sign(body)).decode()})
    status, err = farm.upload("/admin/ota/upload", data, name, manifest=manifest)
    assert status == 400 and err["error"].startswith("manifest: ") and words in err["error"]


def test_the_server_refuses_a_manifest_that_is_not_one(farm):
    name, data = release("firmware", "1.1.0")
    for junk in ("not json", '{"manifest": "!!", "sig": ""}', "x" * 3000):
        status, err = farm.upload("/admin/ota/upload", data, name, manifest=junk)
        assert status == 400 and err["error"].startswith("manifest: "), err
