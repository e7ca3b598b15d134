"""Mounting with the undo registered at once, and unmounting whole trees.

Teardown functions log and go on: they never raise over the real error.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import time
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import NamedTuple

from hostcreator.errors import DiskInUse, HostCreatorError
from hostcreator.log import logger
from hostcreator.run import run

STOP_WAIT_SECONDS = 5.0


class MountBusy(DiskInUse):
    """A mount a person may be using is still in use: nothing is stopped behind their back."""


def _unescape(field: str) -> str:
    # /proc/self/mountinfo escapes space, tab, newline and backslash as octal.
    return field.encode().decode("unicode_escape").encode("latin-1").decode("utf-8", "replace")


class MountEntry(NamedTuple):
    point: Path
    source: str
    device: str  # "MAJOR:MINOR" of the mounted file system


def mountinfo(path: Path = Path("/proc/self/mountinfo")) -> list[MountEntry]:
    """Every mount of a mount namespace (ours by default), in mount order."""
    result = []
    with open(path) as f:
        for line in f:
            fields = line.split()
            sep = fields.index("-")
            result.append(MountEntry(Path(_unescape(fields[4])), _unescape(fields[sep + 2]),
                                     fields[2]))
    return result


def mount_points() -> list[tuple[Path, str]]:
    """(mount point, source) of every mount of this process, in mount order."""
    return [(entry.point, entry.source) for entry in mountinfo()]


def mounts_below(path: Path) -> list[Path]:
    """Mount points at PATH or below it, the most recent first (the order to unmount)."""
    top = Path(os.path.realpath(path))
    found = [m for m, _ in mount_points() if m == top or top in m.parents]
    return list(reversed(found))


def is_mount_point(path: Path) -> bool:
    top = Path(os.path.realpath(path))
    return any(m == top for m, _ in mount_points())


def mount(
    stack: ExitStack,
    source: str | Path,
    target: Path,
    *,
    fstype: str | None = None,
    options: Sequence[str] = (),
    bind: bool = False,
) -> Path:
    """Mount SOURCE on TARGET and register its unmount on STACK in the same breath."""
    target.mkdir(parents=True, exist_ok=True)
    argv: list[str | Path] = ["mount"]
    if bind:
        argv.append("--bind")
    if fstype:
        argv += ["-t", fstype]
    if options:
        argv += ["-o", ",".join(options)]
    run([*argv, source, target])
    stack.callback(unmount_tree, target)
    return target


def processes_below(path: Path) -> list[int]:
    """PIDs whose root directory or working directory is PATH or below it."""
    return _scan(path, ("root", "cwd"), open_files=False)


def stop_processes_below(path: Path) -> None:
    """Stop what still runs inside a chroot (gpg-agent, dirmngr, a killed dpkg...)."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        pids = processes_below(path)
        if not pids:
            return
        logger.debug("sending %s to %s still running below %s", sig.name, pids, path)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + STOP_WAIT_SECONDS
        while time.monotonic() < deadline and processes_below(path):
            time.sleep(0.1)


def _below(link: str, top: str) -> bool:
    return link == top or link.startswith(top + "/") or link == f"{top} (deleted)"


def processes_using(path: Path) -> list[int]:
    """PIDs whose root, working directory, program or an open file is PATH or below it."""
    return _scan(path, ("root", "cwd", "exe"), open_files=True)


def _scan(path: Path, names: Sequence[str], open_files: bool) -> list[int]:
    """PIDs (not ours) with one of the /proc/PID links NAMES (or an fd) at PATH or below."""
    top = os.path.realpath(path)
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        links = [entry / name for name in names]
        if open_files:
            with contextlib.suppress(OSError):
                links += list((entry / "fd").iterdir())
        for link in links:
            with contextlib.suppress(OSError):
                if _below(os.readlink(link), top):
                    pids.append(int(entry.name))
                    break
    return sorted(pids)


def describe_processes(pids: Sequence[int]) -> str:
    """'1234 (bash), 1240 (vim)' for a message."""
    names = []
    for pid in pids:
        try:
            comm = Path(f"/proc/{pid}/comm").read_text().strip()
        except OSError:
            comm = "gone"
        names.append(f"{pid} ({comm})")
    return ", ".join(names)


def unmount_tree(path: Path, *, stop_processes: bool = True) -> None:
    """Unmount PATH and everything mounted below it.

    For a build (the default) this is teardown: whatever still runs below PATH is
    stopped first, a mount that will not go is detached lazily, and nothing is raised.
    With stop_processes=False (a person may work in there, as after mount-vm) nothing
    is stopped and nothing is detached lazily: MountBusy names the processes that still
    use the tree before anything is unmounted, or the mount that would not go.
    """
    if not stop_processes:
        users = processes_using(path)
        if users:
            raise MountBusy(
                f"{path} is still in use by process(es) {describe_processes(users)}",
                hint="leave the chroot and every shell in it (or stop those processes), "
                     "then try again",
            )
    else:
        stop_processes_below(path)
    for point in mounts_below(path):
        try:
            run(["umount", point])
        except HostCreatorError as exc:
            if not stop_processes:
                raise MountBusy(f"{point} could not be unmounted: {exc}",
                                hint="close what still uses it, then try again") from None
            logger.warning("warning: unmounting %s failed (%s), detaching it lazily", point, exc)
            with contextlib.suppress(HostCreatorError):
                run(["umount", "--lazy", point])


def shared_mount_point(stack: ExitStack, path: Path) -> Path:
    """Make PATH a shared mount (a bind mount on itself); STACK undoes it.

    Mounts made on it then reach, with their unmounts, the mount namespaces
    cloned from ours meanwhile: libvirt gives every VM one (a slave copy of the
    host's), and without this a VM started during a build keeps the build's file
    system mounted, and its loop device attached, after we unmount it here.
    """
    mount(stack, path, path, bind=True)
    run(["mount", "--make-shared", path])
    return path


_libc = ctypes.CDLL(None, use_errno=True)


def syncfs(path: Path) -> None:
    """Write the file system holding PATH to its device (only that one, unlike sync)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        if _libc.syncfs(fd) != 0:
            err = ctypes.get_errno()
            raise HostCreatorError(f"syncfs {path} failed: {os.strerror(err)}")
    finally:
        os.close(fd)


def namespaces_holding(device: Path) -> list[str]:
    """Processes in whose mount namespace a file system on DEVICE (or a partition) is mounted."""
    names = (device.name, *(f"{device.name}p{i}" for i in range(1, 16)))
    found = []
    seen = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            ns = os.readlink(entry / "ns" / "mnt")
            if ns in seen:
                continue
            text = (entry / "mountinfo").read_text()
            if any(f" /dev/{n} " in line.split(" - ", 1)[-1] + " " for n in names
                   for line in text.splitlines()):
                seen.add(ns)
                found.append(f"{entry.name} ({(entry / 'comm').read_text().strip()})")
    return found
