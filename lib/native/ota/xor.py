# ota.xor: the image checksum's byte loop (ESP-IDF's XOR of every segment
# byte) as native code. Every byte of a firmware image passes through it,
# so it runs as machine code: one 32-bit load per four bytes.
#
# A @micropython.viper function needs mpy-cross -march, so this module
# lives apart from lib/ota, whose every module compiles for any port:
# lib/native/ota holds the ota modules of native code. otatool deploy
# --mpy compiles it with the board's -march (and leaves it out for a port
# without native code), the freeze manifest freezes it as ota.xor, mip
# installs it as ota/xor.py; tests and benchmarks compile it with
# -march=host. ota.image falls back to plain Python where this module does
# not load: CPython (no micropython module), a port without a native
# emitter (SyntaxError), a .mpy for another architecture (ValueError).
import micropython


@micropython.viper
def xor(buf, start: int, end: int, acc: int) -> int:
    # acc ^ every byte of buf[start:end]: bytes up to a word boundary, then
    # 32 words per step (constant offsets from one pointer: on the unix
    # port a third faster than 8 per step, 2.5 times as fast as four
    # indexed words), then words, then the bytes left over.
    p = ptr8(buf)
    i = start
    while i < end and (int(p) + i) & 3:
        acc ^= p[i]
        i += 1
    a = int(p) + i
    top = a + ((end - i) & -128)
    x = 0
    while a < top:
        w = ptr32(a)
        x ^= (w[0] ^ w[1] ^ w[2] ^ w[3] ^ w[4] ^ w[5] ^ w[6] ^ w[7]
              ^ w[8] ^ w[9] ^ w[10] ^ w[11] ^ w[12] ^ w[13] ^ w[14] ^ w[15]
              ^ w[16] ^ w[17] ^ w[18] ^ w[19] ^ w[20] ^ w[21] ^ w[22] ^ w[23]
              ^ w[24] ^ w[25] ^ w[26] ^ w[27] ^ w[28] ^ w[29] ^ w[30] ^ w[31])
        a += 128
    top = a + ((end - (a - int(p))) & -4)
    while a < top:
        x ^= ptr32(a)[0]
        a += 4
    i = a - int(p)
    while i < end:
        acc ^= p[i]
        i += 1
    return (acc ^ x ^ (x >> 8) ^ (x >> 16) ^ (x >> 24)) & 0xFF
