"""`otatool flash`: first-time flash of an OTA-capable MicroPython firmware.

Takes what a build leaves, in one of four forms:

* a merged image (`firmware.bin` of a MicroPython build, or the output of
  `esptool merge-bin`): bootloader, partition table and app in one file,
  starting at the chip's bootloader offset or padded from 0x0;
* the pieces apart: `--bootloader B --partition-table PT APP`;
* an app image alone, written at 0x10000 (ota_0 in MicroPython's OTA tables),
  like `esptool write-flash 0x10000 app.bin`;
* `ADDR FILE` pairs, as `esptool write-flash` takes them and a build prints
  them (`0x1000 bootloader.bin 0x8000 partition-table.bin 0xd000
  ota_data_initial.bin 0x10000 micropython.bin`), any of the above at its
  address, and data for a data partition of the table written.

ESP8266 images (no partition table) are written at 0x0; a "v2" image (magic
0xEA, `esptool elf2image --version 2`) runs from a second-stage bootloader,
so it comes as a pair with its address.

Every file is checked before esptool starts: images as esptool's own
bin_image parses them (magic, segment count, segments within the file,
checksum, appended SHA-256 or an ESP8266 v2 image's CRC-32, flash
mode/size/frequency bytes) plus the chip and the app descriptor; the
partition table as the bootloader reads it (entries, MD5 row) with otadata,
ota_0 and ota_1, at CONFIG_PARTITION_TABLE_OFFSET (--partition-table-offset,
0x8000 by default); no two files over one flash sector. When a table is
written, otadata is erased in the same write-flash, so the bootloader starts
the new app in ota_0 and not an app an earlier OTA left in ota_1. Registered
by deploy.register (cli.py's COMMANDS lists "deploy").
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
SECTOR = 0x1000          # esptool erases whole sectors: a file must start at one
MAX_SEGMENTS = 16        # ESP_IMAGE_MAX_SEGMENTS
FLASH_MODES = (0, 1, 2, 3)  # qio, qout, dio, dout: the header byte the ROM reads
APP, DATA = 0, 1         # partition types
OTADATA, OTA_0, OTA_1 = (DATA, 0x00), (APP, 0x10), (APP, 0x11)  # (type, subtype)
V2_MAGIC = 0xEA          # ESP8266 "v2" image: IROM segment first, for a second-stage bootloader

HELP = """\
FILE is one of:
  a merged image (MicroPython's firmware.bin, or `esptool merge-bin` output)
      holding bootloader, partition table (at 0x8000, or at
      --partition-table-offset) and app; it may start
      at the chip's bootloader offset (0x1000 on ESP32) or at 0x0;
  an app image alone: written at 0x10000 (ota_0); otadata is left as it is
      unless --partition-table is given, then the app goes to ota_0 of that
      table;
  an ESP8266 firmware image: written at 0x0 (a v2 image, which needs a
      second-stage bootloader, goes in ADDR FILE pairs).
With --bootloader and/or --partition-table, FILE must be the app image.

Or ADDR FILE pairs, as `esptool write-flash` takes them and a MicroPython or
ESP-IDF build prints them, e.g.
  otatool flash --port P 0x1000 bootloader.bin 0x8000 partition-table.bin \\
      0xd000 ota_data_initial.bin 0x10000 micropython.bin
Each ADDR starts a 4 KiB sector and no two files overlap. A bootloader goes
at the chip's bootloader offset, the partition table at its offset (see
--partition-table-offset), a merged image where its bootloader lands at that
offset; with a table, an app image must start an app partition of it and
other data must lie in a data partition (otadata only blank, as
ota_data_initial.bin is). On an ESP8266, 0x0 takes a v1 image (magic 0xE9,
what the ROM starts); a v2 image (0xEA, `esptool elf2image --version 2`)
goes where its second-stage bootloader looks for it.

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
    p.add_argument("files", nargs="+", metavar="[ADDR] FILE",
                   help="merged firmware, app image or ESP8266 image; or ADDR FILE pairs")
    p.add_argument("--bootloader", metavar="B",
                   help="bootloader image, written at the chip's bootloader offset")
    p.add_argument("--partition-table", metavar="PT",
                   help="binary partition table (gen_esp32part output), written at its offset")
    p.add_argument("--partition-table-offset", metavar="ADDR", type=table_offset,
                   default=TABLE_OFFSET,
                   help="where the partition table is (CONFIG_PARTITION_TABLE_OFFSET, "
                        "e.g. 0x9000; default 0x8000)")
    p.add_argument("--chip", default="auto",
                   help="esp32, esp32s3, ..., esp8266 or auto (default: from the image header)")
    p.add_argument("--baud", type=int, default=460800, help="flashing baud rate (default 460800)")
    p.set_defaults(func=flash_command)


def flash_address(text):
    """A flash address as esptool takes it (0x10000, 65536), at the start
    of a 4 KiB sector. ValueError with the reason."""
    try:
        addr = int(text, 0)
    except ValueError:
        raise ValueError("%r is not a flash address (e.g. 0x10000)" % text) from None
    if addr < 0 or addr % SECTOR:
        raise ValueError("flash address %s does not start a 4 KiB sector (esptool erases "
                         "whole sectors)" % text)
    return addr


def table_offset(text):
    """An argparse type: CONFIG_PARTITION_TABLE_OFFSET."""
    try:
        return flash_address(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


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
        id, else ESP8266 (which has none, nor has its v2 image). ValueError if
        there is no image."""
        from esptool.targets import CHIP_DEFS
        if len(data) < 8:  # not even the common header
            raise ValueError("%d bytes" % len(data))
        if data[0] == V2_MAGIC:
            return "esp8266"
        if data[0] != cls.MAGIC:
            raise ValueError("first byte 0x%02X, expected 0xE9 (or 0xEA, an ESP8266 v2 image)"
                             % data[0])
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
    header describes but does not judge checksum, digest, a v2 image's CRC
    or the flash bytes."""

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
        self.is_v2 = data[0] == V2_MAGIC
        self.check_flash_bytes()
        if image.checksum != image.calculate_checksum():
            raise self.error("checksum 0x%02X, computed 0x%02X"
                             % (image.checksum, image.calculate_checksum()))
        if getattr(image, "append_digest", False) and image.stored_digest != image.calc_digest:
            raise self.error("appended SHA-256 does not match the image")
        self.length = self.end()
        if self.is_v2:
            self.check_v2_crc(data)
        # esp_app_desc_t opens an app's first segment; a bootloader has its own descriptor
        first = image.segments[0].data
        self.is_app = chip != "esp8266" and first[:4] == struct.pack("<I", APP_DESC_MAGIC)

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

    def check_v2_crc(self, data):
        # The CRC-32 the SDK's bootloader checks: esptool writes it after
        # the checksum row but does not read it back.
        from esptool.bin_image import esp8266_crc32
        stored = data[self.length - 4:self.length]
        if len(stored) < 4:
            raise self.error("file ends before the v2 image's CRC-32")
        computed = esp8266_crc32(data[:self.length - 4])
        if struct.unpack("<I", stored)[0] != computed:
            raise self.error("CRC-32 0x%08X, computed 0x%08X"
                             % (struct.unpack("<I", stored)[0], computed))

    def end(self):
        """Length in the file: segments, checksum byte at the end of a
        16-byte row, then the SHA-256 if appended or a v2 image's CRC-32
        (as esptool writes them)."""
        segments = self.image.segments
        end = max(s.file_offs + 8 + len(s.data) for s in segments)
        end += 16 - end % 16
        if self.is_v2:
            return end + 4
        return end + (32 if getattr(self.image, "append_digest", False) else 0)


class PartitionTable:
    """The binary partition table (esp_partition_info_t rows, MD5 row, end
    marker) of a file whose byte `at` is flash address `offset`, read with
    the shim's _table.parse: what the emulated board's bootloader accepts
    is what is accepted here."""

    def __init__(self, data, at, name, offset):
        from otatool.board import shim_module
        table = shim_module("_table")

        def read(addr, buf):
            row = data[at + addr - table.ADDR: at + addr - table.ADDR + len(buf)]
            buf[:] = row + b"\xff" * (len(buf) - len(row))

        # flash size unknown here: only the board knows; any table that fits 1 GiB is accepted
        self.parts = table.parse(read, flash_size=1 << 30)
        if self.parts is None:
            raise CliError("%s has no valid partition table at 0x%X (rows, MD5 row and end "
                           "marker as gen_esp32part writes them)" % (name, offset))
        kinds = {(p[0], p[1]): p for p in self.parts}
        self.otadata, self.ota_0, ota_1 = (kinds.get(k) for k in (OTADATA, OTA_0, OTA_1))
        if None in (self.otadata, self.ota_0, ota_1):
            raise CliError("%s has no OTA partitions (otadata, ota_0, ota_1): flash an OTA build "
                           "of MicroPython (e.g. the ESP32_GENERIC OTA variant)" % name)
        first = min(self.parts, key=lambda p: p[2])
        if first[2] < offset + SECTOR:  # gen_esp32part puts every partition after the table
            raise CliError("%s: partition %s at 0x%X lies in the partition table's sector "
                           "(0x%X): a table for another --partition-table-offset?"
                           % (name, first[4], first[2], offset))

    def app_at(self, addr):
        return next((p for p in self.parts if p[0] == APP and p[2] == addr), None)

    def data_around(self, addr):
        return next((p for p in self.parts if p[0] == DATA and p[2] <= addr < p[2] + p[3]),
                    None)


# ---------------------------------------------------------------- what to write

class Write:
    """`data` for flash address `offset`, `what` it is for the user. `path`:
    the user's file when data is that file unchanged, so that esptool's
    messages name it; else esptool gets a temporary copy."""

    def __init__(self, offset, data, what, path=None, otadata=False):
        self.offset, self.data, self.what, self.path = offset, data, what, path
        self.otadata = otadata  # erases otadata

    @property
    def end(self):
        return self.offset + len(self.data)


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


def fits(app, size, partition):
    if size > partition[3]:
        raise app.error("%d bytes do not fit %s (%d bytes)" % (size, partition[4], partition[3]))


def merged_writes(data, name, bootloader, table_at):
    """A merged image: one write at its flash start. otadata is erased in
    a copy of it, never by a second file over its range (esptool refuses
    that: 'Detected overlap'), or apart when it lies beyond the file's end.
    -> (writes, table)"""
    if bootloader.is_app:
        raise bootloader.error("an app image where the bootloader belongs")
    base = bootloader_offset(bootloader.chip) - bootloader.at  # flash address of file offset 0
    if base + bootloader.at + bootloader.length > table_at:
        raise bootloader.error("bootloader runs past the partition table at 0x%X" % table_at)
    if len(data) <= table_at - base:
        raise CliError("%s holds a bootloader but no partition table at 0x%X: give it as "
                       "--bootloader, with --partition-table and the app" % (name, table_at))
    table = PartitionTable(data, table_at - base, name, table_at)
    ota_0, otadata = table.ota_0, table.otadata
    if len(data) <= ota_0[2] - base:
        raise CliError("%s has no app at ota_0 (0x%X): it ends at 0x%X"
                       % (name, ota_0[2], base + len(data)))
    app = Image(data, bootloader.chip, name, ota_0[2] - base)
    if not app.is_app:
        raise app.error("no app descriptor (esp_app_desc_t) at ota_0: not an app image")
    fits(app, app.length, ota_0)
    start = otadata[2] - base
    if start >= len(data):
        return [Write(base, data, name, name), erase(otadata)], table
    patched = bytearray(data)
    # pads the copy with 0xFF too when otadata runs past the file's end
    patched[start:start + otadata[3]] = b"\xff" * otadata[3]
    return [Write(base, bytes(patched), "%s, otadata 0x%X..0x%X erased in this copy"
                  % (name, otadata[2], otadata[2] + otadata[3] - 1), otadata=True)], table


def table_write(data, path, table_at):
    """A partition table file for table_at -> (Write, PartitionTable)."""
    if len(data) > TABLE_MAX:
        raise CliError("%s is %d bytes, more than a partition table (%d)"
                       % (path, len(data), TABLE_MAX))
    return Write(table_at, data, path, path), PartitionTable(data, 0, path, table_at)


def app_writes(data, app, bootloader_path, table_path, table_at):
    """An app image, with the bootloader and partition table when given:
    the app goes to ota_0 of the table, else to 0x10000."""
    writes = []
    offset = APP_OFFSET
    if table_path:
        write, table = table_write(read_file(table_path), table_path, table_at)
        fits(app, len(data), table.ota_0)
        offset = table.ota_0[2]
        writes += [write, erase(table.otadata)]
    if bootloader_path:
        writes.append(bootloader_write(read_file(bootloader_path), bootloader_path, app.chip,
                                       table_at))
    writes.append(Write(offset, data, app.name, app.name))
    return sorted(writes, key=lambda w: w.offset)


def bootloader_write(data, path, chip, table_at):
    if file_chip(data, path) != chip:
        raise CliError("%s is an image for %s, the app is for %s"
                       % (path, file_chip(data, path), chip))
    if Image(data, chip, path).is_app:
        raise CliError("%s is an app image, not a bootloader" % path)
    offset = bootloader_offset(chip)
    if offset + len(data) > table_at:
        raise CliError("%s (%d bytes) runs past the partition table at 0x%X"
                       % (path, len(data), table_at))
    return Write(offset, data, path, path)


def single_file_plan(args, name):
    """(chip, [Write]) for one FILE, with --bootloader and --partition-table."""
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
        if image.is_v2:
            raise CliError("%s is an ESP8266 v2 image (0xEA): the ROM starts only a v1 image "
                           "at 0x0, so give its second-stage bootloader and it as ADDR FILE "
                           "pairs (0x0 BOOTLOADER ADDR %s)" % (name, name))
        return chip, [Write(0, data, name, name)]
    if image.is_app and not at:
        return chip, app_writes(data, image, args.bootloader, args.partition_table,
                                args.partition_table_offset)
    if pieces:
        raise CliError("%s is a merged firmware (it starts with a bootloader): "
                       "--bootloader and --partition-table go with an app image" % name)
    return chip, merged_writes(data, name, image, args.partition_table_offset)[0]


# ---------------------------------------------------------------- ADDR FILE pairs

class Pair:
    """One ADDR FILE of the command line, its file read."""

    def __init__(self, addr_text, path):
        try:
            self.addr = flash_address(addr_text)
        except ValueError as e:
            raise CliError(str(e))
        self.path, self.data = path, read_file(path)

    def image_chip(self):
        """(file offset, chip) of the image the file holds, or None."""
        try:
            return first_image(self.data, self.path)
        except CliError:
            return None


def read_pairs(argv):
    if len(argv) % 2:
        raise CliError("%d arguments: give one FILE, or ADDR FILE pairs as esptool write-flash "
                       "takes them (0x1000 bootloader.bin 0x8000 partition-table.bin ...)"
                       % len(argv))
    return [Pair(argv[i], argv[i + 1]) for i in range(0, len(argv), 2)]


def pairs_chip(args, pairs, table_at):
    """--chip, else the chip of the first image among the pairs."""
    if args.chip != "auto":
        return args.chip
    for pair in pairs:
        found = pair.addr != table_at and pair.image_chip()
        if found:
            return found[1]
    raise CliError("no firmware image among the files to tell the chip: give --chip")


def pairs_plan(args, pairs):
    """(chip, [Write]) for ADDR FILE pairs: each file checked for what its
    address holds, then no two over one sector."""
    table_at = args.partition_table_offset
    chip = pairs_chip(args, pairs, table_at)
    if chip == "esp8266":
        writes = [esp8266_pair_write(p) for p in pairs]
    else:
        writes = esp32_pair_writes(pairs, chip, table_at)
    writes.sort(key=lambda w: w.offset)
    for before, after in zip(writes, writes[1:]):
        if before.end > after.offset:
            raise CliError("%s (0x%X..0x%X) overlaps %s at 0x%X"
                           % (before.what, before.offset, before.end - 1, after.what,
                              after.offset))
    return chip, writes


def esp8266_pair_write(pair):
    image = Image(pair.data, "esp8266", pair.path)
    if image.is_v2 and pair.addr == 0:
        raise CliError("%s is an ESP8266 v2 image (0xEA): the ROM starts only a v1 image "
                       "(0xE9) at 0x0, such as the second-stage bootloader that loads it"
                       % pair.path)
    return Write(pair.addr, pair.data, pair.path, pair.path)


def esp32_pair_writes(pairs, chip, table_at):
    """The table first (it says where apps and data may go), then the
    images, then data for the data partitions of the table written."""
    table = None
    writes, apps, data = [], [], []
    for pair in pairs:
        if pair.addr == table_at:
            write, table = table_write(pair.data, pair.path, table_at)
            writes.append(write)
    for pair in pairs:
        if pair.addr == table_at:
            continue
        if (table and table.data_around(pair.addr)) or not pair.image_chip():
            data.append(pair)
            continue
        image = Image(pair.data, chip, pair.path, pair.image_chip()[0])
        if image.is_app:
            apps.append((pair, image))
            writes.append(Write(pair.addr, pair.data, pair.path, pair.path))
        else:
            more, merged_table = image_pair_writes(pair, image, table_at)
            writes += more
            table = table or merged_table
    for pair, image in apps:
        check_app_pair(pair, image, table)
    writes += [data_pair_write(pair, table) for pair in data]
    if table and not any(w.otadata for w in writes):
        writes.append(erase(table.otadata))
    return writes


def image_pair_writes(pair, bootloader, table_at):
    """A bootloader, or a merged image, at its address -> (writes, table or None)."""
    expected = bootloader_offset(bootloader.chip) - bootloader.at
    if pair.addr != expected:
        raise CliError("%s starts with a bootloader, which an %s board reads at 0x%X: give it "
                       "at 0x%X" % (pair.path, bootloader.chip, expected + bootloader.at,
                                    expected))
    if len(pair.data) > table_at - pair.addr:  # more than a bootloader: a merged firmware
        return merged_writes(pair.data, pair.path, bootloader, table_at)
    return [bootloader_write(pair.data, pair.path, bootloader.chip, table_at)], None


def check_app_pair(pair, app, table):
    if table is None:
        return  # as `esptool write-flash ADDR app.bin`: no table to hold it to
    partition = table.app_at(pair.addr)
    if partition is None:
        raise app.error("an app image at 0x%X, where the partition table has no app "
                        "partition (they start at %s)"
                        % (pair.addr, ", ".join("0x%X" % p[2] for p in table.parts
                                                if p[0] == APP)))
    fits(app, len(pair.data), partition)


def data_pair_write(pair, table):
    """Data for a data partition of the table written: otadata only blank
    (ota_data_initial.bin), which the erase of otadata then writes."""
    partition = table and table.data_around(pair.addr)
    if not partition:
        raise CliError("%s at 0x%X is not a firmware image, and no partition table written "
                       "here has a data partition there" % (pair.path, pair.addr))
    if pair.addr + len(pair.data) > partition[2] + partition[3]:
        raise CliError("%s at 0x%X (%d bytes) runs past the end of partition %s (0x%X)"
                       % (pair.path, pair.addr, len(pair.data), partition[4],
                          partition[2] + partition[3]))
    if partition == table.otadata:
        if pair.data.count(0xFF) != len(pair.data):
            raise CliError("%s would write otadata, which selects the app to boot; otatool "
                           "flash erases otadata so that ota_0 boots (a blank "
                           "ota_data_initial.bin is accepted)" % pair.path)
        return erase(table.otadata)
    return Write(pair.addr, pair.data, pair.path, pair.path)


def plan(args):
    """(chip, [Write]) for the command line, every file checked."""
    if len(args.files) == 1:
        return single_file_plan(args, args.files[0])
    if args.bootloader or args.partition_table:
        raise CliError("--bootloader and --partition-table go with one app FILE: with ADDR FILE "
                       "pairs, give them as pairs")
    return pairs_plan(args, read_pairs(args.files))


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
