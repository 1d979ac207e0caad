"""Direct file access for the passthrough tests (root, an observer):
whole-file read and write, a command with a deadline, and the Linux calls
Python lacks (renameat2, fallocate). Not re-exported by the package: import
these short names from helpers.posix."""

import ctypes
import os
import subprocess

from .env import TIMEOUT

RENAME_NOREPLACE = 1
RENAME_EXCHANGE = 2
AT_FDCWD = -100
FALLOC_FL_KEEP_SIZE = 1
FALLOC_FL_PUNCH_HOLE = 2
MiB = 1 << 20
libc = ctypes.CDLL(None, use_errno=True)


def write(path, data, mode='wb'):
    with open(path, mode) as f:
        f.write(data)


def read(path):
    with open(path, 'rb') as f:
        return f.read()


def renameat2(old, new, flags):
    """renameat2(2) through libc; returns 0 or the errno."""
    ret = libc.renameat2(AT_FDCWD, os.fsencode(old), AT_FDCWD, os.fsencode(new),
                         ctypes.c_uint(flags))
    return 0 if ret == 0 else ctypes.get_errno()


def fallocate(fd, mode, offset, length):
    """fallocate(2) itself: posix_fallocate() would fall back to writing
    zeros and hide an unsupported operation."""
    libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
    ret = libc.fallocate(fd, mode, offset, length)
    if ret != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))


def run(cmd, **kw):
    kw.setdefault('stdin', subprocess.DEVNULL)
    kw.setdefault('capture_output', True)
    kw.setdefault('timeout', TIMEOUT * 3)
    if isinstance(cmd, str):
        cmd = ['/bin/sh', '-c', cmd]
    return subprocess.run(cmd, **kw)
