"""The `otatool` command line: one sub-module per command group.

Each module named in COMMANDS has `register(subparsers)` that adds its
sub-command(s) and sets `func` on the parsed arguments; `func(args)` returns
the exit status. Errors a user can cause raise `CliError` and print one line.
"""
import argparse
import importlib
import importlib.metadata
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
    """A user-facing failure: printed as one line, exit status 2."""


def write_output(path, data):
    """Write a file the user asked for, or fail in one line."""
    try:
        with open(path, "wb") as f:
            f.write(data)
    except OSError as e:
        raise CliError("%s: %s" % (path, e.strerror or e))


def build_parser():
    parser = argparse.ArgumentParser(prog="otatool", description=__doc__.splitlines()[0])
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
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
