# Freezes the `ota` package into a MicroPython firmware: its bytecode goes in
# flash with the firmware, so a board imports it without compiling it or
# copying its code into the heap. Point the firmware build at this file:
#
#   make BOARD=ESP32_GENERIC BOARD_VARIANT=OTA FROZEN_MANIFEST=/full/path/to/manifest.py
#
# FROZEN_MANIFEST replaces the board's own manifest, so by default this one
# also includes the port's (ports/esp32 or ports/esp8266: asyncio, requests,
# mip, ...). A manifest of your own that already includes its board's
# manifest can include this one as it is (the same file is never included
# twice), or with port_manifest=False for ota alone (the unix port has no
# boards/manifest.py). docs/FREEZING.md has the steps for each board.
options.defaults(port_manifest=True)

if options.port_manifest:
    include("$(PORT_DIR)/boards/manifest.py")

# lib/ota/**/*.py, frozen as the modules ota, ota.client, ...; and the
# modules of native code, lib/native/ota/*.py, as ota.xor (the ports pass
# mpy-cross their -march)
package("ota", base_path="lib")
package("ota", base_path="lib/native")
