# Filesystem changes of device modules, seen one by one: tests cut the power
# at change N (kill -9 from inside the call), benchmarks count them. A
# filesystem change is what a power cut can split: rename, remove, mkdir,
# rmdir, an open for writing and, if asked, each write and close of it.
import os

_open = open
_CHANGES = ("rename", "remove", "mkdir", "rmdir")


class _Os:
    # Stands for `os` in a watched module: changes call hook first.
    def __init__(self, hook):
        self._hook = hook

    def __getattr__(self, name):
        f = getattr(os, name)
        if name not in _CHANGES:
            return f
        hook = self._hook

        def call(*a):
            hook(name, a)
            return f(*a)
        return call


class _File:
    def __init__(self, f, hook):
        self._f = f
        self._hook = hook

    def write(self, b):
        self._hook("write", ())
        return self._f.write(b)

    def close(self):
        self._hook("close", ())
        self._f.close()

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()


def watch(modules, hook, writes=False):
    # hook(name, args) runs before each change the modules make; with
    # writes, also before each write and close of a file opened to write.
    def opener(p, mode="r"):
        if "w" not in mode:
            return _open(p, mode)
        hook("open", (p,))
        f = _open(p, mode)
        return _File(f, hook) if writes else f
    for m in modules:
        m.os = _Os(hook)
        m.open = opener
