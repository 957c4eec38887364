"""A user who mistypes a command line gets one line on stderr that names
the bad value and what is allowed: exit status 2 for a bad command line, 1
when the command was right but the work failed; never a traceback, and
nothing silently accepted. (The servers' own rows are in
test_server_cli_errors.py.)"""
import os
import shlex
import subprocess
import sys

import pytest

from otatool.appimage import make_app_image
from otatool.compressed import compress

# (argv, exit status, text the one line must hold)
BAD_COMMAND_LINES = [
    ("image make --version 1.0.0 --size 999999999999 -o x.bin", 2, "999999999999"),
    ("image make --version 1.0.0 --size -5 -o x.bin", 2, "-5 is out of range"),
    ("image make --version 1.0.0 --size 0 -o x.bin", 2, "0 is out of range"),
    ("image make --version 1.0.0 --size big -o x.bin", 2, "'big' is not an integer"),
    ("image make --version 1.0.0 --secure-version -1 -o x.bin", 2, "-1 is out of range"),
    ("image make --version 1.0.0 --secure-version 4294967296 -o x.bin", 2, "4294967296"),
    ("image make --version '' -o x.bin", 2, "1 to 31 printable ASCII"),
    ("image make --version 1.0.0 --project %s -o x.bin" % ("p" * 32), 2, "p" * 32),
    ("image make --version 1.0.0 --chip esp9999 -o x.bin", 2, "esp9999"),
    ("image make --version 1.0.0 -o no/such/dir/x.bin", 2, "no/such/dir/x.bin"),
    ("image info no-such.bin", 2, "no-such.bin"),
    ("image info a-file", 2, "not an ESP app image"),
    ("image info cut.z", 2, "cut.z: compressed update is"),
    ("image compress a-file -o x.bin", 2, "not an app image or app bundle to compress"),
    ("image compress no-such.bin -o x.bin", 2, "no-such.bin"),
    ("image compress app.z -o x.bin", 2, "app.z: already a compressed update"),
    ("image compress app.bin", 2, "-o/--output"),
    ("image compress app.bin -o x.bin --window 3000", 2, "'3000' is not a window size"),
    ("image compress app.bin -o x.bin --window 2k", 2, "'2k' is not a window size"),
    ("image compress app.bin -o x.bin --window-bits 16", 2, "16 is out of range"),
    ("image compress app.bin -o x.bin --window 2048 --window-bits 11", 2, "not allowed with"),
    ("image compress app.bin -o x.bin --block-size 5000", 2, "not a multiple of 4096"),
    ("image compress app.bin -o x.bin --block-size 2097152", 2, "2097152 is out of range"),
    ("image compress app.bin -o no/such/dir/x.bin", 2, "no/such/dir/x.bin"),
    ("bundle app --version 1.0.0 -o x.bin --window 2048", 2, "need --compress"),
    ("board --board a-file", 2, "a-file is a file, not a directory"),
    ("board --heap banana", 2, "'banana' is not a heap size"),
    ("board --heap 1k", 2, "'1k' is not a heap size"),
    ("board --boots 0", 2, "0 is out of range"),
    ("board --chip esp9999", 2, "esp9999"),
    ("demo --keep a-file", 2, "a-file is a file, not a directory"),
    ("demo --size 0", 2, "0 is out of range"),
    ("demo --size -3", 2, "-3 is out of range"),
    ("deploy --board a-file", 2, "a-file is a file, not a directory"),
    ("deploy --board b --port /dev/ttyUSB9", 2, "not allowed with argument"),
    ("deploy --board b --config novalue", 2, "KEY=VALUE"),
    ("deploy --board b --ca no-such.pem", 2, "no-such.pem"),
    ("deploy --port /dev/no-such-tty", 2, "/dev/no-such-tty"),
    ("bundle a-file --version 1.0.0 -o b.bundle", 2, "a-file: not a directory"),
    ("sign no-such.bin --key k.pem --url x.bin", 2, "no-such.bin"),
    ("keygen -o no/such/dir/k.pem", 2, "no/such/dir/k.pem"),
    ("no-such-command", 2, "no-such-command"),
]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    (d / "a-file").write_text("not an image\n")
    (d / "app.bin").write_bytes(make_app_image())
    (d / "app.z").write_bytes(compress(make_app_image()))
    (d / "cut.z").write_bytes(compress(make_app_image())[:-1])
    (d / "app").mkdir()
    (d / "app" / "main.py").write_text("print(1)\n")
    return d


@pytest.mark.parametrize("argv,status,named", BAD_COMMAND_LINES,
                         ids=[row[0][:50] for row in BAD_COMMAND_LINES])
def test_a_bad_command_line_gets_one_clear_line(workdir, argv, status, named):
    proc = subprocess.run([sys.executable, "-m", "otatool", *shlex.split(argv)], cwd=workdir,
                          capture_output=True, text=True, timeout=120)
    lines = proc.stderr.splitlines()
    assert proc.returncode == status, proc.stderr
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert lines[0].startswith("otatool") and named in lines[0], lines[0]
    assert not os.path.exists(workdir / "x.bin")
