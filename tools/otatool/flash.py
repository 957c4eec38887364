"""`otatool flash`: first-time flash of an OTA-capable MicroPython firmware.

Writes a whole MicroPython firmware (bootloader + partition table + app, the
`firmware.bin` of a MicroPython build) with esptool, at the bootloader offset
of the image's chip, after checking that it is such an image and that its
partition table has otadata, ota_0 and ota_1. The otadata partition is erased
in the same write-flash, so the bootloader starts the new app in ota_0 and not
an app an earlier OTA left in ota_1. Registered by deploy.register (cli.py's
COMMANDS lists "deploy").
"""
import os
import struct
import subprocess
import sys
import tempfile

from otatool.cli import CliError

ESPTOOL_TIMEOUT_S = 900  # bounded, yet above a 4 MiB write at 115200 baud (~6 min)


def register(subparsers):
    p = subparsers.add_parser(
        "flash", help="first-time flash of an OTA-capable MicroPython firmware (esptool)",
        description="Write a MicroPython firmware.bin with esptool at the bootloader offset of "
                    "its chip, and erase otadata so the new app boots.")
    p.add_argument("--port", required=True, help="serial port of the board")
    p.add_argument("firmware", metavar="FIRMWARE",
                   help="firmware .bin (starts with the bootloader)")
    p.add_argument("--chip", default="auto", help="esp32, esp32s3, ... or auto (from the image)")
    p.add_argument("--baud", type=int, default=460800, help="flashing baud rate (default 460800)")
    p.set_defaults(func=flash_command)


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


class PartitionEntry:
    """esp_partition_info_t: one 32-byte row of the binary partition table."""
    MAGIC = 0x50AA
    FORMAT = "<HBBII16sI"
    SIZE = 32
    APP, DATA = 0, 1
    OTA_0, OTA_1, DATA_OTA = 0x10, 0x11, 0x00

    def __init__(self, row):
        (self.magic, self.type, self.subtype, self.offset, self.size, label,
         self.flags) = struct.unpack(self.FORMAT, row)
        self.label = label.rstrip(b"\0").decode("ascii", "replace")


PARTITION_TABLE_OFFSET = 0x8000
MAX_PARTITIONS = 95
MAX_SEGMENTS = 16  # ESP_IMAGE_MAX_SEGMENTS


def partition_table(data, at):
    """The entries of the table at file offset `at` (stops at the first row
    that is not an entry: 0xFF padding or the MD5 row)."""
    entries = []
    for i in range(MAX_PARTITIONS):
        row = data[at + i * PartitionEntry.SIZE: at + (i + 1) * PartitionEntry.SIZE]
        if len(row) < PartitionEntry.SIZE:
            break
        entry = PartitionEntry(row)
        if entry.magic != PartitionEntry.MAGIC:
            break
        entries.append(entry)
    return entries


def firmware_target(data, name):
    """(esptool chip name, flash offset, otadata entry or None) for a
    MicroPython firmware.bin; CliError if it is not an OTA-capable one."""
    chip = image_chip(data, name)
    if chip == "esp8266":
        return chip, 0, None  # no partition table: app-bundle OTA only
    from esptool.targets import CHIP_DEFS
    offset = CHIP_DEFS[chip].BOOTLOADER_FLASH_OFFSET
    table = partition_table(data, PARTITION_TABLE_OFFSET - offset)
    if not table:
        raise CliError("%s has no partition table at 0x%X: it is an app image, not a whole "
                       "MicroPython firmware.bin" % (name, PARTITION_TABLE_OFFSET))
    kinds = {(e.type, e.subtype): e for e in table}
    otadata = kinds.get((PartitionEntry.DATA, PartitionEntry.DATA_OTA))
    apps = [kinds.get((PartitionEntry.APP, sub))
            for sub in (PartitionEntry.OTA_0, PartitionEntry.OTA_1)]
    if otadata is None or None in apps:
        raise CliError("%s has no OTA partitions (otadata, ota_0, ota_1): flash an OTA build "
                       "of MicroPython (e.g. the ESP32_GENERIC OTA variant)" % name)
    return chip, offset, otadata


def image_chip(data, name):
    """esptool's name of the chip the image's header is for."""
    from esptool.targets import CHIP_DEFS
    try:
        header = EspImageHeader(data)
    except ValueError:
        raise CliError("%s is not a firmware image (%d bytes)" % (name, len(data)))
    if header.magic != EspImageHeader.MAGIC:
        raise CliError("%s is not a firmware image (first byte 0x%02X, expected 0xE9)"
                       % (name, header.magic))
    if not 1 <= header.segment_count <= MAX_SEGMENTS:
        raise CliError("%s is not a firmware image (%d segments)" % (name, header.segment_count))
    if header.hash_appended in (0, 1):
        for chip, rom in CHIP_DEFS.items():
            if getattr(rom, "IMAGE_CHIP_ID", None) == header.chip_id:
                return chip
    return "esp8266"  # as esptool image-info decides: no valid extended header


def esptool_command(port, chip, baud, offset, firmware, otadata_offset, blank):
    cmd = [sys.executable, "-m", "esptool", "--chip", chip, "--port", port, "--baud", str(baud),
           "write-flash", "0x%x" % offset, firmware]
    if otadata_offset is not None:
        cmd += ["0x%x" % otadata_offset, blank]
    return cmd


def flash_command(args):
    try:
        with open(args.firmware, "rb") as f:
            data = f.read()
    except OSError as e:
        raise CliError("cannot read %s: %s" % (args.firmware, e.strerror))
    chip, offset, otadata = firmware_target(data, args.firmware)
    if args.chip not in ("auto", chip):
        raise CliError("%s is an image for %s, not %s" % (args.firmware, chip, args.chip))
    with tempfile.TemporaryDirectory(prefix="otatool-flash-") as tmp:
        blank = None
        if otadata is not None:
            blank = os.path.join(tmp, "otadata-blank.bin")
            with open(blank, "wb") as f:
                f.write(b"\xff" * otadata.size)
        cmd = esptool_command(args.port, chip, args.baud, offset, os.path.abspath(args.firmware),
                              None if otadata is None else otadata.offset, blank)
        run_esptool(cmd)
    return 0


def run_esptool(cmd):
    """esptool's progress goes to our stdout; its failure becomes one line."""
    try:
        r = subprocess.run(cmd, stderr=subprocess.PIPE, text=True, timeout=ESPTOOL_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise CliError("esptool did not finish within %d s" % ESPTOOL_TIMEOUT_S)
    if r.returncode != 0:
        raise CliError("esptool: %s" % esptool_error(r.stderr, r.returncode))


def esptool_error(stderr, status):
    """The 'A fatal error occurred: ...' line (plus its '(...)' detail line)."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    for i, line in enumerate(lines):
        _, found, message = line.partition("A fatal error occurred:")
        if found:
            detail = lines[i + 1] if i + 1 < len(lines) and lines[i + 1].startswith("(") else ""
            return " ".join((message.strip() + " " + detail).split())
    return lines[-1] if lines else "exit status %d" % status
