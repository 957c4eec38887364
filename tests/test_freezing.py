"""A firmware built with FROZEN_MANIFEST=manifest.py (docs/FREEZING.md) has
every module of lib/ota frozen in, and keeps what its port freezes anyway.

The manifest is read here as MicroPython's tools/manifestfile.py reads it
(the part of its API that a manifest of ours may use), from the installed
package, which is what the wheel carries; then every file it freezes is
compiled with mpy-cross for ESP32 and ESP8266, as their builds do."""
import os
import subprocess

import pytest

import otatool
from conftest import LIB, MPY_CROSS


class Manifest:
    """What a firmware build freezes from a manifest: [(target path, file)].

    As manifestfile.py in freeze mode: $(VAR) in paths, paths relative to
    the manifest being read, a directory meaning its manifest.py, the same
    manifest never read twice, `options` with defaults, package() taking
    every .py below base_path/package_path, module() one file."""

    def __init__(self, **path_vars):
        self.path_vars = path_vars
        self.frozen = []
        self.visited = set()

    def path(self, path):
        for name, value in self.path_vars.items():
            path = path.replace("$(%s)" % name, value)
        return os.path.abspath(path)

    def include(self, manifest, **kwargs):
        manifest = self.path(manifest)
        if os.path.isdir(manifest):
            manifest = os.path.join(manifest, "manifest.py")
        if manifest in self.visited:
            return
        self.visited.add(manifest)
        with open(manifest) as f:
            code = f.read()
        cwd = os.getcwd()
        os.chdir(os.path.dirname(manifest))
        try:
            exec(code, {"include": self.include, "package": self.package, "module": self.module,
                        "options": Options(kwargs)})
        finally:
            os.chdir(cwd)

    def package(self, package_path, files=None, base_path=".", opt=None):
        assert files is None, "not used by our manifests"
        base = self.path(base_path)
        for dirpath, _, names in os.walk(os.path.join(base, package_path), followlinks=True):
            for name in names:
                if name.endswith(".py"):
                    path = os.path.join(dirpath, name)
                    self.frozen.append((os.path.relpath(path, base), path))

    def module(self, module_path, base_path=".", opt=None):
        path = os.path.join(self.path(base_path), module_path)
        assert os.path.isfile(path), path
        self.frozen.append((module_path, path))


class Options:
    def __init__(self, kwargs):
        self.__dict__.update(kwargs)

    def defaults(self, **kwargs):
        for k, v in kwargs.items():
            self.__dict__.setdefault(k, v)


@pytest.fixture
def port(tmp_path):
    """A port directory whose boards/manifest.py freezes one module of its own,
    as ports/esp32 and ports/esp8266 freeze theirs."""
    (tmp_path / "boards").mkdir()
    (tmp_path / "modules").mkdir()
    (tmp_path / "modules" / "inisetup.py").write_text("x = 1\n")
    (tmp_path / "boards" / "manifest.py").write_text(
        'module("inisetup.py", base_path="$(PORT_DIR)/modules")\n')
    return str(tmp_path)


def ota_modules():
    # lib/ota's modules and lib/native/ota's (native code), as ota/...
    return sorted(os.path.relpath(os.path.join(d, n), base)
                  for base in (LIB, os.path.join(LIB, "native"))
                  for d, _, names in os.walk(os.path.join(base, "ota")) for n in names
                  if n.endswith(".py"))


def test_the_manifest_freezes_every_module_of_ota_and_keeps_the_ports_own(port):
    m = Manifest(PORT_DIR=port)
    m.include(otatool.FROZEN_MANIFEST)
    targets = sorted(target for target, _ in m.frozen)
    assert targets == sorted(ota_modules() + ["inisetup.py"])
    assert len(ota_modules()) > 10


def test_every_module_the_manifest_freezes_compiles_for_esp32_and_esp8266(port):
    m = Manifest(PORT_DIR=port)
    m.include(otatool.FROZEN_MANIFEST)
    failed = []
    for target, path in m.frozen:
        for arch in ("xtensawin", "xtensa"):  # what ports/esp32 and ports/esp8266 pass
            p = subprocess.run([MPY_CROSS, "-march=" + arch, "-s", target, "-o", os.devnull,
                                path], capture_output=True, text=True)
            if p.returncode:
                failed.append("%s (%s): %s" % (target, arch, p.stderr.strip()))
    assert failed == []


def test_a_board_manifest_that_includes_it_keeps_the_board_modules_once(port, tmp_path):
    # What docs/FREEZING.md shows for ESP8266_GENERIC: the board's manifest
    # (which includes the port's), then ota's; or ota alone.
    board = tmp_path / "board"
    board.mkdir()
    (board / "manifest.py").write_text(
        'include("$(PORT_DIR)/boards/manifest.py")\ninclude(%r)\n' % otatool.FROZEN_MANIFEST)
    m = Manifest(PORT_DIR=port)
    m.include(str(board))
    assert sorted(t for t, _ in m.frozen) == sorted(ota_modules() + ["inisetup.py"])

    (board / "manifest.py").write_text('include(%r, port_manifest=False)\n'
                                       % otatool.FROZEN_MANIFEST)
    alone = Manifest(PORT_DIR=port)
    alone.include(str(board))
    assert sorted(t for t, _ in alone.frozen) == ota_modules()
