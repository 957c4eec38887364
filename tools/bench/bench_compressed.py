"""Benchmark compressed updates (otatool.compressed, ota.inflate) on the
emulated ESP32 (MicroPython unix port), against the uncompressed update of
the same image in the same run.

Prints, from one run:
* bytes on the wire, saved: a realistic firmware image made by esptool
  elf2image from an ELF whose sections hold real machine code and data (the
  .text, .rodata and .data of the MicroPython interpreter this benchmark
  runs on: x86-64 rather than Xtensa code, but real code, strings and
  tables, not random bytes), and a MicroPython application as an app bundle
  (this library's own lib/ota, as source and as mpy-cross output), for
  window_bits 12 (4 KiB) and 11 (2 KiB);
* throughput: a compressed firmware update (begin/perform/finish over
  loopback HTTP) as a ratio to the uncompressed update of the same image,
  runs interleaved so that machine noise hits both;
* the smallest `-X heapsize` at which the firmware update completes,
  compressed (window_bits 12) and uncompressed, and the app-bundle update on
  the ESP8266 profile, compressed (window_bits 11) and uncompressed, with
  lib/ota compiled by mpy-cross as a board loads it.

    .venv/bin/python tools/bench/bench_compressed.py [--rounds 5]

figures() returns the same numbers as a dict.
"""
import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import bench_bundle  # noqa: E402
import bench_ota  # noqa: E402
from bench_ota import OTA, OTA_TIMED, compile_lib, run, smallest_heap  # noqa: E402

from otatool import LIB_DIR, SHIM_DIR  # noqa: E402
from otatool.appimage import CHIPS, _app_desc, _build_elf, _convert  # noqa: E402
from otatool.bundle import build as build_bundle  # noqa: E402
from otatool.compressed import WINDOW_BITS, WINDOW_BITS_SMALL, compress  # noqa: E402
from otatool.serve import start_server  # noqa: E402

MICROPYTHON = bench_ota.MICROPYTHON

def _real_sections():
    # (.text, .rodata, .data) of the MicroPython interpreter: real code and data.
    from elftools.elf.elffile import ELFFile
    import micropython_unix
    d = os.path.dirname(micropython_unix.__file__)
    so = [n for n in os.listdir(d) if n.startswith("micropython_run") and n.endswith(".so")][0]
    with open(os.path.join(d, so), "rb") as f:
        elf = ELFFile(f)
        return [elf.get_section_by_name(n).data() for n in (".text", ".rodata", ".data")]


def realistic_image(version="2.0.0"):
    """An ESP32 app image (bytes, esptool elf2image) about the size of a
    MicroPython firmware's: up to 1 MiB of flash code, 256 KiB of flash data,
    64 KiB of IRAM code, 16 KiB of DRAM data, cut from real sections."""
    text, rodata, data = _real_sections()
    c = CHIPS["esp32"]
    desc = _app_desc(version, 0, "bench", "v5.2.2", 0, 99)
    sections = [
        (".flash.appdesc", c.drom + 0x20, "r", desc),
        (".flash.rodata", c.drom + 0x20 + len(desc), "r", rodata[:256 * 1024]),
        (".flash.text", c.irom + 0x20, "x", text[64 * 1024:64 * 1024 + 1024 * 1024]),
        (".dram0.data", c.dram, "w", (data * 64)[:16 * 1024]),
        (".iram0.text", c.iram, "x", text[:64 * 1024]),
    ]
    return _convert(_build_elf(c.machine, c.iram, sections), "esp32", 0, c.max_rev)


def app_bundle(compiled):
    """A MicroPython application as an app bundle: the files of lib/ota, as
    source, or as mpy-cross output (compiled: the directory holding them)."""
    root = compiled or LIB_DIR
    files = {}
    for dirpath, _, names in os.walk(root):
        for name in sorted(names):
            if name.endswith((".py", ".mpy")):
                path = os.path.join(dirpath, name)
                with open(path, "rb") as f:
                    files[os.path.relpath(path, root)] = f.read()
    return build_bundle(files, "2.0.0", "bench")


def _sizes(name, data):
    out = {}
    for wbits in (WINDOW_BITS, WINDOW_BITS_SMALL):
        z = len(compress(data, window_bits=wbits))
        out[wbits] = z
        print("  %-34s %8d -> %8d bytes (window_bits %d): %4.1f %% saved"
              % (name, len(data), z, wbits, 100 - 100 * z / len(data)))
    return out


def figures(rounds=5):
    """Run everything, print the figures, return them as a dict."""
    work = tempfile.mkdtemp(prefix="bench-compressed-")
    result = {}
    try:
        compiled = os.path.join(work, "mpy")
        compile_lib(os.path.join(compiled, "lib"))
        path = ":".join([SHIM_DIR, os.path.join(compiled, "lib"), ".frozen"])
        image = realistic_image()
        bundle_src = app_bundle(None)
        bundle_mpy = app_bundle(os.path.join(compiled, "lib"))

        print("bytes on the wire:")
        result["wire"] = {"firmware": (len(image), _sizes("firmware image (real code/data)",
                                                          image)),
                          "bundle_py": (len(bundle_src), _sizes("app bundle, .py", bundle_src)),
                          "bundle_mpy": (len(bundle_mpy), _sizes("app bundle, .mpy", bundle_mpy))}

        www = os.path.join(work, "www")
        os.makedirs(www)
        for name, data in (("fw.bin", image), ("fw.binz", compress(image))):
            with open(os.path.join(www, name), "wb") as f:
                f.write(data)
        server, base, _ = start_server(www, log=lambda *a: None)
        template = tempfile.mkdtemp(dir=work)
        subprocess.run([MICROPYTHON, "-c", "import esp32"], cwd=template, capture_output=True,
                       env=dict(os.environ, MICROPYPATH=path, OTA_BOARD=template), timeout=60,
                       check=True)

        plain, packed = [], []
        for _ in range(rounds):
            plain.append(run(OTA_TIMED % {"url": base + "/fw.bin"}, template, work, path))
            packed.append(run(OTA_TIMED % {"url": base + "/fw.binz"}, template, work, path))
        p = statistics.median(x[0] for x in plain)
        z = statistics.median(x[0] for x in packed)
        pl = statistics.median(x[1] for x in plain)
        zl = statistics.median(x[1] for x in packed)
        result["throughput"] = {"plain_ms": p, "compressed_ms": z, "ratio": p / z,
                                "ratio_without_finish": pl / zl}
        print("throughput, %.2f MiB firmware update over loopback http (median of %d):"
              % (len(image) / 1048576, rounds))
        print("  uncompressed begin/perform/finish:  %6d ms (without finish %d ms)" % (p, pl))
        print("  compressed (window_bits 12):        %6d ms (without finish %d ms)" % (z, zl))
        print("  ratio compressed/uncompressed throughput: %.2f (without finish: %.2f)"
              % (p / z, pl / zl))

        print("smallest -X heapsize from which the update completes (mpy-cross compiled code):")
        heaps = {}
        for key, script in (("firmware", OTA % {"url": base + "/fw.bin", "first": ""}),
                            ("firmware_z12", OTA % {"url": base + "/fw.binz", "first": ""})):
            heaps[key] = smallest_heap(script, template, work, path)
        # The app bundle as bench_bundle.py measures it: a board that holds
        # two confirmed versions installs a third (here: lib/ota as .mpy).
        root = tempfile.mkdtemp(dir=work)
        bwww = os.path.join(root, "www")
        os.makedirs(bwww)
        for v in (0, 1):
            with open(os.path.join(bwww, "v%d.bundle" % v), "wb") as f:
                f.write(build_bundle({"main.py": b"print(%d)\n" % v}, "1.0.%d" % v, "bench"))
        bserver, bbase, _ = start_server(bwww, log=lambda *a: None)
        template8266 = bench_bundle.board_with_two_versions(root, bench_bundle.compile_lib(),
                                                            bbase + "/")
        for key, data in (("bundle", bundle_mpy),
                          ("bundle_z11", compress(bundle_mpy, window_bits=WINDOW_BITS_SMALL))):
            with open(os.path.join(bwww, "v2.bundle"), "wb") as f:
                f.write(data)
            kib = bench_bundle.smallest_heap(root, template8266, bbase + "/")
            heaps[key] = kib and kib * 1024
        bserver.shutdown()
        result["heap"] = heaps
        for key, what in (("firmware", "firmware, uncompressed"),
                          ("firmware_z12", "firmware, compressed, 4 KiB window"),
                          ("bundle", "app bundle on ESP8266, uncompressed"),
                          ("bundle_z11", "app bundle on ESP8266, compressed, 2 KiB window")):
            h = heaps[key]
            print("  %-48s %s" % (what + ":", "%d bytes (%.1f KiB)" % (h, h / 1024) if h
                                  else "does not complete"))
        for a, b, window in (("firmware", "firmware_z12", 4096), ("bundle", "bundle_z11", 2048)):
            if heaps[a] and heaps[b]:
                print("  %s: compressed needs %+d bytes more (goal: at most window %d + 2048)"
                      % (a, heaps[b] - heaps[a], window))
        server.shutdown()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return result


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    figures(ap.parse_args().rounds)


if __name__ == "__main__":
    main()
