# The begin / perform / finish / abort state machine of esp_https_ota.
#
# The client owns the connection; the target (firmware partition or app
# bundle) owns the buffer and the storage. Each perform() reads once from the
# network straight into the target's buffer and lets the target validate and
# flush it, so a caller's loop stays responsive and nothing is copied.
#
# Few functions on purpose: on an ESP8266 this module shares a 32 KiB heap
# with the HTTP client and the bundle code, and each function costs ~100
# bytes of it (64-bit unix port) before its code.
import gc

from ota import const, OTAError

# esp_err_t values (as in ota/__init__.py), inlined by const().
_OK = const(0)
_IN_PROGRESS_CODE = const(0x9001)
_INVALID_ARG = const(0x102)
_INVALID_STATE = const(0x103)
_TIMEOUT = const(0x107)
_VALIDATE_FAILED = const(0x1503)
_HTTP_CONNECT = const(0x7002)
_HTTP_INCOMPLETE_DATA = const(0x700C)

# Texts of its failures: numbers into ota.texts.TEXTS (error texts load
# only when a failure is shown).
_T_SIZE_ARG = const(0)
_T_WINDOW_ARG = const(1)
_T_SHA_ARG = const(2)
_T_SIZE = const(3)
_T_NO_DESC = const(4)
_T_INCOMPLETE = const(5)
_T_SHA = const(6)
_T_ORDER = const(7)

# States, as esp_https_ota.c names them (plus the two ends); one bit each,
# so that the states a call may run in are one int (see _expect).
_BEGIN = const(1)          # connected, nothing read yet
_IN_PROGRESS = const(2)    # body streaming
_DATA_END = const(4)       # the server sent the whole entity
_FINISHED = const(8)       # finish() succeeded: the new image is bootable
_CLOSED = const(16)        # aborted or failed: nothing became bootable


class Handle:
    def __init__(self, url, cert_pem=None, headers=None, timeout_ms=10000, sha256=None,
                 size=None, partial_http_download=False, max_http_request_size=None,
                 allow_http=False, target=None, on_progress=None, public_key=None,
                 allow_downgrade=False):
        if size is not None and (not isinstance(size, int) or size <= 0):
            raise OTAError(_INVALID_ARG, (_T_SIZE_ARG,))
        if partial_http_download and not (isinstance(max_http_request_size, int)
                                          and max_http_request_size > 0):
            raise OTAError(_INVALID_ARG, (_T_WINDOW_ARG,))
        self._read = 0
        self._state = _CLOSED
        self._dl = self._pump = None
        self._target = target
        # The garbage of the imports so far (paths, file objects) is freed
        # before the largest module loads, so that its objects fill those
        # holes instead of leaving them between long-lived ones: on a small
        # heap the next large block (a sector, a TLS buffer) needs the room.
        gc.collect()
        from ota.http import Download
        if cert_pem:
            from ota.certs import pem_to_der
            cert_pem = pem_to_der(cert_pem)
        options = {"cert_der": cert_pem, "headers": headers, "timeout_ms": timeout_ms,
                   "allow_http": allow_http}
        wire = None
        if public_key is not None:
            # A board with a key installs only what the publisher signed: the
            # manifest names the image, and its sha256 and size bind it (and
            # wire, those of a compressed file).
            from ota.manifest import signed_image
            target = self._target = target or _firmware()
            url, sha256, size, wire = signed_image(url, public_key, allow_downgrade, target,
                                                   options)
        if sha256 is not None:
            import binascii
            try:
                sha256 = binascii.unhexlify(sha256)
            except (ValueError, TypeError):
                sha256 = b""
            if len(sha256) != 32:
                raise OTAError(_INVALID_ARG, (_T_SHA_ARG,))
        self._sha256 = sha256
        self._size = size
        self._on_progress = on_progress
        self._hash = None
        if sha256:
            import hashlib
            self._hash = hashlib.sha256()
        self.url = url
        # Likewise before the download's own objects are made.
        gc.collect()
        self._dl = dl = Download(url, range_size=max_http_request_size if partial_http_download
                                 else None, **options)
        try:
            # The firmware target (its code, then its 4 KiB sector buffer)
            # after the Download's TLS context, before connecting: that
            # order gave the smallest heaps (tools/bench/bench_ota.py; the
            # buffer made after connecting needed up to 10 KiB more).
            target = self._target = target or _firmware()
            # A target may keep a valid prefix of an interrupted download of
            # this URL: ask for the rest straight away. If-Range makes the
            # server send the whole entity instead when it changed, and the
            # target then starts over (it sees offset 0).
            offset, etag = target.kept(url)
            # A kept prefix of a compressed file (its ETag ends in "+z", see
            # ota.inflate) is resumed after its header, read from the start.
            z = etag and etag[-2:] == "+z"
            dl.start(0 if z else offset, etag)
            n = 0
            if not dl.offset:
                # The first bytes tell a compressed update from the image.
                head = bytearray(4)
                while n < 4:
                    k = dl.readinto(memoryview(head)[n:])
                    if not k:
                        break
                    n += k
                if head == b"OTAZ" or wire:
                    # The room its first block's inflater makes (its window,
                    # state and input) held while ota.inflate loads, whose
                    # code would split it: an update needed 2-5 KiB more
                    # heap (bench_compressed.py).
                    try:
                        hold = bytearray(5120)
                    except MemoryError:
                        hold = None
                    from ota.inflate import Inflate
                    self._dl = dl = Inflate(dl, head, wire, sha256, hold)
                    hold = None
                    dl.start(offset if z else 0, etag)
                    # What is installed is the inflated image: the header's
                    # SHA-256 is checked as a caller's sha256 is; unless a
                    # signed manifest's hash of the whole compressed file is
                    # (the inflated bytes follow from those).
                    self._sha256 = dl.sha256
                    self._hash = None
                    if not (wire and not dl.offset):
                        import hashlib
                        self._hash = hashlib.sha256()
                    n = 0
            if size is not None and dl.size >= 0 and dl.size != size:
                raise OTAError(_VALIDATE_FAILED, (_T_SIZE, dl.size, size))
            self.etag = dl.etag
            self.offset = self._read = dl.offset - n
            target.begin(self)
            if n:
                # The first bytes of an uncompressed image, read above.
                window = target.window()
                window[:n] = head[:n]
                self._read = n
                if self._hash:
                    self._hash.update(head[:n])
                target.commit(n)
            if not self._hash:
                self._pump = getattr(target, "pump", None)
        except BaseException as e:
            self._close(e)
            raise
        self._state = _BEGIN

    # -- the ESP-IDF calls ---------------------------------------------------

    def perform(self):
        # The hot path, from the second call on, when this client hashes
        # nothing: the target reads, validates and writes in one call
        # (FirmwareTarget.pump). No name is bound to a failure: with one
        # (a second exception level) its frame would not fit the C stack
        # and would be allocated on the heap at every call; _lost() finds
        # what it needs.
        if self._state == _IN_PROGRESS and self._pump:
            try:
                n = self._pump(self._dl)
            except BaseException:
                self._lost()
                raise
            if n:
                self._read += n
                if self._on_progress:
                    self._on_progress(self._read, self.get_image_size())
                return _IN_PROGRESS_CODE
            self._state = _DATA_END
            return _OK
        return self._perform()

    def _perform(self):
        # perform() for the rest: the first call, the state checks, a
        # client that hashes what it reads. Every byte of the entity passes
        # here or through pump once (or, when resumed, through resumed()).
        st = self._state
        if st == _DATA_END:
            return _OK
        if not st & (_BEGIN | _IN_PROGRESS):
            self._expect(_DATA_END, "perform")      # raises
        self._state = _IN_PROGRESS
        if self._pump:
            return self.perform()
        try:
            window = self._target.window()
            n = self._dl.readinto(window)
            self._read += n
            if not n:
                self._state = _DATA_END
                return _OK
            if self._hash:
                self._hash.update(window if n == len(window) else window[:n])
            self._target.commit(n)
        except BaseException as e:
            self._close(e)
            raise
        if self._on_progress:
            self._on_progress(self._read, self.get_image_size())
        return _IN_PROGRESS_CODE

    def is_complete_data_received(self):
        return self._state == _DATA_END and self._target.complete()

    def get_img_desc(self):
        # Reads on only until the target has parsed the app descriptor
        # (the first ~300 bytes): a caller can skip an image it already runs.
        self._expect(_BEGIN | _IN_PROGRESS | _DATA_END | _FINISHED, "get_img_desc")
        while self._target.desc() is None:
            if self.perform() == _OK and self._target.desc() is None:
                self._close(None)
                raise OTAError(_VALIDATE_FAILED, (_T_NO_DESC,))
        return self._target.desc()

    def finish(self):
        self._expect(_BEGIN | _IN_PROGRESS | _DATA_END, "finish")
        try:
            if self._state != _DATA_END or not self._target.complete():
                raise OTAError(_VALIDATE_FAILED, (_T_INCOMPLETE, self._read))
            if self._size is not None and self._read != self._size:
                raise OTAError(_VALIDATE_FAILED, (_T_SIZE, self._read, self._size))
            if self._hash and self._hash.digest() != self._sha256:
                raise OTAError(_VALIDATE_FAILED, (_T_SHA,))
            # The download's objects go before the target installs: on an
            # ESP8266 the bundle swap needs their heap (ota.bundle unloads
            # their code before ota.swap loads).
            self._dl.close()
            self._size = self._dl.size      # get_image_size() from now on
            self._dl = None
            self._target.finish()
        except BaseException as e:
            self._close(e)
            raise
        self._state = _FINISHED

    def abort(self):
        # After a failure everything is already closed: aborting again is fine.
        self._expect(_BEGIN | _IN_PROGRESS | _DATA_END | _CLOSED, "abort")
        if self._state != _CLOSED:
            self._close(None)

    def get_image_len_read(self):
        return self._read

    def get_image_size(self):
        return self._dl.size if self._dl else self._size

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self._state != _FINISHED and self._state != _CLOSED:
            self._close(None)
        return False

    # -- inside --------------------------------------------------------------

    def resumed(self, data):
        # Called by the target for each block of a resumed prefix it re-reads.
        if self._hash:
            self._hash.update(data)

    def _expect(self, states, call):
        if not self._state & states:
            raise OTAError(_INVALID_STATE, (_T_ORDER, call))

    def _lost(self):
        # perform()'s hot path failed. The failure that ends a download
        # (what _close keeps a prefix for) is the Download's (under an
        # Inflate, a compressed stream's); anything else, the target's.
        dl = self._dl
        self._close(getattr(dl, "failure", None) or getattr(getattr(dl, "_dl", None), "failure",
                                                            None))

    def _close(self, exc):
        # exc: the failure that ends the download, None for an abort. After
        # a network failure the bytes already written are worth keeping for
        # a later resume of the same URL.
        self._state = _CLOSED
        if self._dl:
            self._dl.close()
        if self._target:
            self._target.abort(isinstance(exc, OTAError) and
                               exc.code in (_HTTP_INCOMPLETE_DATA, _TIMEOUT, _HTTP_CONNECT))


begin = Handle     # ota.begin(url, **kw)


def _firmware():
    # The default target; ota.firmware (with ota.image) loads only here.
    from ota.firmware import FirmwareTarget
    return FirmwareTarget()


def update(url, reboot=False, **kw):
    with Handle(url, **kw) as h:
        while h.perform() == _IN_PROGRESS_CODE:
            pass
        h.finish()
        desc = h.get_img_desc()
    if reboot:
        import machine
        machine.reset()
    return desc
