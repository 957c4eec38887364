# The begin / perform / finish / abort state machine of esp_https_ota.
#
# The client owns the connection; the target (firmware partition or app
# bundle) owns the buffer and the storage. Each perform() reads once from the
# network straight into the target's buffer and lets the target validate and
# flush it, so a caller's loop stays responsive and nothing is copied.
import binascii
import hashlib

import ota
from ota import OTAError

# States, as esp_https_ota.c names them (plus the two ends).
_BEGIN = 1          # connected, nothing read yet
_IN_PROGRESS = 2    # body streaming
_DATA_END = 3       # the server sent the whole entity
_FINISHED = 4       # finish() succeeded: the new image is bootable
_CLOSED = 5         # aborted or failed: nothing became bootable

# Network failures after which the bytes already written are worth keeping
# for a later resume of the same URL.
_RESUMABLE = (ota.ESP_ERR_HTTP_INCOMPLETE_DATA, ota.ESP_ERR_TIMEOUT, ota.ESP_ERR_HTTP_CONNECT)


def _arg_error(msg):
    return OTAError(ota.ESP_ERR_INVALID_ARG, msg)


def _parse_sha256(hexdigest):
    if hexdigest is None:
        return None
    try:
        digest = binascii.unhexlify(hexdigest)
    except (ValueError, TypeError):
        digest = b""
    if len(digest) != 32:
        raise _arg_error("sha256 must be 64 hex digits")
    return digest


class Handle:
    def __init__(self, url, cert_pem=None, headers=None, timeout_ms=10000, sha256=None,
                 size=None, partial_http_download=False, max_http_request_size=None,
                 allow_http=False, target=None, on_progress=None, public_key=None,
                 allow_downgrade=False):
        if size is not None and (not isinstance(size, int) or size <= 0):
            raise _arg_error("size must be a positive int")
        if partial_http_download and not (isinstance(max_http_request_size, int)
                                          and max_http_request_size > 0):
            raise _arg_error("partial_http_download needs max_http_request_size > 0")
        self._read = 0
        self._state = _CLOSED
        self._dl = None
        if target is None:
            from ota.firmware import FirmwareTarget
            target = FirmwareTarget()
        self._target = target
        from ota.http import Download, pem_to_der
        options = {"cert_der": pem_to_der(cert_pem) if cert_pem else None, "headers": headers,
                   "timeout_ms": timeout_ms, "allow_http": allow_http}
        if public_key is not None:
            # A board with a key installs only what the publisher signed: the
            # manifest names the image, and its sha256 and size bind it.
            url, sha256, size = _signed_image(url, public_key, allow_downgrade, target, options)
        self._sha256 = _parse_sha256(sha256)
        self._size = size
        self._on_progress = on_progress
        self._hash = hashlib.sha256() if self._sha256 else None
        self.url = url
        self._dl = Download(url, range_size=max_http_request_size if partial_http_download else None,
                            **options)
        try:
            self._connect()
        except BaseException as e:
            self._fail(e)
            raise
        self._state = _BEGIN

    # -- the ESP-IDF calls ---------------------------------------------------

    def perform(self):
        self._expect((_BEGIN, _IN_PROGRESS, _DATA_END), "perform")
        if self._state == _DATA_END:
            return ota.OK
        self._state = _IN_PROGRESS
        try:
            window = self._target.window()
            n = self._dl.readinto(window)
            if n == 0:
                self._state = _DATA_END
                return ota.OK
            self._account(window if n == len(window) else window[:n])
            self._target.commit(n)
        except BaseException as e:
            self._fail(e)
            raise
        if self._on_progress:
            self._on_progress(self._read, self.get_image_size())
        return ota.IN_PROGRESS

    def is_complete_data_received(self):
        return self._state == _DATA_END and self._target.complete()

    def get_img_desc(self):
        # Reads on only until the target has parsed the app descriptor
        # (the first ~300 bytes): a caller can skip an image it already runs.
        self._expect((_BEGIN, _IN_PROGRESS, _DATA_END, _FINISHED), "get_img_desc")
        while self._target.desc() is None:
            if self.perform() == ota.OK and self._target.desc() is None:
                self._fail(None)
                raise OTAError(ota.ESP_ERR_OTA_VALIDATE_FAILED, "no app description in the image")
        return self._target.desc()

    def finish(self):
        self._expect((_BEGIN, _IN_PROGRESS, _DATA_END), "finish")
        try:
            if self._state != _DATA_END or not self._target.complete():
                raise OTAError(ota.ESP_ERR_OTA_VALIDATE_FAILED,
                               "image incomplete: %d bytes received" % self._read)
            self._check_download()
            self._dl.close()
            self._target.finish()
        except BaseException as e:
            self._fail(e)
            raise
        self._state = _FINISHED

    def abort(self):
        # After a failure everything is already closed: aborting again is fine.
        self._expect((_BEGIN, _IN_PROGRESS, _DATA_END, _CLOSED), "abort")
        if self._state != _CLOSED:
            self._close(keep=False)

    def get_image_len_read(self):
        return self._read

    def get_image_size(self):
        return self._dl.size if self._dl else -1

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self._state != _FINISHED and self._state != _CLOSED:
            self._close(keep=False)
        return False

    # -- inside --------------------------------------------------------------

    def _connect(self):
        # A target may keep a valid prefix of an interrupted download of this
        # URL: ask for the rest straight away. If-Range makes the server send
        # the whole entity instead when it changed, and the target then
        # starts over (it sees offset 0).
        dl = self._dl
        offset, etag = self._target.kept(self.url)
        dl.start(offset, etag)
        if self._size is not None and dl.size >= 0 and dl.size != self._size:
            raise OTAError(ota.ESP_ERR_OTA_VALIDATE_FAILED,
                           "server has %d bytes, expected %d" % (dl.size, self._size))
        self.etag = dl.etag
        self.offset = self._read = dl.offset
        self._target.begin(self)

    def _account(self, data):
        # Every byte of the entity passes here once, resumed prefix included.
        self._read += len(data)
        if self._hash:
            self._hash.update(data)

    def resumed(self, data):
        # Called by the target for each block of a resumed prefix it re-reads.
        if self._hash:
            self._hash.update(data)

    def _check_download(self):
        if self._size is not None and self._read != self._size:
            raise OTAError(ota.ESP_ERR_OTA_VALIDATE_FAILED,
                           "received %d bytes, expected %d" % (self._read, self._size))
        if self._hash and self._hash.digest() != self._sha256:
            raise OTAError(ota.ESP_ERR_OTA_VALIDATE_FAILED, "sha256 of the download does not match")

    def _expect(self, states, call):
        if self._state not in states:
            raise OTAError(ota.ESP_ERR_INVALID_STATE, "%s() not allowed now" % call)

    def _fail(self, exc):
        keep = isinstance(exc, OTAError) and exc.code in _RESUMABLE
        self._close(keep)

    def _close(self, keep):
        self._state = _CLOSED
        if self._dl:
            self._dl.close()
        self._target.abort(keep)


def _signed_image(url, public_key, allow_downgrade, target, options):
    # Fetch the signed manifest at `url`, verify it and check it against what
    # runs now. -> (image url, sha256, size)
    from ota import manifest
    from ota.http import Download, read_body
    dl = Download(url, **options)
    try:
        dl.start()
        data = read_body(dl, manifest.MAX_SIZE)
    finally:
        dl.close()
    if data is None:
        raise OTAError(ota.ESP_ERR_INVALID_SIZE, "manifest larger than %d bytes" % manifest.MAX_SIZE)
    m = manifest.parse_manifest(data, public_key)
    if m["kind"] != target.kind:
        raise OTAError(ota.ESP_ERR_INVALID_VERSION,
                       "manifest is for a %s, this update installs a %s" % (m["kind"], target.kind))
    chip, version, secure_version = target.current()
    manifest.check_manifest(m, chip, version, secure_version, allow_downgrade)
    return manifest.resolve_url(url, m["url"]), m["sha256"], m["size"]


def update(url, reboot=False, **kw):
    with Handle(url, **kw) as h:
        while h.perform() == ota.IN_PROGRESS:
            pass
        h.finish()
        desc = h.get_img_desc()
    if reboot:
        import machine
        machine.reset()
    return desc
