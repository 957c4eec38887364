# ota.errors: ESP-IDF's esp_err_t values under their names, and the name of
# a value. Only a failure, or code that names an error, needs them: ota
# loads this module on the first access to one of them (ota.ESP_ERR_...,
# OTAError.name), so a firmware update that goes well never gives it heap.
ESP_FAIL = -1
ESP_ERR_NO_MEM = 0x101
ESP_ERR_INVALID_ARG = 0x102
ESP_ERR_INVALID_STATE = 0x103
ESP_ERR_INVALID_SIZE = 0x104
ESP_ERR_NOT_FOUND = 0x105
ESP_ERR_NOT_SUPPORTED = 0x106
ESP_ERR_TIMEOUT = 0x107
ESP_ERR_INVALID_RESPONSE = 0x108
ESP_ERR_INVALID_VERSION = 0x10A
ESP_ERR_OTA_VALIDATE_FAILED = 0x1503
ESP_ERR_OTA_SMALL_SEC_VER = 0x1504
ESP_ERR_OTA_ROLLBACK_FAILED = 0x1505
ESP_ERR_OTA_ROLLBACK_INVALID_STATE = 0x1506
ESP_ERR_FLASH_OP_FAIL = 0x6001
ESP_ERR_FLASH_OP_TIMEOUT = 0x6002
ESP_ERR_HTTP_MAX_REDIRECT = 0x7001
ESP_ERR_HTTP_CONNECT = 0x7002
ESP_ERR_HTTP_FETCH_HEADER = 0x7004  # ESP_ERR_HTTP_BASE + 4 in esp_http_client.h
ESP_ERR_HTTP_NOT_MODIFIED = 0x7009
ESP_ERR_HTTP_INCOMPLETE_DATA = 0x700C


def name(code):
    # The constant with this value: the constants carry ESP-IDF's names, so
    # no second table of names.
    if code == 0x9001:
        return "ESP_ERR_HTTPS_OTA_IN_PROGRESS"
    if code == 0:
        return "ESP_OK"
    g = globals()
    for k in g:
        if k.startswith("ESP_") and g[k] == code:
            return k
    return "ESP_ERR_0x%X" % code
