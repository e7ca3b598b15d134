"""Mounting with the undo registered at once, and unmounting whole trees.

Teardown functions log and go on: they never raise over the real error.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import NamedTuple

from hostcreator.errors import DiskInUse, HostCreatorError
from hostcreator.host.libc import last_error, libc
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


def mount_points(pid: int | str = "self") -> list[tuple[Path, str]]:
    """(mount point, source) of every mount of this process (or PID's), in mount order.

    The kernel writes a chrooted process's mount points relative to its root, and
    leaves out what lies outside it (a chrooted dpkg sees the build root as /): they
    are given back here as the paths they are in the process's mount namespace.
    """
    root = Path(os.readlink(f"/proc/{pid}/root"))
    return [(_under(root, entry.point), entry.source)
            for entry in mountinfo(Path(f"/proc/{pid}/mountinfo"))]


def _under(root: Path, point: Path) -> Path:
    return point if root == Path("/") else root / point.relative_to("/")


def mounts_below(path: Path) -> list[Path]:
    """Mount points at PATH or below it, the most recent first (the order to unmount)."""
    top = Path(os.path.realpath(path))
    found = [m for m, _ in mount_points() if m == top or top in m.parents]
    return list(reversed(found))


def is_mount_point(path: Path) -> bool:
    top = Path(os.path.realpath(path))
    return any(m == top for m, _ in mount_points())


def is_mount_point_of(pid: int, path: Path) -> bool:
    """Is PATH a mount point in the mount namespace of PID (False when PID is gone)?"""
    top = Path(os.path.realpath(path))
    try:
        return any(m == top for m, _ in mount_points(pid))
    except OSError:
        return False


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
    _stop_all(lambda: processes_below(path), f"still running below {path}")


def _stop_all(find: Callable[[], list[int]], where: str) -> None:
    """SIGTERM what FIND finds, then SIGKILL what is left, waiting a moment after each."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        pids = find()
        if not pids:
            return
        logger.debug("sending %s to %s %s", sig.name, pids, where)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + STOP_WAIT_SECONDS
        while time.monotonic() < deadline and find():
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


def runs_domain(pid: int, uuid: str) -> bool:
    """Whether process PID is the QEMU of the libvirt domain UUID (libvirt starts every QEMU
    with `-uuid UUID`)."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    wanted = uuid.lower().encode()
    return any(a == b"-uuid" and b.lower() == wanted for a, b in itertools.pairwise(argv))


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


CLONE_NEWNS = 0x00020000


def current_namespace() -> str:
    """The identity of this process's mount namespace, e.g. 'mnt:[4026532301]'."""
    return os.readlink("/proc/self/ns/mnt")


# Where the system lives: a loop-backed mount at one of these (or above one) is never
# let go of in a private namespace, whatever it is.
SYSTEM_DIRS = tuple(Path(p) for p in ("/", "/usr", "/etc", "/var", "/tmp", "/home", "/opt",
                                      "/srv", "/boot", "/root", "/run", "/dev", "/proc", "/sys"))


def private_namespace(keep: Iterable[Path] = ()) -> str:
    """Move this process (and what it starts from now on) into a mount namespace of its own.

    Its mounts are seen by it and its children only: no other process ever sees
    a half-built tree, a namespace libvirt clones for a VM meanwhile gets none of
    them, and when the last process in it ends - killed or not - the kernel
    unmounts them all. The host's mounts still reach it (a slave of the host).
    The copies of other disks' mounts it starts with are let go of (drop_disk_copies),
    except those KEEP's paths lie on. Returns the identity of the new namespace.
    """
    if libc.unshare(CLONE_NEWNS) != 0:
        raise HostCreatorError(f"cannot make a private mount namespace: {last_error()}")
    run(["mount", "--make-rslave", "/"])
    drop_disk_copies(keep)
    return current_namespace()


def drop_disk_copies(keep: Iterable[Path] = ()) -> list[Path]:
    """In a namespace of our own: unmount (here only) the copies of loop-backed mounts.

    A new namespace starts with a copy of every mount of the host's - a VM that mount-vm
    mounted, another build's tree - and where the host's mounts are private (no
    systemd, as on this project's test machine) the host's unmount never reaches the
    copy: it would keep that VM's loop device attached, and umount-vm refusing, for as
    long as we run. What KEEP's paths, this program and the system lie on stays.
    Returns the mount points let go of.
    """
    ours = (Path(sys.prefix), Path(sys.base_prefix), Path(__file__).parent, Path.cwd())
    needed = {p.resolve() for p in (*keep, *SYSTEM_DIRS, *ours)}
    dropped = []
    for entry in reversed(mountinfo()):
        if not entry.source.startswith("/dev/loop") or any(
                entry.point == p or entry.point in p.parents for p in needed):
            continue
        # Lazily: its submounts (a mount-vm's /dev, /proc binds) go with it.
        result = run(["umount", "--lazy", entry.point], check=False)
        if result.returncode == 0:
            dropped.append(entry.point)
    return dropped


def processes_in_namespace(namespace: str) -> list[int]:
    """PIDs (not ours) in the mount namespace NAMESPACE."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            with contextlib.suppress(OSError):
                if os.readlink(entry / "ns" / "mnt") == namespace:
                    pids.append(int(entry.name))
    return sorted(pids)


def stop_namespace(namespace: str) -> list[int]:
    """Stop every process in NAMESPACE (never ours): its mounts then go with it.

    Returns the PIDs that were found there.
    """
    if namespace == current_namespace():
        raise HostCreatorError(f"refusing to stop the processes of our own namespace {namespace}")
    found = processes_in_namespace(namespace)
    _stop_all(lambda: processes_in_namespace(namespace), f"in the mount namespace {namespace}")
    return found


def syncfs(path: Path) -> None:
    """Write the file system holding PATH to its device (only that one, unlike sync)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        if libc.syncfs(fd) != 0:
            raise HostCreatorError(f"syncfs {path} failed: {last_error()}")
    finally:
        os.close(fd)


def namespaces() -> Iterator[tuple[int, str]]:
    """(a PID, its mount namespace) for every mount namespace, one process of each."""
    seen = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            namespace = os.readlink(entry / "ns" / "mnt")
        except OSError:
            continue  # it ended while we looked
        if namespace not in seen:
            seen.add(namespace)
            yield int(entry.name), namespace


def mountinfo_of(pid: int) -> list[MountEntry]:
    """The mounts PID's namespace holds; none when PID has ended meanwhile."""
    try:
        return mountinfo(Path(f"/proc/{pid}/mountinfo"))
    except OSError:
        return []
