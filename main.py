# main.py: look for an update, install it, reboot into it; then run the app.
#
# Settings come from ota_config.json (written by `otatool deploy`):
#   url         image (or bundle) URL to fetch, or
#   server, token   a campaign server (`otatool server`) that says what to fetch
#   ca          path of the CA certificate (PEM) that signs the server's TLS cert
#   allow_http  true to allow plain http (development only)
#   kind        "firmware" (default) or "bundle"; app_dir for bundles ("/app")
import json
import machine
import ota


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


def find_update(cfg, kw):
    if cfg.get("server"):
        offer = ota.check(cfg["server"], cfg["token"], **kw)
        return offer["url"] if offer else None
    return cfg.get("url")


def show_progress(done, total):
    if total > 0:
        print("ota: %d/%d bytes" % (done, total))


def install(url, cfg, kw):
    target = ota.AppBundle(cfg.get("app_dir", "/app")) if cfg.get("kind") == "bundle" else None
    with ota.begin(url, target=target, on_progress=show_progress, **kw) as h:
        new = h.get_img_desc()
        if target is None and new["version"] == ota.running_app()["version"]:
            print("ota: already running", new["version"])
            return False
        print("ota: installing", new["project_name"], new["version"])
        while h.perform() == ota.IN_PROGRESS:
            pass
        h.finish()
    return True


def main():
    cfg = load_config()
    kw = connection_options(cfg)
    try:
        url = find_update(cfg, kw)
        if url and install(url, cfg, kw):
            print("ota: update installed, rebooting")
            machine.reset()
    except ota.OTAError as e:
        print("ota: update failed:", e)
    try:
        import app   # the application itself
    except ImportError:
        pass


main()
