"""`otatool board` and its Python API: a board that powers on, runs boot.py
and main.py from its own filesystem, and boots again when reset."""
import json
import os
import subprocess
import sys

from conftest import LIB, MICROPYTHON, SHIM
from otatool.board import Board
from shimutil import OTA_1, fresh_board, image


def files(board, **scripts):
    for name, src in scripts.items():
        with open(os.path.join(board.fs_dir, name + ".py"), "w") as f:
            f.write(src)


COUNT = """
try:
    n = int(open("/count").read())
except OSError:
    n = 0
open("/count", "w").write(str(n + 1))
"""


def test_otatool_board_runs_main_py_and_boots_again_after_each_reset_boundedly(tmp_path):
    board = fresh_board(tmp_path / "b")
    files(board, main=COUNT + "import machine\nprint('main', n)\nmachine.reset()\n")
    proc = subprocess.run([sys.executable, "-m", "otatool", "board", "--board", board.path,
                           "--boots", "3"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1    # the last boot did not end in the REPL
    assert proc.stdout.splitlines() == ["main 0", "main 1", "main 2"]
    assert proc.stderr.count("ended: reset") == 3
    assert open(os.path.join(board.fs_dir, "count")).read() == "3"


def test_the_boards_filesystem_is_its_root_and_sys_path_the_firmwares(tmp_path):
    board = fresh_board(tmp_path / "b")
    os.makedirs(os.path.join(board.fs_dir, "lib", "pkg"))
    with open(os.path.join(board.fs_dir, "lib", "pkg", "__init__.py"), "w") as f:
        f.write("WHERE = 'lib'\n")
    files(board, boot="import sys\nprint('boot', sys.path)\n", main="""
import os, json, pkg
open("/a.txt", "w").write(pkg.WHERE)
os.mkdir("/d")
os.rename("a.txt", "d/b.txt")             # relative to "/": see docs/HOST-BOARD.md
print(json.dumps([os.getcwd(), sorted(os.listdir("/")), os.listdir("/d")]))
""")
    first = board.boot()
    assert first.reason == "exit" and first.slot == "ota_0"
    lines = first.stdout.splitlines()
    assert lines[0] == "boot ['', '.frozen', '/lib']"
    assert json.loads(lines[1]) == ["/", ["boot.py", "d", "lib", "main.py"], ["b.txt"]]
    assert os.path.exists(os.path.join(board.fs_dir, "d", "b.txt"))


def test_a_failing_boot_py_skips_main_py(tmp_path):
    board = fresh_board(tmp_path / "b")
    files(board, boot="raise ValueError('boom')\n", main="print('main ran')\n")
    b = board.boot()
    assert b.reason == "exception"
    assert "ValueError: boom" in b.stdout and "main ran" not in b.stdout


def test_a_soft_reset_runs_boot_py_and_main_py_again_on_the_same_app(tmp_path):
    board = fresh_board(tmp_path / "b")
    files(board, boot="print('boot.py')\n", main=COUNT + """
import machine
print("main", n, machine.reset_cause())
if n == 0:
    machine.soft_reset()
""")
    boots = board.run(boots=5)
    assert [b.reason for b in boots] == ["soft_reset", "exit"]
    assert boots[0].slot == "ota_0" and boots[1].slot is None     # no bootloader the 2nd time
    assert boots[1].stdout.splitlines() == ["boot.py", "main 1 1"]  # still the power-on cause
    assert board.running_slot() == "ota_0"


def test_a_host_power_cut_hits_the_first_boot_only(tmp_path):
    board = fresh_board(tmp_path / "b")
    files(board, main=COUNT + """
import esp32
esp32.Partition("ota_1").writeblocks(0, bytes(4096))
print("written", n)
""")
    boots = board.run(boots=3, env={"OTA_POWER_CUT_AT": "3"})   # 1, 2: otadata init
    assert [b.reason for b in boots] == ["power_cut", "exit"]
    assert "written" not in boots[0].stdout and "written 1" in boots[1].stdout


def test_an_update_that_never_confirms_itself_rolls_back(tmp_path):
    board = fresh_board(tmp_path / "b")
    with open(os.path.join(board.fs_dir, "new.bin"), "wb") as f:
        f.write(image("7.0.0"))
    files(board, main="""
import esp32, machine, os
P = esp32.Partition
run = P(P.RUNNING)
print("running", run.info()[4])
if run.info()[4] == "ota_0" and "new.bin" in os.listdir("/"):
    nxt = run.get_next_update()
    buf = bytearray(4096)
    with open("/new.bin", "rb") as f:
        i = 0
        while True:
            n = f.readinto(buf)
            if not n:
                break
            nxt.writeblocks(i, buf)
            i += 1
    os.remove("/new.bin")
    nxt.set_boot()
machine.reset()
""")
    boots = board.run(boots=3)
    assert [b.slot for b in boots] == ["ota_0", "ota_1", "ota_0"]
    assert [b.reason for b in boots] == ["reset"] * 3
    assert board.otadata_states() == [(1, "VALID", True), (2, "ABORTED", True)]
    assert board.read_flash(OTA_1 + 0x30, 32).rstrip(b"\0") == b"7.0.0"  # app desc version


def test_a_board_gets_the_chips_heap_and_the_repos_lib_on_request(tmp_path):
    board = Board(tmp_path / "b", heap="64k", lib=True)
    b = board.run_script("import gc, ota\nprint(gc.mem_free() + gc.mem_alloc(), ota.__file__)")
    total, path = b.stdout.split()
    assert 60 * 1024 < int(total) <= 64 * 1024
    assert path == "/lib/ota/__init__.py"
    assert Board(tmp_path / "c").heap == "110k"


def test_import_esp32_alone_makes_a_board_in_the_current_directory(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTA_")}
    env["MICROPYPATH"] = SHIM + ":" + LIB + ":.frozen"
    proc = subprocess.run([MICROPYTHON, "-c", """
import esp32, struct
p = esp32.Partition(esp32.Partition.RUNNING)
b = bytearray(256)
p.readblocks(0, b, 0x20)   # esp_app_desc_t after the image and segment headers
magic, = struct.unpack("<I", b[:4])
print(hex(magic), p.info()[4], bytes(b[16:48]).rstrip(b"\\0"), bytes(b[48:80]).rstrip(b"\\0"))
"""], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert proc.stdout.split() == ["0xabcd5432", "ota_0", "b'1.0.0'", "b'ota-factory'"], proc.stderr
    assert os.path.getsize(tmp_path / ".ota-board" / "flash.bin") == 4 << 20


def test_the_esp8266_profile_has_machine_but_no_esp32(tmp_path):
    board = Board(tmp_path / "b", chip="esp8266")
    b = board.run_script("""
import machine
try:
    import esp32
    print("esp32!")
except ImportError:
    print("no esp32", machine.reset_cause() == machine.PWRON_RESET, len(machine.unique_id()))
""")
    assert b.stdout.split() == ["no", "esp32", "True", "4"]
    assert board.heap == "32k"


IMPORT_COST = """
import gc
gc.collect()
before = gc.mem_free()
import %s
gc.collect()
after = gc.mem_free()
block = bytearray(%d)   # and still a piece big enough for the app's buffers
print(before, after)
"""


def test_the_shim_leaves_most_of_a_32k_heap_free(board_dir):
    from conftest import run_mpy
    fresh_board(board_dir)
    # a sector buffer next to the firmware modules; twice that next to the
    # ESP8266's machine module (app-bundle OTA at 32k)
    for modules, block, env in (("esp32", 4096, None), ("machine", 8192, {"OTA_CHIP": "esp8266"})):
        proc = run_mpy(IMPORT_COST % (modules, block), board_dir, heap="32k", env=env)
        before, after = map(int, proc.stdout.split())
        assert after > before / 2, (modules, before, after)
