"""The image factory makes what esptool itself accepts as real app images."""
import hashlib
import re
import struct
import subprocess
import sys

import pytest

from otatool import appimage
from otatool.appimage import CHIP_IDS, make_app_image, make_elf

SIZES = [None, 12 * 1024, 200 * 1024]


def esptool_image_info(data, tmp_path):
    """`esptool image-info` (the CLI) on data, parsed into a dict."""
    path = tmp_path / "app.bin"
    path.write_bytes(data)
    out = subprocess.run([sys.executable, "-m", "esptool", "image-info", str(path)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    text = out.stdout
    info = {"segments": re.findall(r"^\s+\d+\s+0x([0-9a-f]+)\s+0x([0-9a-f]+)\s+0x[0-9a-f]+\s+(.+)$",
                                   text, re.M)}
    for key, pattern in [("chip_id", r"Chip ID: (\d+)"), ("segment_count", r"^Segments: (\d+)"),
                         ("checksum", r"Checksum: .*\((\w+)\)"),
                         ("hash", r"Validation hash: .*\((\w+)\)"),
                         ("version", r"App version: (.*)"), ("project", r"Project name: (.*)"),
                         ("secure_version", r"Secure version: (\d+)"),
                         ("elf_sha256", r"ELF file SHA256: ([0-9a-f]+)"),
                         ("idf", r"ESP-IDF: (.*)"), ("min_rev", r"Minimal chip revision: v(\d+\.\d+)"),
                         ("max_rev", r"Maximal chip revision: v(\d+\.\d+)")]:
        m = re.search(pattern, text, re.M)
        info[key] = m.group(1).strip() if m else None
    return info


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("chip", sorted(CHIP_IDS))
def test_esptool_reads_factory_image_as_valid_app_of_that_chip(chip, size, tmp_path):
    data = make_app_image(version="2.3.4", chip=chip, size=size, secure_version=3,
                          project_name="demo", idf_ver="v5.3.1")
    info = esptool_image_info(data, tmp_path)
    assert info["chip_id"] == str(CHIP_IDS[chip])
    assert (info["checksum"], info["hash"]) == ("valid", "valid")
    assert (info["version"], info["project"], info["idf"], info["secure_version"]) == \
        ("2.3.4", "demo", "v5.3.1", "3")
    assert int(info["segment_count"]) == len(info["segments"]) >= 4
    # The descriptor opens the first segment, which is DROM: what ESP-IDF's
    # esp_ota_get_app_description-style readers rely on.
    assert "DROM" in info["segments"][0][2]
    assert struct.unpack_from("<I", data, 32)[0] == appimage.APP_DESC_MAGIC
    kinds = " ".join(s[2] for s in info["segments"])
    assert "IROM" in kinds and "IRAM" in kinds and "DRAM" in kinds
    if size:
        assert abs(len(data) - size) <= 64


def test_descriptor_carries_the_sha256_of_the_elf_it_was_made_from(tmp_path):
    data = make_app_image(version="1.2.3", chip="esp32c3", size=8192)
    elf = make_elf(version="1.2.3", chip="esp32c3", size=8192)
    assert esptool_image_info(data, tmp_path)["elf_sha256"] == hashlib.sha256(elf).hexdigest()
    assert data[0xB0:0xB0 + 32] == hashlib.sha256(elf).digest()


def test_big_image_has_real_layout_with_text_on_its_own_flash_page(tmp_path):
    data = make_app_image(chip="esp32", size=1536 * 1024)
    info = esptool_image_info(data, tmp_path)
    assert abs(len(data) - 1536 * 1024) <= 64
    assert (info["checksum"], info["hash"]) == ("valid", "valid")
    assert any("PADDING" in s[2] for s in info["segments"])
    irom = [s for s in info["segments"] if "IROM" in s[2]]
    assert irom and int(irom[0][1], 16) % 0x10000 == 0x20


def test_chip_revision_range_lands_in_the_header(tmp_path):
    info = esptool_image_info(make_app_image(chip="esp32", min_rev=300, max_rev=301), tmp_path)
    assert (info["min_rev"], info["max_rev"]) == ("3.0", "3.1")


def test_same_arguments_give_the_same_bytes_and_others_differ():
    a = make_app_image(version="1.0.0", size=5000)
    assert make_app_image(version="1.0.0", size=5000) == a
    assert make_app_image(version="1.0.1", size=5000) != a
    assert make_app_image(version="1.0.0", size=5000, secure_version=1) != a


def test_too_long_version_is_refused():
    with pytest.raises(ValueError):
        make_app_image(version="x" * 32, size=4096)


def test_shipped_default_app_is_what_the_factory_makes(tmp_path):
    # Regenerate with: .venv/bin/python -m otatool.appimage
    with open(appimage.DEFAULT_APP, "rb") as f:
        shipped = f.read()
    assert shipped == appimage.default_app_image()
    assert 8 * 1024 <= len(shipped) <= 16 * 1024
    info = esptool_image_info(shipped, tmp_path)
    assert (info["chip_id"], info["version"], info["project"]) == ("0", "1.0.0", "ota-factory")
    assert (info["checksum"], info["hash"]) == ("valid", "valid")
