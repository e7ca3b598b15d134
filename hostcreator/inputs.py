"""Files given as input (the configuration, the password, the SSH keys): read only when
they are what they claim, bounded, and decoded with errors that name the file and byte.

A FIFO is opened without blocking and refused, so is a device or a directory; a file
larger than its limit is refused before it is read (`--config /dev/zero` would
otherwise read until memory runs out). /dev/null is taken as an empty file: it is how
people say "no configuration file".
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from hostcreator.errors import InvalidInput

KIB = 1024
DEV_NULL = os.makedev(1, 3)


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def read_bytes(path: Path, what: str, limit: int) -> bytes:
    """PATH's content; WHAT names it in errors (`ROOT_PASSWORD_FILE`, `config file`)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as exc:
        raise InvalidInput(f"{what}: cannot read {path}: {exc.strerror}") from None
    except ValueError:  # a NUL byte in the name
        raise InvalidInput(f"{what}: {path!r} holds a NUL byte") from None
    # Looked at before a file object is made of it (os.fdopen refuses a directory).
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        if stat.S_ISCHR(st.st_mode) and st.st_rdev == DEV_NULL:
            return b""
        raise InvalidInput(f"{what}: {path} is {_kind(st.st_mode)}, not a file")
    with os.fdopen(fd, "rb") as f:
        if st.st_size > limit:
            raise InvalidInput(f"{what}: {path} has {st.st_size} bytes, more than the "
                               f"{limit // KIB} KiB such a file may have")
        return f.read(limit + 1)[:limit]


def decode(data: bytes, path: Path, what: str) -> str:
    try:
        return data.decode()
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise InvalidInput(f"{what}: {path}:{line}: not UTF-8 (byte {exc.start}: "
                           f"{data[exc.start]:#04x})", hint="write the file in UTF-8") from None


def read_text(path: Path, what: str, limit: int) -> str:
    """PATH as UTF-8 text, checked as read_bytes checks it."""
    return decode(read_bytes(path, what, limit), path, what)
