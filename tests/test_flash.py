"""`otatool flash` end to end, without a board.

The "board" on the serial side is esp32-mock-bootloader (PyPI): it answers
esptool's ROM and stub protocol on a loopback TCP port and keeps what esptool
writes in its process's memory (a 4 MiB FlashImage). The only way to that
memory is the protocol itself, so each test reads the flash back with the
real `esptool read-flash`, puts it into an emulated board's flash.bin
(otatool.board) and powers that board on: its bootloader must find the new
app in ota_0, otadata blank. The firmware is built the way users build it:
`esptool merge-bin` of the emulated board's own bootloader and partition
table and a real app image (otatool.appimage).

Every otatool and esptool run is a subprocess with a timeout; every port is
on 127.0.0.1.
"""
import os
import socket
import subprocess
import sys
import time

import pytest
from esptool.bin_image import (ESP8266ROMFirmwareImage, ESP8266V2FirmwareImage, ImageSegment,
                                LoadFirmwareImage)

from otatool import flash
from otatool.appimage import make_app_image
from otatool.board import Board, shim_module

TABLE = shim_module("_table")
OTADATA = shim_module("_otadata")
OTA_0, OTA_1, OTADATA_AT, OTADATA_SIZE = 0x10000, 0x190000, 0xD000, 0x2000
FLASH_SIZE = 0x400000
BOX = ("\u2502", "\u256d", "\u2570", "\u2500")  # │ ╭ ╰ ─


def run(*argv, timeout=60):
    return subprocess.run([sys.executable, *argv], capture_output=True, text=True,
                          timeout=timeout)


def otatool(*argv, timeout=60):
    return run("-m", "otatool", "flash", *argv, timeout=timeout)


def esptool(*argv, timeout=60):
    r = run("-m", "esptool", *argv, timeout=timeout)
    assert r.returncode == 0, r.stdout + r.stderr
    return r


def assert_one_line(r, status, *words):
    assert r.returncode == status, r.stdout + r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("otatool: error: "), r.stderr
    assert not any(c in r.stdout + r.stderr for c in BOX), r.stdout + r.stderr
    assert "Traceback" not in r.stdout + r.stderr
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


@pytest.fixture
def mock(tmp_path):
    """Start an esp32-mock-bootloader for `chip`; returns its socket:// URL.
    Its registry goes to tmp_path, and it exits by itself after 120 s."""
    procs = []

    def start(chip="esp32"):
        port_file = tmp_path / ("mock-port-%d" % len(procs))
        proc = subprocess.Popen(
            [sys.executable, "-m", "esp32_mock_bootloader.cli", "run", "--port", "0",
             "--port-file", str(port_file), "--chip", chip, "--timeout", "120"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            env=dict(os.environ, ESP32_MOCK_BOOTLOADER_STATE_DIR=str(tmp_path / "mock-state")))
        procs.append(proc)
        for _ in range(100):
            if port_file.exists() and port_file.read_text().strip():
                return "socket://127.0.0.1:%s" % port_file.read_text().strip()
            assert proc.poll() is None, "mock bootloader exited"
            time.sleep(0.05)
        raise AssertionError("mock bootloader did not start")

    yield start
    for proc in procs:
        proc.terminate()
        proc.wait(10)


@pytest.fixture
def silent_port():
    """A loopback port that accepts connections and never answers. (url,
    connected()): connected() tells whether anything connected, i.e. whether
    esptool was started at all."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)

    def connected():
        listener.setblocking(False)
        try:
            listener.accept()[0].close()
            return True
        except BlockingIOError:
            return False

    yield "socket://127.0.0.1:%d" % listener.getsockname()[1], connected
    listener.close()


class Pieces:
    """The emulated board's own bootloader and partition table, and apps."""

    def __init__(self, d):
        fresh = Board(d / "fresh", "esp32")
        fresh.create()
        region = fresh.read_flash(0x1000, 0x7000)
        image = LoadFirmwareImage("esp32", region)
        self.bootloader = region[:image.data_length + 32]  # + the appended SHA-256
        self.table = fresh.read_flash(0x8000, TABLE.LEN)
        self.app = make_app_image("2.0.0", project_name="flashed")
        self.old_app = make_app_image("1.0.0", project_name="from-an-old-ota")
        # otadata after one OTA: seq 2 (VALID) selects ota_1
        self.otadata = OTADATA.pack(2, OTADATA.VALID) + b"\xff" * (OTADATA_SIZE - 32)
        # what an ESP-IDF build flashes at otadata (ota_data_initial.bin)
        self.blank_otadata = b"\xff" * OTADATA_SIZE
        # CONFIG_PARTITION_TABLE_OFFSET=0x9000: nvs moves up behind the table
        self.table_9000 = TABLE.build(((1, 0x02, 0xA000, 0x3000, "nvs", False),)
                                      + TABLE.OTA_4MIB[1:])
        self.dir = d
        for name in ("bootloader", "table", "app", "old_app", "otadata", "blank_otadata",
                     "table_9000"):
            (d / (name + ".bin")).write_bytes(getattr(self, name))

    def path(self, name):
        return str(self.dir / name)

    def merged(self, target_offset, dump=False):
        """`esptool merge-bin` of the three, the file starting at target_offset;
        dump: also otadata and ota_1 of a board after an OTA, as in a
        `read-flash` copy of such a board."""
        out = self.path("merged-%x%s.bin" % (target_offset, "-dump" * dump))
        more = [hex(OTADATA_AT), self.path("otadata.bin"), hex(OTA_1),
                self.path("old_app.bin")] if dump else []
        if not os.path.exists(out):
            esptool("--chip", "esp32", "merge-bin", "--target-offset", hex(target_offset),
                    "-o", out, "0x1000", self.path("bootloader.bin"),
                    "0x8000", self.path("table.bin"), "0x10000", self.path("app.bin"), *more)
        return out


@pytest.fixture(scope="module")
def pieces(tmp_path_factory):
    return Pieces(tmp_path_factory.mktemp("pieces"))


def after_an_ota_to_ota_1(url, pieces):
    """The mock's flash as a board's after an OTA: otadata selects ota_1,
    which holds a valid app. Written with esptool itself."""
    esptool("--chip", "esp32", "--port", url, "write-flash",
            hex(OTADATA_AT), pieces.path("otadata.bin"), hex(OTA_1), pieces.path("old_app.bin"))


def read_back(url, tmp_path, offset, size):
    # --no-stub: the ROM's request/answer READ_FLASH_SLOW. The mock (0.3.0)
    # streams the stub's READ_FLASH but gives up when an ack is 50 ms late,
    # which a loaded test machine makes happen ("Serial data stream stopped").
    out = tmp_path / ("read-%x.bin" % offset)
    esptool("--chip", "esp32", "--port", url, "--no-stub", "read-flash", hex(offset), hex(size),
            str(out))
    return out.read_bytes()


def board_with(tmp_path, regions):
    """An emulated board whose flash.bin holds `regions` {offset: bytes}
    (read back from the mock), 0xFF elsewhere."""
    content = bytearray(b"\xff" * FLASH_SIZE)
    for offset, data in regions.items():
        content[offset:offset + len(data)] = data
    board = Board(tmp_path / "board", "esp32")
    (tmp_path / "board" / "fs").mkdir(parents=True)
    (tmp_path / "board" / "flash.bin").write_bytes(bytes(content))
    return board


def flashed_board(url, pieces, tmp_path):
    """Read back what matters (bootloader .. end of the app in ota_0, and
    the app in ota_1) into an emulated board."""
    low = read_back(url, tmp_path, 0, OTA_0 + len(pieces.app))
    high = read_back(url, tmp_path, OTA_1, len(pieces.old_app))
    assert low[0x1000:0x1000 + len(pieces.bootloader)] == pieces.bootloader
    assert low[0x8000:0x8000 + TABLE.LEN] == pieces.table
    assert low[OTA_0:] == pieces.app
    return board_with(tmp_path, {0: low, OTA_1: high})


def assert_boots_the_new_app_from_ota_0(board):
    blank = (0xFFFFFFFF, "UNDEFINED", False)
    assert board.otadata_states() == [blank, blank]
    boot = board.boot(timeout=60)
    assert boot.slot == "ota_0", boot.stderr
    assert "Set actual ota_seq=1" in boot.stderr  # what the bootloader does with blank otadata
    assert board.otadata_states()[0] == (1, "VALID", True)


# ------------------------------------------------------------- what users have

@pytest.mark.parametrize("target_offset,dump", [(0x0, False), (0x1000, False), (0x0, True)],
                         ids=["padded-from-0x0", "at-0x1000", "dump-after-an-ota"])
def test_a_merged_firmware_from_esptool_merge_bin_boots_its_app_after_an_ota(
        mock, pieces, tmp_path, target_offset, dump):
    # merge-bin pads from 0x0 unless told --target-offset; MicroPython's
    # firmware.bin starts at the bootloader (0x1000). Each is one file over
    # otadata, so otadata is erased in a copy of it instead of by a second
    # file: that matters for a merged image that holds otadata itself (a
    # dump of a board that had switched to ota_1).
    url = mock()
    after_an_ota_to_ota_1(url, pieces)
    firmware = pieces.merged(target_offset, dump)
    with open(firmware, "rb") as f:
        before = f.read()
    r = otatool("--port", url, firmware)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "otadata 0xD000..0xEFFF erased in this copy" in r.stdout
    assert "Hash of data verified" in r.stdout  # esptool compared the mock's MD5
    with open(firmware, "rb") as f:
        assert f.read() == before  # the user's file is left as it was
    assert_boots_the_new_app_from_ota_0(flashed_board(url, pieces, tmp_path))


def test_bootloader_table_and_app_given_apart_boot_the_app_after_an_ota(mock, pieces, tmp_path):
    url = mock()
    after_an_ota_to_ota_1(url, pieces)
    r = otatool("--port", url, "--bootloader", pieces.path("bootloader.bin"),
                "--partition-table", pieces.path("table.bin"), pieces.path("app.bin"))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "0x00D000 otadata (erased)" in r.stdout
    assert_boots_the_new_app_from_ota_0(flashed_board(url, pieces, tmp_path))


def test_an_app_alone_goes_to_0x10000_of_a_board_flashed_before(mock, pieces, tmp_path):
    # A board flashed once with an older app; then the new app alone, as
    # `esptool write-flash 0x10000 app.bin` would.
    url = mock()
    old = tmp_path / "old-firmware.bin"
    old.write_bytes(open(pieces.merged(0x1000), "rb").read()[:OTA_0 - 0x1000] + pieces.old_app)
    assert otatool("--port", url, str(old)).returncode == 0
    r = otatool("--port", url, pieces.path("app.bin"))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "0x010000 %s" % pieces.path("app.bin") in r.stdout
    assert "otadata left as it is" in r.stdout  # and the tool says it did not erase it
    assert_boots_the_new_app_from_ota_0(flashed_board(url, pieces, tmp_path))


@pytest.mark.parametrize("form", ["idf-build-output", "merged-at-0x1000", "merged-from-0x0"])
def test_addr_file_pairs_as_builds_print_them_boot_the_app_after_an_ota(
        mock, pieces, tmp_path, form):
    # What users copy: an ESP-IDF/MicroPython build's own flash command
    # (ota_data_initial.bin included), and the download page's
    # `write-flash 0x1000 firmware.bin`; or a merge-bin file padded from 0x0.
    url = mock()
    after_an_ota_to_ota_1(url, pieces)
    argv = {"idf-build-output": ["0x1000", pieces.path("bootloader.bin"),
                                 "0x8000", pieces.path("table.bin"),
                                 "0xd000", pieces.path("blank_otadata.bin"),
                                 "0x10000", pieces.path("app.bin")],
            "merged-at-0x1000": ["0x1000", pieces.merged(0x1000)],
            "merged-from-0x0": ["0x0", pieces.merged(0x0)]}[form]
    r = otatool("--port", url, *argv)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "otadata 0xD000..0xEFFF erased in this copy" in r.stdout or \
        "0x00D000 otadata (erased)" in r.stdout
    assert_boots_the_new_app_from_ota_0(flashed_board(url, pieces, tmp_path))


@pytest.mark.parametrize("form", ["pairs", "pieces"])
def test_a_partition_table_at_0x9000_goes_there_and_otadata_is_erased(mock, pieces, tmp_path, form):
    # CONFIG_PARTITION_TABLE_OFFSET=0x9000. The emulated board's bootloader
    # reads its table at 0x8000 only, so this board is read back, not booted.
    url = mock()
    after_an_ota_to_ota_1(url, pieces)
    table, app = pieces.path("table_9000.bin"), pieces.path("app.bin")
    argv = {"pairs": ["0x1000", pieces.path("bootloader.bin"), "0x9000", table, "0x10000", app],
            "pieces": ["--bootloader", pieces.path("bootloader.bin"), "--partition-table", table,
                       app]}[form]
    r = otatool("--port", url, "--partition-table-offset", "0x9000", *argv)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "esp32 0x009000 %s" % table in r.stdout
    flash = read_back(url, tmp_path, 0, OTA_0 + len(pieces.app))
    assert flash[0x1000:0x1000 + len(pieces.bootloader)] == pieces.bootloader
    assert flash[0x8000:0x9000] == b"\xff" * 0x1000  # nothing at the default offset
    assert flash[0x9000:0x9000 + TABLE.LEN] == pieces.table_9000
    assert flash[OTADATA_AT:OTADATA_AT + OTADATA_SIZE] == pieces.blank_otadata  # was ota_1's
    assert flash[OTA_0:] == pieces.app


def esp8266_image(segments=2, size=2048, mode=2, size_freq=0x40):
    """An ESP8266 ("v1") image as esptool writes it (header, segments, checksum)."""
    image = ESP8266ROMFirmwareImage()
    image.segments = [ImageSegment(0x40100000 + i * 0x1000, bytes([i + 1]) * size)
                      for i in range(segments)]
    image.entrypoint, image.flash_mode, image.flash_size_freq = 0x40100004, mode, size_freq
    return image.save(None)[1]


def test_an_esp8266_image_is_written_at_0x0(mock, tmp_path):
    url = mock("esp8266")
    fw = tmp_path / "esp8266.bin"
    fw.write_bytes(esp8266_image())
    r = otatool("--port", url, str(fw))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "esp8266 0x000000 %s" % fw in r.stdout
    assert "Wrote %d bytes" % len(fw.read_bytes()) in r.stdout
    assert "Hash of data verified" in r.stdout and "otadata" not in r.stdout


def esp8266_v2_image(size=2048):
    """An ESP8266 "v2" image as `esptool elf2image --version 2` writes it:
    the IROM segment behind a first header, then a v1 image, then a CRC-32."""
    image = ESP8266V2FirmwareImage()
    image.segments = [ImageSegment(0x40201010, b"\x11" * size),
                      ImageSegment(0x40100000, b"\x22" * size)]
    image.entrypoint, image.flash_mode, image.flash_size_freq = 0x40100004, 2, 0x40
    return image.save(None)


def test_an_esp8266_v2_app_goes_behind_its_bootloader_as_addr_file_pairs(mock, tmp_path):
    # The SDK's way: a v1 second-stage bootloader at 0x0, which the ROM
    # starts, and the v2 app where that bootloader looks (0x1000).
    url = mock("esp8266")
    boot, app = tmp_path / "boot_v1.bin", tmp_path / "app-0x01000.bin"
    boot.write_bytes(esp8266_image(segments=1, size=1024))
    app.write_bytes(esp8266_v2_image())
    r = otatool("--port", url, "0x0", str(boot), "0x1000", str(app))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "esp8266 0x000000 %s" % boot in r.stdout
    assert "esp8266 0x001000 %s" % app in r.stdout
    assert r.stdout.count("Hash of data verified") == 2  # esptool compared the mock's MD5s


def truncated(data):
    return data[:len(data) - 600]


@pytest.mark.parametrize("content,words", [
    (b"\xeb" + esp8266_image()[1:], ("not a firmware image", "first byte 0xEB")),
    (esp8266_v2_image()[:-1] + b"\x00", ("CRC-32 0x00",)),
    (esp8266_v2_image(), ("an ESP8266 v2 image (0xEA)", "ADDR FILE pairs")),
    (esp8266_image()[:5], ("not a firmware image", "5 bytes")),
    (esp8266_image(segments=1)[:1] + b"\x00" + esp8266_image(segments=1)[2:],
     ("0 segments in the header",)),
    (esp8266_image(segments=17, size=16), ("17 segments in the header",)),
    (truncated(esp8266_image()), ("End of file reading segment 0x40101000, length 2048",)),
    (esp8266_image(mode=7), ("invalid flash mode byte 0x07",)),
    (esp8266_image(size_freq=0x70), ("invalid flash size in byte 0x70",)),
    (esp8266_image(size_freq=0x47), ("invalid flash frequency in byte 0x47",)),
    (esp8266_image()[:-1] + b"\x00", ("checksum 0x00, computed",)),
], ids=["magic", "v2-crc", "v2-alone", "short", "no-segments", "17-segments", "past-the-end", "flash-mode",
        "flash-size", "flash-freq", "checksum"])
def test_a_broken_esp8266_image_is_one_line_and_esptool_never_starts(
        silent_port, tmp_path, content, words):
    url, connected = silent_port
    fw = tmp_path / "esp8266.bin"
    fw.write_bytes(content)
    assert_one_line(otatool("--port", url, "--chip", "esp8266", str(fw)), 2, *words)
    assert not connected()


# ------------------------------------------------------------- usage errors

def small_ota_table(tmp_path, slot_size):
    """A partition table file whose two OTA slots hold slot_size bytes each."""
    path = tmp_path / "small-ota-table.bin"
    path.write_bytes(TABLE.build(((1, 0x00, 0xD000, 0x2000, "otadata", False),
                                  (0, 0x10, 0x10000, slot_size, "ota_0", False),
                                  (0, 0x11, 0x20000, slot_size, "ota_1", False))))
    return path


def test_files_of_the_wrong_kind_are_one_line_and_esptool_never_starts(
        silent_port, pieces, tmp_path):
    url, connected = silent_port
    no_ota = tmp_path / "no-ota-table.bin"
    no_ota.write_bytes(TABLE.build(((1, 0x02, 0x9000, 0x6000, "nvs", False),
                                    (0, 0x00, 0x10000, 0x1F0000, "factory", False))))
    elf = tmp_path / "firmware.elf"
    elf.write_bytes(b"\x7fELF" + bytes(100))
    small_ota = small_ota_table(tmp_path, 0x10000)
    big_app = tmp_path / "big-app.bin"
    big_app.write_bytes(make_app_image("2.0.0", size=100 * 1024))
    merged = pieces.merged(0x1000)
    cases = [
        (["/nonexistent/fw.bin"], ("cannot read /nonexistent/fw.bin",)),
        ([str(elf)], ("not a firmware image", "first byte 0x7F")),
        ([pieces.path("bootloader.bin")], ("no partition table at 0x8000", "--bootloader")),
        ([pieces.path("table.bin")], ("not a firmware image", "first byte 0xAA")),
        (["--bootloader", pieces.path("bootloader.bin"), merged],
         ("is a merged firmware", "go with an app image")),
        (["--chip", "esp32c3", merged], ("is an image for esp32, not esp32c3",)),
        (["--partition-table", str(no_ota), pieces.path("app.bin")], ("no OTA partitions",)),
        (["--partition-table", pieces.path("bootloader.bin"), pieces.path("app.bin")],
         ("no valid partition table",)),
        (["--partition-table", str(small_ota), str(big_app)], ("do not fit ota_0 (65536 bytes)",)),
        (["--bootloader", pieces.path("old_app.bin"), pieces.path("app.bin")],
         ("old_app.bin is an app image, not a bootloader",)),
    ]
    for argv, words in cases:
        assert_one_line(otatool("--port", url, *argv), 2, *words)
        assert not connected(), argv


def test_bad_addr_file_pairs_are_one_line_and_esptool_never_starts(silent_port, pieces, tmp_path):
    url, connected = silent_port
    bootloader, table, app = (pieces.path(n) for n in ("bootloader.bin", "table.bin", "app.bin"))
    small_ota = small_ota_table(tmp_path, 0x1000)
    bigger_app = tmp_path / "bigger-app.bin"
    bigger_app.write_bytes(make_app_image("2.0.0", size=8 * 1024))
    elf = tmp_path / "firmware.elf"
    elf.write_bytes(b"\x7fELF" + bytes(100))
    v2 = tmp_path / "app-v2.bin"
    v2.write_bytes(esp8266_v2_image())
    cases = [
        (["0x1000", bootloader, "0x8000"], ("3 arguments", "ADDR FILE pairs")),
        (["1x", bootloader, "0x8000", table], ("'1x' is not a flash address",)),
        (["0x1100", bootloader, "0x8000", table], ("0x1100 does not start a 4 KiB sector",)),
        (["0x1000", pieces.merged(0x1000), "0x8000", table], ("overlaps", "table.bin at 0x8000")),
        (["0x2000", bootloader], ("reads at 0x1000: give it at 0x1000",)),
        (["0x8000", table, "0x20000", app],
         ("an app image at 0x20000", "no app partition (they start at 0x10000, 0x190000)")),
        (["0x8000", str(small_ota), "0x10000", str(bigger_app)], ("do not fit ota_0 (4096 bytes)",)),
        (["0x8000", table, "0xd000", pieces.path("otadata.bin"), "0x10000", app],
         ("would write otadata",)),
        (["0x8000", table, "0x10000", app, "0x300000", str(elf)],
         ("firmware.elf at 0x300000 is not a firmware",)),
        (["0x8000", table], ("give --chip",)),
        (["--bootloader", bootloader, "0x10000", app], ("go with one app FILE",)),
        (["--partition-table-offset", "0x9000", "0x1000", bootloader, "0x9000", table],
         ("partition nvs at 0x9000 lies in the partition table's sector",)),
        (["--partition-table-offset", "0x9000", pieces.merged(0x1000)],
         ("no valid partition table at 0x9000",)),
        (["0x0", str(v2)], ("v2 image (0xEA)", "only a v1 image (0xE9) at 0x0")),
    ]
    for argv, words in cases:
        assert_one_line(otatool("--port", url, *argv), 2, *words)
        assert not connected(), argv
    r = otatool("--port", url, "--partition-table-offset", "0x8800", app)
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert "error: argument --partition-table-offset: flash address 0x8800 does not start" \
        in r.stderr
    assert not connected()


def test_a_merged_firmware_with_a_broken_app_is_refused(silent_port, pieces, tmp_path):
    url, connected = silent_port
    broken = bytearray(open(pieces.merged(0x1000), "rb").read())
    broken[OTA_0 - 0x1000 + 100] ^= 0xFF  # one bit-flipped byte in the app
    fw = tmp_path / "firmware.bin"
    fw.write_bytes(bytes(broken))
    assert_one_line(otatool("--port", url, str(fw)), 2, "at file offset 0xf000", "checksum")
    assert not connected()


# ------------------------------------------------------------- esptool's failures

def test_a_port_nothing_listens_on_is_esptools_one_line_exit_1(pieces):
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()  # nothing listens there now
    r = otatool("--port", "socket://127.0.0.1:%d" % port, pieces.merged(0))
    assert_one_line(r, 1, "esptool: Could not open socket://127.0.0.1:%d" % port,
                    "Connection refused")


def test_a_board_that_never_answers_is_esptools_one_line_exit_1(silent_port, pieces):
    url, connected = silent_port
    r = otatool("--port", url, pieces.merged(0), timeout=120)
    assert_one_line(r, 1, "esptool: Failed to connect to ESP32: No serial data received.")
    assert connected()


@pytest.mark.parametrize("env", [flash.ESPTOOL_ENV, {}], ids=["as-otatool-runs-it", "80-columns"])
def test_esptools_boxed_usage_error_becomes_its_message_on_one_line(pieces, env):
    # What the old `otatool flash` ran into: a second file over the merged
    # image's range. esptool (rich-click) prints that in a box; the parser
    # keeps esptool's words and drops the box, also when it wraps at 80.
    merged = pieces.merged(0x1000)
    r = subprocess.run([sys.executable, "-m", "esptool", "--chip", "esp32", "--port",
                        "socket://127.0.0.1:9", "write-flash", "0x1000", merged,
                        "0xd000", pieces.path("table.bin")],
                       capture_output=True, text=True, timeout=60, env=dict(os.environ, **env))
    assert r.returncode == 2 and "\u2502" in r.stderr  # the box, as users saw it
    line = flash.esptool_error(r.stderr, r.returncode)
    assert "\n" not in line and not any(c in line for c in BOX)
    assert line.startswith("Invalid value for '<address> <filename>...': Detected overlap at "
                           "address: 0xd000 for file: ")
    if env:  # one row: the path is whole
        assert line.endswith("for file: %s." % pieces.path("table.bin"))
