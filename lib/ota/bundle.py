# ota.bundle: the app-bundle target, ota.AppBundle("/app").
#
# Receives a bundle (format: tools/otatool/bundle.py) through the Target
# interface of ARCHITECTURE.md with one buffer of `bufsize` bytes (512 by
# default: an ESP8266 has the heap for little more; a larger buffer means
# fewer perform() calls) and nothing that grows with the bundle:
#   _FIX   the 80-byte fixed part, gathered in the buffer: magic, format,
#          sizes; desc() from here on; a first free-space check
#   _HEAD  the rest of the header, straight to staging new/hdr. First the
#          version rule (a newer version, unless allow_downgrade: else
#          ESP_ERR_INVALID_VERSION; never a lower secure_version:
#          ESP_ERR_OTA_SMALL_SEC_VER); once the header is whole, _check()
#          reads it back: its own SHA-256, each entry (names; sort order, so
#          that duplicates and file/directory clashes show between
#          neighbours), the exact free-space check. All before any file is
#          stored
#   _DATA  each file straight into new/<index>, its SHA-256 checked when its
#          last byte lands
#   _DONE  all in: finish() runs the journaled swap of ota.swap (imported
#          only then: until then its heap goes to the download)
# Any failure raises OTAError and deletes staging; the app is untouched.
#
# Few functions and attributes on purpose, and its failures' texts in
# ota.texts: on an ESP8266 this module shares the heap with the HTTP
# client, and each costs heap before any code runs (64-bit unix port: ~80
# bytes a function, ~35 an attribute name, ~70 a message).
import gc
import hashlib
import os
import struct
import sys

from ota import const, OTAError, _unload
import ota.journal as journal

# esp_err_t values (as in ota/__init__.py), inlined by const().
_INVALID_ARG = const(0x102)
_INVALID_STATE = const(0x103)
_INVALID_SIZE = const(0x104)
_NOT_SUPPORTED = const(0x106)
_INVALID_VERSION = const(0x10A)
_VALIDATE_FAILED = const(0x1503)
_SMALL_SEC_VER = const(0x1504)
_ROLLBACK_INVALID_STATE = const(0x1506)
_FLASH_OP_FAIL = const(0x6001)

# Texts of its failures: numbers into ota.texts.TEXTS (error texts load
# only when a failure is shown).
_T_PATH = const(42)
_T_CONFIRM = const(43)
_T_IDLE = const(44)
_T_TRAILING = const(45)
_T_TRUNCATED = const(46)
_T_FS = const(47)
_T_ROOM = const(48)
_T_MAGIC = const(49)
_T_FORMAT = const(50)
_T_HEADER = const(51)
_T_SIZE = const(52)
_T_SEC_VER = const(53)
_T_OLDER = const(54)
_T_HEADER_SHA = const(55)
_T_NAME = const(56)
_T_ORDER = const(57)
_T_IS_FILE = const(58)
_T_FILE_SHA = const(59)

_FIXED = const(80)
_HEADER_MAX = const(32768)
_ENTRIES_MAX = const(1024)
_NAME_MAX = const(120)
_SLACK = const(6)           # blocks for directories, metadata and the journal
_BAD = tuple(b'\\:*?"<>|')  # besides control characters: unsafe on FAT

_IDLE = const(0)
_FIX = const(1)
_HEAD = const(2)
_DATA = const(3)
_DONE = const(4)
_FINISHED = const(5)


def _text_field(b, at, required):
    # The 32-byte text field at b[at]: up to 31 printable ASCII characters,
    # then NULs only. Checked in place: no garbage while the heap is at its
    # fullest.
    end = at
    while end < at + 31 and 31 < b[end] < 127:
        end += 1
    if required and end == at:
        return False
    for i in range(end, at + 32):
        if b[i]:
            return False
    return True


class AppBundle:
    kind = "bundle"     # what a signed manifest must name

    def __init__(self, path="/app", allow_downgrade=False, bufsize=512):
        path = path.rstrip("/")
        if path[:1] != "/" or "/./" in path + "/" or "/../" in path + "/" or bufsize < 512:
            raise OTAError(_INVALID_ARG, (_T_PATH,))
        self.app = path
        self.meta = path + ".ota"
        self._fs = path[:path.rfind("/")] or "/"    # where app and meta live
        self.allow_downgrade = allow_downgrade
        self._buf = bytearray(bufsize)
        self._mv = memoryview(self._buf)
        self._ph = _IDLE
        # Every attribute is made here, while the heap is still roomy: one
        # added later regrows the instance's table when the heap is full.
        self._desc = self._f = self._it = self._hash = self._entry = None
        self._size = self._bs = self._fill = self._left = self._hlen = 0

    # -- Target interface (ARCHITECTURE.md) ----------------------------------

    def kept(self, url):
        # A cut bundle download starts over (files are small; the staging
        # directory is discarded at the next boot anyway).
        return 0, None

    def begin(self, client):
        try:
            st = journal.get_state(self.meta)
            if st != "none" and st != "valid":
                raise OTAError(_ROLLBACK_INVALID_STATE, (_T_CONFIRM,))
            self._size = client.get_image_size()
            self._bs = os.statvfs(self._fs)[1]
            self._room(self._size)
            self._ph = _FIX
            self._fill = 0
            self._left = _FIXED
            m = self.meta
            journal.mkdir(m)
            journal.discard(m, m + "/new")
            os.mkdir(m + "/new")
            self._f = open(m + "/new/hdr", "wb")
            self._hash = hashlib.sha256()
        except Exception as e:
            raise self._fail(e)

    def window(self):
        # _FIX: the rest of the fixed part, gathered in the buffer; then at
        # most what is left of the header or of the current file.
        ph = self._ph
        if ph == _IDLE or ph == _FINISHED:
            raise OTAError(_INVALID_STATE, (_T_IDLE,))
        if ph == _DONE or self._left >= len(self._buf):
            return self._mv         # after _DONE only to catch trailing bytes
        return self._mv[self._fill:self._fill + self._left]

    def commit(self, n):
        try:
            ph = self._ph
            if ph == _DONE:
                if n:
                    raise OTAError(_VALIDATE_FAILED, (_T_TRAILING,))
                return
            if ph == _FIX:
                self._fill += n
                self._left -= n
                if not self._left:
                    self._fixed()
                return
            if ph == _HEAD and self._left == self._hlen - _FIXED:
                self._version()     # the first bytes after the fixed part
            mv = self._mv if n == len(self._buf) else self._mv[:n]
            # A file's bytes are hashed, and the header's up to its own
            # SHA-256 (its last 32 bytes).
            k = n if ph == _DATA else min(n, self._left - 32)
            if k > 0:
                self._hash.update(mv if k == n else mv[:k])
            self._f.write(mv)
            self._left -= n
            if not self._left:
                if ph == _HEAD:
                    self._check()
                self._next()
        except Exception as e:
            raise self._fail(e)

    def desc(self):
        return self._desc

    def complete(self):
        return self._ph >= _DONE

    def finish(self):
        try:
            if self._ph != _DONE:
                raise OTAError(_VALIDATE_FAILED, (_T_TRUNCATED,))
            self._buf = self._mv = None     # all in: the swap gets its room
            m = self.meta
            if journal.get_state(m) == "valid":
                journal.put_state(m, "none")     # old/ is about to go
            journal.discard(m, m + "/old")
            os.mkdir(m + "/old")
            journal.put_state(m, "swap")         # the commit point
            self._ph = _FINISHED
            # The download's code goes before the swap's loads, so that on
            # a board the swap has that heap (the next download loads it
            # again). Not while a module that holds that code is loaded
            # (ota.checkin): it would go on with the old copy beside a fresh
            # one. A running deadline (ota.deadline) holds no download code.
            if "ota.checkin" not in sys.modules:
                _unload("http", "http_extra")
            gc.collect()    # the swap's code into the holes of the download's
            import ota.swap as swap
            swap.install(self.app, m, True)
        except Exception as e:
            raise self._fail(e)

    def abort(self, keep=False):
        # Never resumed: a cut download starts over, so `keep` is ignored.
        if self._ph == _FINISHED:
            return
        for f in (self._f, self._it):
            if f:
                try:
                    f.close()
                except OSError:
                    pass
        self._f = self._it = None
        if self._ph != _IDLE:
            self._ph = _IDLE
            try:
                journal.discard(self.meta, self.meta + "/new")
            except OSError:
                pass

    # -- inside --------------------------------------------------------------

    def _fail(self, e):
        self.abort()
        if isinstance(e, OSError):
            return OTAError(_FLASH_OP_FAIL, (_T_FS, e))
        return e

    def _room(self, n):
        # n bytes (+ slack) must fit in the free blocks of the app's filesystem.
        need = (n + self._bs - 1) // self._bs + _SLACK
        free = os.statvfs(self._fs)[4]
        if need > free:
            raise OTAError(_INVALID_SIZE, (_T_ROOM, need, free))

    def _fixed(self):
        # The fixed part is in the buffer: check it, keep the desc, stage it.
        b = self._buf
        if b[:4] != b"OTAB":
            raise OTAError(_VALIDATE_FAILED, (_T_MAGIC,))
        if b[4] != 1 or b[5]:
            raise OTAError(_NOT_SUPPORTED, (_T_FORMAT, b[4], b[5]))
        hlen, count, _, dlen = struct.unpack_from("<HHHI", b, 6)
        if not _FIXED + 32 <= hlen <= _HEADER_MAX or count > _ENTRIES_MAX:
            raise OTAError(_VALIDATE_FAILED, (_T_HEADER,))
        if self._size >= 0 and self._size != hlen + dlen:
            raise OTAError(_VALIDATE_FAILED, (_T_SIZE, self._size, hlen + dlen))
        # Version (required) and project name, as otatool writes them;
        # anything else would break desc() users (decode, print, JSON
        # reports).
        if not _text_field(b, 16, True) or not _text_field(b, 48, False):
            raise OTAError(_VALIDATE_FAILED, (_T_HEADER,))
        self._desc = journal.desc_of(b)
        self._size = hlen + dlen
        self._room(self._size)
        mv = self._mv[:_FIXED]
        self._hash.update(mv)
        self._f.write(mv)
        self._ph = _HEAD
        self._fill = 0
        self._hlen = hlen
        self._left = hlen - _FIXED

    def _version(self):
        # get_img_desc() has returned the desc by now, so a caller may look
        # at an older version; going on installs only a newer one (unless
        # allow_downgrade), and never one with a lower secure_version. A
        # version that is not semantic counts as newer whenever it differs.
        d, cur = self._desc, journal.running_desc(self.app)
        if cur is None:
            return
        if d["secure_version"] < cur["secure_version"]:
            raise OTAError(_SMALL_SEC_VER, (_T_SEC_VER, d["secure_version"],
                                            cur["secure_version"]))
        loaded = "ota.version" in sys.modules
        gc.collect()    # the code loads into the holes of what begin() freed
        import ota.version
        a, b = d["version"], cur["version"]
        try:
            newer = ota.version.version_key(a) > ota.version.version_key(b)
        except ValueError:
            newer = a != b
        if not loaded:
            # Needed once per update: unloaded again, so that its heap is
            # free for the swap in finish() (an ESP8266 has no more).
            del sys.modules["ota.version"]
            del ota.version
        if not (newer or self.allow_downgrade):
            raise OTAError(_INVALID_VERSION, (_T_OLDER, a, b))

    def _check(self):
        # The whole header is staged: its SHA-256, then every entry, read
        # back in one pass, before any file is stored.
        self._f.close()
        self._f = None
        hdr = self.meta + "/new/hdr"
        with open(hdr, "rb") as f:
            f.seek(self._hlen - 32)
            if f.read(32) != self._hash.digest():   # (read() asks for 256 bytes)
                raise OTAError(_VALIDATE_FAILED, (_T_HEADER_SHA,))
        used, data, need, prev, seen = _FIXED + 32, 0, self._hlen, "", None
        try:
            for _, kind, name, size, _ in journal.entries(hdr):
                # Its bytes: each character taken out of a str would become
                # an interned string, in the heap for good.
                for c in name.encode():
                    if c < 32 or c > 126 or c in _BAD:
                        raise ValueError
                s = "/" + name + "/"
                if kind > 1 or not 0 < len(name) <= _NAME_MAX or "//" in s or "/./" in s \
                        or "/../" in s:
                    raise OTAError(_VALIDATE_FAILED, (_T_NAME, name))
                key = name.lower().replace("/", "\x01")
                if key <= prev or key.startswith(prev + "\x01"):
                    raise OTAError(_VALIDATE_FAILED, (_T_ORDER, name))
                prev = key
                used += 2 + len(name)
                if kind == 0:
                    used += 36
                    data += size
                    need += (size + self._bs - 1) // self._bs * self._bs
                    # A directory the swap must create cannot be a file of
                    # the app now. Entries are sorted: once per directory.
                    d = name[:name.rfind("/") + 1]
                    i = d.find("/") if d != seen else -1
                    seen = d
                    while i > 0:
                        try:
                            if not os.stat(self.app + "/" + name[:i])[0] & 0x4000:
                                raise OTAError(_VALIDATE_FAILED, (_T_IS_FILE, name[:i]))
                        except OSError:
                            break
                        i = name.find("/", i + 1)
        except ValueError:          # a cut or garbled entry, a non-ASCII name
            used = -1
        if used != self._hlen or data != self._size - self._hlen:
            raise OTAError(_VALIDATE_FAILED, (_T_HEADER,))
        self._room(need)
        self._ph = _DATA
        self._it = journal.entries(hdr)
        self._entry = None

    def _next(self):
        # Close the file that is complete (checking its hash), open the next.
        while True:
            e = self._entry
            if e:
                self._f.close()
                self._f = None
                if self._hash.digest() != e[4]:
                    raise OTAError(_VALIDATE_FAILED, (_T_FILE_SHA, e[2]))
            for e in self._it:
                if e[1] == 0:
                    break
            else:
                self._it = self._entry = self._hash = None
                self._ph = _DONE
                return
            self._entry = e
            self._f = open("%s/new/%d" % (self.meta, e[0]), "wb")
            self._hash = hashlib.sha256()
            self._left = e[3]
            if self._left:
                return
