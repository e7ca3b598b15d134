"""The C library, for the system calls Python's os module lacks (unshare, syncfs, fallocate)."""

from __future__ import annotations

import ctypes
import os

libc = ctypes.CDLL(None, use_errno=True)
libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]


def last_error() -> str:
    """What the last failed call of libc said, as os.strerror words it."""
    return os.strerror(ctypes.get_errno())
