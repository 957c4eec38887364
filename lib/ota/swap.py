# ota.swap: the journaled swap that makes an app-bundle update atomic, in
# both directions (files and journal states: ota.journal). Imported when a
# downloaded bundle is installed (finish()) and by ota.bundle_boot, not
# during the download: its heap goes to the download until then.
#
# Entry i, path A/n. Forward:  (1) A/n -> old/i if A/n exists,
#                              (2) new/i -> A/n for a file entry.
#                    Backward: (2') A/n -> new/i for a file entry,
#                              (1') old/i -> A/n if old/i exists.
# A file the previous bundle installed (its entry j in the previous header)
# and the new one does not name is removed: (1) to old/rj, and back by (1').
# A file entry whose SHA-256 equals the previous bundle's for that name, and
# whose copy on the board still has it, is left in place: forward drops
# new/i instead of (1) and (2). No new/i and no old/i then means "left in
# place" in both directions, and old/ keeps only what changed or went.
# The presence of new/i and old/i tells how far an entry got, so replaying
# either direction from any point is idempotent, and backward also undoes
# a forward swap that stopped half way. Headers move the same way (cur ->
# old/hdr, new/hdr -> cur). A power cut between any two filesystem calls
# therefore ends, after boot(), in exactly the old or exactly the new app.
# This relies on rename being atomic, as on littlefs (the default on ESP32
# and 1 MiB ESP8266 boards); FAT renames are not power-safe.
import hashlib

from ota.journal import discard, entries, exists, mkdir, move, put_state


def _step(it, files):
    # The next entry of `it` (only a file entry if `files`) and its sort key
    # (tools/otatool/bundle.py: lower case, "/" below every other character).
    for e in it:
        if not (files and e[1]):
            return e, e[2].lower().replace("/", "\x01")
    return None, None


def pairs(a, b):
    # Walk two stored headers side by side, both sorted by name: yield
    # (entry of a, file entry of b of the same name), None for a side that
    # lacks it. b is the previous bundle's (None or absent: none): what it
    # installed and a does not name is yielded as (None, entry of b). Two
    # open files and two entries at a time, whatever the number of files.
    ia = entries(a)
    ib = entries(b) if b and exists(b) else iter(())
    ea, ka = _step(ia, False)
    eb, kb = _step(ib, True)
    while ea or eb:
        if eb is None or ea and ka < kb:
            yield ea, None
            ea, ka = _step(ia, False)
        elif ea is None or kb < ka or ea[2] != eb[2]:
            yield None, eb
            eb, kb = _step(ib, True)
        else:
            yield ea, eb
            ea, ka = _step(ia, False)
            eb, kb = _step(ib, True)


def _holds(path, digest):
    # Does the file at path have this SHA-256?
    h = hashlib.sha256()
    buf = bytearray(256)
    try:
        with open(path, "rb") as f:
            n = 1
            while n:
                n = f.readinto(buf)
                h.update(memoryview(buf)[:n])
    except OSError:
        return False
    return h.digest() == digest


def _aside(dst, bak):
    # (1): move dst to bak if it is there (one call, not a stat and a
    # rename). Whether it was.
    try:
        move(dst, bak)
        return True
    except OSError as e:
        if e.args[0] != 2:      # ENOENT: nothing to move aside
            raise
        return False


def _swap(a, m, back, fresh=False):
    # One direction of the swap (see the top of this file), from wherever a
    # power cut stopped it. The new entry list is staging's header until
    # that has become cur; the previous one is cur until it has become
    # old/hdr (none for a first bundle). fresh: a forward swap that has not
    # begun (every file staged, old/ empty) needs no look at new/ or old/.
    new, old = m + "/new/", m + "/old/"
    hdr, cur, prev = new + "hdr", m + "/cur", old + "hdr"
    mkdir(a)
    mkdir(m + "/new")
    staged = exists(hdr)
    made = None
    for e, p in pairs(hdr if staged else cur, prev if exists(prev) else cur if staged else None):
        if e:
            kind, name = e[1], e[2]
            src, bak = new + str(e[0]), old + str(e[0])
        else:                       # removed: like a delete entry
            kind, name = 1, p[2]
            src, bak = None, old + "r" + str(p[0])
        dst = a + "/" + name
        same = p and kind == 0 and e[4] == p[4]
        if back:
            if kind == 0 and not exists(src) and exists(dst) and (not same or exists(bak)):
                move(dst, src)                       # (2')
            if not exists(bak):
                continue
            discard(m, dst)         # only what the new app made there
            src = bak               # (1') below
        elif kind == 0 and not (fresh or exists(src)):
            continue                # entry done, or left in place
        else:
            had = not fresh and exists(bak)
            if same and not had and _holds(dst, p[4]):
                discard(m, src)     # left in place
                continue
            if not had and _aside(dst, bak):         # (1)
                made = name[:name.rfind("/") + 1]    # its directories exist
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
        move(src, dst)
    if back:
        if not exists(hdr):
            move(cur, hdr)
        if exists(prev):
            move(prev, cur)
    elif exists(hdr):
        if exists(cur) and not exists(prev):
            move(cur, prev)
        move(hdr, cur)


def install(a, m, fresh=False):
    # From state "swap" (the staged bundle is whole and committed): finish
    # the forward swap; if the filesystem fails, undo it and re-raise.
    try:
        _swap(a, m, False, fresh)
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
