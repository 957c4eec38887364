"""A new user installs otatool from a built wheel into a fresh venv and, from
a directory that is not this checkout, does what README.md shows: the demo,
images, bundles, a signed update on an emulated board, and the campaign
server; and updates on an emulated board from an installation that is
read-only, as a system site-packages is. An editable install would hide a
file the wheel forgot."""
import contextlib
import glob
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time

import pytest

from conftest import REPO
from otatool.appimage import make_app_image
from otatool.serve import start_server

# What a copy of the checkout leaves out: what a build or a run made.
NOT_SOURCE = shutil.ignore_patterns(".git", ".venv", "build", "dist", "*.egg-info", "__pycache__",
                                    ".pytest_cache", ".hypothesis", ".ota-board")


@pytest.fixture(scope="module")
def user(tmp_path_factory):
    """A venv with only the wheel (and what it depends on) installed, and an
    empty working directory outside the checkout."""
    root = tmp_path_factory.mktemp("wheel")
    source = root / "source"
    shutil.copytree(REPO, source, ignore=NOT_SOURCE)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
                    "-w", str(root / "dist"), str(source)],
                   check=True, capture_output=True, timeout=600)
    shutil.rmtree(source)  # nothing of the checkout is left to lean on
    wheel, = glob.glob(str(root / "dist" / "otatool-*.whl"))
    subprocess.run([sys.executable, "-m", "venv", str(root / "venv")], check=True, timeout=120)
    subprocess.run([str(root / "venv" / "bin" / "pip"), "install", "--quiet", wheel],
                   check=True, capture_output=True, timeout=900)
    home = root / "home"
    home.mkdir()
    return User(root / "venv" / "bin", home)


class User:
    def __init__(self, bin_dir, home):
        self.bin, self.home = bin_dir, home
        self.env = {k: v for k, v in os.environ.items()
                    if k not in ("PYTHONPATH", "VIRTUAL_ENV", "OTA_BOARD", "OTA_CHIP")
                    and "proxy" not in k.lower()}
        self.env["PATH"] = str(bin_dir) + os.pathsep + os.environ.get("PATH", "")

    def run(self, *argv, timeout=300, env=None):
        """`otatool ARGV` (or another program of the venv) in the user's
        directory, with `env` added to the user's environment."""
        exe = str(self.bin / argv[0]) if (self.bin / argv[0]).exists() else argv[0]
        return subprocess.run([exe, *argv[1:]], cwd=self.home, env=dict(self.env, **(env or {})),
                              capture_output=True, text=True, timeout=timeout)

    def ok(self, *argv, timeout=300, env=None):
        proc = self.run(*argv, timeout=timeout, env=env)
        assert proc.returncode == 0, "%s failed:\n%s%s" % (argv, proc.stdout, proc.stderr)
        return proc.stdout

    def start(self, *argv):
        return subprocess.Popen([str(self.bin / argv[0]), *argv[1:]], cwd=self.home, env=self.env,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def first_line_matching(proc, pattern, seconds=60):
    """Read a server's output until a line matches; -> the match."""
    deadline = time.monotonic() + seconds
    seen = []
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        seen.append(line)
        m = re.search(pattern, line)
        if m:
            return m
    raise AssertionError("no line matching %r in:\n%s" % (pattern, "".join(seen)))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_installed_tool_runs_from_its_own_files_and_names_its_version(user):
    assert user.ok("otatool", "--version").strip() == "otatool 0.1.0"
    assert user.ok("python", "-m", "otatool", "--version").strip() == "otatool 0.1.0"
    where = user.ok("python", "-c", "import otatool; print(otatool.__file__, otatool.DEVICE_DIR)")
    assert where.startswith(str(user.bin.parent)) and REPO not in where


def test_the_demo_updates_an_emulated_board_from_the_wheel(user):
    out = user.ok("otatool", "demo", "--size", "64")
    assert "done: the board runs ota-demo 2.0.0" in out


def test_images_and_bundles_are_made_and_checked_from_the_wheel(user):
    user.ok("otatool", "image", "make", "--version", "3.1.0", "--chip", "esp32s3", "-o", "s3.bin")
    assert "version:        3.1.0" in user.ok("otatool", "image", "info", "s3.bin")
    app = user.home / "app"
    app.mkdir()
    (app / "app_main.py").write_text("print('hello from the bundle')\n")
    user.ok("otatool", "bundle", str(app), "--version", "1.0.0", "-o", "app.bundle")
    assert (user.home / "app.bundle").read_bytes()[:4] != b""


def test_a_signed_update_lands_on_an_emulated_board_set_up_by_the_wheel(user):
    www = user.home / "www"
    www.mkdir()
    user.ok("otatool", "image", "make", "--version", "1.2.0", "-o", "www/app-1.2.0.bin")
    key = re.search(r"^([A-Za-z0-9+/]{43}=)$", user.ok("otatool", "keygen", "-o", "k.pem"), re.M)
    assert key, "keygen printed no public key"
    user.ok("otatool", "sign", "www/app-1.2.0.bin", "--key", "k.pem", "--url", "app-1.2.0.bin",
            "-o", "www/latest.manifest.json")
    server = user.start("otatool", "serve", "www", "--port", "0")
    try:
        base = first_line_matching(server, r"at (http://127\.0\.0\.1:\d+)/").group(1)
        user.ok("otatool", "deploy", "--board", "b", "--mpy",
                "--config", "url=%s/latest.manifest.json" % base, "--config", "allow_http=true",
                "--config", "public_key=" + key.group(1))
        boots = user.run("otatool", "board", "--board", "b", "--boots", "2", "--timeout", "120")
    finally:
        server.kill()
        server.wait()
    assert "ota: update installed, rebooting" in boots.stdout, boots.stdout + boots.stderr
    # boot 2 runs the signed 1.2.0 from ota_1, which the manifest offers again
    assert "Loaded app from partition at offset 0x190000" in boots.stderr
    assert "not newer than the running 1.2.0" in boots.stdout, boots.stdout + boots.stderr


def test_the_campaign_server_from_the_wheel_starts_a_campaign_and_serves_its_dashboard(user):
    user.ok("otatool", "image", "make", "--version", "2.4.0", "-o", "fleet-2.4.0.bin")
    port = free_port()
    server = user.start("otatool", "server", "--port", str(port), "--db", "fleet.sqlite")
    try:
        password = first_line_matching(server, r"password (\S+)").group(1)
        admin = ["curl", "--silent", "--show-error", "--max-time", "30", "--user",
                 "admin:" + password, "--write-out", "\n%{http_code}"]
        base = "http://127.0.0.1:%d" % port
        upload = user.ok(*admin, "-F", "file=@fleet-2.4.0.bin", base + "/admin/ota/upload")
        body, status = upload.rsplit("\n", 1)
        assert status == "201", upload
        name = json.loads(body)["file_name"]
        start = user.ok(*admin, base + "/admin/ota/start?fileName=" + name)
        body, status = start.rsplit("\n", 1)
        assert status == "201", start
        assert json.loads(body)["version"] == "2.4.0"
        # The dashboard's templates and stylesheet came with the wheel.
        sign_in = user.ok("curl", "--silent", "--show-error", "--max-time", "30", "--location",
                          base + "/")
        assert "<h1>Sign in</h1>" in sign_in and 'name="password"' in sign_in, sign_in[:500]
        css = user.ok("curl", "--silent", "--fail", "--max-time", "30",
                      base + "/static/dashboard.css")
        assert "table.stack" in css
    finally:
        server.kill()
        server.wait()


# ------------------------------------------------- a read-only installation

@contextlib.contextmanager
def read_only(path):
    """`path` read-only, as a system site-packages or a read-only container
    layer is: a read-only bind mount over it as root (root writes through
    permission bits), chmod a-w otherwise."""
    if os.geteuid() != 0:
        subprocess.run(["chmod", "-R", "a-w", path], check=True)
        try:
            yield
        finally:
            subprocess.run(["chmod", "-R", "u+w", path], check=True)
        return
    mounted = subprocess.run(["mount", "--bind", path, path], capture_output=True, text=True)
    if mounted.returncode:
        pytest.skip("root, and no bind mount here: %s" % mounted.stderr.strip())
    try:
        subprocess.run(["mount", "-o", "remount,ro,bind", path], check=True, timeout=60)
        yield
    finally:
        subprocess.run(["umount", path], check=True, timeout=60)


@pytest.fixture
def read_only_shim(user):
    """The installed shim, with no .mpy files next to it (other tests may
    have built them) and its site-packages read-only -> the shim's directory."""
    shim = user.ok("python", "-c", "import otatool; print(otatool.SHIM_DIR)").strip()
    shutil.rmtree(os.path.join(shim, "__pycache__"), ignore_errors=True)
    with read_only(os.path.dirname(os.path.dirname(shim))):
        with pytest.raises(OSError):  # it is read-only, for root too
            open(os.path.join(shim, "probe"), "w").close()
        yield shim


def run_board(user, shim, script, board, heap, env, path=""):
    """`script` on the installed unix port, as the emulated board with the
    installed shim (and `path`, the board's compiled lib, when given)."""
    env = dict(user.env, OTA_BOARD=str(board), MICROPYPATH=":".join(
        p for p in (shim, path, ".frozen") if p), **env)
    return subprocess.run([str(user.bin / "micropython"), "-X", "heapsize=" + heap, "-c", script],
                          env=env, cwd=str(board), capture_output=True, text=True, timeout=300)


def shim_cache(cache_home):
    """The board's modules the shim compiled into a user cache directory."""
    return sorted(os.path.basename(p) for p in glob.glob(
        str(cache_home / "otatool" / "shim-mpy" / "*" / "mpy*" / "*.mpy")))


BOARD_MODULES = ["_chip.mpy", "_env.mpy", "_esp32.mpy", "_flash.mpy", "_machine.mpy", "_part.mpy"]


def test_from_a_read_only_install_a_firmware_ota_fits_64k_with_the_shim_cached_per_user(
        user, read_only_shim):
    from test_memory_budget import MAIN
    image = make_app_image(version="2.0.0", size=512 * 1024)
    www = user.home / "fw-www"
    www.mkdir()
    (www / "fw.bin").write_bytes(image)
    user.ok("otatool", "deploy", "--board", "fw", "--mpy")
    cache = user.home / "xdg-cache"
    server, base, _ = start_server(str(www), log=lambda line: None)
    try:
        r = run_board(user, read_only_shim, MAIN % (base + "/fw.bin"), user.home / "fw", "64k",
                      {"XDG_CACHE_HOME": str(cache)}, str(user.home / "fw" / "fs" / "lib"))
    finally:
        server.shutdown()
        server.server_close()
    assert r.stdout.split() == ["boot", "ota_1", str(len(image))], r.stdout + r.stderr
    assert shim_cache(cache) == BOARD_MODULES
    assert not os.path.exists(os.path.join(read_only_shim, "__pycache__"))


def test_from_a_read_only_install_the_esp8266_profile_leaves_most_of_32k_free(
        user, read_only_shim, tmp_path):
    # test_board's measure: compiled from source in the heap instead, the
    # shim's machine module left no 8 KiB piece for the app's buffers
    from test_board import IMPORT_COST
    r = run_board(user, read_only_shim, IMPORT_COST % ("machine", 8192), tmp_path, "32k",
                  {"OTA_CHIP": "esp8266", "XDG_CACHE_HOME": str(tmp_path / "cache")})
    assert r.returncode == 0, r.stdout + r.stderr
    before, after = map(int, r.stdout.split())
    assert after > before / 2, (before, after)
    assert shim_cache(tmp_path / "cache") == BOARD_MODULES


def test_from_a_read_only_install_an_esp8266_bundle_update_fits_32k_with_the_shim_in_dot_cache(
        user, read_only_shim):
    from test_bundle import ESP8266_START, FEED_BUNDLE
    app = user.home / "ro-app"
    app.mkdir()
    (app / "app_main.py").write_text("print('hello from 1.1.0')\n")
    board = user.home / "small"
    # compiled for the ESP8266 profile (no line numbers), as on such a board
    user.ok("otatool", "deploy", "--board", str(board), "--mpy", env={"OTA_CHIP": "esp8266"})
    user.ok("otatool", "bundle", str(app), "--version", "1.1.0", "-o",
            str(board / "fs" / "in.bundle"))
    home = user.home / "nobody-home"
    # the power-on first, as otatool board's start-up does (the shim's
    # machine module), then the board's filesystem as /, and the bundle
    # target fed from /in.bundle: the library's 32 KiB budget
    script = ("import machine\n" + ESP8266_START % str(board / "fs")
              + "import ota\ngc.collect()\n" + FEED_BUNDLE + "print('installed')\n")
    # no XDG_CACHE_HOME (empty counts as unset): ~/.cache
    r = run_board(user, read_only_shim, script, board, "32k",
                  {"OTA_CHIP": "esp8266", "HOME": str(home), "XDG_CACHE_HOME": ""})
    assert r.stdout.split() == ["installed"], r.stdout + r.stderr
    assert (board / "fs" / "app" / "app_main.py").read_text() == "print('hello from 1.1.0')\n"
    assert shim_cache(home / ".cache") == BOARD_MODULES
