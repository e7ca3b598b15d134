"""mount-vm / umount-vm: a VM's root file system mounted for maintenance, and undone.

mount-vm attaches NAME's disk to a loop device, mounts the root partition at
MOUNT_DIR/NAME and binds /dev, /dev/pts, /proc and /sys into it, so that
`chroot MOUNTPOINT` works (apt-get, editing configuration, a new password).
Every step is written to the state file (mountstate.py) the moment it is done,
so umount-vm - another process, perhaps after mount-vm was killed - undoes
exactly that, newest first, and detaches the loop device. umount-vm also
clears what an interrupted mount-vm or create left for NAME: mounts below the
mount point or the build root, loop devices still pointing at NAME's disk.

A running VM's disk is never mounted read-write: not while NAME's libvirt
domain runs, nor while any running domain or process uses the disk; --read-only
mounts it `ro,noload` (no journal replay) from a read-only loop device.
A person's shell in the chroot is never killed: umount-vm refuses and names it.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

from hostcreator.build import recover
from hostcreator.config import Config
from hostcreator.disk import gpt, partition, storage
from hostcreator.domain import virt
from hostcreator.errors import DiskInUse, HostCreatorError, InvalidInput
from hostcreator.host import inuse, loopdev, mounts, places
from hostcreator.log import log_file, logger
from hostcreator.paths import VmPaths
from hostcreator.run import require_commands
from hostcreator.state import journal, mountstate
from hostcreator.state.lock import vm_lock
from hostcreator.state.mountstate import MountState

HOST_COMMANDS = ("losetup", "partx", "mount", "umount")
# Bound from the host, in this order, so that chroot MOUNTPOINT works.
BINDS = ("dev", "dev/pts", "proc", "sys")


@dataclass
class Mounted:
    """Where NAME is mounted, for the person who asked."""

    name: str
    mountpoint: Path
    read_only: bool
    loop: Path | None
    already: bool = False


@dataclass
class Unmounted:
    """What umount-vm undid; nothing at all when NAME was not mounted."""

    name: str
    unmounted: list[Path] = field(default_factory=list)
    detached: list[str] = field(default_factory=list)
    stale: list[str] = field(default_factory=list)

    @property
    def nothing(self) -> bool:
        return not (self.unmounted or self.detached or self.stale)




def _intact(state: MountState) -> bool:
    """Is everything the state file records still in place?"""
    if not state.complete or state.loop is None or not state.mounts:
        return False
    backing = loopdev.backing_file(state.loop)
    if backing is None or not inuse.same_file(backing, state.disk):
        return False
    points = dict(mounts.mount_points())
    root_source = str(partition.node(state.loop, "root"))
    return points.get(state.mounts[0]) == root_source and all(m in points for m in state.mounts)


# --- mount-vm ------------------------------------------------------------------------------

def mount_vm(config: Config, name: str, read_only: bool = False) -> Mounted:
    """Mount NAME's root file system for chroot work; see the module documentation."""
    vm = VmPaths.of(config, name)
    disk = storage.for_vm(config, name)
    disk.check()
    if not disk.exists():
        raise InvalidInput(f"{name} has no disk: {disk.describe()} does not exist")
    gpt.check_mountable(disk.path, disk.describe())  # before a loop device is attached
    require_commands(HOST_COMMANDS)
    places.check_writable(config, ("STATE_DIR", "MOUNT_DIR", "LOG_DIR"))
    with vm_lock(vm, "mount-vm"), log_file(vm.log):
        already = _already_mounted(config, name, read_only)
        if already is not None:
            return already
        uri = config.libvirt_uri
        domains = virt.domains_at(uri, f"whether a libvirt domain runs {name}")
        users = inuse.users_of(disk.path, vm=inuse.Vm.of(config, name), domains=domains,
                               remote=virt.is_remote(uri))
        inuse.refuse(users, inuse.Command.MOUNT_VM, disk.describe(),
                     inuse.Allowed(read_only=read_only))
        return _mount(config, name, disk.path, read_only)


def _already_mounted(config: Config, name: str, read_only: bool) -> Mounted | None:
    state = mountstate.load(config.state_dir, name)
    if state is None or not _intact(state):
        return None
    if state.read_only and not read_only:
        raise DiskInUse(f"{name} is mounted read-only at {state.mountpoint}",
                        hint=f"to write: umount-vm {name}, then mount-vm {name}")
    return Mounted(name, state.mountpoint, state.read_only, state.loop, already=True)


def _mount(config: Config, name: str, disk: Path, read_only: bool) -> Mounted:
    state = MountState(name, disk, VmPaths.of(config, name).mountpoint, read_only, pid=os.getpid(),
                       since=time.strftime("%Y-%m-%d %H:%M:%S"))
    with ExitStack() as stack:
        # Undone last on failure: the record outlives everything it records.
        stack.callback(mountstate.remove, config.state_dir, name)
        mountstate.save(config.state_dir, state)
        stack.callback(_remove_dir, state.mountpoint)
        state.loop = loopdev.attach(stack, disk, read_only=read_only)
        mountstate.save(config.state_dir, state)
        root = _root_partition(state.loop, disk)
        options = ("ro", "noload") if read_only else ()
        mounts.mount(stack, root, state.mountpoint, fstype="ext4", options=options)
        _record(config, state, state.mountpoint)
        for bind in BINDS:
            target = state.mountpoint / bind
            if target.is_symlink() or (target.exists() and not target.is_dir()):
                raise HostCreatorError(f"/{bind} in {name} is not a directory: cannot bind "
                                       f"the host's /{bind} on {target}")
            if read_only and not target.is_dir():
                logger.warning("warning: %s is missing on the read-only file system: /%s "
                               "not bound", target, bind)
                continue
            # rslave: mounts made inside never propagate back to the host's /dev, /sys.
            mounts.mount(stack, Path("/") / bind, target, bind=True, options=("rslave",))
            _record(config, state, target)
        state.complete = True
        mountstate.save(config.state_dir, state)
        stack.pop_all()
    return Mounted(name, state.mountpoint, read_only, state.loop)


def _record(config: Config, state: MountState, point: Path) -> None:
    state.mounts.append(point)
    mountstate.save(config.state_dir, state)


def _root_partition(device: Path, disk: Path) -> Path:
    try:
        nodes = partition.find(device)
    except HostCreatorError as exc:
        raise HostCreatorError(
            f"{disk} does not have the partitions create-debian makes: {exc}",
            hint="mount-vm knows disks with BIOS boot, swap and root partitions",
        ) from None
    return nodes.root


def _remove_dir(path: Path) -> None:
    """Remove the empty mount point, never a mounted or non-empty one."""
    if not mounts.is_mount_point(path):
        with contextlib.suppress(OSError):
            path.rmdir()


# --- umount-vm -----------------------------------------------------------------------------

def _unique(paths: Iterable[Path | None]) -> list[Path]:
    result: list[Path] = []
    for p in paths:
        if p is not None and p not in result:
            result.append(p)
    return result


def umount_vm(config: Config, name: str) -> Unmounted:
    """Undo mount-vm, and clear what an interrupted mount-vm or create left for NAME."""
    vm = VmPaths.of(config, name)
    disk = storage.for_vm(config, name)
    if not (disk.exists() or vm.mount_state.exists() or vm.mountpoint.exists()
            or vm.journal.exists()):
        # A name nothing is known of: most likely a typo, and no lock or log is made for it.
        raise InvalidInput(f"{name} has no disk and nothing of it is mounted: "
                           f"{disk.describe()} does not exist")
    with vm_lock(vm, "umount-vm"), log_file(vm.log):
        state = mountstate.load(config.state_dir, name)
        done = Unmounted(name)
        points = _unique([state.mountpoint if state else None, vm.mountpoint])
        disks = _unique([state.disk if state else None, storage.for_vm(config, name).path])
        for top in points:
            done.unmounted += _unmount_maintenance(config, state, top)
        # Only a killed create leaves these (the lock says none runs): what still runs of
        # it is stopped, as create itself would have.
        done.unmounted += recover.stop_leftovers(
            config, name, journal.load_or_warn(config.journal_dir, name)).unmounted
        done.detached += _detach_all(state, disks, done)
        if vm.mount_state.exists():
            if not (done.unmounted or done.detached):
                done.stale.append(f"state file {vm.mount_state}")
            mountstate.remove(config.state_dir, name)
        for top in points:
            _remove_dir(top)
        _flush(disks)
        return done


def _unmount_maintenance(config: Config, state: MountState | None, top: Path) -> list[Path]:
    """Unmount everything below TOP, newest first; a person's shell in there is refused."""
    points = mounts.mounts_below(top)
    if not points:
        return []
    try:
        mounts.unmount_tree(top, stop_processes=False)
    finally:
        if state is not None and mounts.mounts_below(top) != points:
            state.mounts = [m for m in state.mounts if mounts.is_mount_point(m)]
            state.complete = False
            mountstate.save(config.state_dir, state)
    return points


def _detach_all(state: MountState | None, disks: list[Path], done: Unmounted) -> list[str]:
    loops: list[str] = []
    for disk in disks:
        users = inuse.users_of(disk)
        inuse.refuse(users, inuse.Command.UMOUNT_VM, str(disk), inuse.Allowed(loops=True))
        loops += [str(d) for d in users.loops if str(d) not in loops]
    if state is not None and state.loop is not None and str(state.loop) not in loops:
        # Detached since, or reused for another disk: not ours to touch.
        done.stale.append(f"loop device {state.loop} (no longer attached to {state.disk})")
    for loop in loops:
        loopdev.detach(Path(loop))
    for disk in disks:
        inuse.refuse(inuse.users_of(disk), inuse.Command.UMOUNT_VM, str(disk))
    return loops


def _flush(disks: list[Path]) -> None:
    """What was written in the chroot reaches the disk before umount-vm reports success."""
    for disk in disks:
        with contextlib.suppress(OSError), open(disk, "rb") as f:
            os.fsync(f.fileno())


# --- listing -------------------------------------------------------------------------------

@dataclass
class Listing:
    name: str
    mountpoint: Path
    mode: str
    loop: str
    since: str


def list_mounted(config: Config) -> list[Listing]:
    """Every VM mount-vm has mounted, and every half-mounted one (umount-vm clears it)."""
    found = []
    for name in mountstate.names(config.state_dir):
        state = mountstate.load(config.state_dir, name)
        if state is None:
            point = VmPaths.of(config, name).mountpoint
            found.append(Listing(name, point, "unreadable state", "-", "-"))
            continue
        mode = "read-only" if state.read_only else "read-write"
        if not _intact(state):
            mode = f"half-mounted ({mode})"
        found.append(Listing(name, state.mountpoint, mode, str(state.loop or "-"), state.since))
    known = {item.name for item in found}
    if config.mount_dir.is_dir():
        for top in sorted(config.mount_dir.iterdir()):
            if top.name not in known and mounts.mounts_below(top):
                found.append(Listing(top.name, top, "mounted, not recorded", "-", "-"))
    return found
