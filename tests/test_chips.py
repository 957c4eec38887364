"""One table of chips (lib/ota/chips.py) for the board and the host
tools: an app for any chip the board code accepts is also accepted by
`otatool image info` and `otatool sign`, and an image for a chip without OTA
app slots is named for what it is."""
import subprocess
import sys

import pytest
from esptool.bin_image import ESP8266ROMFirmwareImage, ImageSegment
from esptool.targets import CHIP_DEFS

from conftest import LIB, run_mpy
from otatool.appimage import make_app_image

sys.path.insert(0, LIB)
from ota.chips import CHIPS  # noqa: E402
from ota.image import ImageValidator  # noqa: E402
from ota import OTAError  # noqa: E402


@pytest.mark.parametrize("chip_id", sorted(CHIPS))
def test_the_chip_table_says_what_esptool_says(chip_id):
    name, irom_lo, irom_hi, drom_lo, drom_hi = CHIPS[chip_id]
    esptool_chip = CHIP_DEFS[name]
    assert esptool_chip.IMAGE_CHIP_ID == chip_id
    assert (irom_lo << 16, irom_hi << 16) == (esptool_chip.IROM_MAP_START, esptool_chip.IROM_MAP_END)
    assert (drom_lo << 16, drom_hi << 16) == (esptool_chip.DROM_MAP_START, esptool_chip.DROM_MAP_END)


def otatool(*argv, cwd):
    return subprocess.run([sys.executable, "-m", "otatool", *argv], capture_output=True, text=True,
                          timeout=120, cwd=cwd)


@pytest.mark.parametrize("chip", ["esp32s2", "esp32c6"])
def test_an_app_the_board_accepts_is_accepted_by_image_info_and_sign(tmp_path, chip):
    app = tmp_path / "app.bin"
    app.write_bytes(make_app_image(version="1.4.0", chip=chip, size=80 * 1024))
    chip_id = next(i for i, c in CHIPS.items() if c[0] == chip)
    board = ImageValidator(chip_id, 1 << 20)  # the board's own check
    board.feed(memoryview(app.read_bytes()))
    board.done()
    info = otatool("image", "info", str(app), cwd=tmp_path)
    assert info.returncode == 0, info.stderr
    assert "%s app image" % chip in info.stdout
    assert otatool("keygen", "-o", "k.pem", cwd=tmp_path).returncode == 0
    signed = otatool("sign", str(app), "--key", "k.pem", "--url", "app.bin", cwd=tmp_path)
    assert signed.returncode == 0, signed.stderr
    assert "for %s" % chip in signed.stdout


def esp8266_image():
    image = ESP8266ROMFirmwareImage()
    image.segments = [ImageSegment(0x40100000, b"\x11" * 2048), ImageSegment(0x3FFE8000, b"\x22" * 512)]
    image.entrypoint = 0x40100004
    return image.save(None)[1]


def test_an_esp8266_image_is_called_one_by_the_host_tool(tmp_path):
    (tmp_path / "fw.bin").write_bytes(esp8266_image())
    info = otatool("image", "info", "fw.bin", cwd=tmp_path)
    assert info.returncode == 2 and info.stderr.count("\n") == 1
    assert "an image for esp8266" in info.stderr and "chip id" not in info.stderr


ON_THE_BOARD = """
import binascii
from ota import OTAError
from ota.image import ImageValidator
try:
    ImageValidator(0, 1 << 20).feed(memoryview(binascii.unhexlify(%r)))
except OTAError as e:
    print(e.name, e)
"""


def test_an_esp8266_image_offered_to_an_esp32_is_called_one_by_the_board(board_dir):
    out = run_mpy(ON_THE_BOARD % esp8266_image()[:64].hex(), board_dir).stdout
    assert out.startswith("ESP_ERR_INVALID_VERSION") and "image is for esp8266, this chip is esp32" in out


def test_an_app_for_another_family_member_is_named_by_the_board():
    with pytest.raises(OTAError) as e:
        ImageValidator(0, 1 << 20).feed(memoryview(make_app_image(chip="esp32c6")))
    assert "image is for esp32c6, this chip is esp32" in str(e.value)
