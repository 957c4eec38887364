# The ground every layer of the shim stands on (tests/test_shim_layers.py
# has the layers): the board's settings, read from the environment once,
# ESP-IDF's error convention and how a board process ends. Imports no other
# shim module.
import os
import sys

MPY = sys.implementation.name == "micropython"


def abspath(p):
    return (p if p[0] == "/" else os.getcwd().rstrip("/") + "/" + p).rstrip("/")


# the shim's directory, where the helper process (_idf) and the default apps
# are: this file's, or the one above its __pycache__ when _mpy loaded it, or
# $OTA_SHIM when the shim is frozen into the interpreter (its __file__ is
# then .frozen/_env.py; tools/bench/bench_frozen.py builds one) or when _mpy
# loaded it from the user's cache (_mpy sets it then)
SHIM = os.getenv("OTA_SHIM") or abspath(
    __file__.rsplit("/", 1)[0] if "/" in __file__ else ".").split("/__pycache__")[0]
DIR = abspath(os.getenv("OTA_BOARD") or ".ota-board")
CHIP = os.getenv("OTA_CHIP") or "esp32"
# an ESP32-family chip: a partitioned flash, otadata, an esp32 module (the
# ESP8266 profile has machine only)
ESP32 = CHIP != "esp8266"
LOG = os.getenv("OTA_FLASH_LOG")
LOG = LOG and abspath(LOG)
del abspath  # each name left costs the app's heap


def esp_error(code):
    # ports/esp32 check_esp_err(): OSError(-code, esp_err_to_name(code))
    return OSError(-code, {-1: "ESP_FAIL", 0x102: "ESP_ERR_INVALID_ARG",
                           0x104: "ESP_ERR_INVALID_SIZE", 0x105: "ESP_ERR_NOT_FOUND",
                           0x1503: "ESP_ERR_OTA_VALIDATE_FAILED",
                           0x6001: "ESP_ERR_FLASH_OP_FAIL"}[code])


def kill():
    # End this process at once, as a reset or a power cut ends the chip: no
    # finally blocks, nothing flushed later.
    if MPY:
        os.system("kill -9 $PPID")  # the unix port has no os._exit
        while True:
            pass
    sys.stdout.flush()
    os.kill(os.getpid(), 9)
