"""`otatool keygen` and `otatool sign`: Ed25519 keys and signed manifests.

The private key stays on the publisher's machine (a PEM file, mode 0600); a
board holds only the public key, as the base64 of its 32 raw bytes, and
checks every manifest with it before it downloads anything. The manifest
format is described and read on the board by lib/ota/manifest.py; this side
writes it, then reads its own output back through that same device module, so
a manifest the tool writes is one a board accepts.
"""
import base64
import hashlib
import json
import os
import sys

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from otatool import device_module
from otatool.cli import CliError

DEFAULT_KEYFILE = "ota-signing-key.pem"


def _device():
    return device_module("ota.manifest"), device_module("ota").OTAError


def public_key_b64(private_key):
    """The public key as a board stores it: base64 of the 32 raw bytes."""
    raw = private_key.public_key().public_bytes(serialization.Encoding.Raw,
                                                serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode()


def write_new_key(path):
    """Generate a key, write it to `path` (PEM, mode 0600, never over an
    existing file: FileExistsError) and return it."""
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.fchmod(fd, 0o600)  # exactly 0600 whatever the umask
        os.write(fd, pem)
    finally:
        os.close(fd)
    return key


def load_private_key(path):
    """The Ed25519 private key in a PEM file. Raises ValueError."""
    with open(path, "rb") as f:
        pem = f.read()
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as e:
        raise ValueError("%s: not an unencrypted PEM private key (%s)" % (path, e)) from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError("%s: not an Ed25519 key" % path)
    return key


def _describe(data, kind):
    # (kind, version, project, chip, secure_version) as the update itself
    # says them; None where it says nothing (a bundle has no chip, maybe no
    # project)
    from otatool.bundle import MAGIC, read_bundle_header
    if kind in (None, "bundle") and data[:4] == MAGIC:
        d = read_bundle_header(data)
        return "bundle", d["version"], d["project_name"] or None, None, d["secure_version"]
    if kind in (None, "firmware") and data[:1] == b"\xe9":
        from otatool.image import describe_image
        d = describe_image(data)
        return "firmware", d["version"], d["project_name"], d["chip"], d["secure_version"]
    if kind is None:
        raise ValueError("neither an ESP app image nor an app bundle")
    raise ValueError("not a valid %s" % ("ESP app image" if kind == "firmware" else "app bundle"))


def make_manifest(data, url, kind=None, version=None, project=None, chip=None,
                  secure_version=None):
    """The manifest fields (a dict) for an app image or bundle `data`.
    Version, project, chip and secure_version come from the image's app
    descriptor or the bundle header; an argument given must agree with it
    (a manifest whose version differs from what the board will then run
    would make the board update forever). A bundle is for chip "any" unless
    `chip` pins it (.mpy files with native code). A compressed update
    (otatool.compressed) is described by the image it inflates to: sha256
    and size are that image's, what a board installs, and compressed_sha256
    and compressed_size those of `data`, what it downloads. Raises
    ValueError."""
    from otatool.compressed import decompress, is_compressed
    data = bytes(data)
    wire = None
    if is_compressed(data):
        wire = {"compressed_size": len(data),
                "compressed_sha256": hashlib.sha256(data).hexdigest()}
        data = decompress(data)
    kind, v, p, c, sv = _describe(data, kind)
    for name, given, found in (("version", version, v), ("project", project, p),
                               ("chip", chip, c), ("secure_version", secure_version, sv)):
        if given is not None and found is not None and given != found:
            raise ValueError("%s %r does not match the %s's %r"
                             % (name, given, "image" if kind == "firmware" else "bundle", found))
    fields = {"kind": kind, "version": v, "project": project or p or "",
              "chip": chip or c or "any",
              "secure_version": secure_version if secure_version is not None else sv or 0,
              "size": len(data), "sha256": hashlib.sha256(data).hexdigest(), "url": url}
    fields.update(wire or {})
    try:
        device_module("ota.version").version_key(v)
    except ValueError as e:
        raise ValueError("%s: a board compares versions as dotted numbers" % e) from None
    return fields


def canonical_bytes(fields):
    """The signed bytes: compact JSON, sorted keys, ASCII only."""
    return json.dumps(fields, sort_keys=True, separators=(",", ":"),
                      ensure_ascii=True).encode("ascii")


def sign_manifest(fields, private_key):
    """The manifest file (bytes) for `fields`, signed with `private_key`.
    Raises ValueError if a board would refuse it (bad field, too large)."""
    body = canonical_bytes(fields)
    env = {"manifest": base64.b64encode(body).decode(),
           "sig": base64.b64encode(private_key.sign(body)).decode()}
    out = (json.dumps(env, sort_keys=True, separators=(",", ":")) + "\n").encode()
    manifest, OTAError = _device()
    try:
        manifest.parse_manifest(out, public_key_b64(private_key))
    except OTAError as e:
        raise ValueError(e.msg) from None
    return out


def cmd_keygen(args):
    try:
        key = write_new_key(args.output)
    except FileExistsError:
        raise CliError("%s exists: refusing to overwrite a key" % args.output)
    except OSError as e:
        raise CliError("%s: %s" % (args.output, e.strerror or e))
    print("otatool: wrote private key %s (mode 0600): keep it secret, it never goes on a board"
          % args.output, file=sys.stderr)
    print(public_key_b64(key))
    return 0


def cmd_sign(args):
    try:
        with open(args.file, "rb") as f:
            data = f.read()
        key = load_private_key(args.key)
    except OSError as e:
        raise CliError("%s: %s" % (e.filename, e.strerror or e))
    except ValueError as e:
        raise CliError(str(e))
    try:
        fields = make_manifest(data, args.url, kind=args.kind, version=args.version,
                               project=args.project, chip=args.chip,
                               secure_version=args.secure_version)
        out = sign_manifest(fields, key)
    except ValueError as e:
        raise CliError("%s: %s" % (args.file, e))
    output = args.output or os.path.splitext(args.file)[0] + ".manifest.json"
    try:
        with open(output, "wb") as f:
            f.write(out)
    except OSError as e:
        raise CliError("%s: %s" % (output, e.strerror or e))
    print("%s: %s %s %s for %s, %d bytes, url %s" % (output, fields["kind"], fields["project"],
                                                    fields["version"], fields["chip"],
                                                    fields["size"], fields["url"]))
    return 0


def register(sub):
    k = sub.add_parser("keygen", help="make an Ed25519 signing key; print the public key for boards")
    k.add_argument("-o", "--output", default=DEFAULT_KEYFILE,
                   help="private key file to create (default: %s)" % DEFAULT_KEYFILE)
    k.set_defaults(func=cmd_keygen)

    s = sub.add_parser(
        "sign", help="write the signed manifest of an app image or bundle (compressed or not)",
        description="Write the signed manifest of an app image or bundle, compressed or not "
                    "(a compressed one names both hashes and sizes): FILE.manifest.json "
                    "next to it unless -o says otherwise (app-1.2.0.bin -> "
                    "app-1.2.0.manifest.json).",
        epilog="Publishing with static hosting (`otatool serve DIR`, nginx, a CDN): put the "
               "image and the manifest in one directory, sign with --url set to the image's "
               "file name (a URL relative to the manifest), and set the board's url to the "
               "manifest, e.g. -o DIR/latest.manifest.json overwritten by each release. With "
               "`otatool server`, upload the manifest with the image (field `manifest`); the "
               "server serves the image under that relative name. The board needs only the "
               "public key that `otatool keygen` printed.")
    s.add_argument("file", metavar="IMAGE_OR_BUNDLE")
    s.add_argument("--key", required=True, help="private key file from `otatool keygen`")
    s.add_argument("--url", required=True,
                   help="where boards fetch the update: absolute, or relative to the manifest's URL")
    s.add_argument("--version", help="check that the update has this version")
    s.add_argument("--kind", choices=("firmware", "bundle"),
                   help="check the update's kind (default: from its first bytes)")
    s.add_argument("--chip", help="bundles: the only chip that may install it (default: any)")
    s.add_argument("--project", help="check the update's project name")
    s.add_argument("--secure-version", type=int,
                   help="bundles: anti-rollback counter (default 0); firmware: check it")
    s.add_argument("-o", "--output",
                   help="manifest file (default: FILE with its extension replaced by "
                        ".manifest.json)")
    s.set_defaults(func=cmd_sign)
