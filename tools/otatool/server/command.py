"""`otatool server`: a campaign server for fleets, in the style of Blynk's admin
OTA API, without its traps (campaigns lost on restart, downgrades by "not
equal", endless reboot loops, no status, passwords in logs).

This file is the command: its options, the settings they override, and
every mistake a user can make in starting it (a file, database or admin
that does not exist, a certificate that does not fit its key) as one line.
"""
import logging
import os
import sys

from otatool.cli import CliError, CliFailure
from otatool.serve import reason
from otatool.server.app import make_app
from otatool.server.config import load_config
from otatool.server.runner import run_forever, ssl_context
from otatool.server.store import NotFound, Store, Unavailable, sqlite_path


def register(sub):
    p = sub.add_parser("server", help="run the campaign server (fleet OTA)",
                       description=__doc__.split("\n\n")[0])
    p.add_argument("--config", help="TOML file with the settings of the module docstring")
    p.add_argument("--host")
    p.add_argument("--port", type=int)
    p.add_argument("--db", help="SQLite file or postgresql:// URL")
    p.add_argument("--files", help="directory for uploaded images")
    p.add_argument("--public-url", dest="public_url")
    p.add_argument("--cert", dest="tls_cert", help="PEM certificate: serve HTTPS")
    p.add_argument("--key", dest="tls_key", help="PEM private key of --cert")
    p.add_argument("--reset-password", metavar="NAME",
                   help="give the existing admin NAME a new random password, print it and exit")
    p.set_defaults(func=server_command)


def server_command(args):
    try:
        cfg = load_config(args.config, host=args.host, port=args.port, db=args.db,
                          files=args.files, public_url=args.public_url,
                          tls_cert=args.tls_cert, tls_key=args.tls_key)
    except OSError as e:
        raise CliFailure("cannot read --config %s: %s" % (args.config, reason(e)))
    except ValueError as e:
        raise CliError(reason(e))
    if args.reset_password:
        return _reset_password(cfg["db"], args.reset_password)
    context = _checked_ssl_context(cfg)
    app = _checked_app(cfg)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(name)s %(message)s")
    run_forever(app, cfg, context)
    return 0


def _reset_password(db, name):
    path = sqlite_path(db)
    if path is not None and not os.path.isfile(path):  # else SQLite makes an empty one
        raise CliFailure("database %s does not exist" % path)
    store = _checked(Store, db)
    try:
        print("new password for %s: %s" % (name, store.reset_password(name)))
    except NotFound as e:
        raise CliFailure(str(e))
    finally:
        store.close()
    return 0


def _checked_ssl_context(cfg):
    for what, path in (("certificate", cfg["tls_cert"]), ("key", cfg["tls_key"])):
        if path and not os.path.isfile(path):
            raise CliFailure("%s file %s does not exist" % (what, path))
    try:
        return ssl_context(cfg)
    except (OSError, ValueError) as e:  # ssl.SSLError is an OSError
        raise CliFailure("cannot use certificate %s with key %s: %s"
                         % (cfg["tls_cert"], cfg["tls_key"], reason(e)))


def _checked_app(cfg):
    try:
        return _checked(make_app, cfg)
    except OSError as e:
        raise CliFailure("cannot make the files directory %s: %s" % (cfg["files"], reason(e)))


def _checked(open_store, *args):
    """open_store(*args) with the database's errors as one-line CLI errors."""
    try:
        return open_store(*args)
    except Unavailable as e:
        raise CliFailure(str(e))
    except ValueError as e:  # a database URL of another kind
        raise CliError(str(e))
