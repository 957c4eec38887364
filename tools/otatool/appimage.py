"""Real ESP32 app images for tests and tools, made the way ESP-IDF makes them.

A small synthetic ELF is written here (sections only where an IDF app has
them: `.flash.appdesc` + `.flash.rodata` in DROM, `.flash.text` in IROM,
`.dram0.data`, `.iram0.text`) and converted by esptool's own `elf2image`, so
the header, segment order, padding segments, checksum, appended SHA-256 and
the ELF SHA-256 inside the app descriptor are exactly what a build produces.
The IROM text is filled with deterministic pseudo-random bytes so the image
has the requested size and does not compress.

`make_app_image(...)` caches results on disk (keyed by every argument, this
module's FORMAT and the esptool version) because tests call it a lot.
"""
import contextlib
import hashlib
import io
import os
import random
import struct
import tempfile

import esptool
from esptool.cmds import elf2image

from otatool import SHIM_DIR, device_module

APP_DESC_MAGIC = 0xABCD5432
APP_DESC_FMT = "<II8s32s32s16s16s32s32sHHB3s72s"  # esp_app_desc_t, 256 bytes
FORMAT = 1  # bump when the produced bytes change, to drop stale cache entries

EM_XTENSA = 0x5E
EM_RISCV = 0xF3


class Chip:
    """Where an IDF app of this chip puts its sections (linker-script facts)."""

    def __init__(self, machine, irom, drom, dram, iram, shared_mmu, max_rev):
        self.machine = machine
        self.irom = irom  # start of the flash-mapped instruction bus
        self.drom = drom  # start of the flash-mapped data bus
        self.dram = dram
        self.iram = iram
        # On S3/C3 the instruction and data buses share one MMU table, so
        # IDF keeps their 64 KB pages apart (DROM pages follow the text pages).
        self.shared_mmu = shared_mmu
        self.max_rev = max_rev  # CONFIG_<CHIP>_REV_MAX_FULL default


CHIPS = {
    "esp32": Chip(EM_XTENSA, 0x400D0000, 0x3F400000, 0x3FFB0000, 0x40080000, False, 399),
    "esp32s3": Chip(EM_XTENSA, 0x42000000, 0x3C000000, 0x3FC88000, 0x40374000, True, 99),
    "esp32c3": Chip(EM_RISCV, 0x42000000, 0x3C000000, 0x3FC80000, 0x40380000, True, 199),
    "esp32s2": Chip(EM_XTENSA, 0x40080000, 0x3F000000, 0x3FFB0000, 0x40022000, False, 199),
    # one SRAM for code and data: IRAM and DRAM sections kept apart in it
    "esp32c6": Chip(EM_RISCV, 0x42000000, 0x42800000, 0x40820000, 0x40800000, True, 99),
}

def chip_ids():
    """{esptool's chip name: esp_image_header_t.chip_id} of every chip the
    board's validator knows (lib/ota/chips.py)."""
    return {name: chip_id for chip_id, (name, *_mapped) in device_module("ota.chips").CHIPS.items()}


# the chip ids of the chips above, from the board's own table
CHIP_IDS = {name: chip_id for name, chip_id in chip_ids().items() if name in CHIPS}

PAGE = 0x10000  # flash MMU page (IROM_ALIGN)
IMAGE_HDR = 24
SEG_HDR = 8
RODATA = 256  # bytes of .flash.rodata after the descriptor
DRAM_LEN = 512
IRAM_LEN = 1024
MIN_TEXT = 1024


def _text_len(size):
    # Everything but the IROM text: header, 4 segment headers, DROM, RAM,
    # checksum padding and the appended digest.
    fixed = IMAGE_HDR + 4 * SEG_HDR + 256 + RODATA + DRAM_LEN + IRAM_LEN + 16 + 32
    if size is None:
        return MIN_TEXT
    if size >= 2 * PAGE:
        # Big images get the real layout: text on its own 64 KB page; the gap
        # after DROM is filled by the RAM segments and a zero padding segment.
        return max(MIN_TEXT, size - PAGE - 0x20 - 16 - 32) & ~3
    return max(MIN_TEXT, size - fixed) & ~3


def _app_desc(version, secure_version, project_name, idf_ver, min_efuse, max_efuse):
    def field(s, n):
        b = s.encode()
        if len(b) >= n:
            raise ValueError("%r longer than %d bytes" % (s, n - 1))
        return b

    mmu_log2 = 16 if _idf_at_least(idf_ver, (5, 4)) else 0  # field exists since IDF v5.4
    return struct.pack(
        APP_DESC_FMT, APP_DESC_MAGIC, secure_version, b"", field(version, 32),
        field(project_name, 32), b"00:00:00", b"Jan  1 2025", field(idf_ver, 32),
        b"", min_efuse, max_efuse, mmu_log2, b"", b"")


def _idf_at_least(idf_ver, want):
    try:
        parts = tuple(int(p) for p in idf_ver.lstrip("v").split("-")[0].split(".")[:2])
    except ValueError:
        return True
    return parts >= want


def _build_elf(machine, entry, sections):
    """ELF32 LE executable with the given (name, addr, flags, data) sections
    and one PT_LOAD per section. Enough for esptool; readelf-clean."""
    SHF_WRITE, SHF_ALLOC, SHF_EXEC = 1, 2, 4
    names = b"\0.shstrtab\0" + b"".join(s[0].encode() + b"\0" for s in sections)
    ehdr_len, phdr_len, shdr_len = 52, 32, 40
    off = ehdr_len + phdr_len * len(sections)
    body = b""
    shdrs = [struct.pack("<10I", 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)]
    phdrs = b""
    name_off = len(b"\0.shstrtab\0")
    for name, addr, flags, data in sections:
        pad = (-off - len(body)) % 4
        body += b"\0" * pad
        data_off = off + len(body)
        shf = SHF_ALLOC | {"x": SHF_EXEC, "w": SHF_WRITE, "r": 0}[flags]
        shdrs.append(struct.pack("<10I", name_off, 1, shf, addr, data_off, len(data), 0, 0, 4, 0))
        pf = {"x": 5, "w": 6, "r": 4}[flags]  # PF_R|PF_X, PF_R|PF_W, PF_R
        phdrs += struct.pack("<8I", 1, data_off, addr, addr, len(data), len(data), pf, 4)
        body += data
        name_off += len(name) + 1
    strtab_off = off + len(body)
    body += names
    shdrs.append(struct.pack("<10I", 1, 3, 0, 0, strtab_off, len(names), 0, 0, 1, 0))
    body += b"\0" * ((-off - len(body)) % 4)
    sh_off = off + len(body)
    ident = b"\x7fELF\x01\x01\x01" + b"\0" * 9
    ehdr = struct.pack("<16sHHIIIIIHHHHHH", ident, 2, machine, 1, entry, ehdr_len, sh_off,
                       0, ehdr_len, phdr_len, len(sections), shdr_len, len(shdrs),
                       len(shdrs) - 1)
    return ehdr + phdrs + body + b"".join(shdrs)


def make_elf(version="1.0.0", chip="esp32", size=None, secure_version=0,
             project_name="ota-app", idf_ver="v5.2.2"):
    """The synthetic app ELF (bytes) that make_app_image converts."""
    c = CHIPS[chip]
    seed = "%s|%s|%s|%s|%s|%s" % (version, chip, size, secure_version, project_name, idf_ver)
    rnd = random.Random(seed)
    desc = _app_desc(version, secure_version, project_name, idf_ver, 0, 99)
    rodata = rnd.randbytes(RODATA)
    text = rnd.randbytes(_text_len(size))
    drom_len = len(desc) + len(rodata)

    if size is not None and size >= 2 * PAGE:
        irom = c.irom + 0x20  # esptool pads the file to the next page for it
    else:
        # Small image: text right behind DROM, its address chosen so the
        # file offset already has the mapping alignment (no padding needed).
        irom = c.irom + IMAGE_HDR + SEG_HDR + drom_len + SEG_HDR
    if c.shared_mmu:
        text_pages = (irom + len(text) - 1) // PAGE - c.irom // PAGE + 1
        drom = c.drom + text_pages * PAGE + 0x20
    else:
        drom = c.drom + 0x20
    sections = [
        (".flash.appdesc", drom, "r", desc),
        (".flash.rodata", drom + len(desc), "r", rodata),
        (".flash.text", irom, "x", text),
        (".dram0.data", c.dram, "w", rnd.randbytes(DRAM_LEN)),
        (".iram0.text", c.iram, "x", rnd.randbytes(IRAM_LEN)),
    ]
    return _build_elf(c.machine, c.iram, sections)


def _convert(elf, chip, min_rev, max_rev):
    with contextlib.redirect_stdout(io.StringIO()):
        return elf2image(elf, chip, output=None, flash_mode="dio", flash_size="4MB",
                         min_rev=min_rev // 100, min_rev_full=min_rev,
                         max_rev_full=max_rev)


def _cache_dir():
    d = os.path.join(tempfile.gettempdir(), "otatool-appimage-%d" % os.getuid())
    os.makedirs(d, exist_ok=True)
    return d


def make_app_image(version="1.0.0", chip="esp32", size=None, secure_version=0,
                   project_name="ota-app", idf_ver="v5.2.2", min_rev=None, max_rev=None):
    """A complete app image (bytes) as `idf.py build` would write it.

    size: approximate total length in bytes (a few KB .. a few MB), None for
    the smallest image. min_rev/max_rev: the header's chip revision range in
    "full" form (major*100 + minor); default 0 .. the IDF default for the chip.
    """
    if chip not in CHIPS:
        raise ValueError("unknown chip %r (one of %s)" % (chip, ", ".join(CHIPS)))
    min_rev = 0 if min_rev is None else min_rev
    max_rev = CHIPS[chip].max_rev if max_rev is None else max_rev
    key = repr((FORMAT, esptool.__version__, version, chip, size, secure_version,
                project_name, idf_ver, min_rev, max_rev))
    path = os.path.join(_cache_dir(), hashlib.sha256(key.encode()).hexdigest()[:32] + ".bin")
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        pass
    elf = make_elf(version, chip, size, secure_version, project_name, idf_ver)
    image = _convert(elf, chip, min_rev, max_rev)
    tmp = "%s.%d.tmp" % (path, os.getpid())
    with open(tmp, "wb") as f:
        f.write(image)
    os.replace(tmp, path)  # atomic: parallel test workers never read half a file
    return image



# Where the 2nd-stage bootloader lives (DRAM with its descriptor, IRAM):
# its image also starts with 0xE9 but carries no esp_app_desc_t.
BOOTLOADER_RAM = {"esp32": (0x3FFF0000, 0x40078000), "esp32s3": (0x3FCE2000, 0x403C8000),
                  "esp32c3": (0x3FCD6000, 0x403CE000)}


def make_bootloader_image(chip="esp32"):
    """A bootloader image (as in a merged firmware.bin served by mistake):
    RAM segments only, esp_bootloader_desc_t (magic byte 0x50) first."""
    dram, iram = BOOTLOADER_RAM[chip]
    rnd = random.Random("bootloader|" + chip)
    bootdesc = struct.pack("<B3sI32s24s16s", 0x50, b"", 1, b"v5.2.2", b"Jan  1 2025 00:00:00", b"")
    sections = [
        (".dram0.bootdesc", dram, "w", bootdesc),
        (".dram0.data", dram + len(bootdesc), "w", rnd.randbytes(2048)),
        (".iram_loader.text", iram, "x", rnd.randbytes(8192)),
        (".iram.text", iram + 0x8400, "x", rnd.randbytes(8192)),
    ]
    return _convert(_build_elf(CHIPS[chip].machine, iram, sections), chip, 0, CHIPS[chip].max_rev)

# The app the emulated board finds in ota_0 on a fresh flash.
DEFAULT_APP = os.path.join(SHIM_DIR, "default_app.bin")


def default_app_image():
    return make_app_image(version="1.0.0", chip="esp32", size=12 * 1024,
                          project_name="ota-factory")


if __name__ == "__main__":
    # python -m otatool.appimage: regenerate tools/shim/default_app.bin
    with open(DEFAULT_APP, "wb") as f:
        f.write(default_app_image())
    print("wrote", DEFAULT_APP)
