# ESP-IDF's partition access over the flash (esp_partition_find / read /
# write / erase_range). A partition is the tuple (type, subtype, address,
# size, label, encrypted), as Partition.info() gives it. Who powers the board
# on fills in `table` and `running`: _chip in the app's process, _idf in the
# helper's.
import _env
import _flash

table = running = None  # the partition table, the running app's partition


def find(ptype, sub=0xFF, label=None):
    # esp_partition_find(): table order; 0xFF is "any" type / subtype
    return [p for p in table
            if (ptype == 0xFF or p[0] == ptype) and (sub == 0xFF or p[1] == sub)
            and (label is None or p[4] == label)]


def at(addr):
    return ([p for p in table if p[2] == addr] or [None])[0]


def io(p, off, buf, kind):
    # esp_partition_read / write / erase_range (partition_target.c):
    # kind 0 reads into buf, 1 programs buf, 2 erases buf (a length) bytes
    n = buf if kind == 2 else len(buf)
    if off > p[3]:
        raise _env.esp_error(0x102)
    if n > p[3] - off:
        raise _env.esp_error(0x104)
    if kind == 2 and n % _flash.SECTOR:
        raise _env.esp_error(0x104)
    if kind == 2 and off % _flash.SECTOR:
        raise _env.esp_error(0x102)
    a = p[2] + off
    if kind:
        # CONFIG_SPI_FLASH_DANGEROUS_WRITE_ABORTS (ESP-IDF's default): writing
        # the bootloader, the partition table or the running app aborts.
        r = running
        if a <= 0x8C00 or r[2] <= a < r[2] + r[3] or a < r[2] < a + n:
            print("abort() was called: unsafe flash write at 0x%x" % a)
            _flash.halt("panic")
    if kind == 0:
        _flash.read(a, buf)
    elif kind == 2:
        _flash.erase(a, n)
    elif n:
        _flash.program(a, buf)
