# ota.xor: the image checksum's byte loop (ESP-IDF's XOR of every segment
# byte) as native code. Every byte of a firmware image passes through it,
# so it runs as machine code: one 32-bit load per four bytes.
#
# A @micropython.viper function needs mpy-cross -march (otatool deploy
# --mpy passes the board's; tests and benchmarks compile this file with
# -march=host). ota.image falls back to plain Python where this module
# does not load: CPython (no micropython module), a port without a native
# emitter (SyntaxError), a .mpy for another architecture (ValueError).
import micropython


@micropython.viper
def xor(buf, start: int, end: int, acc: int) -> int:
    # acc ^ every byte of buf[start:end]: bytes up to a word boundary, then
    # four words per step, then the bytes left over.
    p = ptr8(buf)
    i = start
    while i < end and (int(p) + i) & 3:
        acc ^= p[i]
        i += 1
    w = ptr32(int(p) + i)
    n = (end - i) >> 4
    x = 0
    j = 0
    while j < n << 2:
        x ^= w[j] ^ w[j + 1] ^ w[j + 2] ^ w[j + 3]
        j += 4
    i += n << 4
    while i < end:
        acc ^= p[i]
        i += 1
    return (acc ^ x ^ (x >> 8) ^ (x >> 16) ^ (x >> 24)) & 0xFF
