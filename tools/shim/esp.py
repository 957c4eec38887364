# The `esp` module of the emulated board: the part of ports/esp8266/modesp.c
# (and ports/esp32/modesp.c) that ota may ask about, with the values of an
# ESP8266_GENERIC board with 4 MiB of flash. Stand-alone on purpose: it
# imports no other shim module, so it costs an ESP8266-class heap almost
# nothing.
#
# Not emulated: flash_read/flash_write/flash_erase (ota never writes raw
# flash on an ESP8266: its updates are app bundles on the filesystem),
# deepsleep, sleep_type, dht_readinto, apa102_write, malloc/free, meminfo,
# check_fw, set_native_code_location.
import os

_CHIP = os.getenv("OTA_CHIP") or "esp32"
_FLASH_SIZE = 0x400000


def flash_size():
    # The size in the flash chip's header, as the firmware reports it.
    return _FLASH_SIZE


def flash_user_start():
    # ESP8266 with >= 2 MiB: irom0 ends at 1 MiB, the filesystem follows
    # (boards/esp8266_2MiB.ld). ESP32: the vfs partition's offset in the
    # default table.
    return 0x100000 if _CHIP == "esp8266" else 0x200000


def osdebug(level, *args):
    # Routes the SDK's debug output to a UART; nothing to route here.
    pass


if _CHIP == "esp8266":

    def flash_id():
        # spi_flash_get_id(): capacity, memory type, manufacturer (0xEF
        # Winbond W25Q32, the chip on most ESP-12 modules). ESP8266 only.
        return 0x1640EF
