"""The `otatool` command line: one sub-module per command group.

Each module named in COMMANDS has `register(subparsers)` that adds its
sub-command(s) and sets `func` on the parsed arguments; `func(args)` returns
the exit status. Errors a user can cause raise `CliError` and print one line.
"""
import argparse
import importlib
import importlib.metadata
import os
import sys

from otatool import compressed

COMMANDS = [
    "image",
    "bundle",
    "deploy",
    "server",
    "serve",
    "sign",
    "board",
    "demo",
]


class CliError(Exception):
    """A bad command line (a value, a file named on it): printed as one line,
    exit status 2, as argparse does for its own usage errors."""
    exit_status = 2


class CliFailure(CliError):
    """The command line was right but the work failed (a port in use, a board
    that does not answer, esptool, a database): one line, exit status 1."""
    exit_status = 1


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (the usage is in --help)."""

    def error(self, message):
        self.exit(2, "%s: error: %s\n" % (self.prog, message))


def int_range(low, high):
    """An argparse type: an integer from low to high."""
    def integer(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError("%r is not an integer" % text) from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError("%d is out of range (%d..%d)" % (value, low, high))
        return value
    return integer


def desc_text(text):
    """An argparse type: a string field of esp_app_desc_t (version,
    project_name: 31 bytes and a NUL), printable ASCII."""
    if not text or len(text) > 31 or not all(" " <= c <= "~" for c in text):
        raise argparse.ArgumentTypeError("%r must be 1 to 31 printable ASCII characters" % text)
    return text


def directory(text):
    """An argparse type: a directory that exists or can be made (not a file)."""
    if os.path.exists(text) and not os.path.isdir(text):
        raise argparse.ArgumentTypeError("%s is a file, not a directory" % text)
    return text


def window_size(text):
    """An argparse type: a deflate window in bytes (a power of two,
    512..32768), as its window_bits."""
    sizes = [1 << bits for bits in compressed.WINDOW_BITS_RANGE]
    if text not in [str(n) for n in sizes]:
        raise argparse.ArgumentTypeError("%r is not a window size: give one of %s bytes"
                                         % (text, ", ".join(map(str, sizes))))
    return int(text).bit_length() - 1


def block_size(text):
    """An argparse type: bytes per compressed block, whole flash sectors."""
    value = int_range(compressed.SECTOR, compressed.BLOCK_SIZE_MAX)(text)
    if value % compressed.SECTOR:
        raise argparse.ArgumentTypeError("%d is not a multiple of %d (a flash sector)"
                                         % (value, compressed.SECTOR))
    return value


def add_compression_options(parser, what):
    """--window, --window-bits and --block-size of a command that compresses;
    `what` says when they apply. Their defaults are None: the format's."""
    window = parser.add_mutually_exclusive_group()
    window.add_argument("--window", type=window_size, dest="window_bits", metavar="BYTES",
                        help="deflate window%s: the RAM the board needs to inflate; 4096 "
                             "(the default) for ESP32, 2048 for ESP8266" % what)
    window.add_argument("--window-bits", type=int_range(9, 15), metavar="N",
                        help="the window as log2 of its size (9..15; 12 is 4096 bytes)")
    parser.add_argument("--block-size", type=block_size, metavar="BYTES",
                        help="bytes per block%s, a multiple of 4096 (default 65536): a board "
                             "resumes a cut download at the block it was in" % what)


def compress_for_board(data, args):
    """`data` compressed with the window and block size of the command
    line, and one line saying what it saved."""
    z = compressed.compress(data, args.window_bits or compressed.WINDOW_BITS,
                            args.block_size or compressed.BLOCK_SIZE)
    return z, compression_note(compressed.CompressedHeader.from_bytes(z), len(z))


def compression_note(header, wire_size):
    """One line on a compressed update: both sizes, the saving, the window."""
    saving = saving_percent(header.total_size, wire_size)
    return ("compressed: %d -> %d bytes (%d%% %s), window %d bytes, %d block%s of %d"
            % (header.total_size, wire_size, abs(saving), "smaller" if saving >= 0 else "larger",
               1 << header.window_bits, header.block_count,
               "" if header.block_count == 1 else "s", header.block_size))


def saving_percent(size, wire_size):
    """How much smaller the download is than the image, in whole percent."""
    return round(100 * (size - wire_size) / size) if size else 0


def write_output(path, data):
    """Write a file the user asked for, or fail in one line."""
    try:
        with open(path, "wb") as f:
            f.write(data)
    except OSError as e:
        raise CliError("%s: %s" % (path, e.strerror or e))


def build_parser():
    parser = Parser(prog="otatool", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version",
                        version="otatool " + importlib.metadata.version("otatool"))
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module("otatool." + name).register(sub)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        return args.func(args) or 0
    except CliError as e:
        print("otatool: error: %s" % e, file=sys.stderr)
        return e.exit_status
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
