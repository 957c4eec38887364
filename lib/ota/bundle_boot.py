# ota.bundle_boot: what boot.py and ota.mark_app_valid() / ota.rollback()
# do to an app bundle: replay a swap a power cut interrupted, roll back a
# bundle that booted without being confirmed, confirm. The swap itself is
# ota.swap, its journal ota.journal (see there for the states). ota.swap is
# imported only when there is a swap to run: most boots find none, and
# what they import stays in the heap that main.py's update then needs.
from ota.journal import FIXED, discard, get_state, move, put_state


def boot(app="/app"):
    # Replay an interrupted swap, count the boot of an unconfirmed bundle and
    # roll back one that was not confirmed during its first boot. Returns
    # "valid", "pending" (the new bundle must call mark_app_valid()) or
    # "rolled_back".
    m = app + ".ota"
    st = get_state(m)
    if st == "swap":
        from ota.swap import install
        try:
            install(app, m)
        except OSError:
            return "rolled_back"            # install() undid it
        st = "new"
    if st == "undo" or st == "pend":
        if st == "pend":
            keep_rejected(m)
        from ota.swap import undo
        undo(app, m)
        return "rolled_back"
    discard(m, m + "/new")                  # a download cut by the reset
    if st == "new":
        put_state(m, "pend")
        return "pending"
    if st == "none":
        discard(m, m + "/old")
    return "valid"


def mark_app_valid(app="/app"):
    m = app + ".ota"
    if get_state(m) in ("new", "pend"):
        put_state(m, "valid")


def rollback(app="/app"):
    # Back to the previous bundle (confirmed or not). The caller resets.
    m = app + ".ota"
    st = get_state(m)
    if st not in ("valid", "new", "pend"):
        from ota import OTAError, ESP_ERR_OTA_ROLLBACK_FAILED
        raise OTAError(ESP_ERR_OTA_ROLLBACK_FAILED, "no previous app bundle kept")
    if st != "valid":
        keep_rejected(m)
    from ota.swap import undo
    undo(app, m)


def keep_rejected(m):
    # Before an unconfirmed bundle is rolled back: its header's fixed part,
    # so that an update does not install that version again. Written whole,
    # then renamed: a power cut leaves the old record or the new one.
    with open(m + "/cur", "rb") as f:
        hdr = f.read(FIXED)
    with open(m + "/rejected.tmp", "wb") as f:
        f.write(hdr)
    move(m + "/rejected.tmp", m + "/rejected")
