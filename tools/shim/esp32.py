# esp32.Partition of MicroPython's ESP32 firmware (ports/esp32/esp32_partition.c,
# v1.2x) on the emulated board: same signatures, same errors (OSError(-err,
# "ESP_ERR_...") from check_esp_err), same NOR-flash behaviour underneath.
import _board

if _board.flash is None:
    raise ImportError("no module named 'esp32'")  # an ESP8266 has none

_NATIVE = 4096


class Partition:
    BOOT = 0
    RUNNING = 1
    TYPE_APP = 0
    TYPE_DATA = 1

    def __init__(self, *args, **kw):
        # Partition(id, block_size=4096, /): positional only
        if kw:
            raise TypeError("function doesn't take keyword arguments")
        if not 1 <= len(args) <= 2:
            raise TypeError("function takes 1 to 2 positional arguments")
        pid = args[0]
        if type(pid) is int:
            if pid == 0:
                part = _board.load("_otadata").boot_partition()
            elif pid == 1:
                part = _board.running
            else:
                raise ValueError()
        else:
            if not isinstance(pid, str):
                raise TypeError("can't convert %s to str" % type(pid).__name__)
            part = _board.first(0, 0xFF, pid) or _board.first(1, 0xFF, pid)
        _init(self, part, args[1] if len(args) == 2 else _NATIVE)

    @staticmethod
    def find(type=TYPE_APP, subtype=0xFF, label=None, block_size=_NATIVE):
        return [_new(p, block_size) for p in _board.find(type, subtype, label)]

    def info(self):
        return self._p

    def readblocks(self, block_num, buf, *offset):
        # readblocks(block_num, buf[, offset]), positional only
        if isinstance(buf, bytes):
            raise TypeError("object with buffer protocol required")
        _board.part_read(self._p, self._offset(block_num, offset), buf)

    def writeblocks(self, block_num, buf, *offset):
        # writeblocks(block_num, buf): erase, then program;
        # writeblocks(block_num, buf, offset): program only (erasing was the
        # caller's job, by ioctl(6, block))
        off = self._offset(block_num, offset)
        if not offset:
            if self._bs >= _NATIVE:
                _board.part_erase(self._p, off, len(buf))
            else:
                self._erase_small(off, len(buf))
        _board.part_write(self._p, off, buf)

    def _offset(self, block_num, offset):
        if len(offset) > 1:
            raise TypeError("function takes 3 to 4 positional arguments")
        off = block_num * self._bs + (offset[0] if offset else 0)
        return off & 0xFFFFFFFF  # uint32_t in the C code

    def _erase_small(self, off, n):
        # blocks smaller than a sector: erase each touched sector, putting
        # back what lies outside [off, off + n) from the block cache
        p, cache = self._p, self._cache
        addr = off // _NATIVE * _NATIVE
        o = off % _NATIVE
        top = off + n
        while addr < top:
            if o > 0 or top < addr + _NATIVE:
                _board.part_read(p, addr, cache)
            _board.part_erase(p, addr, _NATIVE)
            if o > 0:
                _board.part_write(p, addr, memoryview(cache)[:o])
            if top < addr + _NATIVE:
                _board.part_write(p, top, memoryview(cache)[top - addr:])
            o = 0
            addr += _NATIVE

    def ioctl(self, op, arg):
        if op in (1, 2, 3):  # INIT, DEINIT, SYNC
            return 0
        if op == 4:  # BLOCK_COUNT
            return self._p[3] // self._bs
        if op == 5:  # BLOCK_SIZE
            return self._bs
        if op == 6:  # BLOCK_ERASE
            if self._bs != _NATIVE:
                return -22  # -EINVAL
            _board.part_erase(self._p, (arg * _NATIVE) & 0xFFFFFFFF, _NATIVE)
            return 0
        return None

    def set_boot(self):
        _board.load("_otadata").set_boot(self._p)

    def get_next_update(self):
        return _new(_board.load("_otadata").next_update(self._p), _NATIVE)

    @classmethod
    def mark_app_valid_cancel_rollback(cls):
        _board.load("_otadata").mark_valid()

    def __repr__(self):
        p = self._p
        return "<Partition type=%u, subtype=%u, address=%u, size=%u, label=%s, encrypted=%u>" % (
            p[0], p[1], p[2], p[3], p[4], p[5])


def _init(self, part, block_size):
    # esp32_partition_new(): no such partition is OSError(ENOENT)
    if part is None:
        raise OSError(2)
    self._p = part
    self._bs = block_size & 0xFFFF  # uint16_t in the C object
    self._cache = bytearray(_NATIVE) if self._bs < _NATIVE else None


def _new(part, block_size):
    self = object.__new__(Partition)
    _init(self, part, block_size)
    return self
