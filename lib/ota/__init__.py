# ota: over-the-air updates for MicroPython on ESP32 and ESP8266.
#
# The API mirrors ESP-IDF's esp_https_ota / esp_ota_ops (docs/API.md).
# This file holds only the constants, the error type and thin entry points;
# everything else is imported on first use, so a board pays in RAM only for
# the path it runs.
try:
    from micropython import const
except ImportError:  # CPython, the second runtime of the host tests
    def const(x):
        return x

OK = const(0)
ESP_FAIL = const(-1)
ESP_ERR_NO_MEM = const(0x101)
ESP_ERR_INVALID_ARG = const(0x102)
ESP_ERR_INVALID_STATE = const(0x103)
ESP_ERR_INVALID_SIZE = const(0x104)
ESP_ERR_NOT_FOUND = const(0x105)
ESP_ERR_NOT_SUPPORTED = const(0x106)
ESP_ERR_TIMEOUT = const(0x107)
ESP_ERR_INVALID_RESPONSE = const(0x108)
ESP_ERR_INVALID_VERSION = const(0x10A)
ESP_ERR_OTA_VALIDATE_FAILED = const(0x1503)
ESP_ERR_OTA_SMALL_SEC_VER = const(0x1504)
ESP_ERR_OTA_ROLLBACK_FAILED = const(0x1505)
ESP_ERR_OTA_ROLLBACK_INVALID_STATE = const(0x1506)
ESP_ERR_FLASH_OP_FAIL = const(0x6001)
ESP_ERR_FLASH_OP_TIMEOUT = const(0x6002)
ESP_ERR_HTTP_MAX_REDIRECT = const(0x7001)
ESP_ERR_HTTP_CONNECT = const(0x7002)
ESP_ERR_HTTP_FETCH_HEADER = const(0x7004)  # ESP_ERR_HTTP_BASE + 4 in esp_http_client.h
ESP_ERR_HTTP_NOT_MODIFIED = const(0x7009)
ESP_ERR_HTTP_INCOMPLETE_DATA = const(0x700C)
IN_PROGRESS = const(0x9001)  # ESP_ERR_HTTPS_OTA_IN_PROGRESS


class OTAError(Exception):
    # code: the esp_err_t value; name: its symbolic name; http_status: the
    # server's status for ESP_FAIL after an HTTP error, else None.
    def __init__(self, code, msg="", http_status=None):
        super().__init__(code, msg)
        self.code = code
        self.msg = msg
        self.http_status = http_status

    @property
    def name(self):
        # The module constant with this value: the constants carry ESP-IDF's
        # names, so no second table of names costs a board RAM.
        code = self.code
        if code == IN_PROGRESS:
            return "ESP_ERR_HTTPS_OTA_IN_PROGRESS"
        if code == OK:
            return "ESP_OK"
        g = globals()
        for k in g:
            if k.startswith("ESP_") and g[k] == code:
                return k
        return "ESP_ERR_0x%X" % code

    def __str__(self):
        return "%s: %s" % (self.name, self.msg) if self.msg else self.name


# The entry points, each imported from its module on first use and then
# kept here (a module __getattr__, as micropython-lib's asyncio does): a
# board pays in RAM only for the path it runs, and for one small table
# rather than a wrapper function per name.
_LAZY = {"begin": "client", "update": "client", "AppBundle": "bundle",
         "mark_app_valid": "app", "rollback": "app", "running_app": "app",
         "status": "app", "boot": "app", "last_invalid_app": "app", "check": "checkin", "report": "checkin"}


def __getattr__(name):
    mod = _LAZY.get(name)
    if mod is None:
        raise AttributeError(name)
    value = getattr(__import__("ota." + mod, None, None, (name,)), name)
    globals()[name] = value
    return value
