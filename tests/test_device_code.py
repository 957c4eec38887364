"""lib/ota runs on the firmware of real boards, not only on the unix port the
other tests use: what stock ESP8266 firmware leaves out must not be used.

The unix port has every feature, so a call to str.partition() passes every
other test and still fails on an ESP8266 (ports/esp8266/mpconfigport.h sets
MICROPY_PY_BUILTINS_STR_PARTITION, _STR_SPLITLINES, _STR_CENTER and
MICROPY_PY_DELATTR_SETATTR to 0). These tests read the source instead.
"""
import ast
import os
from urllib.parse import quote

import pytest

from conftest import LIB, run_mpy

# The ota package's modules: lib/ota's, and lib/native/ota's (native code).
MODULES = sorted(n for d in ("ota", os.path.join("native", "ota"))
                 for n in os.listdir(os.path.join(LIB, d)) if n.endswith(".py"))

# Methods of str/bytes the ESP8266 firmware is built without.
MISSING_METHODS = {"partition", "rpartition", "splitlines", "center"}
# Builtins it is built without.
MISSING_BUILTINS = {"setattr", "delattr", "compile", "execfile"}
# Modules no MicroPython firmware has (house rule: no CPython-only modules).
CPYTHON_ONLY = {"typing", "dataclasses", "pathlib", "abc", "enum", "functools", "itertools",
                "contextlib", "threading", "subprocess", "logging", "shutil", "tempfile"}


def source(name):
    path = os.path.join(LIB, "ota", name)
    if not os.path.exists(path):
        path = os.path.join(LIB, "native", "ota", name)
    with open(path) as f:
        return f.read()


def tree(name):
    return ast.parse(source(name), name)


@pytest.mark.parametrize("name", MODULES)
def test_no_feature_the_esp8266_firmware_leaves_out(name):
    found = []
    for node in ast.walk(tree(name)):
        if isinstance(node, ast.Attribute) and node.attr in MISSING_METHODS:
            found.append((node.lineno, ".%s()" % node.attr))
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and \
                node.func.id in MISSING_BUILTINS:
            found.append((node.lineno, "%s()" % node.func.id))
    assert found == [], "%s uses what ESP8266 firmware has not: %s" % (
        name, ", ".join("line %d: %s" % f for f in sorted(found)))


@pytest.mark.parametrize("name", MODULES)
def test_no_chr_whose_characters_stay_interned(name):
    # MicroPython interns the one-character string chr() makes, for good: a
    # loop over bytes through chr() leaves up to ~100 strings in the heap
    # (and may make the interning table grow by kilobytes in one piece).
    found = [node.lineno for node in ast.walk(tree(name))
             if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
             and node.func.id == "chr"]
    assert found == [], "%s calls chr() at line(s) %s" % (name, found)


@pytest.mark.parametrize("name", MODULES)
def test_no_cpython_only_module_is_imported(name):
    imported = set()
    for node in ast.walk(tree(name)):
        if isinstance(node, ast.Import):
            imported.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            imported.add(node.module.split(".")[0])
    assert imported & CPYTHON_ONLY == set(), name


def test_the_check_finds_what_it_looks_for(tmp_path, monkeypatch):
    # The version_key of an earlier session: fine on the unix port, an
    # AttributeError on an ESP8266.
    (tmp_path / "ota").mkdir()
    (tmp_path / "ota" / "v.py").write_text('core, sep, pre = "1.2-rc1".partition("-")\n'
                                           'setattr(object(), "x", 1)\n')
    monkeypatch.setattr("test_device_code.LIB", str(tmp_path))
    with pytest.raises(AssertionError, match=r"line 1: \.partition\(\), line 2: setattr\(\)"):
        test_no_feature_the_esp8266_firmware_leaves_out("v.py")


def test_every_numbered_failure_text_is_the_one_its_module_means():
    # The firmware update path raises OTAError(code, (_T_NAME, values...));
    # ota/texts.py lists each text with its number and constant's name.
    import re
    texts = tree("texts.py")
    with open(os.path.join(LIB, "ota", "texts.py")) as f:
        listed = {(int(n), name) for n, name in re.findall(r"#\s*(\d+)\s+_T_(\w+)$", f.read(), re.M)}
    defined = set()
    for name in MODULES:
        defined |= {(int(n), t) for t, n in re.findall(r"^_T_(\w+) = const\((\d+)\)$",
                                                        source(name), re.M)}
    assert defined and defined == listed
    count = [len(node.value.elts) for node in texts.body if isinstance(node, ast.Assign)
             and node.targets[0].id == "TEXTS"]
    assert sorted(n for n, _ in listed) == list(range(count[0]))


def test_the_check_in_percent_encodes_as_urllib_and_interns_no_character(tmp_path):
    # A character taken out of a str (or made by chr()) becomes an interned
    # string for good on MicroPython: the check-in's query encoding works on
    # bytes, so that a boot's check-in leaves the download its heap.
    text = "".join(map(chr, range(32, 127))) + "\u00e9\u20ac"
    r = run_mpy("import micropython, ota.checkin\n"
                "s = %r\n"
                "micropython.qstr_info()\n"
                "print(ota.checkin._quote(s))\n"
                "micropython.qstr_info()\n" % text, tmp_path)
    pools, quoted, after = r.stdout.splitlines()
    assert quoted == quote(text, safe=""), r.stderr
    assert after.split("n_qstr=")[1] == pools.split("n_qstr=")[1]
