# main.py: look for an update, install it and reboot into it; then start the
# app. The update logic is ota.updater (lib/ota/updater.py, where the
# settings in ota_config.json are described): it ships compiled with the
# library, so even a board with ESP8266-size RAM runs it.
import ota.updater

ota.updater.run()
del ota.updater

# The application itself: app_main.py (named after ESP-IDF's app_main(), and
# not app.py, which `import app` would not find: the bundle directory /app
# comes first, as a package). With app bundles it lives in /app, which
# ota.boot() put on sys.path.
try:
    import app_main
except ImportError:
    pass
