# ota.updater: what main.py does at every boot, as a module so that it
# ships compiled with the library (a board with ESP8266-size RAM cannot
# compile this much source at boot): look for an update, install it, reboot
# into it, and tell a campaign server how it went.
#
# Settings come from ota_config.json (written by `otatool deploy`):
#   url         where the update is: the image or bundle itself or, when
#               public_key is set, its signed manifest (`otatool sign`); or
#   server, token   a campaign server (`otatool server`) that says what to
#               fetch and hears how it went (ota.campaign talks to it)
#   public_key  the publisher's Ed25519 key (`otatool keygen` prints it): then
#               only updates with a manifest signed by that key install (a
#               key that is no valid Ed25519 key stops the update before any
#               network traffic)
#   ca          path of the CA certificate (PEM) that signs the server's TLS cert
#   allow_http  true to allow plain http (development only)
#   kind        what this board updates: "firmware" (default) or "bundle"
#               (the app's files in /app, where ota.boot() looks)
#   wifi_ssid, wifi_password   join this network first (boards with Wi-Fi)
#   deadline_s  at most this many seconds (default 300) for the whole
#               check-in, download and reports of one boot: past it the
#               update fails with ESP_ERR_TIMEOUT and the app starts. Without
#               it a hung or hostile server (one trickling a byte a second)
#               could hold the board in main.py for hours, each read staying
#               within its timeout (see ota/deadline.py). A deadline cut leaves
#               what a cut connection leaves: a firmware download resumes at
#               the next boot
import gc
import json

import machine
import ota
from ota import _unload as drop

DEADLINE_S = 300    # default of deadline_s: a 1.5 MiB image at 5 KiB/s


def load_config():
    try:
        with open("ota_config.json") as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def connection_options(cfg):
    kw = {"allow_http": bool(cfg.get("allow_http"))}
    if cfg.get("ca"):
        with open(cfg["ca"]) as f:
            kw["cert_pem"] = f.read()
    return kw


def running(cfg):
    # (version, confirmed) of what this board updates. Until boot.py has
    # confirmed a new version it may still be rolled back, so nothing is
    # installed over it and its success is not reported yet.
    st = ota.status()
    if cfg.get("kind") == "bundle":
        b = st["bundle"]
        return (b["installed"] or {"version": "0"})["version"], b["state"] not in ("new", "pend")
    return ota.running_app()["version"], st.get("running_state") != "PENDING_VERIFY"


_shown = [-1]


def show_progress(done, total):
    # A line per 5 %: enough for a person (or `otatool demo`) to follow, few
    # enough for a serial console.
    step = done * 20 // total if total > 0 else -1
    if step != _shown[0]:
        _shown[0] = step
        print("ota: %d/%d bytes" % (done, total))


def rolled_back(cfg):
    # The version that was rolled back on this board, or None.
    if cfg.get("kind") == "bundle":
        from ota.journal import rejected_desc
        desc = rejected_desc()
    else:
        desc = ota.last_invalid_app()
    return desc and desc["version"]


class _InstalledBundle:
    # What ota.manifest reads of a bundle target (its kind, its directory)
    # to compare a manifest with the installed bundle, without loading the
    # bundle's download code (ota.bundle) for it.
    kind = "bundle"
    app = "/app"


def check_signed(url, key, kw):
    # Fetch and verify the signed manifest at url for the bundle in /app
    # (chip, version, secure_version), while only the updater's code is
    # loaded; signed_image() unloads ota.manifest and the Ed25519 code
    # again before the bundle's download loads (an ESP8266 has the heap for one or the
    # other). -> (image url, sha256, size): the download then checks the
    # image it installs (inflated, if compressed) against the signed sha256.
    options = {"cert_der": None, "headers": None, "timeout_ms": 10000,
               "allow_http": kw["allow_http"]}
    if kw.get("cert_pem"):
        from ota.certs import pem_to_der
        options["cert_der"] = pem_to_der(kw["cert_pem"])
    # The check-in's HTTP code too: signed_image() loads it for the fetch
    # and unloads it again before the signature check.
    drop("http", "http_extra", "url")
    from ota.manifest import signed_image
    image_url, sha256, size, _ = signed_image(url, key, False, _InstalledBundle, options)
    return image_url, sha256, size


def install(cfg, kw, url, version, sha256=None, size=None):
    # Download, check and stage the update at url. -> its desc, or None when
    # it is the version that runs already.
    bundle = cfg.get("kind") == "bundle"
    # Read before the download writes the partition the rejected app is in.
    rejected = rolled_back(cfg)
    # What boot.py and the status above loaded (ota.app, ota.bundle_boot,
    # the error table) is done with: the download gets its heap.
    drop("app", "bundle_boot", "errors")
    if cfg.get("public_key"):
        # url is then a signed manifest: its signature, chip and version are
        # checked before the image it names is fetched, whose size and
        # sha256 it binds. For firmware ota.begin() checks it; for a bundle
        # the updater does, first (check_signed).
        key = cfg["public_key"].strip()
        if bundle:
            gc.collect()
            url, sha256, size = check_signed(url, key, kw)
        else:
            kw = dict(kw, public_key=key)
    gc.collect()   # the check-in's leftovers: room for the buffers to come
    target = ota.AppBundle() if bundle else None
    with ota.begin(url, target=target, sha256=sha256, size=size, on_progress=show_progress,
                   **kw) as h:
        new = h.get_img_desc()
        if new["version"] == version:
            print("ota: already running", version)
            return None
        if new["version"] == rejected:
            # As ESP-IDF's OTA examples do: a version that failed on this
            # board once is not installed again (each boot would otherwise
            # install it, reset into it and fall back again).
            raise ota.OTAError(ota.ESP_ERR_INVALID_VERSION,
                               "%s was rolled back on this board" % new["version"])
        print("ota: installing", new["project_name"], new["version"])
        while h.perform() == ota.IN_PROGRESS:
            pass
        h.finish()
    return new


def static_update(cfg, kw, version):
    try:
        new = install(cfg, kw, cfg["url"], version)
    except ota.OTAError as e:
        if e.code != ota.ESP_ERR_INVALID_VERSION:
            raise
        # The URL still serves this version (or an older one): not a failure.
        print("ota: no update:", e.msg)
        return
    if new:
        print("ota: update installed, rebooting")
        machine.reset()


def join_wifi(cfg):
    # Boards with Wi-Fi: join the configured network, waiting at most 20 s.
    # Without `network` (the unix port) or without settings, nothing to do.
    if not cfg.get("wifi_ssid"):
        return
    import network
    import time
    wlan = network.WLAN(network.STA_IF)
    wlan.active(True)
    if not wlan.isconnected():
        wlan.connect(cfg["wifi_ssid"], cfg.get("wifi_password", ""))
        for _ in range(200):
            if wlan.isconnected():
                return
            time.sleep_ms(100)
        raise OSError("Wi-Fi: could not join %s" % cfg["wifi_ssid"])


def run():
    gc.collect()
    cfg = load_config()
    import ota.deadline as deadline
    try:
        join_wifi(cfg)
        kw = connection_options(cfg)
        if cfg.get("public_key"):
            # A key no signature can be checked against is a configuration
            # error: said before anything goes over the network.
            from ota.manifest import public_key_bytes
            public_key_bytes(cfg["public_key"].strip())
            # Loaded again when the manifest is checked: until then the
            # check-in has the heap.
            drop("manifest", "version")
            public_key_bytes = None
        version, confirmed = running(cfg)
        deadline.start(int(cfg.get("deadline_s", DEADLINE_S) * 1000))
        if not confirmed:
            print("ota: %s is not confirmed: no update until it is" % version)
        elif cfg.get("server"):
            # The campaign server's side is a module of its own: a board
            # with a fixed url does not load it.
            from ota.campaign import update
            update(cfg, kw, version)
        elif cfg.get("url"):
            static_update(cfg, kw, version)
    except Exception as e:
        # Whatever went wrong with the update, the app still starts; but not
        # from a bundle swap a failure (a full heap) left half way: the next
        # boot's ota.boot() finishes or undoes it first.
        print("ota: update failed:", e)
        from ota.journal import get_state
        if get_state("/app.ota") in ("swap", "undo"):
            machine.reset()
    finally:
        deadline.stop()
