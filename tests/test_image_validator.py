"""The board's streaming image validator (lib/ota/image.py) accepts what
esptool makes and refuses every corruption, on the unix port and CPython;
`otatool image info` gives the same verdict as `esptool image-info`."""
import json
import os
import subprocess
import sys

import esptool.bin_image
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import LIB, compile_ota, run_mpy
from otatool.appimage import CHIP_IDS, make_app_image, make_bootloader_image, make_elf
from otatool.image import describe_image

VALIDATE_FAILED, INVALID_VERSION, INVALID_SIZE, SMALL_SEC_VER = 0x1503, 0x10A, 0x104, 0x1504
MiB = 1 << 20

# One validation run, the same source on both runtimes: feed `data` in
# chunks (sizes cycled), record where the descriptor appeared and where an
# error was raised.
DRIVER = r"""
import json
from ota import OTAError
from ota.image import ImageValidator

def check(data, chip_id, chunks=(4096,), max_size=4194304, min_sec=0, chip_rev=None):
    v = ImageValidator(chip_id, max_size, min_sec, chip_rev)
    mv = memoryview(data)
    pos = 0
    k = 0
    desc_at = -1
    try:
        while pos < len(data):
            n = min(chunks[k % len(chunks)], len(data) - pos)
            k += 1
            pos += n
            v.feed(mv[pos - n:pos])
            if desc_at < 0 and v.desc is not None:
                desc_at = pos
        v.done()
    except OTAError as e:
        return {"ok": False, "code": e.code, "at": pos, "msg": str(e), "complete": v.complete()}
    return {"ok": True, "length": v.length, "desc": v.desc, "desc_at": desc_at,
            "complete": v.complete()}

def main(path):
    with open(path) as f:
        cases = json.load(f)
    for c in cases:
        with open(c.pop("file"), "rb") as f:
            data = bytearray(f.read())
        flip = c.pop("flip", None)
        if flip is not None:
            data[flip >> 3] ^= 1 << (flip & 7)
        data = data[:c.pop("cut", len(data))] + bytes(c.pop("extra", 0))
        print(json.dumps(check(data, **c)))
"""


def _cpython_driver():
    sys.path.insert(0, LIB)
    ns = {}
    exec(DRIVER, ns)
    return ns["check"]


check = _cpython_driver()


def run_on_unix_port(cases, tmp_path):
    """Run the DRIVER over cases (dicts of check() arguments plus file/flip/cut/extra)."""
    path = tmp_path / "cases.json"
    path.write_text(json.dumps(cases))
    out = run_mpy(DRIVER + "\nmain(%r)\n" % str(path), tmp_path,
                  path=":".join([LIB, ".frozen"]), timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    results = [json.loads(line) for line in out.stdout.splitlines()]
    assert len(results) == len(cases)
    return results


def image_file(tmp_path, data, name="app.bin"):
    p = tmp_path / name
    p.write_bytes(data)
    return str(p)


def layout(data, chip="esp32"):
    """Byte ranges of each part, found by esptool's own image reader."""
    img = esptool.bin_image.LoadFirmwareImage(chip, bytes(data))
    segs = [(s.file_offs, s.file_offs + 8, s.file_offs + 8 + len(s.data)) for s in img.segments]
    csum = img.data_length - 1
    return {"header": (0, 24), "segment_headers": [(a, b) for a, b, _ in segs],
            "segment_data": [(b, c) for _, b, c in segs], "padding": (segs[-1][2], csum),
            "checksum": (csum, csum + 1), "digest": (csum + 1, csum + 33)}


SMALL = make_app_image(version="1.4.2", chip="esp32", size=12 * 1024, secure_version=2,
                       project_name="blinky")


# ---- accepted ------------------------------------------------------------

@pytest.mark.parametrize("size", [None, 12 * 1024, 200 * 1024])
@pytest.mark.parametrize("chip", sorted(CHIP_IDS))
def test_board_accepts_esptool_made_images_of_its_chip(chip, size):
    data = make_app_image(version="3.1.0", chip=chip, size=size, project_name="p-" + chip)
    r = check(data, CHIP_IDS[chip])
    assert r["ok"], r
    assert r["complete"] and r["length"] == len(data)
    assert r["desc"]["version"] == "3.1.0" and r["desc"]["project_name"] == "p-" + chip


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(chunks=st.lists(st.integers(1, 5000), min_size=1, max_size=8))
def test_any_chunking_of_the_download_validates_the_same(chunks):
    r = check(SMALL, 0, chunks=chunks)
    assert r["ok"], r
    assert r["length"] == len(SMALL) and r["desc"]["version"] == "1.4.2"


def test_big_image_with_padding_segments_validates_in_sector_chunks():
    data = make_app_image(chip="esp32s3", size=1536 * 1024)
    r = check(data, 9, chunks=(4096,))
    assert r["ok"] and r["length"] == len(data)


def test_image_without_appended_digest_ends_at_its_checksum():
    from esptool.cmds import elf2image
    data = elf2image(make_elf(version="0.9"), "esp32", append_digest=False)
    assert data[23] == 0
    r = check(data, 0)
    assert r["ok"] and r["length"] == len(data)


def test_descriptor_is_known_after_the_first_300_bytes():
    r = check(SMALL, 0, chunks=(1,))
    assert r["ok"] and 0 < r["desc_at"] <= 300
    assert r["desc"] == {"version": "1.4.2", "project_name": "blinky", "idf_ver": "v5.2.2",
                         "secure_version": 2, "date": "Jan  1 2025", "time": "00:00:00"}


# ---- refused -------------------------------------------------------------

def test_foreign_chip_is_refused_from_the_header_alone():
    r = check(make_app_image(chip="esp32c3"), CHIP_IDS["esp32"], chunks=(24,))
    assert (r["ok"], r["code"], r["at"]) == (False, INVALID_VERSION, 24)


def test_chip_revision_outside_the_image_range_is_refused():
    data = make_app_image(chip="esp32", min_rev=300, max_rev=399)
    assert check(data, 0, chip_rev=301)["ok"]
    assert check(data, 0, chip_rev=100)["code"] == INVALID_VERSION
    assert check(make_app_image(chip="esp32", max_rev=100), 0, chip_rev=300)["code"] == INVALID_VERSION


def test_bootloader_served_by_mistake_is_refused_within_the_first_sector():
    data = make_bootloader_image("esp32")
    assert data[0] == 0xE9
    r = check(data, 0, chunks=(4096,))
    assert (r["ok"], r["code"]) == (False, VALIDATE_FAILED)
    assert r["at"] <= 4096 and "descriptor" in r["msg"]


def test_older_secure_version_is_refused_as_soon_as_the_descriptor_is_in():
    r = check(SMALL, 0, chunks=(100,), min_sec=3)
    assert (r["ok"], r["code"]) == (False, SMALL_SEC_VER) and r["at"] <= 300
    assert check(SMALL, 0, min_sec=2)["ok"]


def test_image_larger_than_the_partition_is_refused_before_its_end():
    data = make_app_image(chip="esp32", size=200 * 1024)
    r = check(data, 0, max_size=128 * 1024)
    assert (r["ok"], r["code"]) == (False, INVALID_SIZE) and r["at"] < len(data)
    assert check(data, 0, max_size=len(data))["ok"]


@pytest.mark.parametrize("extra", [b"\xff" * 16, b"\0" * 16, b"\0" * 68 + b"\0" * 13, b"junk",
                                   b"\xe7\x02" + b"\0" * 1214])
def test_bytes_after_the_image_that_are_no_signature_block_are_refused(extra):
    # 0xFF, zeros: the start of a Secure Boot v2 / v1 block, never finished
    # (or one byte too long); 0xE7 not at a 4 KiB boundary.
    r = check(SMALL + extra, 0)
    assert (r["ok"], r["code"], r["complete"]) == (False, VALIDATE_FAILED, False), r


@settings(max_examples=60, deadline=None)
@given(cut=st.integers(0, len(SMALL) - 1), chunk=st.integers(1, 4096))
def test_truncated_download_is_refused_at_done(cut, chunk):
    r = check(SMALL[:cut], 0, chunks=(chunk,))
    assert (r["ok"], r["code"], r["complete"]) == (False, VALIDATE_FAILED, False)


def _flip(data, bit):
    b = bytearray(data)
    b[bit >> 3] ^= 1 << (bit & 7)
    return b


def _bits(ranges):
    return [bit for a, b in ranges for bit in range(a * 8, b * 8)]


def test_every_bit_flip_in_headers_checksum_padding_and_digest_is_refused():
    parts = layout(SMALL)
    ranges = [parts["header"], *parts["segment_headers"], parts["padding"], parts["checksum"],
              parts["digest"]]
    for bit in _bits(ranges):
        r = check(_flip(SMALL, bit), 0)
        assert not r["ok"], "bit %d accepted" % bit


@settings(max_examples=150, deadline=None)
@given(bit=st.integers(0, len(SMALL) * 8 - 1), chunk=st.sampled_from([1, 333, 4096, 65536]))
def test_a_bit_flip_anywhere_is_refused(bit, chunk):
    r = check(_flip(SMALL, bit), 0, chunks=(chunk,))
    assert not r["ok"] and not r["complete"]


def test_flip_classes_give_the_esp_idf_error_codes():
    parts = layout(SMALL)
    cases = {
        0: (VALIDATE_FAILED, 24),              # magic
        12 * 8 + 1: (INVALID_VERSION, 24),     # chip id
        32 * 8 + 3: (VALIDATE_FAILED, 288),    # app descriptor magic
        parts["checksum"][0] * 8: (VALIDATE_FAILED, parts["checksum"][1]),
        parts["digest"][0] * 8 + 5: (VALIDATE_FAILED, len(SMALL)),
        parts["segment_data"][-1][0] * 8: (VALIDATE_FAILED, parts["checksum"][1]),
    }
    for bit, (code, at) in cases.items():
        r = check(_flip(SMALL, bit), 0, chunks=(1,))
        assert (r["code"], r["at"]) == (code, at), (bit, r)


def test_an_error_is_sticky():
    from ota import OTAError
    from ota.image import ImageValidator
    v = ImageValidator(5, MiB)
    with pytest.raises(OTAError) as first:
        v.feed(SMALL[:64])
    for again in (lambda: v.feed(SMALL[64:128]), v.done):
        with pytest.raises(OTAError) as e:
            again()
        assert e.value is first.value


# ---- the same on the unix port ----------------------------------------------

def first_boundary_at_or_after(n, chunks):
    pos = k = 0
    while pos < n:
        pos += chunks[k % len(chunks)]
        k += 1
    return pos


def test_unix_port_accepts_every_chip_in_several_chunkings(tmp_path):
    cases = []
    for chip, cid in sorted(CHIP_IDS.items()):
        f = image_file(tmp_path, make_app_image(version="7.0." + str(cid), chip=chip,
                                                size=200 * 1024), chip + ".bin")
        for chunks in ([3], [7, 4096], [4096], [4097, 13], [1 << 20]):
            cases.append({"file": f, "chip_id": cid, "chunks": chunks})
    for r, c in zip(run_on_unix_port(cases, tmp_path), cases):
        assert r["ok"], (c, r)
        assert r["length"] == 200 * 1024 and r["desc"]["version"] == "7.0.%d" % c["chip_id"]
        assert r["desc_at"] == min(first_boundary_at_or_after(288, c["chunks"]), 200 * 1024)


def test_unix_port_refuses_what_cpython_refuses(tmp_path):
    f = image_file(tmp_path, SMALL)
    parts = layout(SMALL)
    flips = [0, 9, 12 * 8 + 1, 23 * 8, 23 * 8 + 1, 32 * 8 + 3, 40 * 8, 100 * 8 + 7,
             parts["segment_headers"][1][0] * 8 + 2, parts["segment_headers"][1][0] * 8 + 35,
             parts["segment_data"][1][0] * 8 + 4, parts["segment_data"][-1][1] * 8 - 1,
             parts["padding"][0] * 8, parts["checksum"][0] * 8 + 6, parts["digest"][0] * 8,
             parts["digest"][1] * 8 - 1] + list(range(3000 * 8, len(SMALL) * 8, 7919))
    cases = [{"file": f, "chip_id": 0, "flip": bit, "chunks": [4096]} for bit in flips]
    cases += [{"file": f, "chip_id": 0, "cut": cut} for cut in (0, 23, 24, 300, 4096, len(SMALL) - 1)]
    cases += [
        {"file": f, "chip_id": 9},
        {"file": f, "chip_id": 0, "min_sec": 3, "chunks": [100]},
        {"file": f, "chip_id": 0, "extra": 1},
        {"file": f, "chip_id": 0, "max_size": 8192},
        {"file": image_file(tmp_path, make_bootloader_image("esp32"), "bl.bin"), "chip_id": 0},
    ]
    got = run_on_unix_port(cases, tmp_path)
    for c, r in zip(cases, got):
        assert not r["ok"], (c, r)
    for c, r in zip(json.loads((tmp_path / "cases.json").read_text()), got):
        data = bytearray(SMALL if c["file"] == f else open(c["file"], "rb").read())
        if "flip" in c:
            data = _flip(data, c["flip"])
        data = data[:c.get("cut", len(data))] + bytes(c.get("extra", 0))
        args = {k: v for k, v in c.items() if k not in ("file", "flip", "cut", "extra")}
        expect = check(data, **args)
        assert (r["code"], r["at"]) == (expect["code"], expect["at"]), (c, r, expect)


def test_unix_port_feeds_sector_chunks_without_allocating(tmp_path):
    f = image_file(tmp_path, make_app_image(chip="esp32", size=300 * 1024))
    script = """
import gc
from ota.image import ImageValidator
buf = bytearray(4096)
mv = memoryview(buf)
v = ImageValidator(0, 4 << 20)
with open(%r, "rb") as f:
    for _ in range(20):
        f.readinto(buf)
        v.feed(mv)
    gc.collect()
    gc.disable()
    before = gc.mem_alloc()
    for _ in range(40):
        f.readinto(buf)
        v.feed(mv)
    print(gc.mem_alloc() - before)
""" % f
    # As a board loads it: compiled, with the native checksum loop.
    out = run_mpy(script, tmp_path, path=":".join([compile_ota(tmp_path / "mpy"), ".frozen"]))
    assert out.returncode == 0, out.stderr
    # Loop and call frames of the script itself cost a few words; a chunk
    # allocation (memoryview slice, bytes) would add 40 x 16+ bytes.
    assert int(out.stdout) < 64


def test_validator_runs_in_an_esp8266_sized_heap(tmp_path):
    # Compiled by mpy-cross, as boards load it (source would be compiled in the heap).
    compile_ota(tmp_path / "mpy", ("__init__", "image", "xor", "chips"))
    f = image_file(tmp_path, SMALL)
    script = """
import gc
from ota.image import ImageValidator
v = ImageValidator(0, 1 << 20)
with open(%r, "rb") as f:
    buf = bytearray(4096)
    mv = memoryview(buf)
    while True:
        n = f.readinto(buf)
        if not n:
            break
        v.feed(mv[:n])
v.done()
print(v.desc["version"])
""" % f
    out = run_mpy(script, tmp_path, path=":".join([str(tmp_path / "mpy"), ".frozen"]), heap="32k")
    assert (out.returncode, out.stdout.strip()) == (0, "1.4.2"), out.stderr


# ---- otatool image info vs esptool image-info --------------------------------

def otatool(*args):
    return subprocess.run([sys.executable, "-m", "otatool", *args], capture_output=True,
                          text=True, timeout=60, env=dict(os.environ, PYTHONPATH=""))


def esptool_verdict(path):
    out = subprocess.run([sys.executable, "-m", "esptool", "image-info", path],
                         capture_output=True, text=True, timeout=60)
    return out.returncode == 0 and "(invalid)" not in out.stdout and "App version" in out.stdout


@pytest.mark.parametrize("chip", sorted(CHIP_IDS))
def test_otatool_image_info_agrees_with_esptool_on_good_images(chip, tmp_path):
    data = make_app_image(version="5.5.5", chip=chip, size=20000, project_name="agree")
    path = image_file(tmp_path, data)
    out = otatool("image", "info", path)
    assert out.returncode == 0, out.stderr
    assert esptool_verdict(path)
    assert "5.5.5" in out.stdout and "agree" in out.stdout and chip in out.stdout
    assert describe_image(data)["chip"] == chip


@pytest.mark.parametrize("damage", ["checksum", "digest", "truncated", "bootloader", "text"])
def test_otatool_image_info_refuses_bad_files_in_one_line(damage, tmp_path):
    parts = layout(SMALL)
    data = {
        "checksum": _flip(SMALL, parts["checksum"][0] * 8),
        "digest": _flip(SMALL, parts["digest"][0] * 8),
        "truncated": SMALL[:5000],
        "bootloader": make_bootloader_image("esp32"),
        "text": b"<html>404</html>",
    }[damage]
    path = image_file(tmp_path, data)
    out = otatool("image", "info", path)
    assert out.returncode != 0 and out.stdout == ""
    assert len(out.stderr.strip().splitlines()) == 1 and "Traceback" not in out.stderr
    assert not esptool_verdict(path)
    with pytest.raises(ValueError):
        describe_image(data)


def test_otatool_image_info_checks_against_the_board_chip(tmp_path):
    path = image_file(tmp_path, make_app_image(chip="esp32s3"))
    out = otatool("image", "info", path, "--chip", "esp32")
    assert out.returncode != 0 and "ESP_ERR_INVALID_VERSION" in out.stderr


def test_otatool_image_make_writes_an_image_esptool_reads(tmp_path):
    path = str(tmp_path / "made.bin")
    out = otatool("image", "make", "--version", "9.9.9", "--chip", "esp32c3", "--size", "30000",
                  "--secure-version", "4", "--project", "made", "-o", path)
    assert out.returncode == 0, out.stderr
    assert esptool_verdict(path)
    d = describe_image(open(path, "rb").read(), "esp32c3")
    assert (d["version"], d["project_name"], d["secure_version"]) == ("9.9.9", "made", 4)
    assert abs(d["length"] - 30000) <= 64


# ---- images signed for Secure Boot ------------------------------------------------
#
# `espsecure sign-data` appends a signature block to an app image: v1 (ESP32)
# a version word 0 and a 64-byte ECDSA signature; v2 0xFF up to the next 4 KiB
# boundary and a 4 KiB sector of 1216-byte blocks (magic 0xE7, CRC-32). The
# board accepts exactly those after an image and writes them to flash with it.

ESPSECURE = os.path.join(os.path.dirname(sys.executable), "espsecure")


def espsecure(*args):
    out = subprocess.run([ESPSECURE, *args], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout


@pytest.fixture(scope="module")
def signed(tmp_path_factory):
    """{name: (path, bytes)} of one app image signed by the real espsecure:
    v1, v1 padded to 16 bytes as esptool's own test image is, v2 with an RSA
    key, v2 with an ECDSA key, v2 with both (two blocks); plus the keys."""
    d = tmp_path_factory.mktemp("signed")
    app = d / "app.bin"
    app.write_bytes(make_app_image(version="2.5.0", size=40000, project_name="secure"))
    keys = {"v1": ("1", None), "rsa": ("2", "rsa3072"), "ecdsa": ("2", "ecdsa256")}
    for name, (version, scheme) in keys.items():
        espsecure("generate-signing-key", "--version", version,
                  *(["--scheme", scheme] if scheme else []), str(d / (name + ".pem")))
    out = {}

    def sign(name, key, version, src, *more):
        path = d / (name + ".bin")
        espsecure("sign-data", "--version", version, "--keyfile", str(d / (key + ".pem")),
                  *more, "-o", str(path), str(src))
        out[name] = (str(path), path.read_bytes())

    sign("v1", "v1", "1", app)
    sign("v2-rsa", "rsa", "2", app)
    sign("v2-ecdsa", "ecdsa", "2", app)
    sign("v2-two-blocks", "ecdsa", "2", d / "v2-rsa.bin", "--append-signatures")
    padded = d / "v1-padded.bin"
    padded.write_bytes(out["v1"][1] + bytes(range(12)))   # to the 16-byte boundary
    out["v1-padded"] = (str(padded), padded.read_bytes())
    out["keys"] = d
    return out


SIGNED = ["v1", "v1-padded", "v2-rsa", "v2-ecdsa", "v2-two-blocks"]


@pytest.mark.parametrize("name", SIGNED)
def test_an_image_signed_for_secure_boot_validates_with_its_signature_block(signed, name, tmp_path):
    path, data = signed[name]
    version = "1" if name.startswith("v1") else "2"
    key = "v1" if version == "1" else ("ecdsa" if name == "v2-ecdsa" else "rsa")
    if name != "v1-padded":   # espsecure reads the signature from the file's end
        espsecure("verify-signature", "--version", version, "--keyfile",
                  str(signed["keys"] / (key + ".pem")), path)
    assert esptool_verdict(path)          # esptool image-info still reads it
    assert len(data) > 40000
    for chunks in ([4096], [1], [333, 4097]):
        r = check(data, 0, chunks=chunks)
        assert r["ok"] and r["complete"], (chunks, r)
        assert r["length"] == 40000 and r["desc"]["project_name"] == "secure"
    got = run_on_unix_port([{"file": path, "chip_id": 0, "chunks": c} for c in ([4096], [7])],
                           tmp_path)
    assert [(r["ok"], r["length"]) for r in got] == [(True, 40000)] * 2


def damaged(data, at, value):
    b = bytearray(data)
    b[at] = value
    return bytes(b)


def test_a_signature_block_that_is_not_well_formed_is_refused(signed, tmp_path):
    v1, v2 = signed["v1"][1], signed["v2-rsa"][1]
    sector = len(v2) - 4096       # where the v2 signature sector starts
    cases = {
        "v1 version word not 0": damaged(v1, 40001, 1),
        "v1 cut in the signature": v1[:-1],
        "v1 padded past 16 bytes": signed["v1-padded"][1] + b"\0",
        "v2 padding not 0xFF": damaged(v2, sector - 1, 0),
        "v2 bad magic": damaged(v2, sector, 0xE8),
        "v2 unknown version": damaged(v2, sector + 1, 4),
        "v2 CRC mismatch": damaged(v2, sector + 600, v2[sector + 600] ^ 1),
        "v2 CRC itself": damaged(v2, sector + 1196, v2[sector + 1196] ^ 1),
        "v2 block padding not zero": damaged(v2, sector + 1215, 1),
        "v2 junk after the blocks": damaged(v2, len(v2) - 1, 0),
        "v2 second block damaged": damaged(signed["v2-two-blocks"][1], sector + 1216 + 1, 9),
        "v2 sector cut": v2[:-1],
        "v2 data after the sector": v2 + b"\xff",
        "v2 sector not at a 4 KiB boundary": v2[:40000] + v2[sector:],
    }
    for name, data in cases.items():
        r = check(data, 0, chunks=(4096,))
        assert (r["ok"], r["code"], r["complete"]) == (False, VALIDATE_FAILED, False), (name, r)
    files = [image_file(tmp_path, data, "case%d.bin" % i) for i, data in enumerate(cases.values())]
    got = run_on_unix_port([{"file": f, "chip_id": 0} for f in files], tmp_path)
    assert [(r["ok"], r["code"]) for r in got] == [(False, VALIDATE_FAILED)] * len(cases)


def test_a_signature_block_counts_against_the_partition_size(signed):
    data = signed["v2-rsa"][1]
    r = check(data, 0, max_size=len(data) - 1)
    assert (r["ok"], r["code"]) == (False, INVALID_SIZE)
    assert check(data, 0, max_size=len(data))["ok"]
