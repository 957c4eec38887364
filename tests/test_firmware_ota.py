"""Firmware OTA on the emulated ESP32, told as a user's story.

Every test runs `ota` on the MicroPython unix port against the shim board,
fetching real esptool-made images from a real loopback HTTP(S) server.
"""
import json
import shutil

import pytest

from conftest import run_mpy
from faultserver import FaultServer
from otatool.appimage import make_app_image

SMALL = 24 * 1024


@pytest.fixture(scope="module")
def v2():
    return make_app_image(version="2.0.0", project_name="greenhouse", size=SMALL)


@pytest.fixture
def server():
    with FaultServer() as srv:
        yield srv


# The device side of an update, printing one RESULT line of JSON.
UPDATE = """
import json, ota, esp32
def boot_label():
    return esp32.Partition(esp32.Partition.BOOT).info()[4]
try:
    with ota.begin(%(url)r, **%(kw)s) as h:
        desc = h.get_img_desc()
        while h.perform() == ota.IN_PROGRESS:
            pass
        complete = h.is_complete_data_received()
        h.finish()
    out = {"ok": True, "version": desc["version"], "read": h.get_image_len_read(),
           "size": h.get_image_size(), "complete": complete}
except ota.OTAError as e:
    out = {"ok": False, "name": e.name, "code": e.code, "msg": str(e), "http_status": e.http_status}
out["boot"] = boot_label()
print("RESULT " + json.dumps(out))
"""

# A power-on: what runs now, and in which otadata state.
STATUS = """
import json, ota
s = ota.status()
s["version"] = ota.running_app()["version"]
print("RESULT " + json.dumps(s))
"""


def result(proc):
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    raise AssertionError("no result from the board:\n%s\n%s" % (proc.stdout, proc.stderr))


def update(board_dir, url, env=None, **kw):
    kw.setdefault("allow_http", True)
    return result(run_mpy(UPDATE % {"url": url, "kw": repr(kw)}, board_dir, env=env))


def power_on(board_dir, script=STATUS, env=None):
    return result(run_mpy(script, board_dir, env=env))


def test_an_update_installs_and_the_next_boot_runs_the_new_app(board_dir, server, v2):
    server.route("/fw.bin", v2)
    before = power_on(board_dir)
    assert before["running"] == "ota_0" and before["version"] == "1.0.0"

    out = update(board_dir, server.url("/fw.bin"))
    assert out == dict(out, ok=True, version="2.0.0", read=len(v2), size=len(v2), complete=True,
                       boot="ota_1")

    after = power_on(board_dir)
    assert after["running"] == "ota_1" and after["version"] == "2.0.0"
    assert after["running_state"] == "PENDING_VERIFY"


def test_an_unconfirmed_new_app_falls_back_on_the_next_reset(board_dir, server, v2):
    server.route("/fw.bin", v2)
    assert update(board_dir, server.url("/fw.bin"))["ok"]
    assert power_on(board_dir)["version"] == "2.0.0"     # booted once, never confirmed
    back = power_on(board_dir)
    assert back["running"] == "ota_0" and back["version"] == "1.0.0"
    assert {"seq": 2, "state": "ABORTED"} in back["otadata"]


def test_a_confirmed_new_app_stays(board_dir, server, v2):
    server.route("/fw.bin", v2)
    assert update(board_dir, server.url("/fw.bin"))["ok"]
    confirm = STATUS.replace("s = ota.status()", "ota.mark_app_valid()\ns = ota.status()")
    assert power_on(board_dir, confirm)["running_state"] == "VALID"
    again = power_on(board_dir)
    assert again["version"] == "2.0.0" and again["running_state"] == "VALID"


def test_no_new_update_before_the_running_app_is_confirmed(board_dir, server, v2):
    server.route("/fw.bin", v2)
    assert update(board_dir, server.url("/fw.bin"))["ok"]
    out = update(board_dir, server.url("/fw.bin"))       # this power-on runs v2, PENDING_VERIFY
    assert out["name"] == "ESP_ERR_OTA_ROLLBACK_INVALID_STATE" and out["boot"] == "ota_1"


def test_https_with_the_right_ca_works_and_a_wrong_ca_is_refused(board_dir, tmp_path, v2):
    from otatool.serve import ensure_certs
    right_ca, cert, key = ensure_certs(str(tmp_path / "right"))
    wrong_ca = ensure_certs(str(tmp_path / "wrong"))[0]
    import ssl
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    with FaultServer(ssl_context=ctx) as srv:
        srv.route("/fw.bin", v2)
        url = srv.url("/fw.bin", scheme="https").replace("127.0.0.1", "localhost")
        refused = update(board_dir, url, cert_pem=open(wrong_ca).read(), allow_http=False)
        assert refused["name"] == "ESP_ERR_HTTP_CONNECT" and refused["boot"] == "ota_0"
        ok = update(board_dir, url, cert_pem=open(right_ca).read(), allow_http=False)
        assert ok["ok"] and ok["boot"] == "ota_1"


def test_a_cut_connection_resumes_and_fetches_only_the_missing_bytes(board_dir, server, v2):
    server.route("/fw.bin", v2, drop_at=len(v2) // 2)
    out = update(board_dir, server.url("/fw.bin"))
    assert out["ok"] and out["boot"] == "ota_1"
    ranges = [r["range"] for r in server.requests("/fw.bin")]
    assert len(ranges) == 2 and ranges[1] is not None      # the second request was a Range
    assert server.sent("/fw.bin") < len(v2) + 4096 + len(v2) // 2


@pytest.mark.parametrize("story, route, expect", [
    ("garbage instead of an image", dict(body=b"\x00" * 8192), "ESP_ERR_OTA_VALIDATE_FAILED"),
    ("an HTML error page served with 200", dict(body=b"<html>oops</html>" * 300),
     "ESP_ERR_OTA_VALIDATE_FAILED"),
    ("a 404", dict(status=404, error_body=b"not here"), "ESP_FAIL"),
    ("a 500", dict(status=500, error_body=b"boom"), "ESP_FAIL"),
    ("a redirect loop", dict(redirect=(302, "/fw.bin")), "ESP_ERR_HTTP_MAX_REDIRECT"),
])
def test_bad_answers_leave_the_old_app_booting(board_dir, server, story, route, expect):
    server.route("/fw.bin", **route)
    out = update(board_dir, server.url("/fw.bin"))
    assert out["name"] == expect, story
    assert out["boot"] == "ota_0"
    assert power_on(board_dir)["version"] == "1.0.0"


def test_an_image_for_another_chip_is_refused(board_dir, server):
    server.route("/fw.bin", make_app_image(version="2.0.0", chip="esp32s3", size=SMALL))
    out = update(board_dir, server.url("/fw.bin"))
    assert out["name"] == "ESP_ERR_INVALID_VERSION" and out["boot"] == "ota_0"


def test_a_flipped_bit_anywhere_is_caught(board_dir, server, v2):
    for pos in (100, len(v2) // 2, len(v2) - 40, len(v2) - 1):
        bad = bytearray(v2)
        bad[pos] ^= 0x10
        server.route("/fw.bin", bytes(bad))
        out = update(board_dir, server.url("/fw.bin"))
        assert out["name"] == "ESP_ERR_OTA_VALIDATE_FAILED" and out["boot"] == "ota_0", pos


def test_a_truncated_body_is_refused(board_dir, server, v2):
    server.route("/fw.bin", v2[:-1000])
    out = update(board_dir, server.url("/fw.bin"))
    assert out["name"] == "ESP_ERR_OTA_VALIDATE_FAILED" and out["boot"] == "ota_0"


def test_a_server_that_promises_more_than_it_sends_gives_up_cleanly(board_dir, server, v2):
    server.route("/fw.bin", v2, cl_delta=5000)
    out = update(board_dir, server.url("/fw.bin"), timeout_ms=1000)
    assert out["name"] in ("ESP_ERR_HTTP_INCOMPLETE_DATA", "ESP_ERR_TIMEOUT") and out["boot"] == "ota_0"


def test_a_chunked_body_installs(board_dir, server, v2):
    server.route("/fw.bin", v2, chunked=3000)
    out = update(board_dir, server.url("/fw.bin"))
    assert out["ok"] and out["boot"] == "ota_1"


def test_a_stalled_server_times_out(board_dir, server, v2):
    server.route("/fw.bin", v2, stall_at=10000, stall_times=-1, stall_s=20)
    out = update(board_dir, server.url("/fw.bin"), timeout_ms=500)
    assert out["name"] == "ESP_ERR_TIMEOUT" and out["boot"] == "ota_0"


def test_an_image_larger_than_the_partition_is_refused_before_writing(board_dir, server, v2):
    server.route("/fw.bin", v2 + b"\xff" * (0x180000 - len(v2) + 1))
    out = update(board_dir, server.url("/fw.bin"))
    assert out["name"] == "ESP_ERR_INVALID_SIZE" and out["boot"] == "ota_0"


def test_a_wrong_sha256_is_refused(board_dir, server, v2):
    server.route("/fw.bin", v2)
    out = update(board_dir, server.url("/fw.bin"), sha256="00" * 32)
    assert out["name"] == "ESP_ERR_OTA_VALIDATE_FAILED" and out["boot"] == "ota_0"
    import hashlib
    out = update(board_dir, server.url("/fw.bin"), sha256=hashlib.sha256(v2).hexdigest(), size=len(v2))
    assert out["ok"]


def test_plain_http_needs_allow_http(board_dir, server, v2):
    server.route("/fw.bin", v2)
    out = update(board_dir, server.url("/fw.bin"), allow_http=False)
    assert out["name"] == "ESP_ERR_INVALID_ARG" and out["boot"] == "ota_0"


OUT_OF_ORDER = """
import json, ota
h = ota.begin(%(url)r, allow_http=True)
while h.perform() == ota.IN_PROGRESS:
    pass
h.finish()
names = []
for call in (h.perform, h.finish, h.abort):
    try:
        call()
        names.append("ok")
    except ota.OTAError as e:
        names.append(e.name)
print("RESULT " + json.dumps(names))
"""


def test_calls_out_of_order_are_refused(board_dir, server, v2):
    server.route("/fw.bin", v2)
    names = result(run_mpy(OUT_OF_ORDER % {"url": server.url("/fw.bin")}, board_dir))
    assert names == ["ESP_ERR_INVALID_STATE"] * 3


def flash_ops(log_path):
    with open(log_path) as f:
        return [line.split() for line in f if line.strip() and not line.startswith("#")]


def test_a_power_cut_at_any_flash_operation_leaves_a_bootable_board(tmp_path, server):
    # 112 KiB: 28 sectors, so the OTA is ~60 flash operations (an erase and a
    # program per sector, then otadata in finish()); every one is cut once.
    image = make_app_image(version="2.0.0", project_name="greenhouse", size=112 * 1024)
    server.route("/fw.bin", image)
    url = server.url("/fw.bin")
    template = tmp_path / "template"
    template.mkdir()
    assert power_on(template)["version"] == "1.0.0"

    def fresh(name):
        board = tmp_path / name
        board.mkdir()
        shutil.copy(template / "flash.bin", board / "flash.bin")
        return board

    log = tmp_path / "reference.log"
    assert update(fresh("reference"), url, env={"OTA_FLASH_LOG": str(log)})["ok"]
    ops = flash_ops(log)
    assert len(ops) >= 50
    otadata = [i for i, op in enumerate(ops) if 0xD000 <= int(op[2], 16) < 0xF000]
    assert otadata == [len(ops) - 2, len(ops) - 1], "finish() writes otadata last, once"

    outcomes = {}
    for n in range(1, len(ops) + 1):
        board = fresh("cut%d" % n)
        cut_log = tmp_path / ("cut%d.log" % n)
        proc = run_mpy(UPDATE % {"url": url, "kw": "{'allow_http': True}"}, board,
                       env={"OTA_POWER_CUT_AT": str(n), "OTA_FLASH_LOG": str(cut_log)})
        assert "RESULT" not in proc.stdout, "op %d: the power cut did not happen" % n
        assert flash_ops(cut_log)[-1][-1] == "cut"
        after = power_on(board)                       # the board boots...
        assert after["version"] in ("1.0.0", "2.0.0"), n
        outcomes[n] = after["version"]
        if after["version"] == "1.0.0":               # ...and a later OTA succeeds
            assert update(board, url)["ok"], n
            assert power_on(board)["version"] == "2.0.0", n
    # The new app becomes bootable only with the last op, the otadata entry
    # written in finish(): a cut at or before it always leaves the old one.
    assert set(outcomes.values()) == {"1.0.0"} and len(outcomes) == len(ops)


def power_cut_mid_download(board_dir, url):
    """An update of the 300 KiB image at url cut by a power loss in sector
    71 of 76: nothing is reported, and the board still boots 1.0.0."""
    cut = run_mpy(UPDATE % {"url": url, "kw": "{'allow_http': True}"}, board_dir,
                  env={"OTA_POWER_CUT_AT": "141"})
    assert "RESULT" not in cut.stdout
    assert power_on(board_dir)["version"] == "1.0.0"


def test_after_a_power_cut_mid_download_the_next_update_fetches_only_the_rest(board_dir, server):
    image = make_app_image(version="2.0.0", project_name="greenhouse", size=300 * 1024)
    server.route("/fw.bin", image)
    url = server.url("/fw.bin")
    power_cut_mid_download(board_dir, url)
    sent_before = server.sent("/fw.bin")

    out = update(board_dir, url)
    assert out["ok"] and out["read"] == len(image)
    last = server.requests("/fw.bin")[-1]
    assert last["range"] == "bytes=262144-"                  # the journal's 64 sectors
    assert server.sent("/fw.bin") - sent_before == len(image) - 262144
    assert power_on(board_dir)["version"] == "2.0.0"
