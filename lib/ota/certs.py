# ota.certs: the CA certificates a TLS download verifies the server with.
# Loaded only for https:// (a plain http:// update never pays for it).
#
# The boards' mbedtls loads CAs as DER only (PEM is refused), and reads one
# certificate per load_verify_locations() call.
import binascii

from ota import const, OTAError

_INVALID_ARG = const(0x102)


def pem_to_der(pem):
    # CA certificate(s), PEM (str/bytes) or DER -> DER. Several PEM blocks
    # give their DER forms one after another; der_certs() splits them.
    if isinstance(pem, str):
        pem = pem.encode()
    pem = bytes(pem)
    if b"-----BEGIN" not in pem:
        return pem
    der = b""
    try:
        for block in pem.split(b"-----BEGIN CERTIFICATE-----")[1:]:
            der += binascii.a2b_base64(block[:block.index(b"-----END")])
    except ValueError:  # no END line, or not base64
        der = b""
    if not der:
        raise OTAError(_INVALID_ARG, "no certificate in cert_pem")
    return der


def der_certs(der):
    # Split concatenated DER certificates (ASN.1 SEQUENCEs): mbedtls would
    # read only the first of them from one load_verify_locations().
    certs = []
    while der:
        n = der[1] if len(der) > 1 and der[0] == 0x30 else -1
        head = 2
        if n >= 0x80:  # long form: the low bits count the length bytes
            head += n & 0x7F
            n = int.from_bytes(der[2:head], "big")
        if n < 0 or head + n > len(der):
            raise OTAError(_INVALID_ARG, "cert_pem is neither PEM nor DER")
        certs.append(der[:head + n])
        der = der[head + n:]
    return certs


def context(certs):
    # An SSLContext that verifies the server against `certs` (DER list):
    # PROTOCOL_TLS_CLIENT, CERT_REQUIRED; the caller passes server_hostname.
    try:
        import tls  # MicroPython
    except ImportError:
        import ssl as tls  # CPython
    ctx = tls.SSLContext(tls.PROTOCOL_TLS_CLIENT)
    ctx.verify_mode = tls.CERT_REQUIRED
    for der in certs:  # each call adds a CA (mbedtls, OpenSSL)
        if tls.__name__ == "tls":  # MicroPython: positional only
            ctx.load_verify_locations(der)
        else:
            ctx.load_verify_locations(cadata=der)
    return ctx
