"""esp32.Partition on the emulated board is the firmware's: its signatures
(checked against the micropython-esp32-stubs, with every place where the
firmware's C code differs from the stubs named), its errors, and set_boot's
full image check."""
import ast
import json
import os
import sysconfig

import pytest

from conftest import run_mpy
from shimutil import OTA_1, device, fresh_board, image, state

# micropython-esp32-stubs installs esp32.pyi into site-packages
STUB = os.path.join(sysconfig.get_paths()["purelib"], "esp32.pyi")

# Where ports/esp32/esp32_partition.c and the stubs disagree: call -> what the
# firmware does ("ok" or the exception's type).
DIFFERENCES = {
    # mp_arg_check_num(.., 1, 2, false): an int id is BOOT or RUNNING
    "Partition(1)": "ok",
    # esp32_partition_find parses MP_ARG_INT args: keywords allowed too
    "Partition.find(type=0, subtype=255)": "ok",
    # ... and it has a block_size argument the stubs lack
    "Partition.find(0, 255, None, 512)": "ok",
    "Partition.find(block_size=512)": "ok",
    # MP_DEFINE_CONST_FUN_OBJ_VAR_BETWEEN: no keyword arguments
    "p.readblocks(block_num=0, buf=bytearray(16))": "TypeError",
    "p.readblocks(block_num=0, buf=bytearray(16), offset=0)": "TypeError",
    # MP_DEFINE_CONST_FUN_OBJ_3: ioctl always takes (op, arg)
    "p.ioctl(5)": "TypeError",
    "p.ioctl(op=5, arg=0)": "TypeError",
    "p.ioctl(op=5)": "TypeError",
}
# Return values: readblocks returns None, not the stubs' bool.
RETURNS = {"readblocks": "None"}
VALUES = {"id": "'ota_1'", "block_size": "4096", "type": "0", "subtype": "255",
          "label": "None", "block_num": "0", "buf": "bytearray(16)", "offset": "0",
          "op": "5", "arg": "0"}


def stub_forms():
    """(method, positional-only params, other params, defaults) of each
    Partition signature (every overload) in the stubs."""
    tree = ast.parse(open(STUB).read())
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Partition")
    for f in cls.body:
        if isinstance(f, ast.FunctionDef):
            a = f.args
            names = lambda args: [x.arg for x in args if x.arg not in ("self", "cls")]
            yield f.name, names(a.posonlyargs), names(a.args), len(a.defaults)


def stub_calls():
    """The calls the stubs allow: all positionally, and each keyword-able
    parameter by keyword. -> {call source: "ok"}"""
    calls = {}
    for name, posonly, other, _ in stub_forms():
        target = {"__init__": "Partition", "find": "Partition.find",
                  "mark_app_valid_cancel_rollback": "Partition.mark_app_valid_cancel_rollback"}
        fn = target.get(name, "p." + name)
        params = posonly + other
        calls["%s(%s)" % (fn, ", ".join(VALUES[x] for x in params))] = "ok"
        if other:
            pos = ", ".join(VALUES[x] for x in posonly)
            kws = ", ".join("%s=%s" % (x, VALUES[x]) for x in other)
            calls["%s(%s)" % (fn, ", ".join(x for x in (pos, kws) if x))] = "ok"
    return calls


def run_calls(board_dir, calls):
    script = """
import esp32, json
from esp32 import Partition
p = Partition("ota_1")
out = {}
for src in %r:
    try:
        exec("r = " + src)
        out[src] = "ok"
    except Exception as e:
        out[src] = type(e).__name__ if isinstance(e, TypeError) else "ok"
print("RESULT " + json.dumps(out))
""" % sorted(calls)
    return device(script, board_dir)


def test_every_call_the_stubs_allow_works_unless_the_firmware_differs(board_dir):
    fresh_board(board_dir)
    calls = stub_calls()
    assert len(calls) >= 14
    expected = dict(calls)
    expected.update({k: v for k, v in DIFFERENCES.items() if k in calls})
    assert run_calls(board_dir, calls) == expected


def test_each_named_difference_from_the_stubs_is_real(board_dir):
    fresh_board(board_dir)
    got = run_calls(board_dir, DIFFERENCES)
    assert got == DIFFERENCES
    # and the stubs really say otherwise: every difference names a call the
    # stubs forbid (TypeError there) or allow (ok there)
    allowed = stub_calls()
    for call, firmware in DIFFERENCES.items():
        assert allowed.get(call, "TypeError") != firmware, call


def test_constants_and_return_values(board_dir):
    fresh_board(board_dir)
    out = device("""
import esp32, json
P = esp32.Partition
p = P("ota_1")
print("RESULT " + json.dumps([P.BOOT, P.RUNNING, P.TYPE_APP, P.TYPE_DATA,
                              repr(p.readblocks(0, bytearray(4))), repr(p.ioctl(5, 0)),
                              repr(p.info()), repr(p)]))
""", board_dir)
    tree = ast.parse(open(STUB).read())
    stub_consts = {n.target.id: n.value.value for c in tree.body if isinstance(c, ast.ClassDef)
                   and c.name == "Partition" for n in c.body if isinstance(n, ast.AnnAssign)}
    assert out[:4] == [stub_consts[k] for k in ("BOOT", "RUNNING", "TYPE_APP", "TYPE_DATA")]
    assert out[4] == RETURNS["readblocks"] and out[5] == "4096"
    assert out[6] == "(0, 17, 1638400, 1572864, 'ota_1', False)"
    assert out[7] == ("<Partition type=0, subtype=17, address=1638400, size=1572864, "
                      "label=ota_1, encrypted=0>")


def test_finding_partitions_gives_the_micropython_ota_layout(board_dir):
    fresh_board(board_dir)
    out = device("""
import esp32, json
P = esp32.Partition
print("RESULT " + json.dumps([[p.info() for p in P.find()],
                              [p.info()[4] for p in P.find(P.TYPE_DATA)],
                              [p.info()[4] for p in P.find(P.TYPE_DATA, label="vfs")],
                              [p.info()[4] for p in P.find(1, 0)],
                              P.find(label="nope")]))
""", board_dir)
    assert out == [[[0, 0x10, 0x10000, 0x180000, "ota_0", False],
                    [0, 0x11, 0x190000, 0x180000, "ota_1", False]],
                   ["nvs", "otadata", "phy_init", "vfs"], ["vfs"], ["otadata"], []]


def test_errors_are_the_firmwares(board_dir):
    fresh_board(board_dir)
    out = device("""
import esp32, json
P = esp32.Partition
out = []
for f in (lambda: P("nope"), lambda: P(7), lambda: P("ota_1", block_size=512),
          lambda: P("vfs").set_boot()):
    try:
        f()
        out.append("ok")
    except Exception as e:
        out.append([type(e).__name__] + list(e.args))
print("RESULT " + json.dumps(out))
""", board_dir)
    assert out == [["OSError", 2], ["ValueError"], out[2], ["OSError", -0x1503,
                                                            "ESP_ERR_OTA_VALIDATE_FAILED"]]
    assert out[2][0] == "TypeError"


def test_the_next_update_partition_alternates(board_dir):
    fresh_board(board_dir)
    assert device("""
import esp32, json
P = esp32.Partition
print("RESULT " + json.dumps([P(x).get_next_update().info()[4] for x in ("ota_0", "ota_1", "vfs")]
                             + [P(P.RUNNING).get_next_update().ioctl(5, 0)]))
""", board_dir) == ["ota_1", "ota_0", "ota_0", 4096]


def test_small_blocks_go_through_the_sector_cache(board_dir):
    board = fresh_board(board_dir)
    board.write_flash(OTA_1, bytes(range(256)) * 16)
    out = device("""
import esp32, json
p = esp32.Partition("ota_1", 512)
p.writeblocks(2, b"\\xaa" * 512)          # one block inside a sector
print("RESULT " + json.dumps([p.ioctl(4, 0), p.ioctl(5, 0), p.ioctl(6, 0)]))
""", board_dir)
    assert out == [3072, 512, -22]
    data = board.read_flash(OTA_1, 4096)
    assert data == (bytes(range(256)) * 16)[:1024] + b"\xaa" * 512 + (bytes(range(256)) * 16)[1536:]


def install(board, img, slot_addr=OTA_1):
    board.write_flash(slot_addr, img + b"\xff" * (-len(img) % 4096))


SET_BOOT = """
import esp32, json
P = esp32.Partition
try:
    P("ota_1").set_boot()
    out = "ok"
except OSError as e:
    out = list(e.args)
print("RESULT " + json.dumps([out, P(P.BOOT).info()[4]]))
"""


def flip(img, at):
    b = bytearray(img)
    b[at] ^= 0x01
    return bytes(b)


@pytest.mark.parametrize("what", ["truncated", "bit flipped in code", "bit flipped in header",
                                  "wrong chip", "checksum byte", "empty slot"])
def test_set_boot_rejects_an_image_esp_idf_would_not_boot(board_dir, what):
    board = fresh_board(board_dir)
    img = image()
    bad = {"truncated": img[:len(img) // 2],
           "bit flipped in code": flip(img, len(img) // 2),
           "bit flipped in header": flip(img, 12),   # chip id byte
           "wrong chip": image(chip="esp32s3"),
           "checksum byte": flip(img, len(img) - 33),
           "empty slot": b""}[what]
    install(board, bad)
    proc = run_mpy(SET_BOOT, board_dir)
    out = json.loads(proc.stdout.split("RESULT ")[1])
    assert out == [[-5379, "ESP_ERR_OTA_VALIDATE_FAILED"], "ota_0"], proc.stderr
    assert "E esp_image:" in proc.stderr
    assert state(board)[1] == (0xFFFFFFFF, "UNDEFINED")   # otadata untouched


def test_set_boot_accepts_an_esptool_image_and_marks_it_new(board_dir):
    board = fresh_board(board_dir)
    install(board, image())
    assert device(SET_BOOT, board_dir) == ["ok", "ota_1"]
    assert state(board) == [(1, "VALID"), (2, "NEW")]


def test_set_boot_checks_the_chip_of_the_board(board_dir):
    board = fresh_board(board_dir, "esp32s3")
    install(board, image(chip="esp32s3"))
    env = {"OTA_CHIP": "esp32s3"}
    assert device(SET_BOOT, board_dir, env=env) == ["ok", "ota_1"]
    install(board, image(chip="esp32c3"))
    assert device(SET_BOOT, board_dir, env=env)[0] == [-5379, "ESP_ERR_OTA_VALIDATE_FAILED"]


def test_set_boot_on_the_slot_already_selected_only_renews_its_state(board_dir):
    board = fresh_board(board_dir)
    device("import esp32\nesp32.Partition('ota_0').set_boot()\nprint('RESULT 0')", board_dir)
    # ESP-IDF rewrites the active entry: same seq, state NEW
    assert state(board) == [(1, "NEW"), (0xFFFFFFFF, "UNDEFINED")]


def test_marking_the_app_valid_confirms_a_new_app_for_good(board_dir):
    board = fresh_board(board_dir)
    install(board, image())
    device(SET_BOOT, board_dir)
    confirm = """
import esp32, json
P = esp32.Partition
P.mark_app_valid_cancel_rollback()
print("RESULT " + json.dumps(P(P.RUNNING).info()[4]))
"""
    assert device(confirm, board_dir) == "ota_1"       # booted as PENDING_VERIFY
    assert state(board) == [(1, "VALID"), (2, "VALID")]
    assert device(confirm, board_dir) == "ota_1"       # stays


def test_the_update_calls_work_the_same_on_cpython(board_dir):
    from conftest import run_cpython
    board = fresh_board(board_dir)
    install(board, image())
    proc = run_cpython(SET_BOOT, board_dir)
    assert proc.stdout.split("RESULT ")[1].strip() == '["ok", "ota_1"]', proc.stderr
    proc = run_cpython("import esp32\nesp32.Partition.mark_app_valid_cancel_rollback()\n"
                       "print(esp32.Partition(esp32.Partition.RUNNING).info()[4])", board_dir)
    assert proc.stdout.strip() == "ota_1", proc.stderr
    assert state(board) == [(1, "VALID"), (2, "VALID")]
