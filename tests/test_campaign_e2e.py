"""A fleet update from start to end: three emulated boards (MicroPython unix
port + shim) check in with a campaign server through ota.check, update with
ota.update and confirm, except one whose new image never confirms: it falls
back to the old app, and the server's status says exactly that."""
import json

import pytest

from conftest import run_mpy
from otatool import campaigns, server
from otatool.appimage import make_app_image

from test_campaign_server import PASSWORD, Api

# What main.py does on every power-on, printing one RESULT line of JSON.
POWER_ON = """
import json, os, ota
from ota.checkin import report
S, T = %r, %r
app = ota.running_app()
out = {"version": app["version"], "state": ota.status()["running_state"]}
if app["project_name"] == "ota-broken":
    out["crashed"] = True   # this image dies before it can confirm or check in
else:
    if out["state"] == "PENDING_VERIFY":
        ota.mark_app_valid()
        campaign = json.load(open("campaign.json"))
        report(S, T, campaign, "confirmed", allow_http=True)
        out["confirmed"] = campaign
    offer = ota.check(S, T, allow_http=True)   # version: the running app's
    out["offer"] = offer
    if offer:
        report(S, T, offer["campaign"], "downloading", progress=0, allow_http=True)
        ota.update(offer["url"], sha256=offer["sha256"], size=offer["size"], allow_http=True)
        with open("campaign.json", "w") as f:
            json.dump(offer["campaign"], f)
        report(S, T, offer["campaign"], "installed", allow_http=True)
print("RESULT " + json.dumps(out))
"""


def power_on(srv, board, token):
    proc = run_mpy(POWER_ON % (srv.url, token), board)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    raise AssertionError("board %s said:\n%s\n%s" % (token, proc.stdout, proc.stderr))


@pytest.fixture
def srv(tmp_path):
    db = str(tmp_path / "ota.sqlite")
    store = campaigns.Store(db)
    store.set_password("admin", PASSWORD)
    store.close()
    # A long back-off: within this test a board that failed is not asked again.
    with server.ServerThread({"db": db, "files": str(tmp_path / "files"),
                              "backoff_base": 3600}) as s:
        yield s


def test_three_boards_update_and_the_one_whose_image_never_confirms_rolls_back(srv, tmp_path):
    api = Api(srv)
    api.request("POST", "/admin/users", body={"name": "farm"})
    for project in ("greenhouse", "shed"):
        api.request("POST", "/admin/projects", body={"user": "farm", "name": project})
    boards = {}
    for token, project in [("g1", "greenhouse"), ("g2", "greenhouse"), ("s1", "shed")]:
        status, _ = api.request("POST", "/admin/devices",
                                body={"user": "farm", "project": project, "token": token})
        assert status == 201
        boards[token] = tmp_path / token
        boards[token].mkdir()
    good = make_app_image(version="1.1.0", project_name="greenhouse", size=24 * 1024)
    broken = make_app_image(version="1.1.0", project_name="ota-broken", size=24 * 1024)
    c_good = api.start(good, user="farm", project="greenhouse")
    c_bad = api.start(broken, token="s1")

    # Power-on 1: every board runs the factory app 1.0.0 and installs its update.
    first = {t: power_on(srv, b, t) for t, b in boards.items()}
    for token, campaign in [("g1", c_good), ("g2", c_good), ("s1", c_bad)]:
        assert first[token]["version"] == "1.0.0"
        assert first[token]["offer"]["campaign"] == campaign
    assert api.status(c_good)[0]["counts"] == {"installed": 2}

    # Power-on 2: the good image confirms itself; the broken one dies at once.
    second = {t: power_on(srv, b, t) for t, b in boards.items()}
    for token in ("g1", "g2"):
        assert second[token] == {"version": "1.1.0", "state": "PENDING_VERIFY",
                                 "confirmed": c_good, "offer": None}
    assert second["s1"] == {"version": "1.1.0", "state": "PENDING_VERIFY", "crashed": True}

    # Power-on 3: the bootloader rolled s1 back; it checks in on 1.0.0 again.
    third = {t: power_on(srv, b, t) for t, b in boards.items()}
    for token in ("g1", "g2"):
        assert third[token] == {"version": "1.1.0", "state": "VALID", "offer": None}
    assert third["s1"]["version"] == "1.0.0" and third["s1"]["offer"] is None

    (good_status,) = api.status(c_good)
    assert good_status["counts"] == {"confirmed": 2}
    assert {d["token"]: (d["state"], d["version"], d["attempts"])
            for d in good_status["devices"]} == {"g1": ("confirmed", "1.1.0", 1),
                                                 "g2": ("confirmed", "1.1.0", 1)}
    assert all(d["build"] for d in good_status["devices"])  # the app's date and time
    (bad_status,) = api.status(c_bad)
    assert bad_status["counts"] == {"rolled_back": 1}
    (s1,) = bad_status["devices"]
    assert (s1["token"], s1["state"], s1["version"], s1["attempts"], s1["from_version"]) == (
        "s1", "rolled_back", "1.0.0", 1, "1.0.0")
    assert s1["error"] == "checked in on 1.0.0 after installing 1.1.0"
