# boot.py: runs first on every boot.
#
# ota.boot() finishes or undoes an app-bundle swap a power cut interrupted and
# rolls back a bundle that booted without being confirmed. Then the app checks
# it is healthy and confirms itself: an update that never gets here (crash,
# hang, reset loop) is rolled back by the bootloader on the next reset.
import ota

ota.boot()


def healthy():
    # Put your own checks in selftest.py (Wi-Fi joins, sensors answer, ...).
    try:
        import selftest
    except ImportError:
        return True
    return selftest.run()


if healthy():
    ota.mark_app_valid()
else:
    print("ota: self-test failed, not confirming this version")
