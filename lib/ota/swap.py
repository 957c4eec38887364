# ota.swap: the installed state of an app bundle and the journaled swap that
# makes an update atomic, in both directions. ota.bundle (the download) and
# ota.bundle_boot (the boot-time replay, confirm and rollback) share it; it
# never imports the downloader, so boot.py stays small.
#
# Everything lives beside the app directory A (default /app), on its
# filesystem, so that every step below is one rename:
#   A.ota/state      the journal: one word (see _STATES); A.ota/state.tmp is
#                    its next value, written whole and then renamed over it
#   A.ota/cur        header of the installed bundle (absent: never bundled)
#   A.ota/new/       staging: "hdr" and one file per entry index "0", "1"...
#   A.ota/old/       the previous version: "hdr" (its header) and what the
#                    update replaced or deleted, by the same entry index
#   A.ota/trash      whatever is being deleted: renamed here first, so new/
#                    and old/ are always whole or gone
# Files of A that a bundle does not name (config, data) are never touched.
#
# Journal states (ESP-IDF's otadata states in brackets):
#   none   (VALID)           confirmed, no previous version kept
#   valid  (VALID)           confirmed, old/ holds the previous version
#   swap   (NEW)             forward swap under way: replayed forward
#   new    (NEW)             swapped in, not booted yet
#   pend   (PENDING_VERIFY)  booted once unconfirmed: the next boot rolls back
#   undo   (ABORTED)         reverse swap under way: replayed backward
#
# Entry i, path A/n. Forward:  (1) A/n -> old/i if A/n exists,
#                              (2) new/i -> A/n for a file entry.
#                    Backward: (2') A/n -> new/i for a file entry,
#                              (1') old/i -> A/n if old/i exists.
# The presence of new/i and old/i tells how far an entry got, so replaying
# either direction from any point is idempotent, and backward also undoes
# a forward swap that stopped half way. Headers move the same way (cur ->
# old/hdr, new/hdr -> cur). A power cut between any two filesystem calls
# therefore ends, after boot(), in exactly the old or exactly the new app.
# This relies on rename being atomic, as on littlefs (the default on ESP32
# and 1 MiB ESP8266 boards); FAT renames are not power-safe.
import os
import sys

_MPY = sys.implementation.name == "micropython"   # CPython: no ilistdir

_STATES = ("none", "valid", "swap", "new", "pend", "undo")
FIXED = 80   # fixed part of a bundle header (see tools/otatool/bundle.py)


def _exists(p):
    try:
        os.stat(p)
        return True
    except OSError:
        return False


def _mv(a, b):
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
        if not _exists(p):
            raise


def _rmtree(p):
    try:
        if not os.stat(p)[0] & 0x4000:
            os.remove(p)
            return
    except OSError:
        return
    while True:
        # A few names at a time: a directory of any size costs a few strings.
        some = []
        for e in os.ilistdir(p) if _MPY else os.listdir(p):
            some.append(e[0] if _MPY else e)
            if len(some) == 8:
                break
        if not some:
            break
        for n in some:
            _rmtree(p + "/" + n)
    os.rmdir(p)


def discard(m, p):
    # Delete the tree p: first rename it (one atomic step), then empty it.
    t = m + "/trash"
    _rmtree(t)
    if _exists(p):
        _mv(p, t)
        _rmtree(t)


def get_state(m):
    # A missing state file with a state.tmp beside it means a cut inside the
    # replacing rename (FAT removes the target first): tmp is then whole.
    for name in ("/state", "/state.tmp"):
        try:
            with open(m + name) as f:
                w = f.read()
            return w if w in _STATES else "none"
        except OSError:
            pass
    return "none"


def put_state(m, word):
    with open(m + "/state.tmp", "w") as f:
        f.write(word)
    _mv(m + "/state.tmp", m + "/state")


def desc_of(hdr):
    # The fixed part of a header -> the esp_app_desc_t-like dict of ota.
    return {"version": bytes(hdr[16:48]).split(b"\x00")[0].decode(),
            "project_name": bytes(hdr[48:80]).split(b"\x00")[0].decode(),
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


def _swap(a, m, back):
    # One direction of the swap (see the top of this file), from wherever a
    # power cut stopped it. The entry list is staging's header until that
    # has become cur.
    new, old = m + "/new/", m + "/old/"
    hdr, cur, prev = new + "hdr", m + "/cur", old + "hdr"
    mkdir(a)
    mkdir(m + "/new")
    made = None
    for i, kind, name, _, _ in entries(hdr if _exists(hdr) else cur):
        src, dst, bak = new + str(i), a + "/" + name, old + str(i)
        if back:
            if kind == 0 and not _exists(src) and _exists(dst):
                _mv(dst, src)                       # (2')
            if not _exists(bak):
                continue
            discard(m, dst)         # only what the new app made there
            src = bak               # (1') below
        elif kind == 0 and not _exists(src):
            continue                # entry done
        else:
            if _exists(dst) and not _exists(bak):
                _mv(dst, bak)                       # (1)
            if kind:
                continue            # (2) below
        # Make the directories above dst. Entries are sorted, so the files
        # of one directory come one after another: once per directory.
        d = name[:name.rfind("/") + 1]
        if d != made:
            made = d
            j = d.find("/")
            while j > 0:
                mkdir(a + "/" + d[:j])
                j = d.find("/", j + 1)
        _mv(src, dst)
    if back:
        if not _exists(hdr):
            _mv(cur, hdr)
        if _exists(prev):
            _mv(prev, cur)
    elif _exists(hdr):
        if _exists(cur) and not _exists(prev):
            _mv(cur, prev)
        _mv(hdr, cur)


def install(a, m):
    # From state "swap" (the staged bundle is whole and committed): finish
    # the forward swap; if the filesystem fails, undo it and re-raise.
    try:
        _swap(a, m, False)
    except OSError:
        undo(a, m)
        raise
    put_state(m, "new")
    discard(m, m + "/new")


def undo(a, m):
    put_state(m, "undo")
    _swap(a, m, True)
    put_state(m, "none")
    discard(m, m + "/new")
    discard(m, m + "/old")


def running_desc(app="/app"):
    # The desc of the installed bundle, or None if the app was never bundled.
    try:
        with open(app + ".ota/cur", "rb") as f:
            return desc_of(f.read(FIXED))
    except OSError:
        return None
