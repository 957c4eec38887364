"""`otatool image info|make|compress`: check, make and compress ESP32 app
images.

Checking runs the DEVICE's streaming validator (lib/ota/image.py) under
CPython, so the host accepts exactly what a board will accept. A compressed
update (otatool.compressed) is inflated, every field checked, and what it
holds is checked the same way.
"""

from otatool import compressed, device_module
from otatool.appimage import CHIP_IDS, chip_ids, make_app_image
from otatool.cli import (CliError, add_compression_options, compress_for_board,
                         compression_note, desc_text, int_range, write_output)

MAX_IMAGE = 16 << 20  # the largest app partition ESP-IDF can map


def describe_image(data, chip=None):
    """Validate a whole app image; return its description as a dict (chip,
    length, hash_appended and the app descriptor fields). chip: the board's
    chip name, or None to take the one in the header. Raises ValueError."""
    image, OTAError = device_module("ota.image"), device_module("ota").OTAError
    image_chip = device_module("ota.chips").image_chip
    if len(data) < 24 or data[0] != 0xE9:
        raise ValueError("not an ESP app image (first byte must be 0xE9)")
    known = chip_ids()
    if chip is None:
        chip = image_chip(data)
        if chip not in known:
            raise ValueError("an image for %s: not a chip with OTA app partitions (one of %s)"
                             % (chip, ", ".join(sorted(known))))
    elif chip not in known:
        raise ValueError("unknown chip %r (one of %s)" % (chip, ", ".join(sorted(known))))
    v = image.ImageValidator(known[chip], MAX_IMAGE)
    try:
        v.feed(memoryview(data))
        v.done()
    except OTAError as e:
        raise ValueError(str(e)) from None
    return dict(v.desc, chip=chip, length=v.length, hash_appended=data[23] != 0)


def describe_update(data, chip=None):
    """A whole app image (describe_image) or app bundle (check_bundle's
    header) checked as a board checks it, as a dict with kind ("firmware"
    or "bundle"), chip (None for a bundle), version and project_name.
    ValueError for anything else, a compressed update included."""
    if data[:1] == b"\xe9":
        return dict(describe_image(data, chip), kind="firmware")
    if compressed.is_compressed(data):
        raise ValueError("compressed twice")
    from otatool.bundle import MAGIC, check_bundle
    if data[:4] != MAGIC:
        raise ValueError("not an ESP app image (first byte 0xE9) nor an app bundle (magic OTAB)")
    return dict(check_bundle(data), kind="bundle", chip=None)


def inflate(data, limit):
    """(header, inflated bytes) of a compressed update whose header promises
    at most `limit` bytes: the header is checked, and its total_size
    bounded, before anything is inflated. ValueError with one line."""
    header = compressed.CompressedHeader.from_bytes(data)
    if header.total_size > limit:
        raise ValueError("it would inflate to %d bytes, more than the %d allowed"
                         % (header.total_size, limit))
    return header, compressed.decompress(data)


def _read(path):
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise CliError("%s: %s" % (path, e.strerror or e))


def cmd_info(args):
    data = _read(args.file)
    name = args.file
    try:
        if compressed.is_compressed(data):
            header, data = inflate(data, MAX_IMAGE)
            print("%s: %s" % (name, compression_note(header, header.offsets[-1])))
            name = "  inflated"
        d = describe_update(data, args.chip)
    except ValueError as e:
        raise CliError("%s: %s" % (args.file, e))
    if d["kind"] == "bundle":
        print("%s: app bundle %s, %d files (%d bytes), %d deletions, %d bytes"
              % (name, d["version"], len(d["files"]), d["data_size"], len(d["delete"]), d["size"]))
        return 0
    print("%s: %s app image, %d bytes, checksum%s valid"
          % (name, d["chip"], d["length"], " and SHA-256" if d["hash_appended"] else ""))
    print("  version:        %s" % d["version"])
    print("  project_name:   %s" % d["project_name"])
    print("  idf_ver:        %s" % d["idf_ver"])
    print("  built:          %s %s" % (d["date"], d["time"]))
    print("  secure_version: %d" % d["secure_version"])
    return 0


def cmd_make(args):
    try:
        data = make_app_image(version=args.version, chip=args.chip, size=args.size,
                              secure_version=args.secure_version, project_name=args.project)
    except ValueError as e:
        raise CliError(str(e))
    write_output(args.output, data)
    print("%s: %s app image %s, %d bytes" % (args.output, args.chip, args.version, len(data)))
    return 0


def cmd_compress(args):
    data = _read(args.file)
    if compressed.is_compressed(data):
        raise CliError("%s: already a compressed update" % args.file)
    try:
        d = describe_update(data)
    except ValueError as e:
        raise CliError("%s: not an app image or app bundle to compress: %s" % (args.file, e))
    try:
        z, note = compress_for_board(data, args)
    except ValueError as e:  # more blocks than the format holds
        raise CliError("%s: %s" % (args.file, e))
    write_output(args.output, z)
    what = "%s app image" % d["chip"] if d["kind"] == "firmware" else "app bundle"
    print("%s: %s %s, %s" % (args.output, what, d["version"], note))
    return 0


def register(sub):
    p = sub.add_parser("image", help="check or make ESP32 app images")
    isub = p.add_subparsers(dest="image_command", required=True, metavar="ACTION")

    info = isub.add_parser("info", help="validate an app image, app bundle or compressed update "
                                        "as a board would and describe it")
    info.add_argument("file")
    info.add_argument("--chip", choices=sorted(chip_ids()),
                      help="the board's chip (default: the one named in the image)")
    info.set_defaults(func=cmd_info)

    make = isub.add_parser("make", help="make a synthetic app image (for tests and demos)")
    make.add_argument("--version", required=True, type=desc_text,
                      help="app version string, e.g. 1.2.0")
    make.add_argument("--chip", choices=sorted(CHIP_IDS), default="esp32")
    make.add_argument("--size", type=int_range(1, MAX_IMAGE), default=None,
                      help="approximate image size in bytes (at most 16 MiB)")
    make.add_argument("--secure-version", type=int_range(0, 0xFFFFFFFF), default=0,
                      help="anti-rollback counter in the app descriptor (default 0)")
    make.add_argument("--project", default="ota-app", type=desc_text,
                      help="project name in the app descriptor")
    make.add_argument("-o", "--output", required=True)
    make.set_defaults(func=cmd_make)

    comp = isub.add_parser(
        "compress", help="compress an app image or bundle for a smaller download",
        description="Check that FILE is an app image or app bundle a board accepts, then write "
                    "it as a compressed update: blocks of raw deflate that a board inflates "
                    "as they arrive (docs/COMPRESSED.md).")
    comp.add_argument("file", metavar="FILE")
    comp.add_argument("-o", "--output", required=True, metavar="OUT",
                      help="the compressed update, e.g. FILE.z")
    add_compression_options(comp, "")
    comp.set_defaults(func=cmd_compress)
