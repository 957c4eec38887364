# Firmware target: streams an app image into the next OTA partition.
#
# One 4096-byte buffer, filled straight from the socket. A full buffer is
# validated (ota.image) and then written with the two-argument writeblocks,
# which erases exactly that sector and programs it: a rejected image costs at
# most the sector it was rejected in. otadata is touched only by set_boot()
# in finish(), after the whole image was validated.
import json
import os

import ota
from ota import OTAError
from ota.image import ImageValidator

SECTOR = 4096
JOURNAL = "ota_resume.json"   # relative: the board's filesystem root is the cwd
JOURNAL_EVERY = 16            # sectors (64 KiB) between journal updates


def running_partition():
    try:
        from esp32 import Partition
    except ImportError:
        raise OTAError(ota.ESP_ERR_NOT_SUPPORTED,
                       "firmware OTA needs the esp32 module; use target=ota.AppBundle(...)")
    return Partition(Partition.RUNNING)


def read_app(part, buf):
    # The first bytes of the image in `part`: (chip id, app descriptor).
    # The running image's header tells this board's chip id, its descriptor
    # the secure_version an update must not go below.
    part.readblocks(0, buf)
    chip_id = buf[12] | buf[13] << 8
    v = ImageValidator(chip_id, part.info()[3])
    v.feed(memoryview(buf)[:512])
    return chip_id, v.desc


CHIP_NAMES = {0: "esp32", 2: "esp32s2", 5: "esp32c3", 9: "esp32s3", 12: "esp32c2", 13: "esp32c6",
              16: "esp32h2", 18: "esp32p4"}   # esp_chip_id_t -> esptool's chip name


class FirmwareTarget:
    kind = "firmware"

    def __init__(self):
        from ota.otadata import running_state, PENDING_VERIFY
        running = running_partition()
        if running_state() == PENDING_VERIFY:
            raise OTAError(ota.ESP_ERR_OTA_ROLLBACK_INVALID_STATE,
                           "the running app is not confirmed yet: call ota.mark_app_valid() first")
        self._buf = bytearray(SECTOR)
        self._mv = memoryview(self._buf)
        chip_id, desc = read_app(running, self._buf)
        self._running = (CHIP_NAMES.get(chip_id, str(chip_id)), desc["version"], desc["secure_version"])
        self._part = running.get_next_update()
        self._validator = ImageValidator(chip_id, self._part.info()[3], desc["secure_version"])
        self._fill = 0
        self._sector = 0
        self._journal = None

    # -- target interface (docs/ARCHITECTURE.md) -----------------------------

    def current(self):
        # (chip name, version, secure_version) of what runs now
        return self._running

    def kept(self, url):
        # (offset, etag) of a valid prefix an interrupted download of `url`
        # left in the partition, from the journal; (0, None) if none.
        old = _recall()
        if old and old["url"] == url and old["part"] == self._part.info()[4]:
            return old["bytes"], old["etag"]
        return 0, None

    def begin(self, client):
        size = client.get_image_size()
        if size > self._part.info()[3]:
            raise OTAError(ota.ESP_ERR_INVALID_SIZE, "image of %d bytes does not fit partition %s (%d bytes)"
                           % (size, self._part.info()[4], self._part.info()[3]))
        if client.offset:
            self._revalidate(client)
        else:
            _forget()
        if client.etag:
            self._journal = {"url": client.url, "etag": client.etag, "part": self._part.info()[4],
                             "bytes": client.offset}

    def window(self):
        self._win = self._mv[self._fill:] if self._fill else self._mv
        return self._win

    def commit(self, n):
        # Sockets fill the whole window (readinto(buf, n) waits for n bytes),
        # so the common case feeds the window itself without a new slice.
        self._validator.feed(self._win if n == len(self._win) else self._win[:n])
        self._fill += n
        if self._fill == SECTOR:
            self._flush()

    def desc(self):
        return self._validator.desc

    def complete(self):
        return self._validator.complete()

    def finish(self):
        self._validator.done()
        if self._fill:
            for i in range(self._fill, SECTOR):
                self._buf[i] = 0xFF
            self._flush()
        try:
            self._part.set_boot()
        except OSError as e:
            raise OTAError(ota.ESP_ERR_OTA_VALIDATE_FAILED, "set_boot refused the image: %s" % e)
        _forget()

    def abort(self, keep=False):
        # The partition holds an unbootable prefix; otadata was never touched.
        if not keep:
            _forget()

    # -- inside --------------------------------------------------------------

    def _flush(self):
        try:
            self._part.writeblocks(self._sector, self._buf)
        except OSError as e:
            raise OTAError(ota.ESP_ERR_FLASH_OP_FAIL, "flash write of sector %d failed: %s" % (self._sector, e))
        self._sector += 1
        self._fill = 0
        if self._journal and self._sector % JOURNAL_EVERY == 0:
            self._journal["bytes"] = self._sector * SECTOR
            _remember(self._journal)

    def _revalidate(self, client):
        # The server resumes at client.offset: feed what the partition holds
        # before it through the validator (flash reads are cheap), so the
        # checks and hashes go on as if it had just been downloaded.
        try:
            while self._sector * SECTOR < client.offset:
                self._part.readblocks(self._sector, self._buf)
                self._validator.feed(self._mv)
                client.resumed(self._mv)
                self._sector += 1
        except OTAError:
            _forget()      # the kept prefix no longer validates: start over next time
            raise


def _remember(journal):
    # Written to a new file and renamed over the old one, so a power cut
    # leaves either journal, never a torn one.
    with open(JOURNAL + ".tmp", "w") as f:
        json.dump(journal, f)
    os.rename(JOURNAL + ".tmp", JOURNAL)


def _recall():
    try:
        with open(JOURNAL) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _forget():
    try:
        os.remove(JOURNAL)
    except OSError:
        pass
