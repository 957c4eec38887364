# A fresh board: the flash of an ESP32_GENERIC-OTA MicroPython board right
# after `esptool write_flash` (partitions-4MiB-ota.csv), otadata still blank.
# Runs on the unix port (first `import esp32`) and on CPython (otatool).
import hashlib
import os
import struct

import _table

FLASH_SIZE = 0x400000
# chip: (esp_chip_id_t, bootloader offset, bootloader load address, max rev)
CHIPS = {"esp32": (0, 0x1000, 0x3FFF0000, 399),
         "esp32s3": (9, 0x0, 0x3FCD8000, 99),
         "esp32c3": (5, 0x0, 0x3FCD6000, 199)}


def bootloader(chip):
    # A second-stage bootloader image: ESP image header, one DRAM segment
    # holding esp_bootloader_desc_t (magic 0x50), checksum, SHA-256. The
    # emulated ROM does not run it; it is there so the flash looks right.
    chip_id, _, load, max_rev = CHIPS[chip]
    desc = struct.pack("<B2sBI32s24s16s", 0x50, b"", 0, 1, b"v5.2.2", b"Jan  1 2025 00:00:00", b"")
    hdr = struct.pack("<BBBBIB3sHBHH4sB", 0xE9, 1, 2, 0x20, load + 0x400, 0xEE, b"",
                      chip_id, 0, 0, max_rev, b"", 1)
    body = hdr + struct.pack("<II", load, len(desc)) + desc
    csum = 0xEF
    for b in desc:
        csum ^= b
    pad = (len(body) + 16) // 16 * 16 - len(body)
    body += b"\0" * (pad - 1) + bytes([csum])
    return body + hashlib.sha256(body).digest()


def app_path(shim, chip):
    return shim + ("/default_app.bin" if chip == "esp32" else "/default_app_%s.bin" % chip)


def create(board_dir, chip, shim, app=None):
    # Write board_dir/flash.bin (atomically) and make board_dir/fs.
    for d in (board_dir, board_dir + "/fs"):
        try:
            os.mkdir(d)
        except OSError:
            pass
    tmp = board_dir + "/flash.bin.tmp"
    ff = b"\xff" * 4096
    with open(tmp, "wb") as f:
        for _ in range(FLASH_SIZE // 4096):
            f.write(ff)
        f.seek(CHIPS[chip][1])
        f.write(bootloader(chip))
        f.seek(_table.ADDR)
        f.write(_table.build())
        f.seek(0x10000)
        with open(app or app_path(shim, chip), "rb") as src:
            while True:
                chunk = src.read(4096)
                if not chunk:
                    break
                f.write(chunk)
    os.rename(tmp, board_dir + "/flash.bin")
