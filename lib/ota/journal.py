# ota.journal: the installed state of an app bundle on the filesystem: the
# journal word, the staged and installed bundle headers, deleting a tree by
# one rename. ota.bundle (the download), ota.swap (the swap itself) and
# ota.bundle_boot (boot-time replay, confirm, rollback) use it; it never
# imports the downloader, so boot.py stays small.
#
# Everything lives beside the app directory A (default /app), on its
# filesystem, so that every step below is one rename:
#   A.ota/state      the journal: one word (see _STATES); A.ota/state.tmp is
#                    its next value, written whole and then renamed over it
#   A.ota/cur        header of the installed bundle (absent: never bundled)
#   A.ota/rejected   fixed part of the header of the last bundle rolled back
#                    unconfirmed: an update does not install it again
#   A.ota/new/       staging: "hdr" and one file per entry index "0", "1"...
#   A.ota/old/       the previous version: "hdr" (its header) and what the
#                    update replaced or deleted, by the same entry index; a
#                    file the previous bundle installed and this one does not
#                    name as "r" + its index in old/hdr
#                    (a file an update leaves as it is is not moved at all:
#                    old/ holds only what changed or went)
#   A.ota/trash      whatever is being deleted: renamed here first, so new/
#                    and old/ are always whole or gone
# Files of A that no bundle installed (config, data) are never touched; the
# files the installed bundle put there are the ones its header (cur) lists.
#
# Journal states (ESP-IDF's otadata states in brackets):
#   none   (VALID)           confirmed, no previous version kept
#   valid  (VALID)           confirmed, old/ holds the previous version
#   swap   (NEW)             forward swap under way: replayed forward
#   new    (NEW)             swapped in, not booted yet
#   pend   (PENDING_VERIFY)  booted once unconfirmed: the next boot rolls back
#   undo   (ABORTED)         reverse swap under way: replayed backward
import os
import sys

_MPY = sys.implementation.name == "micropython"   # CPython: no ilistdir

_STATES = ("none", "valid", "swap", "new", "pend", "undo")
FIXED = 80   # fixed part of a bundle header (see tools/otatool/bundle.py)


def exists(p):
    try:
        os.stat(p)
        return True
    except OSError:
        return False


def move(a, b):
    # Paths relative to "/": a VfsPosix mounted at "/" (the emulated board)
    # fails rename() of two absolute paths; littlefs and FAT take both.
    cwd = os.getcwd()
    if cwd == "/":
        os.rename(a[1:], b[1:])
        return
    os.chdir("/")
    try:
        os.rename(a[1:], b[1:])
    finally:
        os.chdir(cwd)


def mkdir(p):
    try:
        os.mkdir(p)
    except OSError:
        if not exists(p):
            raise


def _rmtree(p, t=0):
    # t: p's type (0x4000 directory, 0x8000 file) when ilistdir told it,
    # which spares a stat per file; 0: unknown (absent is fine).
    if not t & 0xC000:
        try:
            t = os.stat(p)[0]
        except OSError:
            return
    if not t & 0x4000:
        os.remove(p)
        return
    while True:
        # A few names at a time: a directory of any size costs a few strings.
        some = []
        for e in os.ilistdir(p) if _MPY else os.listdir(p):
            some.append(e[:2] if _MPY else (e, 0))
            if len(some) == 8:
                break
        if not some:
            break
        for n, t in some:
            _rmtree(p + "/" + n, t)
    os.rmdir(p)


def discard(m, p):
    # Delete the tree p: first rename it (one atomic step), then empty it.
    t = m + "/trash"
    _rmtree(t)
    if exists(p):
        move(p, t)
        _rmtree(t)


def get_state(m):
    # A missing state file with a state.tmp beside it means a cut inside the
    # replacing rename (FAT removes the target first): tmp is then whole.
    for name in ("/state", "/state.tmp"):
        try:
            with open(m + name) as f:
                # Bounded: read() alone asks for 256 bytes in one piece,
                # which a fragmented heap mid-download may not have.
                w = f.read(8)
            return w if w in _STATES else "none"
        except OSError:
            pass
    return "none"


def put_state(m, word):
    with open(m + "/state.tmp", "w") as f:
        f.write(word)
    move(m + "/state.tmp", m + "/state")


def desc_of(hdr):
    # The fixed part of a header -> the esp_app_desc_t-like dict of ota.
    return {"version": bytes(hdr[16:48]).split(b"\x00", 1)[0].decode(),
            "project_name": bytes(hdr[48:80]).split(b"\x00", 1)[0].decode(),
            "idf_ver": "", "date": "", "time": "", "secure_version": hdr[10] | hdr[11] << 8}


def entries(path):
    # Yield (index, kind, name, size, sha256) of a stored header, in order.
    with open(path, "rb") as f:
        h = f.read(FIXED)
        for i in range(h[8] | h[9] << 8):
            kind, n = f.read(2)
            e = f.read(n if kind else n + 36)   # name [, u32 size, sha256]
            if kind:
                yield i, kind, e[:n].decode(), None, None
            else:
                yield i, kind, e[:n].decode(), int.from_bytes(e[n:n + 4], "little"), e[n + 4:]


def running_desc(app="/app"):
    # The desc of the installed bundle, or None if the app was never bundled.
    return _desc_in(app + ".ota/cur")


def rejected_desc(app="/app"):
    # The desc of the last bundle rolled back unconfirmed, or None.
    return _desc_in(app + ".ota/rejected")


def _desc_in(path):
    try:
        with open(path, "rb") as f:
            return desc_of(f.read(FIXED))
    except OSError:
        return None
