"""`otatool flash`: first-time flash of an OTA-capable MicroPython firmware.

Takes what a build leaves, in one of three forms:

* a merged image (`firmware.bin` of a MicroPython build, or the output of
  `esptool merge-bin`): bootloader, partition table at 0x8000 and app in one
  file, starting at the chip's bootloader offset or padded from 0x0;
* the pieces apart: `--bootloader B --partition-table PT APP`;
* an app image alone, written at 0x10000 (ota_0 in MicroPython's OTA tables),
  like `esptool write-flash 0x10000 app.bin`.

ESP8266 images (no partition table) are written at 0x0.

Every file is checked before esptool starts: images as esptool's own
bin_image parses them (magic, segment count, segments within the file,
checksum, appended SHA-256, flash mode/size/frequency bytes) plus the chip
and the app descriptor; the partition table as the bootloader reads it
(entries, MD5 row) with otadata, ota_0 and ota_1. When a table is written,
otadata is erased in the same write-flash, so the bootloader starts the new
app in ota_0 and not an app an earlier OTA left in ota_1. Registered by
deploy.register (cli.py's COMMANDS lists "deploy").
"""
import argparse
import contextlib
import io
import os
import re
import struct
import subprocess
import sys
import tempfile

from otatool.appimage import APP_DESC_MAGIC
from otatool.cli import CliError, CliFailure

ESPTOOL_TIMEOUT_S = 900  # bounded, yet above a 4 MiB write at 115200 baud (~6 min)
APP_OFFSET = 0x10000     # an app alone: where esptool users and MicroPython's ota_0 put it
TABLE_OFFSET = 0x8000    # CONFIG_PARTITION_TABLE_OFFSET, MicroPython's and IDF's default
TABLE_MAX = 0xC00        # ESP_PARTITION_TABLE_MAX_LEN
MAX_SEGMENTS = 16        # ESP_IMAGE_MAX_SEGMENTS
FLASH_MODES = (0, 1, 2, 3)  # qio, qout, dio, dout: the header byte the ROM reads
OTADATA, OTA_0, OTA_1 = (1, 0x00), (0, 0x10), (0, 0x11)  # (type, subtype)

HELP = """\
FILE is one of:
  a merged image (MicroPython's firmware.bin, or `esptool merge-bin` output)
      holding bootloader, partition table (at 0x8000) and app; it may start
      at the chip's bootloader offset (0x1000 on ESP32) or at 0x0;
  an app image alone: written at 0x10000 (ota_0); otadata is left as it is
      unless --partition-table is given, then the app goes to ota_0 of that
      table;
  an ESP8266 firmware image: written at 0x0.
With --bootloader and/or --partition-table, FILE must be the app image.
Whenever a partition table is written, otadata is erased with it so the new
app in ota_0 boots. Nothing is written unless every file checks out."""


def register(subparsers):
    p = subparsers.add_parser(
        "flash", help="first-time flash of an OTA-capable MicroPython firmware (esptool)",
        description="Check a MicroPython firmware and write it with esptool, erasing otadata "
                    "so the new app boots.",
        epilog=HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--port", required=True,
                   help="serial port of the board (or an esptool URL such as socket://host:port)")
    p.add_argument("file", metavar="FILE", help="merged firmware, app image or ESP8266 image")
    p.add_argument("--bootloader", metavar="B",
                   help="bootloader image, written at the chip's bootloader offset")
    p.add_argument("--partition-table", metavar="PT",
                   help="binary partition table (gen_esp32part output), written at 0x8000")
    p.add_argument("--chip", default="auto",
                   help="esp32, esp32s3, ..., esp8266 or auto (default: from the image header)")
    p.add_argument("--baud", type=int, default=460800, help="flashing baud rate (default 460800)")
    p.set_defaults(func=flash_command)


# ---------------------------------------------------------------- formats

class EspImageHeader:
    """esp_image_header_t: the 8-byte common header and, on the ESP32 family,
    the 16-byte extended header (chip id, hash_appended)."""
    MAGIC = 0xE9
    FORMAT = "<BBBBIB3sHBHH4sB"
    SIZE = struct.calcsize(FORMAT)  # 24

    def __init__(self, data):
        if len(data) < self.SIZE:
            raise ValueError("shorter than an image header")
        (self.magic, self.segment_count, self.spi_mode, self.spi_speed_size, self.entry_addr,
         self.wp_pin, _drv, self.chip_id, self.min_chip_rev, self.min_chip_rev_full,
         self.max_chip_rev_full, _reserved,
         self.hash_appended) = struct.unpack_from(self.FORMAT, data)

    @classmethod
    def chip_of(cls, data):
        """esptool's name of the chip the image opening `data` is for, as
        `esptool image-info` decides it: an extended header with a known chip
        id, else ESP8266 (which has none). ValueError if there is no image."""
        from esptool.targets import CHIP_DEFS
        if len(data) < 8:  # not even the common header
            raise ValueError("%d bytes" % len(data))
        if data[0] != cls.MAGIC:
            raise ValueError("first byte 0x%02X, expected 0xE9" % data[0])
        if len(data) >= cls.SIZE:
            header = cls(data)
            if header.hash_appended in (0, 1):
                for chip, rom in CHIP_DEFS.items():
                    if getattr(rom, "IMAGE_CHIP_ID", None) == header.chip_id:
                        return chip
        return "esp8266"


class Image:
    """One ESP image at `at` in a file, loaded by esptool's own image classes
    and checked as the ROM and the bootloader would: esptool loads what the
    header describes but does not judge checksum, digest or the flash bytes."""

    def __init__(self, data, chip, name, at=0):
        from esptool.bin_image import LoadFirmwareImage
        from esptool.util import FatalError
        self.name, self.chip, self.at = name, chip, at
        data = data[at:]
        try:
            found = EspImageHeader.chip_of(data)
        except ValueError as e:
            raise self.error("not a firmware image (%s)" % e)
        if found != chip and chip != "esp8266":  # (an ESP8266 header has no chip id)
            raise self.error("an image for %s, not %s" % (found, chip))
        if not 1 <= data[1] <= MAX_SEGMENTS:  # esptool would only say where the file ends
            raise self.error("%d segments in the header (1 to %d)" % (data[1], MAX_SEGMENTS))
        try:
            # esptool warns of "suspicious" segments on stderr: our verdict is the one line
            with contextlib.redirect_stderr(io.StringIO()):
                image = LoadFirmwareImage(chip, data)
        except FatalError as e:
            raise self.error(str(e))
        except (struct.error, TypeError):  # esptool read past the end: a header or checksum
            raise self.error("file ends inside the image (segment header or checksum missing)")
        self.image = image
        self.check_flash_bytes()
        if image.checksum != image.calculate_checksum():
            raise self.error("checksum 0x%02X, computed 0x%02X"
                             % (image.checksum, image.calculate_checksum()))
        if getattr(image, "append_digest", False) and image.stored_digest != image.calc_digest:
            raise self.error("appended SHA-256 does not match the image")
        # esp_app_desc_t opens an app's first segment; a bootloader has its own descriptor
        first = image.segments[0].data
        self.is_app = chip != "esp8266" and first[:4] == struct.pack("<I", APP_DESC_MAGIC)
        self.length = self.end()

    def error(self, text):
        where = " at file offset 0x%x" % self.at if self.at else ""
        return CliError("%s%s: %s" % (self.name, where, text))

    def check_flash_bytes(self):
        # The ROM configures the SPI flash from these bytes before anything else.
        image, rom = self.image, self.image.ROM_LOADER
        if image.flash_mode not in FLASH_MODES:
            raise self.error("invalid flash mode byte 0x%02X" % image.flash_mode)
        if image.flash_size_freq & 0xF0 not in rom.FLASH_SIZES.values():
            raise self.error("invalid flash size in byte 0x%02X" % image.flash_size_freq)
        if image.flash_size_freq & 0x0F not in rom.FLASH_FREQUENCY.values():
            raise self.error("invalid flash frequency in byte 0x%02X" % image.flash_size_freq)

    def end(self):
        """Length in the file: segments, checksum byte at the end of a
        16-byte row, then the SHA-256 if appended (as esptool reads it)."""
        segments = self.image.segments
        end = max(s.file_offs + 8 + len(s.data) for s in segments)
        end += 16 - end % 16
        return end + (32 if getattr(self.image, "append_digest", False) else 0)


class PartitionTable:
    """The binary partition table (esp_partition_info_t rows, MD5 row, end
    marker), read with the shim's _table.parse: what the emulated board's
    bootloader accepts is what is accepted here."""

    def __init__(self, data, at, name):
        from otatool.board import shim_module
        table = shim_module("_table")

        def read(addr, buf):
            row = data[at + addr - table.ADDR: at + addr - table.ADDR + len(buf)]
            buf[:] = row + b"\xff" * (len(buf) - len(row))

        # flash size unknown here: only the board knows; any table that fits 1 GiB is accepted
        self.parts = table.parse(read, flash_size=1 << 30)
        if self.parts is None:
            raise CliError("%s has no valid partition table at 0x%X (rows, MD5 row and end "
                           "marker as gen_esp32part writes them)" % (name, table.ADDR))
        kinds = {(p[0], p[1]): p for p in self.parts}
        self.otadata, self.ota_0, ota_1 = (kinds.get(k) for k in (OTADATA, OTA_0, OTA_1))
        if None in (self.otadata, self.ota_0, ota_1):
            raise CliError("%s has no OTA partitions (otadata, ota_0, ota_1): flash an OTA build "
                           "of MicroPython (e.g. the ESP32_GENERIC OTA variant)" % name)


# ---------------------------------------------------------------- what to write

class Write:
    """`data` for flash address `offset`, `what` it is for the user. `path`:
    the user's file when data is that file unchanged, so that esptool's
    messages name it; else esptool gets a temporary copy."""

    def __init__(self, offset, data, what, path=None, otadata=False):
        self.offset, self.data, self.what, self.path = offset, data, what, path
        self.otadata = otadata  # erases otadata


def read_file(path):
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise CliError("cannot read %s: %s" % (path, e.strerror))


def bootloader_offset(chip):
    from esptool.targets import CHIP_DEFS
    return CHIP_DEFS[chip].BOOTLOADER_FLASH_OFFSET


def file_chip(data, name):
    try:
        return EspImageHeader.chip_of(data)
    except ValueError as e:
        raise CliError("%s is not a firmware image (%s)" % (name, e))


def first_image(data, name):
    """(file offset, chip) of the image a file opens with. `esptool
    merge-bin` pads from 0x0 with 0xFF up to the bootloader by default,
    so a file of 0xFF may hold its bootloader at the chip's offset."""
    if data[:1] == b"\xff":
        from esptool.targets import CHIP_DEFS
        for at in sorted({rom.BOOTLOADER_FLASH_OFFSET for rom in CHIP_DEFS.values()} - {0}):
            if data[at:at + 1] == b"\xe9" and data[:at].count(0xFF) == at:
                chip = file_chip(data[at:], name)
                if bootloader_offset(chip) == at:
                    return at, chip
    return 0, file_chip(data, name)


def erase(otadata):
    return Write(otadata[2], b"\xff" * otadata[3], "otadata (erased)", otadata=True)


def fits_ota_0(app, size, table):
    if size > table.ota_0[3]:
        raise app.error("%d bytes do not fit ota_0 (%d bytes)" % (size, table.ota_0[3]))


def merged_writes(data, name, bootloader):
    """A merged image: one write at its flash start. otadata is erased in
    a copy of it, never by a second file over its range (esptool refuses
    that: 'Detected overlap'), or apart when it lies beyond the file's end."""
    if bootloader.is_app:
        raise bootloader.error("an app image where the bootloader belongs")
    base = bootloader_offset(bootloader.chip) - bootloader.at  # flash address of file offset 0
    if base + bootloader.at + bootloader.length > TABLE_OFFSET:
        raise bootloader.error("bootloader runs past the partition table at 0x%X" % TABLE_OFFSET)
    if len(data) <= TABLE_OFFSET - base:
        raise CliError("%s holds a bootloader but no partition table at 0x%X: give it as "
                       "--bootloader, with --partition-table and the app" % (name, TABLE_OFFSET))
    table = PartitionTable(data, TABLE_OFFSET - base, name)
    ota_0, otadata = table.ota_0, table.otadata
    if len(data) <= ota_0[2] - base:
        raise CliError("%s has no app at ota_0 (0x%X): it ends at 0x%X"
                       % (name, ota_0[2], base + len(data)))
    app = Image(data, bootloader.chip, name, ota_0[2] - base)
    if not app.is_app:
        raise app.error("no app descriptor (esp_app_desc_t) at ota_0: not an app image")
    fits_ota_0(app, app.length, table)
    start = otadata[2] - base
    if start >= len(data):
        return [Write(base, data, name, name), erase(otadata)]
    patched = bytearray(data)
    # pads the copy with 0xFF too when otadata runs past the file's end
    patched[start:start + otadata[3]] = b"\xff" * otadata[3]
    return [Write(base, bytes(patched), "%s, otadata 0x%X..0x%X erased in this copy"
                  % (name, otadata[2], otadata[2] + otadata[3] - 1), otadata=True)]


def app_writes(data, app, bootloader_path, table_path):
    """An app image, with the bootloader and partition table when given:
    the app goes to ota_0 of the table, else to 0x10000."""
    writes = []
    offset = APP_OFFSET
    if table_path:
        pt = read_file(table_path)
        if len(pt) > TABLE_MAX:
            raise CliError("%s is %d bytes, more than a partition table (%d)"
                           % (table_path, len(pt), TABLE_MAX))
        table = PartitionTable(pt, 0, table_path)
        fits_ota_0(app, len(data), table)
        offset = table.ota_0[2]
        writes += [Write(TABLE_OFFSET, pt, table_path, table_path), erase(table.otadata)]
    if bootloader_path:
        writes.append(bootloader_write(bootloader_path, app.chip))
    writes.append(Write(offset, data, app.name, app.name))
    return sorted(writes, key=lambda w: w.offset)


def bootloader_write(path, chip):
    data = read_file(path)
    if file_chip(data, path) != chip:
        raise CliError("%s is an image for %s, the app is for %s"
                       % (path, file_chip(data, path), chip))
    if Image(data, chip, path).is_app:
        raise CliError("%s is an app image, not a bootloader" % path)
    offset = bootloader_offset(chip)
    if offset + len(data) > TABLE_OFFSET:
        raise CliError("%s (%d bytes) runs past the partition table at 0x%X"
                       % (path, len(data), TABLE_OFFSET))
    return Write(offset, data, path, path)


def plan(args):
    """(chip, [Write]) for the command line, every file checked."""
    name = args.file
    data = read_file(name)
    # an ESP8266 header has no chip id: its first segment may pass for an extended header
    at, chip = (0, "esp8266") if args.chip == "esp8266" else first_image(data, name)
    if args.chip not in ("auto", chip):
        raise CliError("%s is an image for %s, not %s" % (name, chip, args.chip))
    pieces = args.bootloader or args.partition_table
    image = Image(data, chip, name, at)
    if chip == "esp8266":
        if pieces:
            raise CliError("an ESP8266 has no bootloader or partition table of its own to "
                           "write: give %s alone" % name)
        return chip, [Write(0, data, name, name)]
    if image.is_app and not at:
        return chip, app_writes(data, image, args.bootloader, args.partition_table)
    if pieces:
        raise CliError("%s is a merged firmware (it starts with a bootloader): "
                       "--bootloader and --partition-table go with an app image" % name)
    return chip, merged_writes(data, name, image)


# ---------------------------------------------------------------- esptool

def flash_command(args):
    chip, writes = plan(args)
    for w in writes:
        print("otatool flash: %s 0x%06X %s" % (chip, w.offset, w.what))
    if chip != "esp8266" and not any(w.otadata for w in writes):
        print("otatool flash: otadata left as it is (no partition table given): a board that "
              "has booted ota_1 since keeps booting it")
    with tempfile.TemporaryDirectory(prefix="otatool-flash-") as tmp:
        cmd = [sys.executable, "-m", "esptool", "--chip", chip, "--port", args.port,
               "--baud", str(args.baud), "write-flash"]
        for i, w in enumerate(writes):
            cmd += ["0x%x" % w.offset, file_for(w, os.path.join(tmp, "%d.bin" % i))]
        run_esptool(cmd)
    return 0


def file_for(write, copy):
    if write.path:
        return os.path.abspath(write.path)
    with open(copy, "wb") as f:
        f.write(write.data)
    return copy


# rich-click (esptool's command line) draws usage errors in a box this wide,
# so the message is one row and no path is cut by a wrap
ESPTOOL_ENV = {"TERMINAL_WIDTH": "4000"}


def run_esptool(cmd):
    """esptool's progress goes to our stdout; its failure becomes one line."""
    try:
        r = subprocess.run(cmd, stderr=subprocess.PIPE, text=True, timeout=ESPTOOL_TIMEOUT_S,
                           env=dict(os.environ, **ESPTOOL_ENV))
    except subprocess.TimeoutExpired:
        raise CliFailure("esptool did not finish within %d s" % ESPTOOL_TIMEOUT_S)
    if r.returncode != 0:
        raise CliFailure("esptool: %s" % esptool_error(r.stderr, r.returncode))


ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
BOX_SIDES = "\u2502\u2503\u2551"  # the left/right edge of rich's boxes


def esptool_error(stderr, status):
    """esptool's own words, on one line: the 'A fatal error occurred: ...'
    line (plus its '(...)' detail line), else the text inside rich-click's
    error box (usage errors), else the last line."""
    lines = [ANSI.sub("", line).strip() for line in stderr.splitlines()]
    lines = [line for line in lines if line]
    for i, line in enumerate(lines):
        _, found, message = line.partition(" error occurred:")
        if found:
            detail = lines[i + 1] if i + 1 < len(lines) and lines[i + 1].startswith("(") else ""
            return " ".join((message + " " + detail).split())
    boxed = [line.strip(BOX_SIDES + " ") for line in lines if line[0] in BOX_SIDES]
    if boxed:
        return " ".join(" ".join(boxed).split())
    return lines[-1] if lines else "exit status %d" % status
