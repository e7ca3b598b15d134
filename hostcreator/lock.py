"""One hostcreator process at a time per VM name: a lock file holding the PID.

flock() locks vanish with their process, so a crashed run never leaves a
lock behind, whatever killed it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from hostcreator.errors import HostCreatorError


class Busy(HostCreatorError):
    exit_code = 4


@contextlib.contextmanager
def vm_lock(state_dir: Path, name: str, purpose: str) -> Iterator[None]:
    locks = state_dir / "locks"
    locks.mkdir(parents=True, exist_ok=True)
    path = locks / f"{name}.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "unknown"
            raise Busy(f"{name} is busy: {holder}") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{purpose} by PID {os.getpid()}\n".encode(), 0)
        yield
        os.ftruncate(fd, 0)
    finally:
        os.close(fd)
