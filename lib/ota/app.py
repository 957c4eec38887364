# The running app: confirm it, roll it back, describe it (esp_ota_ops).
# Firmware (ESP32) and the app bundle in APP (every board) side by side.
import ota
from ota import OTAError

APP = "/app"


def _partition():
    try:
        from esp32 import Partition
        return Partition
    except ImportError:
        return None   # ESP8266: app bundles only


def mark_app_valid():
    # esp_ota_mark_app_valid_cancel_rollback(): the new app works, keep it.
    import ota.bundle_boot as bundle_boot
    bundle_boot.mark_app_valid(APP)
    Partition = _partition()
    if Partition:
        try:
            Partition.mark_app_valid_cancel_rollback()
        except OSError as e:
            raise OTAError(ota.ESP_ERR_OTA_ROLLBACK_FAILED, "cannot confirm the app: %s" % e)


def rollback(reboot=True):
    # esp_ota_mark_app_invalid_rollback_and_reboot(): back to the other app.
    # Unconfirmed, the bootloader falls back by itself on the next reset;
    # confirmed, the other slot is made the boot partition again (set_boot
    # checks that it still holds a valid image).
    # An unconfirmed app bundle, or any bundle on a board without firmware
    # OTA, is what "back" means there.
    import ota.bundle_boot as bundle_boot
    from ota.otadata import running_state, PENDING_VERIFY
    from ota.journal import get_state
    Partition = _partition()
    if Partition is None or get_state(APP + ".ota") in ("new", "pend"):
        bundle_boot.rollback(APP)
    elif running_state() != PENDING_VERIFY:
        try:
            Partition(Partition.RUNNING).get_next_update().set_boot()
        except OSError as e:
            raise OTAError(ota.ESP_ERR_OTA_ROLLBACK_FAILED, "no valid app to roll back to: %s" % e)
    if reboot:
        import machine
        machine.reset()


def running_app():
    # The esp_app_desc_t of the running image as a dict; on a board without
    # firmware OTA, the installed app bundle's (None if never bundled).
    if _partition() is None:
        from ota.journal import running_desc
        return running_desc(APP)
    from ota.firmware import running_partition, read_app
    return read_app(running_partition(), bytearray(512))[1]


def last_invalid_app():
    # esp_ota_get_last_invalid_partition() and its esp_app_desc_t: the app
    # that was rolled back, as a dict, so that an update can refuse to
    # install the same version again; None when there is none (or no
    # firmware OTA on this board).
    Partition = _partition()
    if Partition is None:
        return None
    from ota.otadata import rejected_slot
    slot = rejected_slot()
    # A slot that runs now was installed again since (its newer entry is in
    # the other otadata sector): nothing there was rejected.
    if slot is None or Partition(Partition.RUNNING).info()[1] == 0x10 + slot:
        return None
    from ota.firmware import read_app
    part = Partition.find(Partition.TYPE_APP, 0x10 + slot)[0]
    try:
        return read_app(part, bytearray(512))[1]
    except OTAError:
        return None     # erased or overwritten since


def status():
    # Everything a person wants to print about the two app slots.
    import ota.journal as journal
    bundle = {"dir": APP, "state": journal.get_state(APP + ".ota"),
              "installed": journal.running_desc(APP), "rejected": journal.rejected_desc(APP)}
    Partition = _partition()
    if Partition is None:
        return {"bundle": bundle}
    import ota.otadata as otadata
    running = Partition(Partition.RUNNING)
    slots = [p.info()[4] for p in Partition.find(Partition.TYPE_APP)]
    act = otadata.active()
    return {
        "running": running.info()[4],
        "boot": Partition(Partition.BOOT).info()[4],
        "next": running.get_next_update().info()[4],
        "slots": slots,
        "otadata": [None if e is None else {"seq": e[0], "state": otadata.STATE_NAMES.get(e[1], e[1])}
                    for e in otadata.entries()],
        "running_state": otadata.STATE_NAMES.get(otadata.running_state()),
        "active_slot": None if act is None else slots[act[0]],
        "bundle": bundle,
    }


def boot():
    # First line of boot.py. Firmware rollback is the bootloader's job; app
    # bundles finish or undo an interrupted swap here, and a bundle that
    # booted once without being confirmed is rolled back. Returns "valid",
    # "pending" (call ota.mark_app_valid() once healthy) or "rolled_back".
    import sys
    import ota.bundle_boot as bundle_boot
    result = bundle_boot.boot(APP)
    if APP not in sys.path:
        sys.path.append(APP)
    return result
