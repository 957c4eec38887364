"""The campaign server's settings, layered: DEFAULTS < a TOML file (keys as
in DEFAULTS) < the environment (ENV) < the command line; then checked and
completed (integers parsed, the port in range, the files directory next to
the database, HTTPS only with both a certificate and a key). What each
setting means is in otatool.server's docstring.
"""
import os

from otatool.serve import check_port

DEFAULTS = {
    "host": "0.0.0.0",
    "port": 8080,
    "db": "ota-server.sqlite",
    "files": None,
    "public_url": None,
    "tls_cert": None,
    "tls_key": None,
    "max_upload": 4 * 1024 * 1024,
    "max_attempts": 3,
    "backoff_base": 60,
    "backoff_max": 86400,
    "db_connections": 8,
    "backlog": 1024,
}
ENV = {
    "OTA_SERVER_HOST": "host",
    "OTA_SERVER_PORT": "port",
    "OTA_SERVER_DB": "db",
    "OTA_SERVER_FILES": "files",
    "OTA_SERVER_PUBLIC_URL": "public_url",
    "OTA_SERVER_CERT": "tls_cert",
    "OTA_SERVER_KEY": "tls_key",
    "OTA_SERVER_MAX_UPLOAD": "max_upload",
    "OTA_SERVER_DB_CONNECTIONS": "db_connections",
    "OTA_SERVER_BACKLOG": "backlog",
}
_INTS = ("port", "max_upload", "max_attempts", "backoff_base", "backoff_max", "db_connections",
         "backlog")


def load_config(path=None, environ=None, **overrides):
    """The merged configuration (see the module docstring)."""
    import tomllib
    cfg = dict(DEFAULTS)
    if path:
        with open(path, "rb") as f:
            try:
                settings = tomllib.load(f)
            except tomllib.TOMLDecodeError as e:
                raise ValueError("%s: %s" % (path, e)) from None
        cfg.update(only_known(settings, path))
    env = os.environ if environ is None else environ
    cfg.update({key: env[var] for var, key in ENV.items() if env.get(var)})
    cfg.update({k: v for k, v in overrides.items() if v is not None})
    return normalized(cfg)


def only_known(d, where):
    """`d` when every key of it is a setting; ValueError naming the others."""
    unknown = set(d) - set(DEFAULTS)
    if unknown:
        raise ValueError("%s: unknown setting(s) %s" % (where, ", ".join(sorted(unknown))))
    return d


def normalized(cfg):
    """`cfg` checked and completed (see the module docstring)."""
    for k in _INTS:
        cfg[k] = _setting_int(k, cfg[k])
    check_port(cfg["port"])
    for k in ("db_connections", "backlog"):
        if cfg[k] < 1:
            raise ValueError("%s: %d is not a positive number" % (k, cfg[k]))
    if cfg["files"] is None:
        base = "." if "://" in cfg["db"] else os.path.dirname(os.path.abspath(cfg["db"]))
        cfg["files"] = os.path.join(base, "ota-files")
    if bool(cfg["tls_cert"]) != bool(cfg["tls_key"]):
        raise ValueError("HTTPS needs both tls_cert and tls_key (--cert and --key)")
    return cfg


def _setting_int(key, value):
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ValueError("%s: %r is not an integer" % (key, value)) from None
