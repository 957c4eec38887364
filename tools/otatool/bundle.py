"""`otatool bundle`: make an app bundle, the update of an app directory.

A bundle is one stream a board checks and unpacks with constant memory
(lib/ota/bundle.py is the reader; this is the writer and the host's reader):

    offset  size  field (little-endian)
    0       4     magic b"OTAB"
    4       1     format version (1)
    5       1     flags (0; reserved for compression)
    6       2     header length: these 80 bytes + entries + header SHA-256
    8       2     number of entries
    10      2     secure_version: anti-rollback counter; a board refuses a
                  bundle with a lower one than installed (as ESP-IDF does)
    12      4     data length: the sum of the file sizes
    16      32    app version, ASCII, NUL-padded (as esp_app_desc_t.version)
    48      32    project name, ASCII, NUL-padded
    80      ...   entries, each: u8 kind (0 file, 1 delete), u8 name length,
                  name; a file adds u32 size and its 32-byte SHA-256
    ...     32    SHA-256 of every header byte before it
    then the files' bytes, one after another, in entry order.

Entries are sorted by the name in lower case with "/" ranking below every
other character. The board then finds duplicates (also ones that differ only
in case, which FAT would merge) and a path that is both a file and a
directory ("lib" and "lib/x.py") by comparing neighbours: O(1) memory.

Why not tar (micropython-lib `tarfile`): a tar header costs 512 bytes per
file and carries no hash, and the member list is only known at the end of
the stream, so a board could check neither the names, nor the free space,
nor what will be deleted before writing. This header is ~70 bytes per file,
bounded, and lets the board refuse a bad bundle before it stores any file.
The bundle itself is not compressed (the flags byte stays 0): `otatool
bundle --compress` wraps the whole bundle in a compressed update
(otatool.compressed), as it does an app image.
"""
import hashlib
import os
import re
import struct

from otatool.cli import CliError, add_compression_options, compress_for_board, write_output

MAGIC = b"OTAB"
FORMAT = 1
FIXED = struct.Struct("<4sBBHHHI32s32s")  # 80 bytes
FILE, DELETE = 0, 1
HEADER_MAX = 32768      # the board refuses longer headers
ENTRIES_MAX = 1024
NAME_MAX = 120          # bytes of one relative path
_BAD_CHARS = set('\\:*?"<>|')
_VERSION = re.compile(r"^v?\d+(\.\d+)*(-[0-9A-Za-z.]+)?$")
# Not part of an app: caches and hidden files (.git, editor swap files).
_SKIP_DIRS = {"__pycache__"}


def sort_key(name):
    """The order of entries in a bundle (the board checks it)."""
    return name.lower().replace("/", "\x01")


def check_name(name):
    """Raise ValueError unless `name` is a safe relative path for a board."""
    if not name or len(name.encode("utf-8", "replace")) > NAME_MAX:
        raise ValueError("%r: a name has 1 to %d bytes" % (name, NAME_MAX))
    for c in name:
        if not " " <= c <= "~" or c in _BAD_CHARS:
            raise ValueError("%r: only printable ASCII without \\ : * ? \" < > |" % name)
    for part in name.split("/"):
        if part in ("", ".", ".."):
            raise ValueError("%r: must be relative, without empty, '.' or '..' parts" % name)


def _check_text(what, text):
    raw = text.encode("ascii", "replace")
    if len(raw) > 31 or "\x00" in text or not text.isprintable():
        raise ValueError("%s %r: at most 31 printable ASCII characters" % (what, text))
    return raw


def check_order(names):
    """Raise ValueError on duplicates or a name used as file and directory."""
    prev = None
    for name in sorted(names, key=sort_key):
        key = sort_key(name)
        if prev is not None and (key == prev[0] or key.startswith(prev[0] + "\x01")):
            raise ValueError("%r and %r name the same path or one lies inside the other"
                             % (prev[1], name))
        prev = (key, name)


def collect_files(src_dir):
    """{relative name: bytes} of every file below src_dir, skipping hidden
    entries and __pycache__."""
    files = {}
    for root, dirs, names in os.walk(src_dir):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d not in _SKIP_DIRS)
        for n in names:
            if n.startswith("."):
                continue
            path = os.path.join(root, n)
            rel = os.path.relpath(path, src_dir).replace(os.sep, "/")
            with open(path, "rb") as f:
                files[rel] = f.read()
    return files


def build(files, version, project="", delete=(), secure_version=0):
    """The bundle of `files` ({name: bytes}) as bytes. Raises ValueError."""
    if not _VERSION.match(version or ""):
        raise ValueError("version %r: use MAJOR.MINOR.PATCH (digits, optional -suffix)" % version)
    if not 0 <= secure_version <= 0xFFFF:
        raise ValueError("secure_version %r: 0 to 65535" % secure_version)
    vraw = _check_text("version", version)
    praw = _check_text("project", project)
    names = list(files) + list(delete)
    for n in names:
        check_name(n)
    check_order(names)
    if len(names) > ENTRIES_MAX:
        raise ValueError("%d entries: at most %d" % (len(names), ENTRIES_MAX))
    entries, data = [], []
    for n in sorted(names, key=sort_key):
        raw = n.encode()
        if n in files:
            body = bytes(files[n])
            entries.append(struct.pack("<BB", FILE, len(raw)) + raw
                           + struct.pack("<I", len(body)) + hashlib.sha256(body).digest())
            data.append(body)
        else:
            entries.append(struct.pack("<BB", DELETE, len(raw)) + raw)
    body = b"".join(entries)
    hlen = FIXED.size + len(body) + 32
    if hlen > HEADER_MAX:
        raise ValueError("header of %d bytes: at most %d (fewer or shorter names)" % (hlen, HEADER_MAX))
    data_len = sum(len(d) for d in data)
    if data_len >= 1 << 32:
        raise ValueError("bundle too large")
    head = FIXED.pack(MAGIC, FORMAT, 0, hlen, len(names), secure_version, data_len, vraw, praw) + body
    return head + hashlib.sha256(head).digest() + b"".join(data)


def make_bundle(src_dir, version, project="", delete=(), secure_version=0):
    """The bundle of the files below src_dir (see collect_files) as bytes;
    `delete` names paths of the app directory the update removes."""
    if not os.path.isdir(src_dir):
        raise ValueError("%s: not a directory" % src_dir)
    files = collect_files(src_dir)
    if not files and not delete:
        raise ValueError("%s: no files" % src_dir)
    return build(files, version, project, delete, secure_version)


def _text(raw):
    return raw.rstrip(b"\x00").decode("ascii", "replace")


def read_bundle_header(data):
    """Check a bundle's header and describe it as a dict: format, version,
    project_name, secure_version, header_size, data_size, size (of the whole
    bundle), files [{name, size, sha256 (hex)}], delete [names]. data: the
    bundle or any prefix of it that holds the header. Raises ValueError if
    it is not one."""
    data = bytes(data)
    if len(data) < FIXED.size or data[:4] != MAGIC:
        raise ValueError("not an app bundle (no OTAB magic)")
    magic, fmt, flags, hlen, count, secure_version, dlen, vraw, praw = FIXED.unpack_from(data)
    if fmt != FORMAT or flags:
        raise ValueError("bundle format %d flags %d: not supported" % (fmt, flags))
    if not FIXED.size + 32 <= hlen <= HEADER_MAX or count > ENTRIES_MAX:
        raise ValueError("bad header length %d or entry count %d" % (hlen, count))
    if len(data) < hlen:
        raise ValueError("truncated header: %d of %d bytes" % (len(data), hlen))
    if hashlib.sha256(data[:hlen - 32]).digest() != data[hlen - 32:hlen]:
        raise ValueError("header SHA-256 does not match")
    files, delete, names = [], [], []
    pos = FIXED.size
    for _ in range(count):
        if pos + 2 > hlen - 32:
            raise ValueError("entries run past the header")
        kind, nlen = data[pos], data[pos + 1]
        name = data[pos + 2:pos + 2 + nlen].decode("ascii", "replace")
        pos += 2 + nlen
        check_name(name)
        names.append(name)
        if kind == FILE:
            size, = struct.unpack_from("<I", data, pos)
            files.append({"name": name, "size": size, "sha256": data[pos + 4:pos + 36].hex()})
            pos += 36
        elif kind == DELETE:
            delete.append(name)
        else:
            raise ValueError("entry %r: unknown kind %d" % (name, kind))
    if pos != hlen - 32:
        raise ValueError("header length does not match its entries")
    if [sort_key(n) for n in names] != sorted(sort_key(n) for n in names):
        raise ValueError("entries are not sorted")
    check_order(names)
    if sum(f["size"] for f in files) != dlen:
        raise ValueError("data length does not match the file sizes")
    return {"format": fmt, "version": _text(vraw), "project_name": _text(praw),
            "secure_version": secure_version, "header_size": hlen, "data_size": dlen, "size": hlen + dlen,
            "files": files, "delete": delete}


def check_bundle(data):
    """read_bundle_header of a whole bundle, after checking that `data` is
    exactly the bundle its header describes and that every file's bytes
    match its SHA-256. Raises ValueError."""
    h = read_bundle_header(data)
    if h["size"] != len(data):
        raise ValueError("bundle has %d bytes, its header says %d" % (len(data), h["size"]))
    pos = h["header_size"]
    for f in h["files"]:
        if hashlib.sha256(data[pos:pos + f["size"]]).hexdigest() != f["sha256"]:
            raise ValueError("%s: SHA-256 does not match the header" % f["name"])
        pos += f["size"]
    return h


def changes(old, new):
    """What installing bundle `new` over `old` (read_bundle_header dicts)
    does to the app directory, as a board does it: ([added], [changed],
    [removed], [unchanged]) names. Removed: what `old` installed and `new`
    does not name, and `new`'s --delete names."""
    before = {f["name"]: f["sha256"] for f in old["files"]}
    added, changed, unchanged = [], [], []
    for f in new["files"]:
        sha = before.pop(f["name"], None)
        (added if sha is None else unchanged if sha == f["sha256"] else changed).append(f["name"])
    removed = sorted(set(before) | set(new["delete"]), key=sort_key)
    return added, changed, removed, unchanged


def _read_header(path):
    try:
        with open(path, "rb") as f:
            return read_bundle_header(f.read(HEADER_MAX))
    except (ValueError, OSError) as e:
        raise CliError("%s: %s" % (path, e))


def cmd_bundle(args):
    if not args.compress and (args.window_bits or args.block_size):
        raise CliError("--window, --window-bits and --block-size need --compress")
    old = _read_header(args.against) if args.against else None
    try:
        data = make_bundle(args.src_dir, args.version, args.project, args.delete, args.secure_version)
        wire, note = compress_for_board(data, args) if args.compress else (data, None)
    except (ValueError, OSError) as e:
        raise CliError(str(e))
    write_output(args.output, wire)
    d = read_bundle_header(data)
    print("%s: app bundle %s%s, %d files (%d bytes), %d deletions, %d bytes"
          % (args.output, d["version"], " of " + d["project_name"] if d["project_name"] else "",
             len(d["files"]), d["data_size"], len(d["delete"]), len(data)))
    if note:
        print(note)
    if old:
        added, changed, removed, unchanged = changes(old, d)
        print("over %s: %d added, %d changed, %d removed, %d unchanged"
              % (old["version"], len(added), len(changed), len(removed), len(unchanged)))
        for mark, names in (("+", added), ("~", changed), ("-", removed)):
            for n in names:
                print("  %s %s" % (mark, n))
    return 0


def register(subparsers):
    p = subparsers.add_parser(
        "bundle", help="make an app bundle (update of an app directory, any board)",
        description="Pack every file below SRC_DIR (hidden files and __pycache__ "
                    "skipped) into an app bundle for ota.AppBundle. A bundle is the whole "
                    "app version: a board that installs it removes the files its previous "
                    "bundle installed and this one lacks (and restores them on rollback).")
    p.add_argument("src_dir", metavar="SRC_DIR")
    p.add_argument("--version", required=True, help="app version, e.g. 1.4.0")
    p.add_argument("--project", default="", help="project name (31 characters at most)")
    p.add_argument("--secure-version", type=int, default=0, metavar="N",
                   help="anti-rollback counter: boards refuse bundles with a lower one (default 0)")
    p.add_argument("--delete", action="append", default=[], metavar="NAME",
                   help="a file no bundle installed (copied by hand) that the update removes "
                        "(repeatable); files of the previous bundle that this one lacks go anyway")
    p.add_argument("--against", metavar="OLD.bundle",
                   help="the previous release: list what the update adds (+), changes (~) and removes (-)")
    p.add_argument("-o", "--output", required=True, metavar="FILE")
    p.add_argument("--compress", action="store_true",
                   help="write it as a compressed update, a smaller download (docs/COMPRESSED.md)")
    add_compression_options(p, " (with --compress)")
    p.set_defaults(func=cmd_bundle)
