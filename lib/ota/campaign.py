# ota.campaign: the campaign server's side of ota.updater (what main.py runs
# at boot), loaded only when ota_config.json names a server: check in,
# report "downloading", install through ota.updater.install(), report
# "installed" (or "failed"), and after the reboot into it "confirmed".
import gc
import json
import os

import machine
import ota
from ota.updater import drop, install

# The campaign and version installed but not yet reported as confirmed: the
# report can only go out after the reboot, once boot.py confirmed the version.
PENDING = "ota_pending.json"


def _server_done():
    # The campaign server's code (ota.checkin, what it loaded for its JSON
    # and HTTP) is needed for a moment at a time: unloaded after each
    # check-in and report, so that the download and the swap have its heap.
    drop("checkin", "certs", "http_extra")


def tell(cfg, kw, campaign, state, error=None):
    # A report that does not get through stops nothing: the server also
    # learns from the version each check-in carries (and sees a rollback as
    # old -> new -> old). False only when the server could not be reached,
    # i.e. when trying again later may help. The download's code (after an
    # install or a failure) has done its work: its heap goes to the report.
    drop("client", "bundle", "swap", "inflate", "firmware", "image", "version")
    gc.collect()
    try:
        ota.report(cfg["server"], cfg["token"], campaign, state, error=error, **kw)
    except ota.OTAError as e:
        print("ota: report %s failed: %s" % (state, e))
        return e.http_status is not None
    finally:
        _server_done()
    return True


def report_confirmed(cfg, kw, version):
    try:
        with open(PENDING) as f:
            pending = json.load(f)
    except OSError:
        return              # nothing to report
    except ValueError:
        pending = {}        # unreadable: drop it rather than stumble on it each boot
    # Another version runs: the update was rolled back, which the server
    # works out from this boot's check-in. Same version: boot.py confirmed it.
    if pending.get("version") != version or tell(cfg, kw, pending["campaign"], "confirmed"):
        os.remove(PENDING)


def update(cfg, kw, version):
    report_confirmed(cfg, kw, version)
    kind = cfg.get("kind", "firmware")
    # For firmware, check() reads the running app's version and build date
    # itself; a bundle's version is the one to tell.
    offer = ota.check(cfg["server"], cfg["token"], version=version if kind == "bundle" else None,
                      **kw)
    if not offer:
        _server_done()
        return
    campaign = offer["campaign"]
    url = offer.get("manifest") if cfg.get("public_key") else offer["url"]
    try:
        if offer["kind"] != kind:
            raise ota.OTAError(ota.ESP_ERR_INVALID_VERSION,
                               "offer is a %s, this board updates %s" % (offer["kind"], kind))
        if not url:
            raise ota.OTAError(ota.ESP_ERR_OTA_VALIDATE_FAILED,
                               "offer has no signed manifest and this board has a public_key")
        tell(cfg, kw, campaign, "downloading")     # then the server's code goes
        new = install(cfg, kw, url, version, offer["sha256"], offer["size"])
        if new is None:
            raise ota.OTAError(ota.ESP_ERR_INVALID_VERSION, "offer is the running version")
    except Exception as e:   # OTAError (its str() starts with the code's name), MemoryError...
        tell(cfg, kw, campaign, "failed", str(e))
        raise
    with open(PENDING, "w") as f:
        json.dump({"campaign": campaign, "version": new["version"]}, f)
    tell(cfg, kw, campaign, "installed")
    print("ota: update installed, rebooting")
    machine.reset()
