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
