# The parts of `machine` an OTA needs, as the ESP32 (and ESP8266) firmware
# has them. Shadows the unix port's built-in machine module.
import _board

if _board.CHIP == "esp8266":
    PWRON_RESET, WDT_RESET, SOFT_RESET, DEEPSLEEP_RESET, HARD_RESET = 0, 1, 4, 5, 6
    _FREQS = (80, 160)
else:
    PWRON_RESET, HARD_RESET, WDT_RESET, DEEPSLEEP_RESET, SOFT_RESET = 1, 2, 3, 4, 5
    _FREQS = (20, 40, 80, 160) if _board.CHIP == "esp32c3" else (20, 40, 80, 160, 240)
_freq = 80 if _board.CHIP == "esp8266" else 160  # CONFIG_ESP_DEFAULT_CPU_FREQ_MHZ


def reset():
    # esp_restart(): immediate; the bootloader runs again
    _board.reset("reset")


def soft_reset():
    # SystemExit up to the firmware's main loop, which runs boot.py/main.py
    # again without a chip reset
    _board.soft_reset()


def reset_cause():
    # ESP_RST_POWERON -> PWRON_RESET; esp_restart() and panics -> SOFT_RESET
    return PWRON_RESET if _board.reset_cause == _board.PWRON_RESET else SOFT_RESET


def unique_id():
    # the base MAC (ESP32) / chip id (ESP8266): fixed per board directory
    import binascii

    n = binascii.crc32(_board.DIR.encode()) & 0xFFFFFF
    if _board.CHIP == "esp8266":
        return bytes((n & 0xFF, n >> 8 & 0xFF, n >> 16, 0))
    return bytes((0x24, 0x0A, 0xC4, n >> 16, n >> 8 & 0xFF, n & 0xFF))


def freq(*hz):
    global _freq
    if not hz:
        return _freq * 1000000
    mhz = hz[0] // 1000000
    if mhz not in _FREQS:
        raise ValueError("frequency must be %sMHz" % "MHz, ".join(str(f) for f in _FREQS))
    _freq = mhz


def idle():
    pass
