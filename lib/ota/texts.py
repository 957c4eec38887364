# ota.texts: the messages of the failures the firmware update path raises
# (ota.client, ota.firmware, ota.url, ota.http, ota.image) and the app-bundle
# target (ota.bundle). Those modules raise
# OTAError(code, (text number, values...)) and OTAError.msg makes the text
# from TEXTS when it is read: a board whose update goes well never has them
# in its heap. A text's number is the _T_ constant of the module that
# raises it (tests/test_device_code.py checks that they agree).
TEXTS = (
    # ota.client
    "size must be a positive int",  # 0 _T_SIZE_ARG
    "max_http_request_size must be > 0",  # 1 _T_WINDOW_ARG
    "sha256 must be 64 hex digits",  # 2 _T_SHA_ARG
    "server has %d bytes, expected %d",  # 3 _T_SIZE
    "no app description in the image",  # 4 _T_NO_DESC
    "image incomplete: %d bytes received",  # 5 _T_INCOMPLETE
    "sha256 of the download does not match",  # 6 _T_SHA
    "%s() not allowed now",  # 7 _T_ORDER
    # ota.firmware
    "firmware OTA needs the esp32 module; use target=ota.AppBundle(...)",  # 8 _T_NO_ESP32
    "no app image in %s",  # 9 _T_NO_APP
    "the running app is not confirmed yet: call ota.mark_app_valid() first",  # 10 _T_PENDING
    "image of %d bytes does not fit partition %s (%d bytes)",  # 11 _T_TOO_BIG
    "set_boot refused the image: %s",  # 12 _T_SET_BOOT
    "flash write of sector %d failed: %s",  # 13 _T_WRITE
    # ota.url
    "bad URL %r",  # 14 _T_URL
    # ota.http
    "no download in progress",  # 15 _T_IDLE
    "response head too long",  # 16 _T_HEAD_LONG
    "more than %d redirects",  # 17 _T_REDIRECTS
    "bad Content-Length",  # 18 _T_CLEN
    "the image changed on the server",  # 19 _T_CHANGED
    "the server ignored Range",  # 20 _T_NO_RANGE
    "304 Not Modified",  # 21 _T_NOT_MODIFIED
    "HTTP %d from %s",  # 22 _T_STATUS
    "bad head",  # 23 _T_HEAD
    "bad status line",  # 24 _T_STATUS_LINE
    "no response from %s: %r",  # 25 _T_NO_RESPONSE
    "http:// needs allow_http=True",  # 26 _T_HTTP
    "https:// needs cert_pem",  # 27 _T_HTTPS
    "cannot connect to %s port %d: %r",  # 28 _T_CONNECT
    # ota.image
    "truncated signature block after the image",  # 29 _T_SIG_CUT
    "truncated image: %d of %s bytes",  # 30 _T_CUT
    "SHA-256 digest mismatch",  # 31 _T_DIGEST
    "image larger than the partition (%d bytes)",  # 32 _T_TOO_BIG
    "no app descriptor: not an app image",  # 33 _T_NO_DESC
    "secure_version %d < %d",  # 34 _T_SEC_VER
    "checksum 0x%02X, computed 0x%02X",  # 35 _T_CHECKSUM
    "not an app image (magic 0x%02X)",  # 36 _T_MAGIC
    "bad segment count %d",  # 37 _T_SEGMENTS
    "image is for %s, this chip is %s",  # 38 _T_CHIP
    "image needs chip revision v%d.%d..v%d.%d, this is v%d.%d",  # 39 _T_REVISION
    "segment length 0x%X not a multiple of 4",  # 40 _T_SEG_LEN
    "segment at 0x%04X%04X misaligned for flash mapping",  # 41 _T_MAPPING
    # ota.bundle
    "app path must be absolute",  # 42 _T_PATH
    "confirm the installed bundle first",  # 43 _T_CONFIRM
    "no download",  # 44 _T_IDLE
    "data after the bundle",  # 45 _T_TRAILING
    "truncated bundle",  # 46 _T_TRUNCATED
    "app fs: %s",  # 47 _T_FS
    "needs %d blocks, %d free",  # 48 _T_ROOM
    "not an app bundle",  # 49 _T_MAGIC
    "bundle format %d.%d",  # 50 _T_FORMAT
    "bad bundle header",  # 51 _T_HEADER
    "%d bytes, not the bundle's %d",  # 52 _T_SIZE
    "secure_version %d < installed %d",  # 53 _T_SEC_VER
    "%s is not newer than the installed %s",  # 54 _T_OLDER
    "header: SHA-256 mismatch",  # 55 _T_HEADER_SHA
    "bad name %s",  # 56 _T_NAME
    "%s: duplicate or out of order",  # 57 _T_ORDER
    "%s is a file",  # 58 _T_IS_FILE
    "%s: SHA-256 mismatch",  # 59 _T_FILE_SHA
)


def text(msg):
    # OTAError.msg of (number, values...)
    t = TEXTS[msg[0]]
    return t % msg[1:] if len(msg) > 1 else t
