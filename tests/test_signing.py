"""Signed updates: Ed25519 manifests made on the host, verified on the board.

Board code runs on the MicroPython unix port (`run_mpy`, path lib + .frozen);
the manifests are made with otatool's Python API and CLI."""
import base64
import hashlib
import json
import os

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from conftest import LIB, compile_ota, run_cpython, run_mpy
from otatool import cli
from otatool.appimage import make_app_image
from otatool.bundle import build as build_bundle
from otatool.sign import (canonical_bytes, load_private_key, make_manifest,
                          public_key_b64, sign_manifest)

BOARD_PATH = LIB + ":.frozen"
P = 2 ** 255 - 19
L = 2 ** 252 + 27742317777372353535851937790883648493

ESP_ERR_INVALID_SIZE = 0x104
ESP_ERR_INVALID_VERSION = 0x10A
ESP_ERR_OTA_VALIDATE_FAILED = 0x1503
ESP_ERR_OTA_SMALL_SEC_VER = 0x1504

# RFC 8032 section 7.1: (name, public key, message, signature), all hex.
RFC8032 = [
    (
        "TEST 1",
        "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a",
        "",
        "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e06522490155"
        "5fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b",
    ),
    (
        "TEST 2",
        "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c",
        "72",
        "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da"
        "085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00",
    ),
    (
        "TEST 3",
        "fc51cd8e6218a1a38da47ed00230f0580816ed13ba3303ac5deb911548908025",
        "af82",
        "6291d657deec24024827e69c3abe01a30ce548a284743a445e3680d7db5ac3ac"
        "18ff9b538d16f290ae67f760984dc6594a7c15e9716ed28dc027beceea1ec40a",
    ),
    (
        "TEST 1024",
        "278117fc144c72340f67d0f2316e8386ceffbf2b2428c9c51fef7c597f1d426e",
        (
            "08b8b2b733424243760fe426a4b54908632110a66c2f6591eabd3345e3e4eb98"
            "fa6e264bf09efe12ee50f8f54e9f77b1e355f6c50544e23fb1433ddf73be84d8"
            "79de7c0046dc4996d9e773f4bc9efe5738829adb26c81b37c93a1b270b20329d"
            "658675fc6ea534e0810a4432826bf58c941efb65d57a338bbd2e26640f89ffbc"
            "1a858efcb8550ee3a5e1998bd177e93a7363c344fe6b199ee5d02e82d522c4fe"
            "ba15452f80288a821a579116ec6dad2b3b310da903401aa62100ab5d1a36553e"
            "06203b33890cc9b832f79ef80560ccb9a39ce767967ed628c6ad573cb116dbef"
            "efd75499da96bd68a8a97b928a8bbc103b6621fcde2beca1231d206be6cd9ec7"
            "aff6f6c94fcd7204ed3455c68c83f4a41da4af2b74ef5c53f1d8ac70bdcb7ed1"
            "85ce81bd84359d44254d95629e9855a94a7c1958d1f8ada5d0532ed8a5aa3fb2"
            "d17ba70eb6248e594e1a2297acbbb39d502f1a8c6eb6f1ce22b3de1a1f40cc24"
            "554119a831a9aad6079cad88425de6bde1a9187ebb6092cf67bf2b13fd65f270"
            "88d78b7e883c8759d2c4f5c65adb7553878ad575f9fad878e80a0c9ba63bcbcc"
            "2732e69485bbc9c90bfbd62481d9089beccf80cfe2df16a2cf65bd92dd597b07"
            "07e0917af48bbb75fed413d238f5555a7a569d80c3414a8d0859dc65a46128ba"
            "b27af87a71314f318c782b23ebfe808b82b0ce26401d2e22f04d83d1255dc51a"
            "ddd3b75a2b1ae0784504df543af8969be3ea7082ff7fc9888c144da2af58429e"
            "c96031dbcad3dad9af0dcbaaaf268cb8fcffead94f3c7ca495e056a9b47acdb7"
            "51fb73e666c6c655ade8297297d07ad1ba5e43f1bca32301651339e22904cc8c"
            "42f58c30c04aafdb038dda0847dd988dcda6f3bfd15c4b4c4525004aa06eeff8"
            "ca61783aacec57fb3d1f92b0fe2fd1a85f6724517b65e614ad6808d6f6ee34df"
            "f7310fdc82aebfd904b01e1dc54b2927094b2db68d6f903b68401adebf5a7e08"
            "d78ff4ef5d63653a65040cf9bfd4aca7984a74d37145986780fc0b16ac451649"
            "de6188a7dbdf191f64b5fc5e2ab47b57f7f7276cd419c17a3ca8e1b939ae49e4"
            "88acba6b965610b5480109c8b17b80e1b7b750dfc7598d5d5011fd2dcc5600a3"
            "2ef5b52a1ecc820e308aa342721aac0943bf6686b64b2579376504ccc493d97e"
            "6aed3fb0f9cd71a43dd497f01f17c0e2cb3797aa2a2f256656168e6c496afc5f"
            "b93246f6b1116398a346f1a641f3b041e989f7914f90cc2c7fff357876e506b5"
            "0d334ba77c225bc307ba537152f3f1610e4eafe595f6d9d90d11faa933a15ef1"
            "369546868a7f3a45a96768d40fd9d03412c091c6315cf4fde7cb68606937380d"
            "b2eaaa707b4c4185c32eddcdd306705e4dc1ffc872eeee475a64dfac86aba41c"
            "0618983f8741c5ef68d3a101e8a3b8cac60c905c15fc910840b94c00a0b9d0"
        ),
        "0aab4c900501b3e24d7cdf4663326a3a87df5e4843b2cbdb67cbf6e460fec350"
        "aa5371b1508f9f4528ecea23c436d94b5e8fcd4f681e30a6ac00a9704a188a03",
    ),
    (
        "TEST SHA(abc)",
        "ec172b93ad5e563bf4932c70e1245034c35467ef2efd4d64ebf819683467e2bf",
        (
            "ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a"
            "2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f"
        ),
        "dc2a4459e7369633a52b1bf277839a00201009a3efbf3ecb69bea2186c26b589"
        "09351fc9ac90b3ecfdfbc7c66431e0303dca179c138ac17ad9bef1177331a704",
    ),
]
VECTOR_IDS = [v[0] for v in RFC8032]

VERIFY = """
import binascii
from ota.ed25519 import verify
u = binascii.unhexlify
for pk, msg, sig in CASES:
    print(int(verify(u(pk), u(msg), u(sig))))
"""


def board_verify(tmp_path, cases, prelude=""):
    """verify() on the board for each (pk, msg, sig) in hex: list of bools."""
    r = run_mpy(prelude + "CASES = %r\n" % (cases,) + VERIFY, tmp_path, path=BOARD_PATH)
    assert r.returncode == 0, r.stderr
    return [line == "1" for line in r.stdout.split()]


def flip(hexstr, byte, bit=0):
    b = bytearray(bytes.fromhex(hexstr))
    b[byte] ^= 1 << bit
    return b.hex()


def le32(n):
    return n.to_bytes(32, "little").hex()


@pytest.mark.parametrize("name,pk,msg,sig", RFC8032, ids=VECTOR_IDS)
def test_rfc8032_test_vector_verifies_on_the_board(name, pk, msg, sig, tmp_path):
    assert board_verify(tmp_path, [(pk, msg, sig)]) == [True]


@pytest.mark.parametrize("name,pk,msg,sig", RFC8032, ids=VECTOR_IDS)
def test_one_flipped_bit_in_message_signature_or_key_is_refused(name, pk, msg, sig, tmp_path):
    cases = [(pk, msg, sig)]                                  # untouched: accepted
    if msg:
        cases += [(pk, flip(msg, 0), sig), (pk, flip(msg, len(msg) // 2 - 1, 7), sig)]
    cases += [(pk, msg, flip(sig, 0)), (pk, msg, flip(sig, 17, 5)),   # in R
              (pk, msg, flip(sig, 32)), (pk, msg, flip(sig, 50, 3)),  # in S
              (flip(pk, 0), msg, sig), (flip(pk, 31, 6), msg, sig)]
    assert board_verify(tmp_path, cases) == [True] + [False] * (len(cases) - 1)


def test_signature_whose_s_is_not_reduced_below_the_group_order_is_refused(tmp_path):
    # S + L satisfies the curve equation just as S does ([L]B is the
    # identity): only the s < L rule (RFC 8032 5.1.7) refuses it.
    name, pk, msg, sig = RFC8032[1]
    s = int.from_bytes(bytes.fromhex(sig[64:]), "little")
    cases = [(pk, msg, sig), (pk, msg, sig[:64] + le32(s + L))]
    assert board_verify(tmp_path, cases) == [True, False]


# "Taming the many EdDSAs" (Chalkias, Garillot, Nikolaenko, SSR 2020), the
# twelve vectors of ed25519-speccheck's cases.txt as (public key, message,
# signature) and what each tests. A strict verifier (small-order A and R
# refused, canonical encodings only, S < L) accepts vector 3 alone, as
# libsodium and ed25519-dalek's verify_strict do.
TAMING = [
    ("0: S=0, A and R of small order",
     "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac03fa",
     "8c93255d71dcab10e8f379c26200f3c7bd5f09d9bc3068d3ef4edeb4853022b6",
     "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a"
     "0000000000000000000000000000000000000000000000000000000000000000", False),
    ("1: A of small order, R mixed",
     "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac03fa",
     "9bd9f44f4dcc75bd531b56b2cd280b0bb38fc1cd6d1230e14861d861de092e79",
     "f7badec5b8abeaf699583992219b7b223f1df3fbbea919844e3f7c554a43dd43"
     "a5bb704786be79fc476f91d3f3f89b03984d8068dcf1bb7dfc6637b45450ac04", False),
    ("2: A mixed, R of small order",
     "f7badec5b8abeaf699583992219b7b223f1df3fbbea919844e3f7c554a43dd43",
     "aebf3f2601a0c8c5d39cc7d8911642f740b78168218da8471772b35f9d35b9ab",
     "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac03fa"
     "8c4bd45aecaca5b24fb97bc10ac27ac8751a7dfe1baff8b953ec9f5833ca260e", False),
    ("3: A and R mixed, both equations hold",
     "cdb267ce40c5cd45306fa5d2f29731459387dbf9eb933b7bd5aed9a765b88d4d",
     "9bd9f44f4dcc75bd531b56b2cd280b0bb38fc1cd6d1230e14861d861de092e79",
     "9046a64750444938de19f227bb80485e92b83fdb4b6506c160484c016cc1852f"
     "87909e14428a7a1d62e9f22f3d3ad7802db02eb2e688b6c52fcd6648a98bd009", True),
    ("4: only the cofactored equation holds",
     "cdb267ce40c5cd45306fa5d2f29731459387dbf9eb933b7bd5aed9a765b88d4d",
     "e47d62c63f830dc7a6851a0b1f33ae4bb2f507fb6cffec4011eaccd55b53f56c",
     "160a1cb0dc9c0258cd0a7d23e94d8fa878bcb1925f2c64246b2dee1796bed512"
     "5ec6bc982a269b723e0668e540911a9a6a58921d6925e434ab10aa7940551a09", False),
    ("5: only the cofactored equation holds, R of order L",
     "cdb267ce40c5cd45306fa5d2f29731459387dbf9eb933b7bd5aed9a765b88d4d",
     "e47d62c63f830dc7a6851a0b1f33ae4bb2f507fb6cffec4011eaccd55b53f56c",
     "21122a84e0b5fca4052f5b1235c80a537878b38f3142356b2c2384ebad4668b7"
     "e40bc836dac0f71076f9abe3a53f9c03c1ceeeddb658d0030494ace586687405", False),
    ("6: S > L",
     "442aad9f089ad9e14647b1ef9099a1ff4798d78589e66f28eca69c11f582a623",
     "85e241a07d148b41e47d62c63f830dc7a6851a0b1f33ae4bb2f507fb6cffec40",
     "e96f66be976d82e60150baecff9906684aebb1ef181f67a7189ac78ea23b6c0e"
     "547f7690a0e2ddcd04d87dbc3490dc19b3b3052f7ff0538cb68afb369ba3a514", False),
    ("7: S >> L",
     "442aad9f089ad9e14647b1ef9099a1ff4798d78589e66f28eca69c11f582a623",
     "85e241a07d148b41e47d62c63f830dc7a6851a0b1f33ae4bb2f507fb6cffec40",
     "8ce5b96c8f26d0ab6c47958c9e68b937104cd36e13c33566acd2fe8d38aa1942"
     "7e71f98a473474f2f13f06f97c20d58cc3f54b8bd0d272f42b695dd7e89a8c22", False),
    ("8: R not canonical (x = 0 with the sign bit)",
     "f7badec5b8abeaf699583992219b7b223f1df3fbbea919844e3f7c554a43dd43",
     "9bedc267423725d473888631ebf45988bad3db83851ee85c85e241a07d148b41",
     "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff"
     "03be9678ac102edcd92b0210bb34d7428d12ffc5df5f37e359941266a4e35f0f", False),
    ("9: R not canonical, k computed from the reduced R",
     "f7badec5b8abeaf699583992219b7b223f1df3fbbea919844e3f7c554a43dd43",
     "9bedc267423725d473888631ebf45988bad3db83851ee85c85e241a07d148b41",
     "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff"
     "ca8c5b64cd208982aa38d4936621a4775aa233aa0505711d8fdcfdaa943d4908", False),
    ("10: A not canonical",
     "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
     "e96b7021eb39c1a163b6da4e3093dcd3f21387da4cc4572be588fafae23c155b",
     "a9d55260f765261eb9b84e106f665e00b867287a761990d7135963ee0a7d59dc"
     "a5bb704786be79fc476f91d3f3f89b03984d8068dcf1bb7dfc6637b45450ac04", False),
    ("11: A not canonical, k computed from the reduced A",
     "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
     "39a591f5321bbe07fd5a23dc2f39d025d74526615746727ceefd6e82ae65c06f",
     "a9d55260f765261eb9b84e106f665e00b867287a761990d7135963ee0a7d59dc"
     "a5bb704786be79fc476f91d3f3f89b03984d8068dcf1bb7dfc6637b45450ac04", False),
]

# The eight points of small order ([8]P = identity), canonically encoded,
# with their order: the identity (y = 1), (0, -1), the two with y = 0 (the
# all-zero encoding is one) and four of order 8.
SMALL_ORDER = [
    ("0100000000000000000000000000000000000000000000000000000000000000", 1),
    ("ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f", 2),
    ("0000000000000000000000000000000000000000000000000000000000000000", 4),
    ("0000000000000000000000000000000000000000000000000000000000000080", 4),
    ("26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05", 8),
    ("26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc85", 8),
    ("c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a", 8),
    ("c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac03fa", 8),
]
IDENTITY = SMALL_ORDER[0][0]


def forgery(pk, order, text):
    """A message starting with `text` and the "signature" R = identity, S = 0
    that [S]B = R + [k]A accepts for a public key A of small `order`: k =
    SHA-512(R || A || M) mod L a multiple of the order makes [k]A the
    identity. No private key involved: (message hex, signature hex)."""
    for i in range(1000):
        msg = ("%s %d" % (text, i)).encode()
        k = int.from_bytes(hashlib.sha512(bytes.fromhex(IDENTITY + pk) + msg).digest(),
                           "little") % L
        if k % order == 0:
            return msg.hex(), IDENTITY + "00" * 32
    raise AssertionError("no message found")


@pytest.mark.parametrize("name,pk,msg,sig,ok", TAMING, ids=[t[0].split(":")[0] for t in TAMING])
def test_the_taming_the_many_eddsas_vectors_verify_only_where_strict_rules_allow(
        name, pk, msg, sig, ok, tmp_path):
    assert board_verify(tmp_path, [(pk, msg, sig)]) == [ok]


def test_a_small_order_public_key_verifies_no_forgery(tmp_path):
    # Each of these forged "signatures" satisfies the verification equation
    # (anyone can make them, for any message): only the key's order gives
    # them away. The old verifier accepted every one.
    cases = [(pk,) + forgery(pk, order, "install evil firmware") for pk, order in SMALL_ORDER]
    assert board_verify(tmp_path, cases) == [False] * len(SMALL_ORDER)


def test_non_canonical_encodings_of_a_key_are_refused(tmp_path):
    # y >= p, and x = 0 with the sign bit set: other spellings of the
    # identity and of (0, -1), never a key.
    name, pk, msg, sig = RFC8032[1]
    cases = [(pk, msg, sig)] + [(le32(y), msg, sig) for y in (P + 1, P, 1 | 1 << 255, P - 1 | 1 << 255)]
    assert board_verify(tmp_path, cases) == [True] + [False] * 4


def test_key_or_signature_of_the_wrong_length_is_refused(tmp_path):
    name, pk, msg, sig = RFC8032[2]
    cases = [(pk, msg, sig), (pk[:62], msg, sig), (pk + "00", msg, sig),
             (pk, msg, sig[:126]), (pk, msg, sig + "00")]
    assert board_verify(tmp_path, cases) == [True, False, False, False, False]


def test_verify_works_on_firmware_without_three_argument_pow(tmp_path):
    name, pk, msg, sig = RFC8032[1]
    prelude = "import ota.ed25519 as E\nE._pow = E._pow_loop\n"
    assert board_verify(tmp_path, [(pk, msg, sig), (pk, msg, flip(sig, 40))], prelude) == [True, False]


def test_board_sha512_matches_hashlib_across_block_boundaries(tmp_path):
    lengths = [0, 1, 3, 111, 112, 127, 128, 129, 239, 240, 256, 1023]
    script = """
import binascii
from ota.sha512 import sha512
data = bytes(range(256)) * 5
for n in %r:
    print(binascii.hexlify(sha512(data[:n]).digest()).decode())
h = sha512(data[:100])
h.update(data[100:300])
h.update(data[300:301])
print(binascii.hexlify(h.digest()).decode())
""" % (lengths,)
    r = run_mpy(script, tmp_path, path=BOARD_PATH)
    assert r.returncode == 0, r.stderr
    data = bytes(range(256)) * 5
    want = [hashlib.sha512(data[:n]).hexdigest() for n in lengths + [301]]
    assert r.stdout.split() == want


# --- manifests --------------------------------------------------------------

PARSE = """
import json
from ota import OTAError
from ota.manifest import parse_manifest, check_manifest
data = open("manifest.json", "rb").read()
try:
    m = parse_manifest(data, KEY)
    CHECK
    print(json.dumps({"ok": m}))
except OTAError as e:
    print(json.dumps({"code": e.code, "name": e.name, "msg": e.msg}))
"""


def on_board(tmp_path, manifest, key, check=None, cpython=False, path=BOARD_PATH, heap=None):
    """parse_manifest (then `check`, Python source using m) on the board:
    {"ok": fields} or {"code", "name", "msg"} of the OTAError."""
    (tmp_path / "manifest.json").write_bytes(manifest)
    script = PARSE.replace("KEY", repr(key)).replace("CHECK", check or "pass")
    if cpython:
        r = run_cpython(script, tmp_path)
    else:
        r = run_mpy(script, tmp_path, path=path, heap=heap)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def refused(result, code, *words):
    assert result.get("code") == code, result
    for w in words:
        assert w in result["msg"], result


@pytest.fixture(scope="module")
def key():
    return Ed25519PrivateKey.generate()


@pytest.fixture(scope="module")
def pub(key):
    return public_key_b64(key)


@pytest.fixture(scope="module")
def image():
    return make_app_image(version="1.2.0", chip="esp32", secure_version=2, project_name="blinky")


def fields(**changes):
    f = {"kind": "firmware", "version": "1.2.0", "project": "blinky", "chip": "esp32",
         "secure_version": 2, "size": 4096, "sha256": "ab" * 32, "url": "app.bin"}
    f.update(changes)
    return f


def envelope(body, sig):
    return json.dumps({"manifest": base64.b64encode(body).decode(),
                       "sig": base64.b64encode(sig).decode()}).encode()


def test_manifest_made_by_make_manifest_verifies_and_describes_the_image(tmp_path, key, pub, image):
    f = make_manifest(image, "app-1.2.0.bin")
    assert f == {"kind": "firmware", "version": "1.2.0", "project": "blinky", "chip": "esp32",
                 "secure_version": 2, "size": len(image),
                 "sha256": hashlib.sha256(image).hexdigest(), "url": "app-1.2.0.bin"}
    result = on_board(tmp_path, sign_manifest(f, key), pub,
                      'check_manifest(m, "esp32", "1.1.9", 2, project="blinky")')
    assert result == {"ok": f}


def test_otatool_keygen_and_sign_make_a_manifest_both_runtimes_accept(tmp_path, image, capsys):
    keyfile, img, out = tmp_path / "k.pem", tmp_path / "app.bin", tmp_path / "latest.json"
    img.write_bytes(image)
    assert cli.main(["keygen", "-o", str(keyfile)]) == 0
    pub = capsys.readouterr().out.strip()
    assert cli.main(["sign", str(img), "--key", str(keyfile), "--version", "1.2.0",
                     "--url", "https://updates.example/fw/app.bin", "-o", str(out)]) == 0
    manifest = out.read_bytes()
    assert len(manifest) <= 2048
    for cpython in (False, True):
        result = on_board(tmp_path, manifest, pub, 'check_manifest(m, "esp32", "1.0.0", 0)', cpython)
        assert result["ok"]["url"] == "https://updates.example/fw/app.bin"
        assert result["ok"]["sha256"] == hashlib.sha256(image).hexdigest()


def test_bundle_manifest_is_for_any_chip_unless_pinned(tmp_path, key, pub):
    bundle = build_bundle({"main.py": b"print('v2')\n"}, "2.0.1", "blinky")
    f = make_manifest(bundle, "app.otab")
    assert (f["kind"], f["chip"], f["version"], f["secure_version"]) == ("bundle", "any", "2.0.1", 0)
    result = on_board(tmp_path, sign_manifest(f, key), pub, 'check_manifest(m, "esp8266", "2.0.0", 0)')
    assert result["ok"]["kind"] == "bundle"
    pinned = make_manifest(bundle, "app.otab", chip="esp32")
    result = on_board(tmp_path, sign_manifest(pinned, key), pub, 'check_manifest(m, "esp8266", "2.0.0", 0)')
    refused(result, ESP_ERR_INVALID_VERSION, "chip esp32")


def test_tampered_manifest_byte_is_refused_as_a_bad_signature(tmp_path, key, pub):
    body = canonical_bytes(fields())
    sig = key.sign(body)
    assert "ok" in on_board(tmp_path, envelope(body, sig), pub)
    bumped = body.replace(b'"version":"1.2.0"', b'"version":"9.2.0"')
    assert bumped != body
    refused(on_board(tmp_path, envelope(bumped, sig), pub), ESP_ERR_OTA_VALIDATE_FAILED, "signature")
    bad_sig = bytearray(sig)
    bad_sig[20] ^= 0x10
    refused(on_board(tmp_path, envelope(body, bytes(bad_sig)), pub),
            ESP_ERR_OTA_VALIDATE_FAILED, "signature")


def test_manifest_signed_with_another_key_is_refused(tmp_path, pub):
    other = Ed25519PrivateKey.generate()
    result = on_board(tmp_path, sign_manifest(fields(), other), pub)
    refused(result, ESP_ERR_OTA_VALIDATE_FAILED, "signature", "another key")


def test_truncated_manifest_is_refused(tmp_path, key, pub):
    manifest = sign_manifest(fields(), key)
    for cut in (manifest[:len(manifest) // 2], manifest[:-3], b""):
        refused(on_board(tmp_path, cut, pub), ESP_ERR_OTA_VALIDATE_FAILED, "truncated")


def test_oversized_manifest_is_refused_before_it_is_parsed(tmp_path, key, pub):
    manifest = sign_manifest(fields(), key)
    exactly = manifest + b" " * (2048 - len(manifest))   # trailing blanks: still valid JSON
    assert "ok" in on_board(tmp_path, exactly, pub)
    refused(on_board(tmp_path, exactly + b" ", pub), ESP_ERR_INVALID_SIZE, "2048")


def test_sign_refuses_a_manifest_too_large_for_a_board(key):
    with pytest.raises(ValueError, match="2048"):
        sign_manifest(fields(url="https://updates.example/" + "a" * 1600), key)


def test_garbage_base64_is_refused(tmp_path, key, pub):
    env = json.loads(sign_manifest(fields(), key))
    cases = [dict(env, manifest="not base64 at all!"),        # junk MicroPython would skip
             dict(env, sig=env["sig"][:10] + "*" + env["sig"][10:]),
             dict(env, sig=env["sig"][:-4])]                  # valid base64, but 61 bytes
    refused(on_board(tmp_path, json.dumps(cases[0]).encode(), pub),
            ESP_ERR_OTA_VALIDATE_FAILED, "'manifest' is not valid base64")
    refused(on_board(tmp_path, json.dumps(cases[1]).encode(), pub),
            ESP_ERR_OTA_VALIDATE_FAILED, "'sig' is not valid base64")
    refused(on_board(tmp_path, json.dumps(cases[2]).encode(), pub),
            ESP_ERR_OTA_VALIDATE_FAILED, "signature must be 64 bytes")


def test_unknown_or_missing_signed_field_is_refused(tmp_path, key, pub):
    extra = canonical_bytes(fields(note="x"))
    refused(on_board(tmp_path, envelope(extra, key.sign(extra)), pub),
            ESP_ERR_OTA_VALIDATE_FAILED, "unknown field 'note'")
    f = fields()
    del f["sha256"]
    missing = canonical_bytes(f)
    refused(on_board(tmp_path, envelope(missing, key.sign(missing)), pub),
            ESP_ERR_OTA_VALIDATE_FAILED, "missing field 'sha256'")


def test_replayed_older_or_same_version_is_refused(tmp_path, key, pub):
    manifest = sign_manifest(fields(version="1.9.0"), key)
    check = 'check_manifest(m, "esp32", %r, 2)'
    assert "ok" in on_board(tmp_path, manifest, pub, check % "1.8.12")
    refused(on_board(tmp_path, manifest, pub, check % "1.10.0"),
            ESP_ERR_INVALID_VERSION, "not newer than the running 1.10.0")
    refused(on_board(tmp_path, manifest, pub, check % "1.9"),
            ESP_ERR_INVALID_VERSION, "not newer")
    downgrade = 'check_manifest(m, "esp32", "1.10.0", 2, allow_downgrade=True)'
    assert "ok" in on_board(tmp_path, manifest, pub, downgrade)


def test_manifest_for_another_chip_is_refused(tmp_path, key, pub):
    manifest = sign_manifest(fields(chip="esp32s3"), key)
    refused(on_board(tmp_path, manifest, pub, 'check_manifest(m, "esp32", "1.0.0", 0)'),
            ESP_ERR_INVALID_VERSION, "chip esp32s3, this board is esp32")


def test_lower_secure_version_is_refused_even_when_downgrades_are_allowed(tmp_path, key, pub):
    manifest = sign_manifest(fields(secure_version=1), key)
    check = 'check_manifest(m, "esp32", "1.0.0", %d, allow_downgrade=True)'
    assert "ok" in on_board(tmp_path, manifest, pub, check % 1)
    refused(on_board(tmp_path, manifest, pub, check % 2),
            ESP_ERR_OTA_SMALL_SEC_VER, "secure_version 1 is lower than the running app's 2")


def test_relative_update_urls_resolve_against_the_manifest_url(tmp_path):
    base = "https://updates.example:8443/fw/blinky/latest.json?token=1"
    cases = {"app.bin": "https://updates.example:8443/fw/blinky/app.bin",
             "../common/app.bin": "https://updates.example:8443/fw/blinky/../common/app.bin",
             "/other/app.bin": "https://updates.example:8443/other/app.bin",
             "//cdn.example/app.bin": "https://cdn.example/app.bin",
             "http://mirror.example/app.bin": "http://mirror.example/app.bin",
             "v2/app.bin?sig=abc": "https://updates.example:8443/fw/blinky/v2/app.bin?sig=abc"}
    script = "from ota.manifest import resolve_url\nfor u in %r:\n    print(resolve_url(%r, u))\n" % (
        list(cases), base)
    r = run_mpy(script, tmp_path, path=BOARD_PATH)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == list(cases.values())


def test_keygen_writes_a_0600_key_and_refuses_to_overwrite_it(tmp_path, capsys):
    keyfile = tmp_path / "signing.pem"
    old = os.umask(0)  # a permissive umask must not leak the key
    try:
        assert cli.main(["keygen", "-o", str(keyfile)]) == 0
    finally:
        os.umask(old)
    assert keyfile.stat().st_mode & 0o777 == 0o600
    pub = capsys.readouterr().out.strip()
    assert len(base64.b64decode(pub, validate=True)) == 32
    assert pub == public_key_b64(load_private_key(str(keyfile)))
    before = keyfile.read_bytes()
    assert cli.main(["keygen", "-o", str(keyfile)]) == 2
    assert "refusing to overwrite" in capsys.readouterr().err
    assert keyfile.read_bytes() == before


def test_sign_refuses_a_version_other_than_the_images(image):
    with pytest.raises(ValueError, match="version '1.3.0' does not match the image's '1.2.0'"):
        make_manifest(image, "app.bin", version="1.3.0")


def test_manifest_check_fits_an_esp8266_class_32k_heap(tmp_path, key, pub, image):
    # Boards load modules compiled by mpy-cross, not source (compiling costs
    # heap), and `otatool deploy --mpy` leaves out line numbers for a board
    # this small; 32 KB is the app-bundle budget of docs/API.md. The check
    # works from 26.5-27 KiB here: the rest is margin, as that smallest heap
    # moves by up to a KiB with the key and the environment (conservative GC).
    compile_ota(tmp_path / "mpy", ("__init__", "errors", "manifest", "version", "ed25519", "sha512"),
                lines=False)
    manifest = sign_manifest(make_manifest(image, "app.bin"), key)
    result = on_board(tmp_path, manifest, pub, 'check_manifest(m, "esp32", "1.0.0", 2)',
                      path=str(tmp_path / "mpy") + ":.frozen", heap="32k")
    assert result["ok"]["version"] == "1.2.0"
