# esp32.Partition of MicroPython's ESP32 firmware (ports/esp32/esp32_partition.c,
# v1.2x) on the emulated board: the same signatures (positional-only where
# the C code takes no keywords), the same errors (OSError(-err, "ESP_ERR_...")
# from check_esp_err, OSError(ENOENT) for no such partition) and NOR flash
# underneath. Only Partition: the rest of the firmware's esp32 module has
# nothing to do with updates.
import _chip  # the power-on
import _part

if not _part.table:
    raise ImportError("no module named 'esp32'")  # an ESP8266 has none

_NATIVE = 4096  # the flash sector; smaller block sizes go through a cache


class Partition:
    BOOT = 0
    RUNNING = 1
    TYPE_APP = 0
    TYPE_DATA = 1

    def __init__(self, *args, **kw):
        # Partition(id, block_size=4096, /): id is BOOT, RUNNING or a label
        if kw or not 1 <= len(args) <= 2:
            raise TypeError("Partition(id, block_size=4096, /)")
        pid = args[0]
        if type(pid) is int:
            if pid == 0:
                part = _part.at(_chip.idf("boot_partition")[0])
            elif pid == 1:
                part = _part.running
            else:
                raise ValueError()
        else:
            part = (_part.find(0, 0xFF, pid) + _part.find(1, 0xFF, pid) + [None])[0]
        _init(self, part, args[1] if len(args) == 2 else _NATIVE)

    @staticmethod
    def find(type=TYPE_APP, subtype=0xFF, label=None, block_size=_NATIVE):
        return [_init(object.__new__(Partition), p, block_size)
                for p in _part.find(type, subtype, label)]

    def info(self):
        return self._p

    # The block methods take positional arguments only, as the C functions.

    # Like the C code, a block call leaves nothing on the app's heap but
    # its argument tuple (no tuple returned, no slices): garbage here would
    # be the emulation's, and its allocations slow down in a heap that the
    # app's own objects have fragmented (bench_ota.py's timings).

    def readblocks(self, *args):
        # readblocks(block_num, buf[, offset])
        a = self._addr(args)
        buf = args[1]
        if isinstance(buf, bytes):
            raise TypeError("object with buffer protocol required")
        _part.io(self._p, a, buf, 0)

    def writeblocks(self, *args):
        # writeblocks(block_num, buf): erase, then program;
        # writeblocks(block_num, buf, offset): program only (the caller
        # erased by ioctl(6, block))
        a = self._addr(args)
        buf = args[1]
        if len(args) == 2:
            if self._bs >= _NATIVE:
                _part.io(self._p, a, len(buf), 2)
            else:
                self._erase_small(a, len(buf))
        _part.io(self._p, a, buf, 1)

    def _addr(self, args):
        # -> the byte offset in the partition (a uint32_t in the C code)
        if not 2 <= len(args) <= 3:
            raise TypeError("function takes 3 to 4 positional arguments")
        return (args[0] * self._bs + (args[2] if len(args) == 3 else 0)) & 0xFFFFFFFF

    def _erase_small(self, a, n):
        # blocks smaller than a sector: erase each sector touched, writing
        # back from the cache what lies outside [a, a + n)
        p, cache = self._p, self._cache
        s = a // _NATIVE * _NATIVE
        o = a % _NATIVE
        top = a + n
        while s < top:
            if o or top < s + _NATIVE:
                _part.io(p, s, cache, 0)
            _part.io(p, s, _NATIVE, 2)
            if o:
                _part.io(p, s, memoryview(cache)[:o], 1)
            if top < s + _NATIVE:
                _part.io(p, top, memoryview(cache)[top - s:], 1)
            o = 0
            s += _NATIVE

    def ioctl(self, *args):
        # ioctl(op, arg), the block device protocol: 1-3 init/deinit/sync,
        # 4 block count, 5 block size, 6 erase a block (sector-sized only)
        if len(args) != 2:
            raise TypeError("function takes 3 positional arguments")
        op, arg = args
        if 1 <= op <= 3:
            return 0
        if op == 4:
            return self._p[3] // self._bs
        if op == 5:
            return self._bs
        if op == 6:
            if self._bs != _NATIVE:
                return -22  # -EINVAL
            _part.io(self._p, (arg * _NATIVE) & 0xFFFFFFFF, _NATIVE, 2)
            return 0

    def set_boot(self):
        # esp_ota_set_boot_partition(): verifies the whole image first
        _chip.idf("set_boot %d" % self._p[2])

    def get_next_update(self):
        # esp_ota_get_next_update_partition(): the OTA slot after this one,
        # else the first one
        slots = sorted((p for p in _part.find(0) if 0x10 <= p[1] < 0x20), key=lambda p: p[1])
        i = slots.index(self._p) + 1 if self._p in slots else 0
        return _init(object.__new__(Partition), (slots[i:] + slots + [None])[0], _NATIVE)

    @classmethod
    def mark_app_valid_cancel_rollback(cls):
        _chip.idf("mark_valid")

    def __repr__(self):
        return "<Partition type=%u, subtype=%u, address=%u, size=%u, label=%s, encrypted=%u>" % self._p


def _init(self, part, block_size):
    # esp32_partition_new(): no such partition is OSError(ENOENT)
    if part is None:
        raise OSError(2)
    self._p = part
    self._bs = block_size & 0xFFFF  # uint16_t in the C object
    self._cache = bytearray(_NATIVE) if self._bs < _NATIVE else None
    return self
