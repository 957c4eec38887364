# The parts of `machine` an OTA needs, as the ESP32 (or, with
# OTA_CHIP=esp8266, the ESP8266) firmware has them; machine.py exports them.
import _chip  # the power-on
import _env

if _env.ESP32:
    PWRON_RESET, HARD_RESET, WDT_RESET, DEEPSLEEP_RESET, SOFT_RESET = 1, 2, 3, 4, 5
else:
    PWRON_RESET, WDT_RESET, SOFT_RESET, DEEPSLEEP_RESET, HARD_RESET = 0, 1, 4, 5, 6
_mhz = 160 if _env.ESP32 else 80  # the firmware's default CPU clock


def reset():
    # esp_restart(): at once; the bootloader runs again
    _chip.die("reset")


def soft_reset():
    # SystemExit up to the firmware's main loop, which runs boot.py and
    # main.py again without a chip reset
    _chip.soft_reset()


def reset_cause():
    # power-on -> PWRON_RESET; esp_restart() and panics -> SOFT_RESET
    return PWRON_RESET if _chip.reset_cause == 1 else SOFT_RESET


def unique_id():
    # the base MAC (ESP32) or chip id (ESP8266), fixed per board directory
    return _chip.uid


def freq(*hz):
    global _mhz
    if not hz:
        return _mhz * 1000000
    ok = {"esp8266": (80, 160), "esp32c3": (20, 40, 80, 160)}.get(_env.CHIP, (20, 40, 80, 160, 240))
    if hz[0] // 1000000 not in ok:
        raise ValueError("frequency must be one of %s MHz" % (ok,))
    _mhz = hz[0] // 1000000


def idle():
    pass
