# ota.swap: the journaled swap that makes an app-bundle update atomic, in
# both directions (files and journal states: ota.journal). Imported when a
# downloaded bundle is installed (finish()) and by ota.bundle_boot, not
# during the download: its heap goes to the download until then.
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
from ota.journal import discard, entries, exists, mkdir, move, put_state


def _swap(a, m, back):
    # One direction of the swap (see the top of this file), from wherever a
    # power cut stopped it. The entry list is staging's header until that
    # has become cur.
    new, old = m + "/new/", m + "/old/"
    hdr, cur, prev = new + "hdr", m + "/cur", old + "hdr"
    mkdir(a)
    mkdir(m + "/new")
    made = None
    for i, kind, name, _, _ in entries(hdr if exists(hdr) else cur):
        src, dst, bak = new + str(i), a + "/" + name, old + str(i)
        if back:
            if kind == 0 and not exists(src) and exists(dst):
                move(dst, src)                       # (2')
            if not exists(bak):
                continue
            discard(m, dst)         # only what the new app made there
            src = bak               # (1') below
        elif kind == 0 and not exists(src):
            continue                # entry done
        else:
            if exists(dst) and not exists(bak):
                move(dst, bak)                       # (1)
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
