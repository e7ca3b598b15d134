"""One hostcreator process at a time per VM name: a lock file holding the PID.

flock() locks vanish with their process, so a crashed run never leaves a
lock behind, whatever killed it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Iterator
from pathlib import Path

from hostcreator.errors import HostCreatorError
from hostcreator.paths import VmPaths


class Busy(HostCreatorError):
    """Another hostcreator process works on the same VM (the message names it)."""

    exit_code = 4


@contextlib.contextmanager
def vm_lock(vm: VmPaths, purpose: str) -> Iterator[None]:
    vm.lock.parent.mkdir(parents=True, exist_ok=True)
    fd = _locked(vm)
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{purpose} by PID {os.getpid()}\n".encode(), 0)
        yield
        os.ftruncate(fd, 0)
    finally:
        os.close(fd)


def _locked(vm: VmPaths) -> int:
    """NAME's lock file, open and locked: the file at its path, not one that `hostcreator
    remove` unlinked between our open and our lock (then the new file is taken)."""
    while True:
        fd = os.open(vm.lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            raise Busy(f"{vm.name} is busy: {holder}",
                       hint="wait until it ends; other names can be worked on meanwhile") from None
        try:
            if os.stat(vm.lock).st_ino == os.fstat(fd).st_ino:
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)


def _holder(fd: int) -> str:
    """What the lock file says of its holder, who may have just taken it and not yet written."""
    for _ in range(20):
        text = os.pread(fd, 200, 0).decode(errors="replace").strip()
        if text:
            return text
        time.sleep(0.05)
    return "another hostcreator process"


def held_by(path: Path) -> str | None:
    """Who holds the lock PATH now ('create-debian by PID 123'), or None when nobody does."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _holder(fd)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)
