"""`otatool image info|make`: check and make ESP32 app images.

Checking runs the DEVICE's streaming validator (lib/ota/image.py) under
CPython, so the host accepts exactly what a board will accept.
"""

from otatool import device_module
from otatool.appimage import CHIP_IDS, chip_ids, make_app_image
from otatool.cli import CliError, desc_text, int_range, write_output

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


def cmd_info(args):
    try:
        with open(args.file, "rb") as f:
            data = f.read()
    except OSError as e:
        raise CliError("%s: %s" % (args.file, e.strerror or e))
    try:
        d = describe_image(data, args.chip)
    except ValueError as e:
        raise CliError("%s: %s" % (args.file, e))
    print("%s: %s app image, %d bytes, checksum%s valid"
          % (args.file, d["chip"], d["length"], " and SHA-256" if d["hash_appended"] else ""))
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


def register(sub):
    p = sub.add_parser("image", help="check or make ESP32 app images")
    isub = p.add_subparsers(dest="image_command", required=True, metavar="ACTION")

    info = isub.add_parser("info", help="validate an app image as a board would and describe it")
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
