# ota.sigblock: what may follow an ESP-IDF app image: the signature that
# `espsecure sign-data` appends to an app signed for Secure Boot. The image
# validator (ota.image) imports it only when bytes follow an image.
#
# Secure Boot v1 (ESP32; esp_secure_boot_sig_block_t, espsecure
# sign_secure_boot_v1): right after the image, a u32 version, 0, and the
# 64-byte ECDSA P-256 signature: 68 bytes. A build padded with esptool
# --secure-pad (and esptool's own test image, secure_images/
# hello-world-signed.bin) has 12 more bytes after it, up to the 16-byte
# boundary, of no defined content.
#
# Secure Boot v2 (ets_secure_boot_signature_t, espsecure
# sign_secure_boot_v2): 0xFF up to the next 4 KiB boundary (espsecure pads
# the signed data so), then one 4096-byte signature sector: 1 to 3 blocks of
# 1216 bytes, each magic 0xE7, version 2 (RSA-3072) or 3 (ECDSA), ...,
# CRC-32 (little-endian) of its first 1196 bytes, 16 zero bytes; the rest of
# the sector 0xFF.
#
# The board cannot check the signature itself (its bootloader does, with
# the key digest burnt into eFuse); this checks the framing, so that nothing
# but a well-formed signature can follow an image, and all of it is written
# to flash with the image. Anything else is ESP_ERR_OTA_VALIDATE_FAILED.
from binascii import crc32

from ota import const, OTAError

_VALIDATE_FAILED = const(0x1503)

_V1 = const(68)          # version word + signature
_V1_PADDED = const(80)   # ... up to the next 16-byte boundary
_SECTOR = const(4096)
_BLOCK = const(1216)
_CRC_AT = const(1196)    # the CRC-32 covers the block before it
_BLOCKS = const(3)


def _bad():
    return OTAError(_VALIDATE_FAILED, "data after the end of the image is no signature block")


class Trailer:
    def __init__(self, end):
        # end: offset of the first byte after the image
        self.pad = -end & (_SECTOR - 1)   # v2: 0xFF bytes before the sector
        self.at = 0       # trailer bytes seen
        self.v = 0        # 1 or 2 once the first byte tells
        self.crc = 0      # CRC-32 of the current v2 block so far
        self.last = False  # v2: the signature blocks are over, 0xFF follows

    def complete(self):
        if self.v == 1:
            return self.at == _V1 or self.at == _V1_PADDED
        return self.at == self.pad + _SECTOR

    def feed(self, mv):
        i = 0
        n = len(mv)
        if not self.v and n:
            self.v = 1 if mv[0] == 0 else 2   # v2 starts with 0xFF or 0xE7
        while i < n:
            k = self._v1(mv, i, n) if self.v == 1 else self._v2(mv, i, n)
            i += k
            self.at += k

    def _v1(self, mv, i, n):
        # Bytes consumed at mv[i]: the version word must be 0, the rest is
        # signature and padding.
        at = self.at
        if at < 4:
            if mv[i]:
                raise _bad()
            return 1
        if at >= _V1_PADDED:
            raise _bad()
        return min(n - i, _V1_PADDED - at)

    def _v2(self, mv, i, n):
        p = self.at - self.pad    # position in the signature sector
        b = mv[i]
        if p >= _SECTOR:
            raise _bad()
        o = p % _BLOCK
        if p < 0 or self.last or p >= _BLOCKS * _BLOCK:
            if b != 0xFF:
                raise _bad()
            return 1
        if o == 0:
            if b == 0xFF and p:       # no further block
                self.last = True
                return 1
            if b != 0xE7:
                raise _bad()
            self.crc = 0
        elif o == 1 and b != 2 and b != 3:
            raise _bad()
        if o < _CRC_AT:
            k = 1 if o < 2 else min(n - i, _CRC_AT - o)
            self.crc = crc32(mv[i:i + k], self.crc)
            return k
        if o < _CRC_AT + 4:
            if b != (self.crc >> (8 * (o - _CRC_AT))) & 0xFF:
                raise _bad()
        elif b:
            raise _bad()
        return 1
