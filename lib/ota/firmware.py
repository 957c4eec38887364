# Firmware target: streams an app image into the next OTA partition.
#
# One 4096-byte buffer, filled straight from the socket. A full buffer is
# validated (ota.image) and then written with the two-argument writeblocks,
# which erases exactly that sector and programs it: a rejected image costs at
# most the sector it was rejected in. otadata is touched only by set_boot()
# in finish(), after the whole image was validated.
#
# The buffer is made when the target is, after a collection: after the
# download's code and TLS context (ota.client makes the Download first),
# before connecting. (Made in begin(), after connecting, bench_ota.py
# found the smallest heaps 4-10 KiB larger: connecting's garbage leaves no
# 4 KiB in one piece.)
import os

from ota import const, OTAError
from ota.image import ImageValidator, parse_desc

# esp_err_t values (as in ota/__init__.py), inlined by const().
_INVALID_SIZE = const(0x104)
_NOT_SUPPORTED = const(0x106)
_VALIDATE_FAILED = const(0x1503)
_ROLLBACK_INVALID_STATE = const(0x1506)
_FLASH_OP_FAIL = const(0x6001)

# Texts of its failures: numbers into ota.texts.TEXTS (error texts load
# only when a failure is shown).
_T_NO_ESP32 = const(8)
_T_NO_APP = const(9)
_T_PENDING = const(10)
_T_TOO_BIG = const(11)
_T_SET_BOOT = const(12)
_T_WRITE = const(13)

_SECTOR = const(4096)
# Sectors (256 KiB) between journal updates: a reset costs at most that
# much downloaded again. Each update is a small file written and renamed;
# every 64 KiB, they took 15 % of a 1.5 MiB update on the emulated board
# (tools/bench/bench_ota.py), and a real board's filesystem is slower.
_JOURNAL_EVERY = const(64)
JOURNAL = "ota_resume.json"   # relative: the board's filesystem root is the cwd
# JOURNAL's new version, before its rename (a literal: JOURNAL + ".tmp"
# would make a string at each use, which MicroPython first looks up among
# all interned ones: a few microseconds each).
_TMP = "ota_resume.json.tmp"


def running_partition():
    try:
        from esp32 import Partition
    except ImportError:
        raise OTAError(_NOT_SUPPORTED, (_T_NO_ESP32,))
    return Partition(Partition.RUNNING)


def read_app(part, buf=None):
    # The first bytes of the image in `part` (buf: at least 288 bytes):
    # (chip id, app descriptor). The running image's header tells this
    # board's chip id, its descriptor the secure_version an update must not
    # go below. The bootloader has verified the running image, so reading
    # the descriptor where esptool puts it (after the image header and the
    # first segment header) is enough.
    buf = buf or bytearray(288)
    part.readblocks(0, buf)
    desc = parse_desc(memoryview(buf)[32:]) if buf[0] == 0xE9 else None
    if desc is None:
        raise OTAError(_VALIDATE_FAILED, (_T_NO_APP, part.info()[4]))
    return buf[12] | buf[13] << 8, desc


class FirmwareTarget:
    kind = "firmware"

    def __init__(self):
        running = running_partition()
        if _pending_verify():
            raise OTAError(_ROLLBACK_INVALID_STATE, (_T_PENDING,))
        chip, desc = read_app(running)
        import gc
        gc.collect()        # the garbage of loading ota's code goes first
        self._buf = bytearray(_SECTOR)
        self._mv = self._win = memoryview(self._buf)
        self._running = (chip, desc["version"], desc["secure_version"])
        self._part = running.get_next_update()
        self._validator = ImageValidator(chip, self._part.info()[3], desc["secure_version"])
        self._fill = 0
        self._sector = 0
        self._journal = None
        self._at = 0        # where the journal holds its count, once written (_note)

    # -- target interface (docs/ARCHITECTURE.md) -----------------------------

    def current(self):
        # (chip name as esptool names it, version, secure_version) of what
        # runs now; only signed manifests ask.
        from ota.chips import chip_name
        chip, version, secure_version = self._running
        return chip_name(chip), version, secure_version

    def kept(self, url):
        # (offset, etag) of a valid prefix an interrupted download of `url`
        # left in the partition, from the journal (or its .tmp: a cut
        # between the removal of the old one and the rename, see _note);
        # (0, None) if none.
        import json
        old = None
        for name in (JOURNAL, _TMP):
            try:
                with open(name) as f:
                    old = json.load(f)
                break
            except (OSError, ValueError):
                pass
        if old and old["url"] == url and old["part"] == self._part.info()[4] and \
                not old["bytes"] % _SECTOR:
            return old["bytes"], old["etag"]
        return 0, None

    def begin(self, client):
        size = client.get_image_size()
        info = self._part.info()
        if size > info[3]:
            raise OTAError(_INVALID_SIZE, (_T_TOO_BIG, size, info[4], info[3]))
        if client.offset:
            # The server resumes at client.offset: feed what the partition
            # holds before it through the validator (flash reads are cheap),
            # so the checks and hashes go on as if it had just been
            # downloaded.
            try:
                while self._sector * _SECTOR < client.offset:
                    self._part.readblocks(self._sector, self._buf)
                    self._validator.feed(self._mv)
                    client.resumed(self._mv)
                    self._sector += 1
            except OTAError:
                _forget()      # the kept prefix no longer validates: start over next time
                raise
        else:
            _forget()
        if client.etag:
            # The journal's text up to its byte count (_note).
            import json
            self._journal = '{"url": %s, "etag": %s, "part": %s, "bytes": ' % (
                json.dumps(client.url), json.dumps(client.etag), json.dumps(info[4]))

    def window(self):
        self._win = self._mv[self._fill:] if self._fill else self._mv
        return self._win

    def commit(self, n):
        # Sockets fill the whole window (readinto(buf, n) waits for n bytes),
        # so the common case feeds the window itself without a new slice.
        self._validator.feed(self._win if n == len(self._win) else self._win[:n])
        self._fill += n
        if self._fill == _SECTOR:
            self._flush()

    def pump(self, src):
        # window() + src.readinto() + commit() in one call, for a client
        # that needs no look at the bytes (ota.client, without a sha256 of
        # its own): an empty buffer takes a whole sector from the socket
        # through the validator to the flash with no other Python call
        # between. Each call costs ~1 us of the interpreter; per sector
        # that was 10 % of an update on the emulated board (bench_ota.py).
        # No try and few names: its frame fits the C stack (_flush maps a
        # flash failure).
        mv = self._mv
        if self._fill:
            self._win = mv = mv[self._fill:]
        n = src.readinto(mv)
        if n == _SECTOR:
            self._validator.feed(mv)
            self._flush()
        elif n:
            self._win = mv
            self.commit(n)
        return n

    def desc(self):
        return self._validator.desc

    def complete(self):
        return self._validator.complete()

    def finish(self):
        self._validator.done()
        if self._fill:
            for i in range(self._fill, _SECTOR):
                self._buf[i] = 0xFF
            self._flush()
        self._buf = self._mv = self._win = None   # set_boot gets the room
        try:
            self._part.set_boot()
        except OSError as e:
            raise OTAError(_VALIDATE_FAILED, (_T_SET_BOOT, e))
        _forget()

    def abort(self, keep=False):
        # The partition holds an unbootable prefix; otadata was never touched.
        if not keep:
            _forget()

    # -- inside --------------------------------------------------------------

    def _flush(self):
        # Once per sector: its frame fits the C stack (one try, no name
        # bound to the failure: a failed write is tried again in _rewrite,
        # which has the error to map).
        try:
            self._part.writeblocks(self._sector, self._buf)
        except OSError:
            self._rewrite()
        self._sector += 1
        self._fill = 0
        if self._journal and not self._sector % _JOURNAL_EVERY:
            self._note()

    def _rewrite(self):
        # A failed sector write once more; failing again: FLASH_OP_FAIL.
        try:
            self._part.writeblocks(self._sector, self._buf)
        except OSError as e:
            raise OTAError(_FLASH_OP_FAIL, (_T_WRITE, self._sector, e))

    def _note(self):
        # The journal: its text with the byte count in a fixed width (JSON
        # allows the spaces before a number). The first of this download is
        # written whole to a new file, then the old one removed and the new
        # one renamed: a power cut leaves the old journal, or the new one
        # under either name (kept() reads both). A rename over the old file
        # would make ext4 (the emulated board's filesystem) write the new
        # one out at once: 0.5 ms each. The later ones only overwrite the
        # count in place, the file's length unchanged (25 us against 100 on
        # the emulated board, for each 256 KiB): on littlefs a write is
        # atomic at close; where a cut could tear the ten bytes, the count
        # is refused unless whole sectors (kept()), and a wrong one costs
        # only this resume, as every byte of the prefix is validated again.
        count = "%10d}" % (self._sector * _SECTOR)
        if self._at:
            with open(JOURNAL, "r+") as f:
                f.seek(self._at)
                f.write(count)
            return
        with open(_TMP, "w") as f:
            f.write(self._journal)
            f.write(count)
        _remove(JOURNAL)
        os.rename(_TMP, JOURNAL)
        self._at = len(self._journal.encode())   # bytes: the URL may hold UTF-8


def _pending_verify():
    # Is the running app PENDING_VERIFY? otadata is read only for this, once
    # per update: its module is dropped again right away, so the download has
    # that RAM (ota.status() imports it anew).
    import sys
    import ota
    import ota.otadata as otadata
    pending = otadata.running_state() == otadata.PENDING_VERIFY
    del sys.modules["ota.otadata"], ota.otadata
    return pending


def _forget():
    _remove(JOURNAL)
    _remove(_TMP)


def _remove(name):
    try:
        os.remove(name)
    except OSError:
        pass
