# Ed25519 signature verification (RFC 8032, PureEdDSA) in plain MicroPython.
#
# A board only ever verifies: it holds the publisher's 32-byte public key and
# checks manifests signed on the publisher's machine. Field elements are
# MicroPython big ints; points use extended twisted-Edwards coordinates
# (RFC 8032 section 5.1.4) so no inversion is needed until the very end, and
# [s]B - [k]A is one Straus double-scalar multiplication with width-3 signed
# windows (wNAF): ~253 shared doublings and ~125 additions. Memory decides the
# width on an ESP8266-class 32 KB heap: the window tables (odd multiples of B
# and of -A) are built per call and dropped after it, and every stored point
# is four ~100-byte big ints. Measured on the unix port with a manifest
# check: width 3 needs a 27 KB heap, width 4 30 KB, width 5 about 34 KB, for
# 3-5 % more time per step down. A precomputed fixed-base table for B (the
# tens of KB that make signing fast) cannot fit at all.
#
# Strict on what it accepts, as "Taming the many EdDSAs" (Chalkias, Garillot,
# Nikolaenko 2020) recommends: wrong lengths, s >= L, a public key whose y is
# not canonical (y >= p) or that is not on the curve, the non-canonical "x = 0
# with the sign bit set", and a public key or R of small order (one of the 8
# points P with [8]P = identity) are all refused. A small-order key is the
# one that matters: with A = identity (the all-zero encoding is another such
# point), s = 0 and R = [-k]A every message "verifies", so anyone can forge.
# R is never decoded: the computed point is encoded canonically and compared
# byte for byte with R, so a non-canonical R can never match, and R's order
# is that of the computed point. Verification is cofactorless
# ([s]B = R + [k]A), as RFC 8032 section 5.1.7 allows; with the checks above
# only vector 3 of that paper's twelve verifies (as in libsodium).
try:
    from hashlib import sha512
except ImportError:  # stock ESP32/ESP8266/unix firmware: see ota/sha512.py
    from ota.sha512 import sha512

from ota import const

# Inlined by const() rather than module globals (all but _P, which
# tools/bench reads): each global's name is interned for good, and a
# manifest check interns only a few names fewer than make the qstr pool grow
# (by 2 KiB in one piece on the unix port).
_P = (1 << 255) - 19
_L = const((1 << 252) + 27742317777372353535851937790883648493)
_D = const(37095705934669439343138083508754565189542113879843219016388785533085940283555)
# 2d mod p
_D2 = const(16295367250680780974490674513165176452449235426866156013048779062215315747161)
_SQRT_M1 = const(19681161376707505956807079304988542015446066515923890162744021073123829784752)
# The base point B: y = 4/5, x even (RFC 8032 section 5.1).
_BX = const(15112221349535400772501151409588531511454012693041857206046113283949847762202)
_BY = const(46316835694926478169428394003475163141307993866256225615783033603165251855960)


def _pow_loop(x, e, m):
    # Square-and-multiply for firmware built without 3-argument pow()
    # (MICROPY_PY_BUILTINS_POW3 depends on the port's feature level).
    r = 1
    while e:
        if e & 1:
            r = r * x % m
        x = x * x % m
        e >>= 1
    return r


try:
    pow(2, 3, 5)
    _pow = pow
except (TypeError, NotImplementedError):
    _pow = _pow_loop


def _dbl(X, Y, Z, need_t):
    # dbl-2008-hwcd for a = -1. T of the input is not needed, and T of the
    # output only when an addition follows: most doublings skip it.
    p = _P
    a = X * X % p
    b = Y * Y % p
    c = Z * Z % p
    h = a + b
    e = h - (X + Y) * (X + Y) % p
    g = a - b
    f = c + c + g
    return e * f % p, g * h % p, f * g % p, (e * h % p if need_t else 0)


def _add(X, Y, Z, T, q, neg):
    # add-2008-hwcd-3 with q cached as (y+x, y-x, 2z, 2d*t); neg adds -q.
    p = _P
    if neg:
        a = (Y - X) * q[0] % p
        b = (Y + X) * q[1] % p
        c = -T * q[3] % p
    else:
        a = (Y - X) * q[1] % p
        b = (Y + X) * q[0] % p
        c = T * q[3] % p
    d = Z * q[2] % p
    e = b - a
    f = d - c
    g = d + c
    h = b + a
    return e * f % p, g * h % p, f * g % p, e * h % p


def _cached(X, Y, Z, T):
    p = _P
    return ((Y + X) % p, (Y - X) % p, 2 * Z % p, T * _D2 % p)


def _odd_multiples(X, Y, Z, T):
    # P and 3P in cached form: the digits of a width-3 window.
    X3, Y3, Z3, T3 = _add(X, Y, Z, T, _cached(*_dbl(X, Y, Z, True)), False)
    return _cached(X, Y, Z, T), _cached(X3, Y3, Z3, T3)


def _digits(k):
    # Width-3 signed digits of k < 2**253 (wNAF): -3, -1, 1 or 3, with at
    # least 2 zeros between two of them, as bytes (two's complement).
    kb = k.to_bytes(32, "little") + b"\0\0"
    out = bytearray(256)
    pos = 0
    carry = 0
    while pos < 256:
        j = pos >> 3
        w = carry + ((kb[j] | kb[j + 1] << 8) >> (pos & 7) & 7)
        if w & 1:
            if w < 4:
                carry = 0
                out[pos] = w
            else:
                carry = 1
                out[pos] = w - 8 + 256
            pos += 3
        else:
            pos += 1
    return out


def _double_mul(ds, dk, table_b, table_a):
    # [s]B + [k]A' from the digits of s and k and the odd-multiple tables of
    # B and A' (Straus' trick: one shared run of doublings for both scalars).
    X, Y, Z, T = 0, 1, 1, 0
    i = 255
    while i >= 0 and not (ds[i] or dk[i]):
        i -= 1
    while i >= 0:
        X, Y, Z, T = _dbl(X, Y, Z, ds[i] or dk[i])
        d = ds[i]
        if d:
            if d < 128:
                X, Y, Z, T = _add(X, Y, Z, T, table_b[d >> 1], False)
            else:
                X, Y, Z, T = _add(X, Y, Z, T, table_b[(256 - d) >> 1], True)
        d = dk[i]
        if d:
            if d < 128:
                X, Y, Z, T = _add(X, Y, Z, T, table_a[d >> 1], False)
            else:
                X, Y, Z, T = _add(X, Y, Z, T, table_a[(256 - d) >> 1], True)
        i -= 1
    return X, Y, Z


def _decode(b):
    # RFC 8032 section 5.1.3; None for anything that is not a canonical
    # encoding of a curve point.
    p = _P
    y = int.from_bytes(b, "little")
    sign = y >> 255
    y &= (1 << 255) - 1
    if y >= p:
        return None
    yy = y * y % p
    u = (yy - 1) % p
    v = (_D * yy + 1) % p
    v3 = v * v % p * v % p
    # x = u v^3 (u v^7)^((p-5)/8), a square root of u/v if one exists
    x = u * v3 % p * _pow(u * v3 % p * v3 % p * v % p, (p - 5) >> 3, p) % p
    vxx = v * x % p * x % p
    if vxx != u:
        if vxx != p - u:
            return None
        x = x * _SQRT_M1 % p
    if x == 0 and sign:
        return None
    if x & 1 != sign:
        x = p - x
    return x, y


def _small(X, Y, Z):
    # Is the point of small order, i.e. [8]P the identity (X = 0, Y = Z)?
    for _ in range(3):
        X, Y, Z, _ = _dbl(X, Y, Z, False)
    return X == 0 and Y == Z


def public_point(public_key):
    """The decoded (x, y) of a public key fit to verify with: 32 bytes, a
    canonical encoding of a curve point not of small order; else None."""
    public_key = bytes(public_key)
    a = _decode(public_key) if len(public_key) == 32 else None
    if a is None or _small(a[0], a[1], 1):
        return None
    return a


def _encode(X, Y, Z):
    p = _P
    zi = _pow(Z, p - 2, p)
    x = X * zi % p
    y = Y * zi % p
    return (y | (x & 1) << 255).to_bytes(32, "little")


def verify(public_key, message, signature, point=None):
    """True if `signature` (64 bytes) is a valid Ed25519 signature of
    `message` (bytes) under `public_key` (32 bytes), else False. point:
    public_point(public_key) if the caller has it already."""
    signature = bytes(signature)
    a = point or public_point(public_key)
    if a is None or len(signature) != 64:
        return False
    r = signature[:32]
    s = int.from_bytes(signature[32:], "little")
    if s >= _L:
        return False
    # The 256-byte digit arrays early: once big-int arithmetic has scattered
    # live points over the heap, 256 bytes in one piece may be left nowhere
    # (a MemoryError with kilobytes free).
    ds = _digits(s)
    h = sha512(r)
    h.update(bytes(public_key))
    h.update(message)
    k = int.from_bytes(h.digest(), "little") % _L
    h = None  # its state is ~1 KB of big ints: free it for the tables
    dk = _digits(k)
    # R' = [s]B + [k](-A); valid iff R' encodes to exactly R.
    x = _P - a[0]
    y = a[1]
    table_b = _odd_multiples(_BX, _BY, 1, _BX * _BY % _P)
    table_a = _odd_multiples(x, y, 1, x * y % _P)
    X, Y, Z = _double_mul(ds, dk, table_b, table_a)
    return _encode(X, Y, Z) == r and not _small(X, Y, Z)
