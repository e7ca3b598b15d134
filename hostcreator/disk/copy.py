"""A copy of an image file, as fast as its file system allows, that stays sparse.

A reflink (the FICLONE ioctl: XFS, btrfs) shares every block with the source
and takes a moment whatever the size. Where the file system has none (ext4),
only the allocated extents are copied: SEEK_DATA and SEEK_HOLE walk the
source, copy_file_range moves each extent in the kernel, and the holes stay
holes. The source is opened read-only and never written.

A logical volume (a block device: no extents to seek, no reflink) is read whole,
and its zero blocks become holes in the copy (export's sealed copy of an LVM VM);
lvcopy.py makes LVs from LVs.

The copy is written under a temporary name beside its target and gets the
target's name only when it is complete (publish()), by a link that never
replaces an existing file: an interrupted copy leaves no file that looks like a
VM's disk, and the temporary one is removed by the undo registered on the stack.
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
import tempfile
from contextlib import ExitStack
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from hostcreator.errors import HostCreatorError
from hostcreator.log import logger

FICLONE = 0x40049409
# copy_file_range moves at most this much per call; large enough to be few calls.
CHUNK = 1 << 30
# A block device is read in pieces of this size; a piece of zeros is a hole in the copy.
BLOCK = 4 << 20
ZEROS = bytes(BLOCK)
# What reflinks() clones: more than a file system keeps inline in its metadata (btrfs
# clones no inline extent), a whole number of blocks.
REFLINK_PROBE_BYTES = 64 << 10


class Method(StrEnum):
    REFLINK = "reflink"
    EXTENTS = "copy of the allocated extents"
    DEVICE = "sparse copy of the logical volume"
    THIN_SNAPSHOT = "thin snapshot"
    LV_COPY = "copy into a new logical volume"


@dataclass(frozen=True)
class Copied:
    temporary: Path
    method: Method
    size: int  # the apparent size, as the source's
    allocated: int  # the bytes the source has allocated


def allocated_bytes(path: Path) -> int:
    """The bytes PATH has allocated; a block device's are all of it (as far as this host
    can tell: a thin volume may hold fewer)."""
    info = os.stat(path)
    if stat.S_ISBLK(info.st_mode):
        return size_of(path)
    return info.st_blocks * 512


def size_of(path: Path) -> int:
    """The apparent size of an image file, or the size of a block device."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return os.lseek(fd, 0, os.SEEK_END)
    finally:
        os.close(fd)


def temporary_name(target: Path, pid: int | None = None, kind: str = "clone") -> Path:
    """Hidden and unlike any VM's disk name, so no command takes it for one; KIND names
    the command that makes it."""
    return target.with_name(f".{target.name}.{kind}-{os.getpid() if pid is None else pid}")


def stale(target: Path, kind: str = "clone") -> list[Path]:
    """Temporary copies for TARGET whose process is gone (a clone killed by SIGKILL)."""
    found = []
    for path in target.parent.glob(f".{target.name}.{kind}-*"):
        pid = path.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            found.append(path)
    return sorted(found)


def _reflink(source: int, target: int) -> bool:
    try:
        fcntl.ioctl(target, FICLONE, source)
        return True
    except OSError as exc:
        # No reflinks here (ext4), or not between these file systems.
        if exc.errno in (errno.EOPNOTSUPP, errno.ENOTTY, errno.EXDEV, errno.EINVAL,
                         errno.ENOSYS):
            return False
        raise


def reflinks(directory: Path) -> bool:
    """Whether the file system of DIRECTORY makes reflinks, as copy() would ask it: a small
    file cloned there. Both files are unnamed (O_TMPFILE, else unlinked at once) and go
    with their descriptors."""
    with tempfile.TemporaryFile(dir=directory) as source, \
            tempfile.TemporaryFile(dir=directory) as target:
        source.write(b"\1" * REFLINK_PROBE_BYTES)
        source.flush()
        return _reflink(source.fileno(), target.fileno())


def extents(fd: int, size: int) -> list[tuple[int, int]]:
    """(offset, length) of every data extent of FD, from SEEK_DATA and SEEK_HOLE."""
    found = []
    offset = 0
    while offset < size:
        try:
            start = os.lseek(fd, offset, os.SEEK_DATA)
        except OSError as exc:
            if exc.errno == errno.ENXIO:  # only a hole is left
                break
            raise
        end = os.lseek(fd, start, os.SEEK_HOLE)
        found.append((start, end - start))
        offset = end
    return found


def _copy_range(source: int, target: int, offset: int, length: int) -> None:
    done = 0
    while done < length:
        moved = os.copy_file_range(source, target, min(CHUNK, length - done),
                                   offset + done, offset + done)
        if moved == 0:
            raise HostCreatorError(f"the source ended at {offset + done} bytes while copied")
        done += moved


def copy_extents(source: int, target: int, size: int) -> None:
    for offset, length in extents(source, size):
        _copy_range(source, target, offset, length)
    os.ftruncate(target, size)


def copy_blocks(source: int, target: int, size: int, *, holes: bool) -> None:
    """SIZE bytes of SOURCE to TARGET in BLOCK pieces; with HOLES, a piece of zeros is not
    written (TARGET reads zeros there already: a new file, a new thin volume)."""
    offset = 0
    while offset < size:
        piece = os.pread(source, min(BLOCK, size - offset), offset)
        if not piece:
            raise HostCreatorError(f"the source ended at {offset} bytes while copied")
        if not (holes and piece == ZEROS[:len(piece)]):
            view = memoryview(piece)
            while view:
                written = os.pwrite(target, view, offset + len(piece) - len(view))
                view = view[written:]
        offset += len(piece)


def copy(stack: ExitStack, source: Path, target: Path, kind: str = "clone") -> Copied:
    """Copy SOURCE (an image file or a block device) to a temporary file beside TARGET;
    its removal is registered on STACK until publish() names it TARGET."""
    temporary = temporary_name(target, kind=kind)
    src = os.open(source, os.O_RDONLY | os.O_CLOEXEC)
    try:
        info = os.fstat(src)
        device = stat.S_ISBLK(info.st_mode)
        size = os.lseek(src, 0, os.SEEK_END) if device else info.st_size
        dst = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        stack.callback(remove, temporary)
        try:
            if device:
                method = Method.DEVICE  # a block device's mode says nothing of its data's
                copy_blocks(src, dst, size, holes=True)
                os.ftruncate(dst, size)
            else:
                os.fchmod(dst, info.st_mode & 0o777)  # as private as the source
                method = Method.REFLINK if _reflink(src, dst) else Method.EXTENTS
                if method is Method.EXTENTS:
                    copy_extents(src, dst, size)
            os.fsync(dst)
        finally:
            os.close(dst)
    finally:
        os.close(src)
    logger.debug("copied %s to %s (%s)", source, temporary, method)
    return Copied(temporary, method, size, allocated_bytes(source))


def publish(copied: Copied, target: Path) -> None:
    """Give the complete copy TARGET's name; an existing TARGET is never replaced."""
    publish_file(copied.temporary, target)


def publish_file(temporary: Path, target: Path, replace: bool = False) -> None:
    """Give the complete file TEMPORARY TARGET's name (on the same file system); an
    existing TARGET is replaced only when asked."""
    if replace:
        os.replace(temporary, target)
    else:
        try:
            os.link(temporary, target)
        except FileExistsError:
            raise HostCreatorError(f"{target} appeared while the copy was made; it was left "
                                   "as it is") from None
        os.unlink(temporary)
    fd = os.open(target.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def remove(path: Path) -> None:
    """A teardown step: logs and goes on."""
    try:
        path.unlink()
    except FileNotFoundError:
        pass
    except OSError as exc:
        logger.warning("warning: could not remove %s: %s", path, exc.strerror)
