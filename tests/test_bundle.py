"""App-bundle OTA (ota.AppBundle, ota.bundle_boot, otatool bundle).

Device code runs on the MicroPython unix port with the board's own
filesystem mounted as "/" (VfsPosix over a host directory, or littlefs over a
block-device file) and the host's "/" under "/host" for the code. A power cut
is `kill -9` of the interpreter from inside the filesystem call it cuts.
"""
import hashlib
import json
import os
import shutil
import string

import pytest

from conftest import LIB, SHIM, run_cpython, run_mpy, unix_port_mpy
from otatool import cli
from otatool.bundle import build, check_name, make_bundle, read_bundle_header


# v0: the app as first deployed (not a bundle); v1, v2: bundles.
V0 = {"main.py": b"print('v0')\n", "lib/util.py": b"X = 0\n", "legacy.py": b"old\n",
      "config.json": b'{"wifi": "secret"}\n', "data/log.txt": b"user data\n"}
V1 = {"main.py": b"print('v1')\n", "lib/util.py": b"X = 1\n" * 300, "lib/extra.py": b"E = 1\n"}
V2 = {"main.py": b"print('v2')\n" * 40, "lib/util.py": b"X = 2\n" * 700, "empty.txt": b"",
      "pkg/deep/mod.py": b"D = 2\n" * 50, "Readme.TXT": bytes(range(256)) * 9}
V2_DELETE = ["legacy.py", "lib/extra.py"]

# The story of issue #14: app 1.0.0 and then 2.0.0 shipped as bundles, no
# --delete anywhere. config.json was copied by hand before the first bundle.
S0 = {"config.json": b'{"wifi": "home"}\n'}
S1 = {"main.py": b"print('1.0.0')\n", "util.py": b"U = 1\n" * 30, "lib/helper.py": b"H = 1\n" * 20,
      "data.bin": bytes(range(256)) * 4, "pkg/gone.py": b"G = 1\n"}
S2 = {"main.py": b"print('2.0.0')\n", "new.py": b"N = 2\n" * 40, "lib/helper.py": S1["lib/helper.py"],
      "data.bin": bytes(range(255, -1, -1)) * 5}
S1_ONLY = ["util.py", "pkg/gone.py"]

BOARD = r'''
import os, sys, vfs, hashlib, binascii, json
def mount_board(fs):
    vfs.umount("/")
    vfs.mount(fs, "/")
    vfs.mount(vfs.VfsPosix("/"), "/host")
    sys.path[:] = [("/host" + p) if p[:1] == "/" else p for p in sys.path]
    os.chdir("/")

class FileBdev:
    # littlefs block device in a host file; a power cut can hit any program.
    def __init__(self, path, cut=0):
        self.f = open(path, "r+b")
        self.n = self.f.seek(0, 2) // 4096
        self.cut, self.ops = cut, 0
    def readblocks(self, b, buf, off=0):
        self.f.seek(b * 4096 + off)
        self.f.readinto(buf)
    def writeblocks(self, b, buf, off=None):
        self.ops += 1
        if self.ops == self.cut:
            os.system("kill -9 $PPID")
        self.f.seek(b * 4096 + (off or 0))
        self.f.write(buf)
    def ioctl(self, op, arg):
        if op == 4:
            return self.n
        if op == 5:
            return 4096
        if op == 6:
            self.writeblocks(arg, b"\xff" * 4096)
        return 0

def tree(d):
    # {path: sha256 hex} of every file below d (not the host under /host).
    out = {}
    def walk(p, rel):
        for e in os.ilistdir(p):
            if p + e[0] == "/host":
                continue
            if e[1] == 0x4000:
                walk(p + "/" + e[0], rel + e[0] + "/")
            else:
                with open(p + "/" + e[0], "rb") as f:
                    out[rel + e[0]] = binascii.hexlify(hashlib.sha256(f.read()).digest()).decode()
    walk(d, "")
    return out

def feed(t, data, step=0, size=None):
    # What ota.client does: read into t.window(), t.commit(n), t.finish().
    class Client:
        def get_image_size(self):
            return len(data) if size is None else size
    t.begin(Client())
    mv, p = memoryview(data), 0
    while p < len(data):
        w = t.window()
        n = min(len(w), len(data) - p, step or len(w))
        w[:n] = mv[p:p + n]
        p += n
        t.commit(n)
    t.finish()

def show(name, value):
    print(name, json.dumps(value))
'''

# Counts every filesystem change the bundle code makes (os.rename, remove,
# mkdir, rmdir; open for writing, write, close of such a file) and cuts the
# power at change number CUT.
CUT = r'''
import ota, ota.bundle, ota.journal, ota.swap, _fsops
changes = [0]
def change(name, args):
    changes[0] += 1
    if changes[0] == CUT:
        os.system("kill -9 $PPID")
    if not CUT:
        print("op", changes[0], name, " ".join(args))   # printed, not kept: a 32 KiB heap
_fsops.watch((ota.bundle, ota.journal, ota.swap), change, writes=True)
'''


def sha(data):
    return hashlib.sha256(data).hexdigest()


def digest_tree(files):
    return {k: sha(v) for k, v in files.items()}


def after(tree_before, files, delete=()):
    t = {k: v for k, v in tree_before.items() if k not in delete}
    t.update(digest_tree(files))
    return t


def write_files(root, files):
    for name, data in files.items():
        path = os.path.join(root, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)


def run(script, board, heap=None, path=None, env=None, check=True):
    r = run_mpy(script, board, heap=heap, path=path, env=env)
    if check:
        assert r.returncode == 0, r.stdout + r.stderr
    return r


def shown(r, name):
    for line in r.stdout.splitlines():
        if line.startswith(name + " "):
            return json.loads(line[len(name) + 1:])
    raise AssertionError("%s not printed:\n%s%s" % (name, r.stdout, r.stderr))


def posix(board):
    return "mount_board(vfs.VfsPosix(%r))\n" % str(board / "fs")


def script(board, body, data=None, mount=None):
    head = BOARD
    if data is not None:
        (board / "in.bundle").write_bytes(data)
        head += "DATA = open(%r, 'rb').read()\n" % str(board / "in.bundle")
    return head + (mount or posix(board)) + "import ota, ota.bundle_boot as bb, ota.journal as journal\n" + body


@pytest.fixture(scope="session")
def bundles():
    v1 = build(V1, "1.9.0", "demo")
    v2 = build(V2, "1.10.0", "demo", delete=V2_DELETE)
    return v1, v2


@pytest.fixture
def v1_board(tmp_path, bundles):
    """A board running v1 as a confirmed bundle (v0 kept for rollback)."""
    board = tmp_path / "board"
    write_files(str(board / "fs" / "app"), V0)
    run(script(board, "feed(ota.AppBundle('/app'), DATA)\n"
                      "assert bb.boot('/app') == 'pending'\n"
                      "bb.mark_app_valid('/app')\n", bundles[0]), board)
    return board


def v1_tree():
    return after(digest_tree(V0), V1)


def v2_tree():
    return after(v1_tree(), V2, V2_DELETE)


@pytest.fixture(scope="session")
def story():
    # 3.0.0 changes main.py, keeps lib/helper.py and data.bin, drops new.py.
    s3 = {"main.py": b"print('3.0.0')\n", "lib/helper.py": S2["lib/helper.py"], "data.bin": S2["data.bin"]}
    return build(S1, "1.0.0", "story"), build(S2, "2.0.0", "story"), build(s3, "3.0.0", "story")


@pytest.fixture
def story_board(tmp_path, story):
    """A board running 1.0.0, a confirmed bundle, beside a hand-copied
    config.json and a file 1.0.0 wrote itself."""
    board = tmp_path / "board"
    write_files(str(board / "fs" / "app"), S0)
    run(script(board, "feed(ota.AppBundle('/app'), DATA)\nbb.boot('/app')\nbb.mark_app_valid('/app')\n"
                      "with open('/app/state.json', 'w') as f:\n    f.write('written by 1.0.0')\n",
               story[0]), board)
    return board


def story_tree(files):
    """/app with the bundle `files` installed: plus what no bundle installed."""
    t = after(digest_tree(S0), files)
    t["state.json"] = sha(b"written by 1.0.0")
    return t


# ---- host side: otatool bundle --------------------------------------------

def test_otatool_bundle_packs_a_directory_that_read_bundle_header_describes(tmp_path, capsys):
    src = tmp_path / "src"
    write_files(str(src), {"main.py": b"print(1)\n", "lib/a.py": b"A = 1\n", ".hidden": b"x",
                           "__pycache__/a.cpython-311.pyc": b"junk"})
    out = tmp_path / "app.bundle"
    assert cli.main(["bundle", str(src), "--version", "2.0.1", "--project", "demo",
                     "--delete", "old.py", "--secure-version", "4", "-o", str(out)]) == 0
    assert "2.0.1" in capsys.readouterr().out
    data = out.read_bytes()
    d = read_bundle_header(data)
    assert d["version"] == "2.0.1" and d["project_name"] == "demo" and d["secure_version"] == 4
    assert [f["name"] for f in d["files"]] == ["lib/a.py", "main.py"]
    assert d["files"][1]["sha256"] == sha(b"print(1)\n")
    assert d["delete"] == ["old.py"] and d["size"] == len(data)
    assert make_bundle(str(src), "2.0.1", "demo", ["old.py"], 4) == data   # reproducible
    assert read_bundle_header(data[:d["header_size"]])["files"] == d["files"]


def test_otatool_bundle_against_the_previous_release_lists_what_the_update_adds_changes_and_removes(
        tmp_path, capsys):
    for version, files in (("1.0.0", S1), ("2.0.0", S2)):
        write_files(str(tmp_path / version), files)
    old = str(tmp_path / "1.0.0.bundle")
    assert cli.main(["bundle", str(tmp_path / "1.0.0"), "--version", "1.0.0", "-o", old]) == 0
    capsys.readouterr()
    assert cli.main(["bundle", str(tmp_path / "2.0.0"), "--version", "2.0.0", "--delete", "config.json",
                     "--against", old, "-o", str(tmp_path / "2.0.0.bundle")]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[1:] == ["over 1.0.0: 1 added, 2 changed, 3 removed, 1 unchanged",
                       "  + new.py", "  ~ data.bin", "  ~ main.py",
                       "  - config.json", "  - pkg/gone.py", "  - util.py"]
    assert cli.main(["bundle", str(tmp_path / "2.0.0"), "--version", "2.0.0", "--against",
                     str(tmp_path / "1.0.0" / "main.py"), "-o", str(tmp_path / "x.bundle")]) == 2
    assert "main.py: not an app bundle" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["../boot.py", "/boot.py", "a//b.py", "a/./b", "a/", "",
                                  "dir\\x.py", "x" * 121, "tab\t.py", "caf\u00e9.py"])
def test_host_refuses_unsafe_names(name):
    with pytest.raises(ValueError):
        check_name(name)
    with pytest.raises(ValueError):
        build({name: b"x"}, "1.0.0")


@pytest.mark.parametrize("files,delete", [
    ({"A.py": b"1", "a.py": b"2"}, []),            # one file on FAT
    ({"lib": b"1", "lib/x.py": b"2"}, []),         # file and directory
    ({"lib/x.py": b"2"}, ["lib"]),                 # deletes what it installs
    ({"a.py": b"1"}, ["a.py"]),
])
def test_host_refuses_clashing_entries(files, delete):
    with pytest.raises(ValueError):
        build(files, "1.0.0", delete=delete)


def test_cli_reports_a_bad_version_in_one_line(tmp_path, capsys):
    (tmp_path / "a.py").write_bytes(b"1")
    assert cli.main(["bundle", str(tmp_path), "--version", "latest", "-o",
                     str(tmp_path / "o.bundle")]) == 2
    assert "version" in capsys.readouterr().err


def test_read_bundle_header_rejects_garbage_tampering_and_a_cut_header(bundles):
    v2 = bundles[1]
    hlen = read_bundle_header(v2)["header_size"]
    tampered = bytearray(v2)
    tampered[100] ^= 1
    for bad in (b"garbage" * 20, v2[:60], v2[:hlen - 1], bytes(tampered)):
        with pytest.raises(ValueError):
            read_bundle_header(bad)
    assert read_bundle_header(v2[:hlen + 10])["size"] == len(v2)   # a prefix will do


# ---- device: install, confirm, roll back -----------------------------------

def test_update_replaces_named_files_deletes_listed_and_keeps_config(v1_board, bundles):
    r = run(script(v1_board, "t = ota.AppBundle('/app')\n"
                             "feed(t, DATA)\n"
                             "show('desc', t.desc())\n"
                             "show('tree', tree('/app'))\n"
                             "show('boot', bb.boot('/app'))\n"
                             "show('running', journal.running_desc('/app'))\n", bundles[1]), v1_board)
    assert shown(r, "desc")["version"] == "1.10.0"
    assert shown(r, "desc")["project_name"] == "demo"
    t = shown(r, "tree")
    assert t == v2_tree()
    assert t["config.json"] == sha(V0["config.json"]) and t["data/log.txt"] == sha(V0["data/log.txt"])
    assert shown(r, "boot") == "pending"
    assert shown(r, "running")["version"] == "1.10.0"
    meta = sorted(os.listdir(v1_board / "fs" / "app.ota"))
    assert meta == ["cur", "old", "state"]          # no staging left


def test_installing_2_0_0_removes_what_only_1_0_0_had(story_board, story):
    # No --delete: a bundle is the whole app version. ota.rollback() then
    # gives back exactly 1.0.0, util.py and pkg/gone.py included.
    r = run(script(story_board, "feed(ota.AppBundle('/app'), DATA)\nshow('boot', bb.boot('/app'))\n"
                                "bb.mark_app_valid('/app')\nshow('tree', tree('/app'))\n"
                                "bb.rollback('/app')\nshow('back', tree('/app'))\n"
                                "show('running', journal.running_desc('/app'))\n", story[1]), story_board)
    assert shown(r, "boot") == "pending"
    t = shown(r, "tree")
    assert t == story_tree(S2)
    assert "util.py" not in t and "pkg/gone.py" not in t
    assert t["config.json"] == sha(S0["config.json"]) and "state.json" in t
    assert shown(r, "back") == story_tree(S1)
    assert shown(r, "running")["version"] == "1.0.0"


def test_unconfirmed_2_0_0_rolls_back_to_exactly_1_0_0_removed_files_included(story_board, story):
    run(script(story_board, "feed(ota.AppBundle('/app'), DATA)\n", story[1]), story_board)
    r = run(script(story_board, "show('first', bb.boot('/app'))\nshow('second', bb.boot('/app'))\n"
                                "show('tree', tree('/app'))\n"), story_board)
    assert [shown(r, "first"), shown(r, "second")] == ["pending", "rolled_back"]
    assert shown(r, "tree") == story_tree(S1)


def test_a_bundled_file_changed_on_the_board_is_replaced_even_when_the_update_keeps_it(story_board, story):
    # 2.0.0 ships 1.0.0's lib/helper.py unchanged, but the board's copy was
    # edited: the update puts 2.0.0's back, and rollback the edited one.
    edited = b"H = 'edited on the board'\n"
    write_files(str(story_board / "fs" / "app"), {"lib/helper.py": edited})
    r = run(script(story_board, "feed(ota.AppBundle('/app'), DATA)\nshow('tree', tree('/app'))\n"
                                "bb.rollback('/app')\nshow('back', tree('/app'))\n", story[1]), story_board)
    assert shown(r, "tree") == story_tree(S2)
    assert shown(r, "back") == dict(story_tree(S1), **{"lib/helper.py": sha(edited)})


def test_a_file_renamed_only_in_case_is_replaced_and_comes_back_on_rollback(tmp_path):
    # Util.py -> util.py: the same path on FAT, two on littlefs. The old
    # name goes first, then the new one comes; rollback reverses both.
    board = tmp_path / "board"
    (board / "fs").mkdir(parents=True)
    v1 = build({"Util.py": b"U = 1\n", "main.py": b"1\n"}, "1.0.0")
    v2 = build({"util.py": b"u = 2\n", "main.py": b"1\n"}, "2.0.0")
    run(script(board, "feed(ota.AppBundle('/app'), DATA)\nbb.boot('/app')\nbb.mark_app_valid('/app')\n", v1),
        board)
    r = run(script(board, "feed(ota.AppBundle('/app'), DATA)\nshow('tree', tree('/app'))\n"
                          "bb.rollback('/app')\nshow('back', tree('/app'))\n", v2), board)
    assert shown(r, "tree") == digest_tree({"util.py": b"u = 2\n", "main.py": b"1\n"})
    assert shown(r, "back") == digest_tree({"Util.py": b"U = 1\n", "main.py": b"1\n"})


def kept_for_rollback(board):
    """{name in app.ota/old: SHA-256} of the files the board keeps to roll back."""
    r = run(script(board, "show('meta', tree('/app.ota'))\n"), board)
    return {k[4:]: v for k, v in shown(r, "meta").items() if k.startswith("old/") and k != "old/hdr"}


def test_rollback_keeps_only_what_the_update_changed_or_removed_and_forgets_it_after_the_next(
        story_board, story):
    confirm = "feed(ota.AppBundle('/app'), DATA)\nbb.boot('/app')\nbb.mark_app_valid('/app')\n"
    run(script(story_board, confirm, story[1]), story_board)
    kept = kept_for_rollback(story_board)
    # 1.0.0's main.py and data.bin (changed), util.py and pkg/gone.py
    # (removed); not lib/helper.py, which 2.0.0 left as it was.
    assert sorted(kept.values()) == sorted(sha(S1[n]) for n in ("main.py", "data.bin", "util.py", "pkg/gone.py"))
    run(script(story_board, confirm, story[2]), story_board)
    kept = kept_for_rollback(story_board)
    assert sorted(kept.values()) == sorted(sha(S2[n]) for n in ("main.py", "new.py"))
    r = run(script(story_board, "show('meta', tree('/app.ota'))\n"), story_board)
    only_1_0_0 = {sha(S1[n]) for n in S1} - {sha(S2[n]) for n in S2}
    assert not only_1_0_0 & set(shown(r, "meta").values())


def test_unconfirmed_bundle_rolls_back_on_its_second_boot(v1_board, bundles):
    run(script(v1_board, "feed(ota.AppBundle('/app'), DATA)\n", bundles[1]), v1_board)
    r = run(script(v1_board, "show('first', bb.boot('/app'))\nshow('tree', tree('/app'))\n"), v1_board)
    assert shown(r, "first") == "pending" and shown(r, "tree") == v2_tree()
    r = run(script(v1_board, "show('second', bb.boot('/app'))\nshow('tree', tree('/app'))\n"
                             "show('running', journal.running_desc('/app'))\n"
                             "show('rejected', journal.rejected_desc('/app'))\n"
                             "show('third', bb.boot('/app'))\n"), v1_board)
    assert shown(r, "second") == "rolled_back"
    assert shown(r, "tree") == v1_tree()
    assert shown(r, "running")["version"] == "1.9.0"
    assert shown(r, "rejected")["version"] == "1.10.0"   # main.py does not install it again
    assert shown(r, "third") == "valid"
    assert sorted(os.listdir(v1_board / "fs" / "app.ota")) == ["cur", "rejected", "state"]


def test_confirmed_bundle_stays_and_rollback_on_request_restores_the_previous(v1_board, bundles):
    run(script(v1_board, "feed(ota.AppBundle('/app'), DATA)\n", bundles[1]), v1_board)
    r = run(script(v1_board, "bb.boot('/app')\nbb.mark_app_valid('/app')\n"
                             "show('again', bb.boot('/app'))\nshow('tree', tree('/app'))\n"
                             "bb.rollback('/app')\nshow('back', tree('/app'))\n"
                             "show('running', journal.running_desc('/app'))\n"
                             "try:\n    bb.rollback('/app')\nexcept ota.OTAError as e:\n"
                             "    show('err', e.name)\n"), v1_board)
    assert shown(r, "again") == "valid" and shown(r, "tree") == v2_tree()
    assert shown(r, "back") == v1_tree()
    assert shown(r, "running")["version"] == "1.9.0"
    assert shown(r, "err") == "ESP_ERR_OTA_ROLLBACK_FAILED"   # one previous version only


def test_first_bundle_over_a_plain_app_rolls_back_to_the_plain_app(tmp_path, bundles):
    board = tmp_path / "board"
    write_files(str(board / "fs" / "app"), V0)
    r = run(script(board, "feed(ota.AppBundle('/app'), DATA)\nbb.rollback('/app')\n"
                          "show('tree', tree('/app'))\nshow('running', journal.running_desc('/app'))\n",
                   bundles[0]), board)
    assert shown(r, "tree") == digest_tree(V0)
    assert shown(r, "running") is None


def test_new_update_is_refused_until_the_installed_bundle_is_confirmed(v1_board, bundles):
    v3 = build({"main.py": b"v3"}, "1.11.0")
    run(script(v1_board, "feed(ota.AppBundle('/app'), DATA)\n", bundles[1]), v1_board)
    r = run(script(v1_board, "try:\n    feed(ota.AppBundle('/app'), DATA)\nexcept ota.OTAError as e:\n"
                             "    show('err', e.name)\nbb.boot('/app')\nbb.mark_app_valid('/app')\n"
                             "feed(ota.AppBundle('/app'), DATA)\n"
                             "show('running', journal.running_desc('/app'))\n", v3), v1_board)
    assert shown(r, "err") == "ESP_ERR_OTA_ROLLBACK_INVALID_STATE"
    assert shown(r, "running")["version"] == "1.11.0"


@pytest.mark.parametrize("version,allow,ok", [
    ("1.10.0", False, True), ("1.9.0", False, False), ("1.9", False, False), ("1.8.99", False, False),
    ("1.9.0-rc1", False, False), ("1.9.1-rc1", False, True), ("1.8.0", True, True), ("1.9.0", True, True),
])
def test_only_newer_versions_install_unless_downgrade_is_allowed(v1_board, version, allow, ok):
    data = build({"main.py": b"print('x')\n"}, version)
    r = run(script(v1_board, "try:\n    feed(ota.AppBundle('/app', allow_downgrade=%r), DATA)\n"
                             "    show('ok', True)\nexcept ota.OTAError as e:\n    show('ok', e.name)\n"
                             "show('tree', tree('/app'))\n" % allow, data), v1_board)
    assert shown(r, "ok") == (True if ok else "ESP_ERR_INVALID_VERSION")
    assert (shown(r, "tree") == v1_tree()) != ok


def test_desc_of_an_older_bundle_is_readable_before_the_update_is_refused(v1_board):
    # As with esp_https_ota_get_img_desc(): look first, the target refuses anyway.
    data = build({"main.py": b"print('old')\n"}, "1.2.0", "demo")
    r = run(script(v1_board, "t = ota.AppBundle('/app')\n"
                             "class C:\n    def get_image_size(self):\n        return len(DATA)\n"
                             "t.begin(C())\nw = t.window()\nw[:] = DATA[:len(w)]\nt.commit(len(w))\n"
                             "show('desc', t.desc())\n"
                             "w = t.window()\nw[:] = DATA[80:80 + len(w)]\n"
                             "try:\n    t.commit(len(w))\n"
                             "except ota.OTAError as e:\n    show('err', str(e))\n"
                             "show('meta', sorted(os.listdir('/app.ota')))\n", data), v1_board)
    assert shown(r, "desc")["version"] == "1.2.0"
    assert shown(r, "err") == "ESP_ERR_INVALID_VERSION: 1.2.0 is not newer than the installed 1.9.0"
    assert shown(r, "meta") == ["cur", "old", "state"]


@pytest.mark.parametrize("step", [1, 7, 1000])
def test_any_split_of_the_stream_installs_the_same_files(v1_board, bundles, step):
    r = run(script(v1_board, "feed(ota.AppBundle('/app', bufsize=512), DATA, %d)\n"
                             "show('tree', tree('/app'))\n" % step, bundles[1]), v1_board)
    assert shown(r, "tree") == v2_tree()


def test_lower_secure_version_is_refused_even_when_downgrades_are_allowed(tmp_path):
    board = tmp_path / "board"
    write_files(str(board / "fs" / "app"), V0)
    run(script(board, "feed(ota.AppBundle('/app'), DATA)\nbb.boot('/app')\nbb.mark_app_valid('/app')\n",
               build({"main.py": b"1"}, "2.0.0", secure_version=3)), board)
    r = run(script(board, "t = ota.AppBundle('/app', allow_downgrade=True)\n"
                          "from ota.manifest import installed\nshow('current', installed(t))\n"
                          "try:\n    feed(t, DATA)\nexcept ota.OTAError as e:\n    show('err', e.name)\n",
                   build({"main.py": b"2"}, "3.0.0", secure_version=2)), board,
            env={"OTA_CHIP": "esp8266"})
    assert shown(r, "current") == ["esp8266", "2.0.0", 3]
    assert shown(r, "err") == "ESP_ERR_OTA_SMALL_SEC_VER"


def test_current_of_a_never_bundled_app_is_version_0(tmp_path):
    board = tmp_path / "board"
    write_files(str(board / "fs" / "app"), V0)
    r = run(script(board, "from ota.manifest import installed\n"
                          "show('current', installed(ota.AppBundle('/app')))\n"), board,
            env={"OTA_CHIP": "esp32s3"})
    assert shown(r, "current") == ["esp32s3", "0", 0]


def test_signed_manifest_update_installs_a_bundle(v1_board, bundles, tmp_path):
    # The publisher signs the bundle; the board checks the manifest against
    # what the AppBundle replaces and the download against the manifest.
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from otatool.serve import start_server
    from otatool.sign import make_manifest, public_key_b64, sign_manifest
    key = Ed25519PrivateKey.generate()
    www = tmp_path / "www"
    www.mkdir()
    (www / "v2.bundle").write_bytes(bundles[1])
    (www / "v2.json").write_bytes(sign_manifest(make_manifest(bundles[1], "v2.bundle"), key))
    srv, base, _ = start_server(str(www), log=lambda line: None)
    try:
        r = run(script(v1_board, "d = ota.update(%r, allow_http=True, public_key=%r, "
                                 "target=ota.AppBundle('/app'))\nshow('tree', tree('/app'))\n"
                                 % (base + "/v2.json", public_key_b64(key))), v1_board)
    finally:
        srv.shutdown()
        srv.server_close()
    assert shown(r, "tree") == v2_tree()


# ---- device: bad input ------------------------------------------------------

def raw_bundle(entries, version="9.0.0", data=b"", fix=None):
    """A bundle whose entries skip the host's checks: [(kind, name, body)]."""
    import struct
    from otatool.bundle import FIXED
    body, blobs = b"", b""
    for kind, name, blob in entries:
        raw = name.encode("latin-1")
        body += struct.pack("<BB", kind, len(raw)) + raw
        if kind == 0:
            body += struct.pack("<I", len(blob)) + hashlib.sha256(blob).digest()
            blobs += blob
    hlen = FIXED.size + len(body) + 32
    head = FIXED.pack(b"OTAB", 1, 0, hlen, len(entries), 0, len(blobs), version.encode(), b"") + body
    out = bytearray(head + hashlib.sha256(head).digest() + (data or blobs))
    if fix:
        fix(out)
    return bytes(out)


def _flip(offset):
    def fix(b):
        b[offset] ^= 0x40
    return fix


def _good():
    return build({"main.py": b"print('v9')\n" * 20, "lib/new.py": b"N = 9\n"}, "9.0.0")


BAD_BUNDLES = {
    "garbage": lambda: b"<html>404 Not Found</html>" * 10,
    "truncated": lambda: _good()[:-5],
    "wrong_file_hash": lambda: raw_bundle([(0, "main.py", b"a" * 50)], data=b"b" * 50),
    "listed_file_missing": lambda: raw_bundle([(0, "a.py", b"1" * 40), (0, "b.py", b"2" * 40)])[:-40],
    "header_tampered": lambda: raw_bundle([(0, "main.py", b"x")], fix=_flip(90)),
    "parent_traversal": lambda: raw_bundle([(0, "../boot.py", b"evil")]),
    "nested_traversal": lambda: raw_bundle([(0, "lib/../../boot.py", b"evil")]),
    "absolute": lambda: raw_bundle([(0, "/boot.py", b"evil")]),
    "empty_component": lambda: raw_bundle([(0, "lib//x.py", b"1")]),
    "duplicate": lambda: raw_bundle([(0, "a.py", b"1"), (0, "a.py", b"2")]),
    "case_duplicate": lambda: raw_bundle([(0, "A.py", b"1"), (0, "a.py", b"2")]),
    "unsorted": lambda: raw_bundle([(0, "b.py", b"1"), (0, "a.py", b"2")]),
    "file_and_dir": lambda: raw_bundle([(0, "lib", b"1"), (0, "lib/x.py", b"2")]),
    "control_char": lambda: raw_bundle([(0, "a\nb.py", b"1")]),
    "deletes_outside": lambda: raw_bundle([(1, "../main.py", b"")]),
    "trailing_data": lambda: _good() + b"more",
    "format_2": lambda: raw_bundle([(0, "a.py", b"1")], fix=_flip(4)),
}


@pytest.mark.parametrize("size", ["known", "unknown"])
@pytest.mark.parametrize("case", sorted(BAD_BUNDLES))
def test_bad_bundle_is_refused_and_leaves_the_old_app_and_no_staging(v1_board, case, size):
    data = BAD_BUNDLES[case]()
    body = ("try:\n    feed(ota.AppBundle('/app'), DATA, 97, %s)\n    show('err', None)\n"
            "except ota.OTAError as e:\n    show('err', e.name)\n"
            "show('tree', tree('/'))\nshow('boot', bb.boot('/app'))\n"
            % ("None" if size == "known" else "-1"))
    r = run(script(v1_board, body, data), v1_board)
    assert shown(r, "err") in ("ESP_ERR_OTA_VALIDATE_FAILED", "ESP_ERR_NOT_SUPPORTED")
    t = shown(r, "tree")
    app = {k[4:]: v for k, v in t.items() if k.startswith("app/")}
    assert app == v1_tree()
    assert not any(k.startswith("app.ota/new") or k.startswith("app.ota/trash") for k in t)
    assert "boot.py" not in t and "main.py" not in t     # nothing written outside /app
    assert shown(r, "boot") == "valid"


def test_directory_the_swap_needs_is_a_file_on_the_board_refused_before_commit(v1_board):
    data = build({"data/log.txt/x.py": b"1"}, "2.0.0")   # data/log.txt is a user file
    r = run(script(v1_board, "try:\n    feed(ota.AppBundle('/app'), DATA)\nexcept ota.OTAError as e:\n"
                             "    show('err', e.name)\nshow('tree', tree('/app'))\n", data), v1_board)
    assert shown(r, "err") == "ESP_ERR_OTA_VALIDATE_FAILED"
    assert shown(r, "tree") == v1_tree()


def littlefs_board(tmp_path, blocks, files):
    board = tmp_path / "board"
    board.mkdir()
    img = board / "lfs.img"
    img.write_bytes(b"\xff" * 4096 * blocks)
    src = BOARD + "bdev = FileBdev(%r)\nvfs.VfsLfs2.mkfs(bdev)\nmount_board(vfs.VfsLfs2(bdev))\n" % str(img)
    for name, data in files.items():
        parts = ("app/" + name).split("/")
        for i in range(1, len(parts)):
            src += "try:\n    os.mkdir(%r)\nexcept OSError:\n    pass\n" % ("/" + "/".join(parts[:i]))
        src += "with open(%r, 'wb') as f:\n    f.write(%r)\n" % ("/app/" + name, data)
    run(src, board)
    return board, img


def lfs_mount(img):
    # bdev counts its block writes; bdev.cut = N cuts the power at write N.
    return "bdev = FileBdev(%r)\nmount_board(vfs.VfsLfs2(bdev))\n" % str(img)


def test_bundle_larger_than_the_free_space_is_refused_before_anything_is_stored(tmp_path):
    board, img = littlefs_board(tmp_path, 48, V0)   # 192 KiB of littlefs
    big = build({"big.bin": os.urandom(200 * 1024)}, "2.0.0")
    r = run(script(board, "try:\n    feed(ota.AppBundle('/app'), DATA)\nexcept ota.OTAError as e:\n"
                          "    show('err', e.name)\nshow('tree', tree('/'))\n", big, lfs_mount(img)), board)
    assert shown(r, "err") == "ESP_ERR_INVALID_SIZE"
    t = shown(r, "tree")
    assert {k[4:]: v for k, v in t.items() if k.startswith("app/")} == digest_tree(V0)
    assert not any(k.startswith("app.ota/new") for k in t)


# ---- device: power cuts ------------------------------------------------------

def cut_run(board, cut, body, data=None, mount=None):
    src = script(board, "CUT = %d\n" % cut + CUT + body, data, mount)
    return run_mpy(src, board)


def boot_and_look(board, mount=None):
    r = run(script(board, "show('boot', bb.boot('/app'))\nshow('tree', tree('/'))\n", None, mount), board)
    t = shown(r, "tree")
    assert not any(k.startswith(("app.ota/new/", "app.ota/trash")) for k in t), t
    return shown(r, "boot"), {k[4:]: v for k, v in t.items() if k.startswith("app/")}


def count_changes(board, body, data=None, mount=None):
    r = run(script(board, "CUT = 0\n" + CUT + body + "show('changes', changes[0])\n", data, mount), board)
    return shown(r, "changes")


def copy_board(src, dst):
    shutil.copytree(src, dst)
    return dst


# The ESP32 profile, and the ESP8266 one: no esp32 module, a 32 KiB heap,
# the library compiled in the board's /lib (as in the 32 KiB test below).
PROFILES = {"esp32": {}, "esp8266": {"env": {"OTA_CHIP": "esp8266"}, "heap": "32k",
                                     "path": ":".join([SHIM, ".frozen"])}}
PROFILE_SHOWN = ("import gc\ntry:\n    import esp32\nexcept ImportError:\n    esp32 = None\n"
                 "print(esp32 is not None, gc.mem_free() + gc.mem_alloc())\n")
# The update as ota.client feeds it, from /in.bundle: little heap of its own.
FEED_BUNDLE = """
class Client:
    def get_image_size(self):
        return os.stat("/in.bundle")[6]
t = ota.AppBundle("/app")
t.begin(Client())
with open("/in.bundle", "rb") as f:
    n = 1
    while n:
        n = f.readinto(t.window())
        t.commit(n)
t.finish()
"""
FEED_FILE = FEED_BUNDLE + 'print("changes", changes[0])\n'


def sweep_script(board, profile, cut):
    # _fsops is the shim's: imported before "/" becomes the board's.
    start = ESP8266_START % str(board / "fs") if profile == "esp8266" else BOARD + posix(board)
    return "import _fsops\n" + start + "CUT = %d\n" % cut + CUT + FEED_FILE


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_power_cut_at_every_filesystem_change_of_an_update_that_adds_changes_and_removes_files_boots_old_or_new(
        story_board, story, compiled_lib, tmp_path, profile):
    kw = PROFILES[profile]
    template = copy_board(story_board, tmp_path / "template")
    (template / "fs" / "in.bundle").write_bytes(story[1])
    if profile == "esp8266":
        install_lib(template, compiled_lib)
    has_esp32, heap = run(PROFILE_SHOWN, template, **kw).stdout.split()
    assert has_esp32 == str(profile == "esp32")
    assert (int(heap) <= 32 * 1024) == (profile == "esp8266")
    count = copy_board(template, tmp_path / "count")
    out = run(sweep_script(count, profile, 0), count, **kw).stdout.splitlines()
    ops = [line.split(" ", 2)[2] for line in out if line.startswith("op ")]
    assert out[-1] == "changes %d" % len(ops) and len(ops) > 30
    # Every kind of change of this update is among the cuts: util.py and
    # pkg/gone.py go (by no flag), main.py is replaced, new.py added.
    for op in ("rename app/util.py app.ota/old/", "rename app/pkg/gone.py app.ota/old/",
               "rename app/main.py app.ota/old/", "rename app.ota/new/"):
        assert any(o.startswith(op) for o in ops), (op, ops)
    seen = set()
    for cut in range(1, len(ops) + 1):
        board = copy_board(template, tmp_path / ("cut%d" % cut))
        r = run_mpy(sweep_script(board, profile, cut), board, **kw)
        assert r.returncode == -9, (cut, r.stdout, r.stderr)   # the cut really happened
        state, app = boot_and_look(board)
        if app == story_tree(S1):
            seen.add("old")
            assert state == "valid", (cut, ops[cut - 1])
        else:
            seen.add("new")
            assert app == story_tree(S2), (cut, ops[cut - 1])
            assert state == "pending"
        shutil.rmtree(board)
    assert seen == {"old", "new"}


def test_power_cut_at_every_step_of_a_boot_time_rollback_restores_exactly_the_old_app(
        story_board, story, tmp_path):
    # 2.0.0 removed util.py and pkg/gone.py; rolling back brings them back.
    run(script(story_board, "feed(ota.AppBundle('/app'), DATA)\nbb.boot('/app')\n", story[1]), story_board)
    body = "bb.boot('/app')\n"                         # second unconfirmed boot: rollback
    total = count_changes(copy_board(story_board, tmp_path / "count"), body)
    assert total > 20
    for cut in range(1, total + 1):
        board = copy_board(story_board, tmp_path / ("cut%d" % cut))
        assert cut_run(board, cut, body).returncode == -9
        state, app = boot_and_look(board)
        # The rollback had started: it always completes to 1.0.0.
        assert app == story_tree(S1) and state in ("valid", "rolled_back"), cut
        shutil.rmtree(board)


def test_power_cut_while_boot_replays_an_interrupted_swap_still_ends_whole(v1_board, bundles, tmp_path):
    # A first cut in the middle of finish()'s swap, then a second cut at every
    # change of the replay that boot() makes.
    body = "feed(ota.AppBundle('/app'), DATA)\n"
    template = copy_board(v1_board, tmp_path / "template")
    total = count_changes(copy_board(template, tmp_path / "count"), body, bundles[1])
    first = total - 12                                 # inside the forward swap
    half = copy_board(template, tmp_path / "half")
    assert cut_run(half, first, body, bundles[1]).returncode == -9
    replay = count_changes(copy_board(half, tmp_path / "count2"), "bb.boot('/app')\n")
    assert replay > 3
    for cut in range(1, replay + 1):
        board = copy_board(half, tmp_path / ("cut%d" % cut))
        assert cut_run(board, cut, "bb.boot('/app')\n").returncode == -9
        state, app = boot_and_look(board)
        assert app == v2_tree() and state == "pending", cut
        shutil.rmtree(board)


def test_littlefs_power_cut_at_sampled_block_writes_boots_old_or_new(tmp_path, story):
    # littlefs on a block device file: the cut can fall inside any rename or
    # write, between two block programs of littlefs itself. 1.0.0 -> 2.0.0
    # adds, changes, keeps and removes files.
    v1, v2 = story[:2]
    board, img = littlefs_board(tmp_path, 64, S0)
    run(script(board, "feed(ota.AppBundle('/app'), DATA)\nbb.boot('/app')\nbb.mark_app_valid('/app')\n"
                      "with open('/app/state.json', 'w') as f:\n    f.write('written by 1.0.0')\n",
               v1, lfs_mount(img)), board)
    body = "bdev.ops = 0\nfeed(ota.AppBundle('/app'), DATA)\n"
    count = copy_board(board, tmp_path / "count")
    r = run(script(count, body + "show('writes', bdev.ops)\n", v2, lfs_mount(count / "lfs.img")), count)
    writes = shown(r, "writes")
    assert writes > 30
    seen = set()
    for cut in sorted(set(range(1, writes + 1, max(1, writes // 40))) | {writes}):
        b = copy_board(board, tmp_path / ("cut%d" % cut))
        mount = lfs_mount(b / "lfs.img")
        r = run_mpy(script(b, "bdev.cut = %d\n" % cut + body, v2, mount), b)
        assert r.returncode == -9, (cut, r.stdout, r.stderr)
        state, app = boot_and_look(b, mount)
        if app == story_tree(S1):
            seen.add("old")
        else:
            assert app == story_tree(S2), cut
            assert state == "pending"
            seen.add("new")
        shutil.rmtree(b)
    assert seen == {"old", "new"}


# ---- the client, the ESP8266 profile, CPython ----------------------------------

@pytest.fixture
def server(tmp_path, bundles):
    from otatool.serve import start_server
    root = tmp_path / "www"
    root.mkdir()
    (root / "v2.bundle").write_bytes(bundles[1])
    srv, base, _ = start_server(str(root))
    yield base
    srv.shutdown()
    srv.server_close()


@pytest.fixture(scope="session")
def compiled_lib():
    """lib/ota as `otatool deploy --mpy` puts it on an ESP8266-class board
    (mpy-cross for this interpreter, no line numbers): [(path, bytes)]."""
    from otatool.deploy import compiled, package_files
    sys_mpy = unix_port_mpy()
    return compiled(package_files(os.path.dirname(LIB)), sys_mpy, lines=False)


def install_lib(board, files):
    for rel, data in files:
        path = board / "fs" / "lib" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


def test_ota_update_installs_a_bundle_over_http(v1_board, server):
    r = run(script(v1_board, "d = ota.update(%r, allow_http=True, target=ota.AppBundle('/app'))\n"
                             "show('desc', d)\nshow('tree', tree('/app'))\n" % (server + "/v2.bundle")),
            v1_board, path=None)
    assert shown(r, "desc")["version"] == "1.10.0"
    assert shown(r, "tree") == v2_tree()


def test_a_running_deadline_still_bounds_the_downloads_after_an_update_installs(v1_board, server):
    # The swap unloads ota.http; a later download (the "installed" report)
    # from a fresh copy must still run under main.py's deadline.
    r = run(script(v1_board, "import ota.deadline\nota.deadline.start(60000)\n"
                             "ota.update(%r, allow_http=True, target=ota.AppBundle('/app'))\n"
                             "import ota.http\n"
                             "show('bounded', ota.http.Download('http://x/')._deadline is ota.deadline)\n"
                             "ota.deadline.stop()\n"
                             "show('unbounded', ota.http.Download('http://x/')._deadline is None)\n"
                             % (server + "/v2.bundle")), v1_board)
    assert (shown(r, "bounded"), shown(r, "unbounded")) == (True, True)


def test_a_report_after_a_bundle_update_uses_the_same_http_code_as_the_check_in(v1_board, server):
    # ota.check() then ota.update() then ota.report(): the check-in's code
    # and any later download share one ota.http (no stale copy beside a
    # fresh one); without a check-in the update frees it for the swap.
    body = ("import sys\nota.update(%r, allow_http=True, target=ota.AppBundle('/app'))\n"
            "show('freed', 'ota.http' not in sys.modules)\n" % (server + "/v2.bundle"))
    r = run(script(v1_board, body), v1_board)
    assert shown(r, "freed") is True
    (v1_board / "fs" / "app.ota" / "state").write_text("valid")
    body = ("import sys, ota.checkin\nota.update(%r, allow_http=True, target=ota.AppBundle('/app', "
            "allow_downgrade=True))\nimport ota.http\n"
            "show('same', ota.http.Download is ota.checkin.Download)\n" % (server + "/v2.bundle"))
    r = run(script(v1_board, body), v1_board)
    assert shown(r, "same") is True


def test_boot_update_that_fails_half_way_through_the_swap_resets_instead_of_starting_a_mixed_app(
        v1_board, server):
    # A full heap (MemoryError) in the middle of finish()'s swap: main.py's
    # update resets, and the next boot's ota.boot() finishes the swap.
    (v1_board / "fs" / "ota_config.json").write_text(json.dumps(
        {"url": server + "/v2.bundle", "kind": "bundle", "allow_http": True}))
    body = ("import ota.swap\nmoves = [0]\n_move = ota.swap.move\n"
            "def move(a, b):\n    moves[0] += 1\n    if moves[0] == 4:\n"
            "        raise MemoryError('full heap')\n    _move(a, b)\n"
            "ota.swap.move = move\nimport ota.updater\nota.updater.run()\nprint('app starts')\n")
    # machine first: the chip's files are the host's, before "/" is the board's.
    r = run_mpy("import machine\n" + script(v1_board, body), v1_board, env={"OTA_CHIP": "esp8266"})
    assert "ota: update failed: full heap" in r.stdout and "app starts" not in r.stdout, r.stdout + r.stderr
    assert r.returncode != 0 and (v1_board / "fs" / "app.ota" / "state").read_text() == "swap"
    r = run(script(v1_board, "show('boot', bb.boot('/app'))\nshow('tree', tree('/app'))\n"), v1_board)
    assert shown(r, "boot") == "pending" and shown(r, "tree") == v2_tree()


# As an ESP8266 board starts: the board's filesystem is "/" and sys.path the
# firmware's; the library is in /lib as `otatool deploy --mpy` put it. (The
# emulated `esp` module is not imported here: the firmware's costs no heap.)
ESP8266_START = """
import os, sys, vfs, gc
vfs.umount("/")
vfs.mount(vfs.VfsPosix(%r), "/")
os.chdir("/")
sys.path[:] = ["", ".frozen", "/lib"]
"""


ESP8266 = {"OTA_CHIP": "esp8266"}
ESP8266_PATH = ":".join([SHIM, ".frozen"])


def esp8266_update(board, lib, url, heap):
    """On the ESP8266 profile, with lib/ota compiled: ota.update() of the
    bundle at url in a `heap` for everything (this script's code included).
    -> the run (it prints "installed")."""
    install_lib(board, lib)
    src = ESP8266_START % str(board / "fs") + (
        "import ota\n"
        "gc.collect()\n"
        "ota.update(%r, allow_http=True, target=ota.AppBundle('/app'))\n"
        "print('installed')\n" % url)
    return run(src, board, heap=heap, env=ESP8266, path=ESP8266_PATH, check=False)


def esp8266_boots(board):
    """The next reset's ota.boot() in 32 KiB on the ESP8266 profile: what it says."""
    src = ESP8266_START % str(board / "fs") + "import ota\nprint(ota.boot())\n"
    return run(src, board, heap="32k", env=ESP8266, path=ESP8266_PATH).stdout.strip()


def esp8266_updates_and_boots_the_new_version(board, lib, url, heap, tree=None):
    """esp8266_update(), then the reset's ota.boot() runs the new version,
    pending: the app's files are `tree` (v2's by default)."""
    r = esp8266_update(board, lib, url, heap)
    assert r.stdout.split() == ["installed"], r.stdout + r.stderr
    assert esp8266_boots(board) == "pending"
    r = run(script(board, "show('tree', tree('/app'))\n"), board)
    assert shown(r, "tree") == (tree or v2_tree())


def test_esp8266_profile_installs_a_compressed_bundle_with_its_2k_window_in_a_44k_heap(
        v1_board, server, compiled_lib, bundles, tmp_path):
    # What it costs today (docs/API.md): 42 KiB where an uncompressed bundle
    # needs 33, against a goal of its window (2 KiB: window_bits 11) and
    # 2 KiB more. This holds the line (with 3 KiB for the heap's layout)
    # until ota.inflate gets there.
    from otatool.compressed import WINDOW_BITS_SMALL, compress
    (tmp_path / "www" / "v2.bundlez").write_bytes(compress(bundles[1],
                                                           window_bits=WINDOW_BITS_SMALL))
    esp8266_updates_and_boots_the_new_version(v1_board, compiled_lib, server + "/v2.bundlez",
                                              "44k")


def test_file_names_of_every_character_a_name_may_have_still_install_in_32k(
        v1_board, server, compiled_lib, tmp_path):
    # Names are checked on the board character by character. Taken out of a
    # str, each character became an interned string for good: a bundle
    # whose names use ~80 different characters needed 42 KiB.
    chars = string.ascii_letters + string.digits + "!#$%&'()+,-.;=@[]^_`{}~ "
    files = dict(V2)
    for i in range(0, len(chars), 8):
        files["n/%sx.py" % chars[i:i + 8].strip()] = b"N = %d\n" % i
    (tmp_path / "www" / "v3.bundle").write_bytes(build(files, "1.10.0", "demo"))
    esp8266_updates_and_boots_the_new_version(v1_board, compiled_lib, server + "/v3.bundle",
                                              "32k", after(v1_tree(), files, ["lib/extra.py"]))


def test_esp8266_profile_updates_in_a_32k_heap_from_compiled_code(v1_board, server, compiled_lib):
    esp8266_updates_and_boots_the_new_version(v1_board, compiled_lib, server + "/v2.bundle",
                                              "32k")
    # That was the ESP8266 profile: its `esp` module, and no esp32 module (no
    # firmware OTA on an ESP8266).
    r = run("import esp\nprint(esp.flash_id(), esp.flash_size())\n"
            "try:\n    import esp32\nexcept ImportError:\n    print('no esp32')\n",
            v1_board, env={"OTA_CHIP": "esp8266"})
    assert r.stdout.split() == [str(0x1640EF), str(4 << 20), "no", "esp32"]


def test_esp8266_bundle_target_alone_fits_a_32k_heap_for_100_files(tmp_path, compiled_lib):
    # The bundle code's own share: a 100-file, 200 KiB bundle fed from a file
    # on the board (no HTTP client) with everything compiled and a 32 KiB heap.
    board = tmp_path / "board"
    write_files(str(board / "fs" / "app"), V0)
    install_lib(board, compiled_lib)
    files = {"m%d/f%03d.py" % (i % 7, i): bytes([65 + i % 26]) * 2048 for i in range(100)}
    (board / "fs" / "in.bundle").write_bytes(build(files, "1.0.0"))
    src = ESP8266_START % str(board / "fs") + (
        "import ota\ngc.collect()\n"
        "class Client:\n    def get_image_size(self):\n        return os.stat('/in.bundle')[6]\n"
        "t = ota.AppBundle('/app')\nt.begin(Client())\n"
        "with open('/in.bundle', 'rb') as f:\n"
        "    n = 1\n    while n:\n        n = f.readinto(t.window())\n        t.commit(n)\n"
        "t.finish()\nprint('done')\n")
    r = run(src, board, heap="32k", env={"OTA_CHIP": "esp8266"}, path=":".join([SHIM, ".frozen"]))
    assert r.stdout.split() == ["done"]
    r = run(script(board, "show('tree', tree('/app'))\n"), board)
    assert shown(r, "tree") == after(digest_tree(V0), files)


def test_app_directory_must_be_an_absolute_path(tmp_path):
    board = tmp_path / "board"
    (board / "fs").mkdir(parents=True)
    r = run(script(board, "for p in ('app', '/app/../x', '/'):\n    try:\n        ota.AppBundle(p)\n"
                          "    except ota.OTAError as e:\n        print(e.name)\n"), board)
    assert r.stdout.split() == ["ESP_ERR_INVALID_ARG"] * 3


def host_tree(root):
    return {os.path.relpath(os.path.join(d, f), root).replace(os.sep, "/"):
            sha(open(os.path.join(d, f), "rb").read()) for d, _, names in os.walk(root) for f in names}


def test_cpython_runs_the_same_update_and_rollback(tmp_path, bundles):
    # The second runtime: no mount, the app directory is a host path.
    app = tmp_path / "app"
    write_files(str(app), V0)
    (tmp_path / "in.bundle").write_bytes(bundles[1])
    src = ("import ota, ota.bundle_boot as bb\n"
           "data = open(%r, 'rb').read()\n"
           "class C:\n    def get_image_size(self):\n        return len(data)\n"
           "t = ota.AppBundle(%r)\nt.begin(C())\nmv, p = memoryview(data), 0\n"
           "while p < len(data):\n    w = t.window()\n    n = min(len(w), len(data) - p)\n"
           "    w[:n] = mv[p:p + n]\n    p += n\n    t.commit(n)\n"
           "t.finish()\nprint(bb.boot(%r))\n" % (str(tmp_path / "in.bundle"), str(app), str(app)))
    r = run_cpython(src, tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["pending"]
    assert host_tree(app) == after(digest_tree(V0), V2, V2_DELETE)
    r = run_cpython("import ota.bundle_boot as bb\nbb.rollback(%r)\n" % str(app), tmp_path)
    assert r.returncode == 0, r.stderr
    assert host_tree(app) == digest_tree(V0)


def test_a_bundle_compressed_for_a_bigger_board_is_refused_with_no_mem_and_v1_stays(
        v1_board, server, compiled_lib, bundles, tmp_path):
    # window_bits 15 (a 32 KiB window) in a 44 KiB heap that takes the 2 KiB
    # one: one clear error, ESP_ERR_NO_MEM (0x101), not a MemoryError from
    # inside the inflater; nothing is staged and 1.0.0 still boots.
    from otatool.compressed import compress
    (tmp_path / "www" / "v2.bundle15").write_bytes(compress(bundles[1], window_bits=15))
    r = esp8266_update(v1_board, compiled_lib, server + "/v2.bundle15", "44k")
    assert r.stdout.splitlines()[-1] == ("OTAError: (257, 'compressed update: its 32768-byte "
                                         "window does not fit the heap')"), r.stdout + r.stderr
    assert esp8266_boots(v1_board) == "valid"
    r = run(script(v1_board, "show('tree', tree('/app'))\n"), v1_board)
    assert shown(r, "tree") == v1_tree()
