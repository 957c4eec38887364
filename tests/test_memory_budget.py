"""The device memory budget of docs/API.md, so that it cannot regress: a
firmware OTA of a 1.5 MiB image completes in a 64 KiB heap, with lib/ota
compiled by mpy-cross as a board loads it. (The app-bundle budget, 32 KiB on
the ESP8266 profile, is tested in test_bundle.py; tools/bench_ota.py and
tools/bench_bundle.py print the smallest heaps.) A compressed update does
not fit that budget yet (docs/API.md, "Compressed updates"): its line is
held where it is today, so that it cannot regress either."""
import os
import subprocess

from conftest import MICROPYTHON, SHIM, compile_ota
from otatool.appimage import make_app_image
from otatool.serve import start_server

# What a board's main.py does: import ota, then the whole update.
MAIN = """
import ota
with ota.begin(%r, allow_http=True) as h:
    while h.perform() == ota.IN_PROGRESS:
        pass
    h.finish()
import esp32
print("boot", esp32.Partition(esp32.Partition.BOOT).info()[4], h.get_image_len_read())
"""


def test_a_1_5_mib_firmware_update_completes_in_a_64k_heap_from_compiled_code(tmp_path):
    image = make_app_image(version="2.0.0", size=1536 * 1024 - 4096)
    updated_in(tmp_path, "64k", image, image)


def test_a_compressed_1_5_mib_firmware_update_completes_in_a_78k_heap_from_compiled_code(
        tmp_path):
    # A 4 KiB window. 73 KiB was enough when this was written, 78 leaves
    # room for the heap's layout (bench_compressed.py finds 76 KiB for its
    # image of real code); the goal is the uncompressed update's heap plus
    # the window and 2 KiB.
    from otatool.compressed import compress
    image = make_app_image(version="2.0.0", size=1536 * 1024 - 4096)
    updated_in(tmp_path, HEAP_COMPRESSED, compress(image), image)


HEAP_COMPRESSED = "78k"


def updated_in(tmp_path, heap, served, image):
    compile_ota(tmp_path / "mpy")
    www = tmp_path / "www"
    www.mkdir()
    (www / "fw.bin").write_bytes(served)
    board = tmp_path / "board"
    board.mkdir()
    server, base, _ = start_server(str(www), log=lambda line: None)
    try:
        p = subprocess.run([MICROPYTHON, "-X", "heapsize=" + heap, "-c", MAIN % (base + "/fw.bin")],
                           env=dict(os.environ, OTA_BOARD=str(board),
                                    MICROPYPATH=":".join([SHIM, str(tmp_path / "mpy"), ".frozen"])),
                           capture_output=True, text=True, timeout=120, cwd=str(board))
    finally:
        server.shutdown()
        server.server_close()
    assert p.stdout.split() == ["boot", "ota_1", str(len(image))], p.stdout + p.stderr
