# The chips an app image can be for, by esp_image_header_t.chip_id
# (esp_chip_id_t): esptool's name, then the flash-mapped (cache) address
# ranges IROM and DROM as 64 KiB page numbers (address >> 16). A segment
# loaded in a mapped range must sit at the same offset in its 64 KiB page as
# in the image (esp_image_format.c verify_segment_header). The host tools
# name chips from this table too; tests/test_chips.py checks it against
# esptool's own chip definitions. A board loads this module only to look up
# its own chip (ota.image unloads it again) or to name a wrong one.
CHIPS = {
    0: ("esp32", 0x400D, 0x4040, 0x3F40, 0x3F80),
    2: ("esp32s2", 0x4008, 0x40B8, 0x3F00, 0x3F3F),
    5: ("esp32c3", 0x4200, 0x4280, 0x3C00, 0x3C80),
    9: ("esp32s3", 0x4200, 0x4400, 0x3C00, 0x3E00),
    12: ("esp32c2", 0x4200, 0x4240, 0x3C00, 0x3C40),
    13: ("esp32c6", 0x4200, 0x4280, 0x4280, 0x4300),
    16: ("esp32h2", 0x4200, 0x4280, 0x4280, 0x4300),
    18: ("esp32p4", 0x4000, 0x4C00, 0x4000, 0x4C00),
    23: ("esp32c5", 0x4200, 0x4400, 0x4200, 0x4400),
}


def chip_name(chip_id):
    return CHIPS[chip_id][0] if chip_id in CHIPS else "chip id %d" % chip_id


def image_chip(header):
    # The chip an image header is for, as esptool names it. An ESP8266 image
    # has no extended header, so where an ESP32 image keeps its chip id it
    # has segment bytes; its entry point (in the ESP8266's IRAM, 0x4010xxxx,
    # where no ESP32-family app starts) tells it apart.
    if header[7] == 0x40 and header[6] == 0x10:
        return "esp8266"
    return chip_name(header[12] | header[13] << 8)
