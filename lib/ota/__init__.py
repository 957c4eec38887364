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
IN_PROGRESS = const(0x9001)  # ESP_ERR_HTTPS_OTA_IN_PROGRESS
# The error codes (ota.ESP_ERR_...) are in ota.errors, loaded on first use
# (__getattr__ below): only a failure needs them.


class OTAError(Exception):
    # code: the esp_err_t value; name: its symbolic name; msg: what went
    # wrong; http_status: the server's status for ESP_FAIL after an HTTP
    # error, else None. The firmware update path passes msg as (text number,
    # values...): the text is made from ota.texts when it is read.
    def __init__(self, code, msg="", http_status=None):
        super().__init__(code, msg)
        self.code = code
        self._msg = msg
        self.http_status = http_status

    @property
    def msg(self):
        m = self._msg
        if isinstance(m, tuple):
            from ota.texts import text
            m = text(m)
        return m

    @property
    def name(self):
        from ota.errors import name
        return name(self.code)

    def __str__(self):
        return "%s: %s" % (self.name, self.msg) if self.msg else self.name


# The entry points, each imported from its module on first use (a module
# __getattr__, as micropython-lib's asyncio does): a board pays in RAM only
# for the path it runs. The table is one string (" name:module ..."):
# frozen into a firmware it stays in flash, where a dict would be built in
# RAM at import. Nothing is kept here: the module is looked up again at each
# use (sys.modules has it), so that this module's dict does not grow, a
# table of 368 bytes in one piece on the unix port, while an update is
# running on a full heap.
_LAZY = (" begin:client update:client AppBundle:bundle mark_app_valid:app rollback:app"
         " running_app:app status:app boot:app last_invalid_app:app check:checkin"
         " report:checkin ")


def __getattr__(name):
    if name.startswith("ESP_"):
        mod = "errors"
    else:
        i = _LAZY.find(" %s:" % name)
        if i < 0 or ":" in name or " " in name:
            raise AttributeError(name)
        i += len(name) + 2
        mod = _LAZY[i:_LAZY.find(" ", i)]
    return getattr(__import__("ota." + mod, None, None, (name,)), name)


def _unload(*names):
    # Unload ota's modules `names` that one step of an update needed once:
    # on an ESP8266 their heap goes to what comes next, and the next import
    # loads them anew. Whoever still holds a function of one keeps that
    # working. CPython has the room, and its tests hold the modules.
    import sys
    if sys.implementation.name == "micropython":
        g = globals()
        for n in names:
            sys.modules.pop("ota." + n, None)
            g.pop(n, None)
