# Signed update manifests: what to fetch, checked with the publisher's
# Ed25519 public key before a single byte of the update is downloaded.
#
# Format (one file, the same from the dev server, the campaign server and
# static hosting), at most MAX_SIZE bytes:
#
#   {"manifest": "<base64 of the canonical bytes>", "sig": "<base64 of 64 bytes>"}
#
# The canonical bytes are compact JSON with sorted keys, ASCII only:
#   {"chip":"esp32","kind":"firmware","project":"app","secure_version":0,
#    "sha256":"<64 hex>","size":1234,"url":"app-1.2.0.bin","version":"1.2.0"}
# and the signature (RFC 8032 Ed25519) covers exactly those bytes.
#
# Why this shape: the signed bytes travel opaque (base64), so the board never
# re-serialises anything and there is no canonicalisation to get wrong: it
# verifies the bytes it received, then parses those same bytes with the
# firmware's C `json` module. No text format to write a parser for, no
# whitespace or key-order ambiguity, and the envelope is itself JSON that a
# campaign server can embed in its replies. Base64 costs a third more bytes,
# which is nothing at this size. Every field is required, unknown fields are
# refused (a newer format fails loudly, never half-understood), and base64
# must be canonical (MicroPython's decoder silently skips junk characters).
#
# A compressed update (ota.inflate) adds two fields, both or neither:
#   "compressed_sha256":"<64 hex>","compressed_size":567
# of the file at url, as it travels; sha256 and size stay those of the image
# it inflates to, i.e. of what is installed. A board refuses a download whose
# compressed bytes or inflated bytes do not match.
#
# chip is an esptool chip name ("esp32", "esp32s3", "esp32c3", "esp8266") or
# "any" for a bundle of portable .py files. url is absolute or relative to the
# manifest's own URL (resolve_url). secure_version is the anti-rollback
# counter (esp_app_desc_t.secure_version; 0 for bundles that have none).
import binascii
import json
import sys

from ota import const, OTAError, _unload

# esp_err_t values (as in ota/errors.py), inlined by const(). Imported from
# ota they would load ota.errors into every check: ~1.4 KiB of heap and two
# dozen interned names, which only a failure's OTAError.name needs.
_INVALID_ARG = const(0x102)
_INVALID_SIZE = const(0x104)
_INVALID_VERSION = const(0x10A)
_VALIDATE_FAILED = const(0x1503)
_SMALL_SEC_VER = const(0x1504)

MAX_SIZE = 2048
KINDS = ("firmware", "bundle")
# name -> type, in the canonical (sorted) order
FIELDS = (("chip", str), ("kind", str), ("project", str), ("secure_version", int),
          ("sha256", str), ("size", int), ("url", str), ("version", str))
COMPRESSED = (("compressed_sha256", str), ("compressed_size", int))


def _invalid(msg):
    return OTAError(_VALIDATE_FAILED, msg)


def _b64(text, what):
    # Strict base64: decode, then require that re-encoding gives the input.
    try:
        raw = binascii.a2b_base64(text)
    except ValueError:
        raw = None
    if raw is None or binascii.b2a_base64(raw)[:-1] != text.encode():
        raise _invalid("manifest: %s is not valid base64" % what)
    return raw


# (key bytes, curve point) of the last key decoded. Decoding takes a
# modular square root: main.py's configuration check, begin() and the
# signature check all use one key, decoded once.
_decoded = None


def public_key_bytes(public_key):
    """The 32 raw key bytes from bytes or from the base64 text that
    `otatool keygen` prints. A key no signature may be checked against (not
    a canonical curve point, or of small order: such a key "verifies"
    forgeries) is the caller's error, ESP_ERR_INVALID_ARG, raised before
    anything is downloaded."""
    held = _held()
    try:
        return _key(public_key)[0]
    finally:
        _release(held)


def _held():
    return "ota.ed25519" in sys.modules


def _release(held):
    # The Ed25519 and SHA-512 code (~20 KiB of an ESP8266's heap) is needed
    # for one check per update: unloaded right after it, unless it was
    # loaded before, so that the download gets that heap.
    if not held:
        _unload("ed25519", "sha512")


def _key(public_key):
    # -> (key bytes, decoded point), as public_key_bytes checks it
    global _decoded
    if isinstance(public_key, str):
        try:
            public_key = _b64(public_key, "public_key")
        except OTAError:
            public_key = b""
    if len(public_key) != 32:
        raise OTAError(_INVALID_ARG,
                       "public_key must be 32 bytes or their base64 (otatool keygen prints it)")
    public_key = bytes(public_key)
    if _decoded is None or _decoded[0] != public_key:
        from ota.ed25519 import public_point
        point = public_point(public_key)
        if point is None:
            raise OTAError(_INVALID_ARG, "public_key is not a valid Ed25519 key")
        _decoded = (public_key, point)
    return _decoded


def _check_fields(m):
    fields = FIELDS + COMPRESSED if "compressed_size" in m or "compressed_sha256" in m \
        else FIELDS
    names = [name for name, _ in fields]
    for name in m:
        if name not in names:
            raise _invalid("signed manifest: unknown field %r" % name)
    for name, typ in fields:
        if name not in m:
            raise _invalid("signed manifest: missing field %r" % name)
        if type(m[name]) is not typ:
            raise _invalid("signed manifest: field %r must be %s"
                           % (name, "an integer" if typ is int else "a string"))
    if m["kind"] not in KINDS:
        raise _invalid("signed manifest: kind %r is not firmware or bundle" % m["kind"])
    if m["chip"] == "any" and m["kind"] == "firmware":
        raise _invalid("signed manifest: a firmware image is for one chip, not 'any'")
    for name in ("sha256", "compressed_sha256"):
        sha = m.get(name, "0" * 64)
        if len(sha) != 64 or sha.strip("0123456789abcdef"):
            raise _invalid("signed manifest: %s must be 64 lower-case hex digits" % name)
    if m["size"] <= 0 or m.get("compressed_size", 1) <= 0 or m["secure_version"] < 0 \
            or not m["url"]:
        raise _invalid("signed manifest: size, secure_version or url out of range")
    # ota.version after the signature check, not during it (its heap peak)
    from ota.version import version_key
    try:
        version_key(m["version"])
    except ValueError as e:
        raise _invalid("signed manifest: %s" % e)


def parse_manifest(data, public_key):
    """Verify a manifest file (bytes, at most MAX_SIZE) against the
    publisher's public key (32 bytes or base64) and return its fields as a
    dict. Raises OTAError: ESP_ERR_INVALID_SIZE when too large,
    ESP_ERR_OTA_VALIDATE_FAILED for anything malformed and for a signature
    that does not verify (the message then says "signature")."""
    held = _held()
    try:
        return _parse(data, public_key)
    finally:
        _release(held)


def _parse(data, public_key):
    key, point = _key(public_key)
    if len(data) > MAX_SIZE:
        raise OTAError(_INVALID_SIZE,
                       "manifest is larger than %d bytes: refused" % MAX_SIZE)
    try:
        env = json.loads(data)
    except (ValueError, RuntimeError):  # RuntimeError: nested too deep (CPython)
        raise _invalid("manifest is not valid JSON (truncated?)")
    if (type(env) is not dict or len(env) != 2 or type(env.get("manifest")) is not str
            or type(env.get("sig")) is not str):
        raise _invalid('manifest must be {"manifest": "<base64>", "sig": "<base64>"}')
    body = _b64(env["manifest"], "'manifest'")
    sig = _b64(env["sig"], "'sig'")
    env = None  # the base64 text: free it before verify needs the heap
    if len(sig) != 64:
        raise _invalid("manifest signature must be 64 bytes, not %d" % len(sig))
    from ota.ed25519 import verify
    if not verify(key, body, sig, point):
        raise _invalid("manifest signature does not verify with this public key "
                       "(tampered, or signed with another key)")
    try:
        m = json.loads(body)
    except (ValueError, RuntimeError):
        m = None
    if type(m) is not dict:
        raise _invalid("signed manifest is not a JSON object")
    _check_fields(m)
    return m


def check_manifest(m, chip, running_version, running_secure_version,
                   allow_downgrade=False, project=None):
    """Refuse a verified manifest this board must not install: another chip
    or project (ESP_ERR_INVALID_VERSION), a version not newer than the
    running one, i.e. an old manifest replayed (ESP_ERR_INVALID_VERSION,
    unless allow_downgrade), a lower secure_version
    (ESP_ERR_OTA_SMALL_SEC_VER, never allowed). Returns m."""
    if m["chip"] != chip and m["chip"] != "any":
        raise OTAError(_INVALID_VERSION,
                       "manifest is for chip %s, this board is %s" % (m["chip"], chip))
    if project is not None and m["project"] != project:
        raise OTAError(_INVALID_VERSION,
                       "manifest is for project %r, this board runs %r" % (m["project"], project))
    if m["secure_version"] < running_secure_version:
        raise OTAError(_SMALL_SEC_VER,
                       "manifest secure_version %d is lower than the running app's %d"
                       % (m["secure_version"], running_secure_version))
    if allow_downgrade:
        return m
    from ota.version import version_key
    try:
        newer = version_key(m["version"]) > version_key(running_version)
    except ValueError as e:
        raise OTAError(_INVALID_VERSION,
                       "cannot compare versions (%s); allow_downgrade skips the check" % e)
    if not newer:
        raise OTAError(_INVALID_VERSION,
                       "manifest version %s is not newer than the running %s "
                       "(an old manifest replayed?)" % (m["version"], running_version))
    return m


def resolve_url(manifest_url, url):
    """The absolute URL of a manifest's `url`, which may be relative to the
    URL the manifest was fetched from: resolved as the download resolves a
    redirect's Location (RFC 3986 section 5.2; dot segments are left to the
    server)."""
    from ota.http_extra import join_url
    return join_url(manifest_url, url)


def installed(target):
    """(chip, version, secure_version) of what `target` would replace: the
    running firmware image's, or for an app bundle the board's chip and the
    installed bundle's (version "0" if the app was never bundled). The chip:
    sys.platform, refined on an ESP32 by the MCU name that ends
    os.uname().machine ("... with ESP32S3"); on the host, the emulated
    board's profile."""
    if target.kind == "firmware":
        return target.current()
    import os
    import sys
    from ota.journal import running_desc
    chip = sys.platform
    if chip == "esp32":
        chip = os.uname().machine.split()[-1].lower()
    elif chip != "esp8266":
        chip = os.getenv("OTA_CHIP") or "esp32"
    d = running_desc(target.app) or {"version": "0", "secure_version": 0}
    return chip, d["version"], d["secure_version"]


def signed_image(url, public_key, allow_downgrade, target, options):
    """For ota.begin(..., public_key=): fetch the signed manifest at `url`
    (Download options as for the image), verify it and check it against
    what `target` holds now. -> (image url, sha256, size, wire): wire is
    (SHA-256, size) of a compressed file, None for an uncompressed one."""
    # A bad key fails before connecting; the Ed25519 code that decoding it
    # loads goes again (the point stays cached in _decoded) and comes back
    # for the signature: the manifest's download and its 2 KiB buffer get
    # an unfragmented heap.
    key = public_key_bytes(public_key)
    held = _held()
    http = "ota.http" in sys.modules
    try:
        import gc
        gc.collect()
        from ota.http import Download
        from ota.http_extra import read_body
        dl = Download(url, **options)
        try:
            dl.start()
            data = read_body(dl, MAX_SIZE)
        finally:
            dl.close()
        dl = Download = read_body = None
        if not http:
            # The HTTP code this fetch loaded goes too, before the Ed25519
            # code loads; the image's download loads it again.
            _unload("http", "http_extra", "url")
            gc.collect()
        if data is None:
            raise OTAError(_INVALID_SIZE, "manifest larger than %d bytes" % MAX_SIZE)
        m = _parse(data, key)
    finally:
        _release(held)
    data = None
    if m["kind"] != target.kind:
        raise OTAError(_INVALID_VERSION,
                       "manifest is for a %s, this update installs a %s" % (m["kind"], target.kind))
    chip, version, secure_version = installed(target)
    check_manifest(m, chip, version, secure_version, allow_downgrade)
    wire = None
    if "compressed_size" in m:
        wire = binascii.unhexlify(m["compressed_sha256"]), m["compressed_size"]
    url = resolve_url(url, m["url"])
    # The download this check starts needs none of this module's code (nor
    # ota.version's and ota.http_extra's, which ota.http loads again if a
    # redirect or resume asks): it goes, as the Ed25519 code went.
    _unload("manifest", "version", "http_extra")
    return url, m["sha256"], m["size"], wire
