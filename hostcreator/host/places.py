"""Where a command writes: directories that can be made and written, and what a file
there can hold - checked before anything is written, so that a bad directory setting is
an input error instead of a failure in the middle of a build.

The test is the file system's own answer, not a guess from its type: an unnamed
temporary file (O_TMPFILE) is opened in the nearest existing directory, and for an
image file truncated to the size it will have. The file never has a name and goes
with the descriptor; the directory is not changed (not even its modification time).
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterable
from pathlib import Path

from hostcreator.config import BY_KEY, Config
from hostcreator.errors import InvalidInput

# The largest file offset Linux has (MAX_LFS_FILESIZE): beyond any file system.
MAX_FILE_SIZE = 2**63 - 1


def nearest_existing(path: Path) -> Path:
    """PATH, or the closest of its parents that exists (the directory mkdir -p starts in)."""
    return next((p for p in (path, *path.parents) if os.path.lexists(p)), Path("/"))


def probe(directory: Path, size: int = 0) -> OSError | None:
    """Why no file of SIZE bytes can be made in DIRECTORY (an existing one), or None."""
    try:
        fd = os.open(directory, os.O_TMPFILE | os.O_WRONLY | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        if exc.errno in (errno.EOPNOTSUPP, errno.EISDIR) and _holds_files(directory):
            return None  # a file system without O_TMPFILE (NFS, vfat): taken on trust
        return exc
    try:
        if size:
            os.ftruncate(fd, size)
    except OSError as exc:
        return exc
    finally:
        os.close(fd)
    return None


def _holds_files(directory: Path) -> bool:
    """Not a kernel file system such as /proc or /sys (they have no blocks at all), and
    writable for us."""
    st = os.statvfs(directory)
    return st.f_blocks > 0 and os.access(directory, os.W_OK | os.X_OK)


def check_writable(config: Config, keys: Iterable[str]) -> None:
    """The directories of KEYS (settings) exist or can be made, and files can be written in
    them; an error names the key and where its value came from."""
    for key in keys:
        path = getattr(config, BY_KEY[key].field)
        if path is not None:
            check_directory(path, f"{config.origin(key)}: {key}")


def check_directory(path: Path, where: str) -> None:
    existing = nearest_existing(path)
    try:
        failed = probe(existing)
    except OSError as exc:
        failed = exc
    if failed is None:
        return
    if existing == path:
        message = f"no file can be written in {path} ({failed.strerror})"
    else:
        message = f"{path} cannot be made: nothing can be made in {existing} ({failed.strerror})"
    raise InvalidInput(f"{where}: {message}",
                       hint="set it to a directory on a writable file system")


def check_file_size(path: Path, size: int, what: str,
                    hint: str = "choose a smaller SIZE, or IMAGE_DIR on another file system"
                    ) -> None:
    """A file of SIZE bytes fits the file system PATH will be on (its maximum file size)."""
    if size > MAX_FILE_SIZE:
        raise InvalidInput(f"{what}: {size / 2**30:.0f} GiB are more than any file can have")
    directory = nearest_existing(path.parent)
    failed = probe(directory, size)
    if failed is not None and failed.errno == errno.EFBIG:
        raise InvalidInput(f"{what}: {size / 2**30:.0f} GiB are more than a file on the file "
                           f"system of {directory} can have ({failed.strerror})",
                           hint=hint)
    if failed is not None:
        raise InvalidInput(f"{what}: no file can be made in {directory} ({failed.strerror})")


def free_bytes(path: Path) -> int:
    """The bytes still free on PATH's file system (as for any user: the reserve left)."""
    st = os.statvfs(nearest_existing(path))
    return st.f_bavail * st.f_frsize


def check_free(path: Path, needed: int, what: str, hint: str) -> None:
    """NEEDED bytes fit on PATH's file system; else WHAT (the writer) is refused."""
    free = free_bytes(path)
    if needed > free:
        raise InvalidInput(f"{what} needs {needed / 2**30:.1f} GiB, {free / 2**30:.1f} GiB are "
                           f"free on {nearest_existing(path)}", hint=hint)
