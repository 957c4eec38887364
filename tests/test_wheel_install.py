"""A new user installs otatool from a built wheel into a fresh venv and, from
a directory that is not this checkout, does what README.md shows: the demo,
images, bundles, a signed update on an emulated board, and the campaign
server. An editable install would hide a file the wheel forgot."""
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

    def run(self, *argv, timeout=300):
        """`otatool ARGV` (or another program of the venv) in the user's directory."""
        exe = str(self.bin / argv[0]) if (self.bin / argv[0]).exists() else argv[0]
        return subprocess.run([exe, *argv[1:]], cwd=self.home, env=self.env, capture_output=True,
                              text=True, timeout=timeout)

    def ok(self, *argv, timeout=300):
        proc = self.run(*argv, timeout=timeout)
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
