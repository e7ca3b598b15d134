"""Is a disk in use, and may a command go ahead? The whole rule, in this one module.

`users_of(disk)` is the one question: who uses the disk. Its answer holds typed
facts: mounts of the disk, its partitions or its loop devices, in our mount
namespace or in any other (a process that unshares its mounts, as QEMU under
libvirtd does, keeps a copy of every mount of the moment, and with it the loop
device); the loop devices backed by the disk; what holds the block device in
the kernel (sysfs holders: dm, md); processes with the disk open (a QEMU started
by hand); libvirt domains, running or only defined, with the disk in their live
or persistent XML; and, given the VM, what mount-vm has of it. Each fact is
asked when the rule first needs it, so a refusal comes before a slower question
(libvirt) is asked at all. libvirt itself is never asked here: the caller passes
a reader of the domains (domain/virt.py), so host/ stays below domain/. Where
libvirt cannot be reached the reader says so in a warning and the rest applies.

`refuse(users, command, what)` is the one policy. RULES below says, for each
command in order, what it refuses (DiskInUse, exit code 3, naming the user);
`Allowed` is what a command lets pass:

- create-* (built over; --force never overrides this): NAME mounted by
  mount-vm; the disk mounted here, then in another namespace; on a loop
  device; held by the kernel; the disk of any domain, running or shut off;
  open in a process.
- create-kvm (booted): NAME mounted by mount-vm; on a loop device; held; the
  disk of another domain (with --start: other than the one started); open in
  a process. With a remote libvirt only the domains are asked, paths as text.
- mount-vm: anything an interrupted mount-vm or build left (state file,
  mounts below the mount point or the build root, loop devices) or files in
  the mount point; then a running domain called NAME or using the disk, or a process with it open -
  with --read-only (`Allowed(read_only=True)`) that is only warned about.
- umount-vm: before detaching (its own loop devices allowed) a mount of them
  here that hostcreator did not make; after, a loop device that stayed.
- remove: NAME mounted by mount-vm; the disk mounted here, then in another
  namespace; on a loop device; held; the disk of a domain other than NAME's;
  open in a process other than the QEMU of NAME's running domain
  (`Allowed(pids=...)`), and in any process once --stop has ended it. Before
  libvirt is asked, without the processes (`Allowed(processes=True)`).
- clone (SOURCE's disk is copied, read-only): SOURCE mounted by mount-vm; the disk
  mounted here or in another namespace; on a loop device; held; a running domain
  with it (a shut-off one is the normal case); open in a process. A copy of a disk
  that changes meanwhile would be a broken file system.
- export (NAME's disk is copied, read-only, then sealed and converted): what clone
  refuses of its SOURCE, for the same reason.
- cleanup: NAME mounted by mount-vm (then the build's loop devices are
  detached and the disk must be released).
- release (the end of a build, cleanup): no loop device may stay on the disk
  (wait_released gives a closing file system a moment); the error names what
  holds the one that stays.
"""

from __future__ import annotations

import contextlib
import os
import stat
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from functools import cached_property
from pathlib import Path
from typing import NamedTuple

from hostcreator.config import Config
from hostcreator.errors import DiskInUse
from hostcreator.host import loopdev, mounts
from hostcreator.log import logger
from hostcreator.paths import VmPaths
from hostcreator.state import mountstate

RELEASE_WAIT_SECONDS = 30.0
LOOP_HINT = "is the VM mounted (umount-vm) or a build still running?"
ELSEWHERE_HINT = ("the loop device goes by itself once that is closed (a process in its own "
                  "mount namespace keeps the mounts it copied until it ends)")


def same_file(a: str | Path, b: Path) -> bool:
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    with contextlib.suppress(OSError):
        return os.path.samefile(a, b)
    return False


# --- the facts -----------------------------------------------------------------------------

class Mount(NamedTuple):
    source: str
    point: Path
    holder: int | None  # a process of the other mount namespace it is in; None: ours
    device: Path  # the disk or loop device asked about whose file system it is

    def __str__(self) -> str:
        where = "" if self.holder is None else (
            f" in the mount namespace of process {mounts.describe_processes([self.holder])}")
        return f"{self.source} at {self.point}{where}"


class DiskSource(NamedTuple):
    """A <disk> of a domain XML: the file or block device, and whether the guest writes it."""

    path: str
    writable: bool


class DomainView(NamedTuple):
    """What libvirt says of one domain: its disks in its live and persistent XML."""

    name: str
    uuid: str
    running: bool
    disks: tuple[DiskSource, ...]


class Domain(NamedTuple):
    name: str
    uuid: str
    running: bool
    uses_disk: bool  # False: it is only called like the VM (mount-vm asks for that too)

    def __str__(self) -> str:
        return f"{self.name} ({'running' if self.running else 'shut off'})"


# Every domain, or None when libvirt is out of reach (the reader has warned).
DomainReader = Callable[[], Sequence[DomainView] | None]


class Vm(NamedTuple):
    """The VM a command is about, for what mount-vm and builds leave of it."""

    name: str
    state_dir: Path
    mountpoint: Path
    build_root: Path

    @classmethod
    def of(cls, config: Config, name: str) -> Vm:
        paths = VmPaths.of(config, name)
        return cls(name, config.state_dir, paths.mountpoint, paths.build_root)


@dataclass
class Users:
    """Who uses DISK; each fact is asked on first use (see the module documentation)."""

    disk: Path
    vm: Vm | None = None
    read_domains: DomainReader | None = None
    remote: bool = False  # libvirt is on another host: its paths are compared as text
    host: bool = True  # the disk is on this host: the host is asked too

    @cached_property
    def _here(self) -> bool:
        return self.host and self.disk.exists()

    @cached_property
    def loops(self) -> list[Path]:
        return [Path(d) for d in loopdev.loop_devices_of(self.disk)] if self._here else []

    @cached_property
    def mounts(self) -> list[Mount]:
        """Mounts of the disk (a block device), its partitions and its loop devices'."""
        disk = [self.disk] if self._here and self.disk.is_block_device() else []
        return mounts_of(disk + self.loops)

    @cached_property
    def holders(self) -> list[str]:
        """What has the block device open exclusively (mounts, dm, md), from sysfs."""
        if not self._here:
            return []
        with contextlib.suppress(OSError):
            return sorted(os.listdir(f"/sys/class/block/{Path(os.path.realpath(self.disk)).name}"
                                     "/holders"))
        return []

    @cached_property
    def processes(self) -> list[int]:
        """PIDs (not ours) with the disk open."""
        return mounts.processes_using(self.disk) if self._here else []

    @cached_property
    def loop_processes(self) -> list[int]:
        """PIDs (not ours) with one of its loop devices open."""
        return sorted({p for loop in self.loops for p in mounts.processes_using(loop)})

    @cached_property
    def domains(self) -> list[Domain]:
        """Domains with the disk (or called like the VM); none when not asked or out of reach."""
        # Not asked for a disk that is not there yet (a new build): nothing can use it.
        asked = self.read_domains is not None and (self._here or not self.host)
        views = self.read_domains() if asked and self.read_domains else None
        found = []
        for view in views or []:
            uses = any(self._is_disk(d.path) for d in view.disks)
            if uses or (self.vm is not None and view.name == self.vm.name):
                found.append(Domain(view.name, view.uuid, view.running, uses))
        return found

    def _is_disk(self, path: str) -> bool:
        return path == str(self.disk) if self.remote else same_file(path, self.disk)

    @cached_property
    def mount_state(self) -> Path | None:
        """mount-vm's state file of the VM, when there is one."""
        if self.vm is None or not mountstate.exists(self.vm.state_dir, self.vm.name):
            return None
        return mountstate.path_of(self.vm.state_dir, self.vm.name)

    @cached_property
    def mounted_at(self) -> Path | None:
        """Where mount-vm has the VM mounted (wholly or half), else None."""
        if self.vm is None:
            return None
        state = mountstate.load(self.vm.state_dir, self.vm.name)
        if state is not None:
            return state.mountpoint
        if self.mount_state or mounts.mounts_below(self.vm.mountpoint):
            return self.vm.mountpoint
        return None

    @cached_property
    def leftovers(self) -> list[str]:
        """What an interrupted mount-vm or build left of the VM, as phrases."""
        if self.vm is None:
            return []
        found = [f"state file {self.mount_state}"] if self.mount_state else []
        for top in (self.vm.mountpoint, self.vm.build_root):
            found += [f"mount {p}" for p in mounts.mounts_below(top)]
        return found


def users_of(disk: Path, *, vm: Vm | None = None, domains: DomainReader | None = None,
             remote: bool = False, host: bool = True) -> Users:
    """Who uses DISK: see Users. DOMAINS reads libvirt's domains (not asked without it);
    REMOTE: libvirt is on another host; HOST=False: the disk is not on this host."""
    return Users(disk, vm, domains, remote, host)


def device_numbers(device: Path) -> set[str]:
    """'MAJOR:MINOR' of the block device DEVICE and of its partitions (from sysfs)."""
    with contextlib.suppress(OSError):
        info = os.stat(device)
        if stat.S_ISBLK(info.st_mode):
            number = f"{os.major(info.st_rdev)}:{os.minor(info.st_rdev)}"
            parts = Path("/sys/dev/block", number).glob("*/partition")
            return {number, *((p.parent / "dev").read_text().strip() for p in parts)}
    return set()


def mounts_of(devices: Sequence[Path]) -> list[Mount]:
    """Mounts of DEVICES or their partitions: in our mount namespace, then in the
    namespace of every other process."""
    numbers = {device: device_numbers(device) for device in devices}

    def device_of(entry: mounts.MountEntry) -> Path | None:
        # By number, as the source may name the device otherwise (/dev/mapper/vg-lv).
        return next((d for d in devices if entry.device in numbers[d] or entry.source == str(d)
                     or entry.source.startswith(f"{d}p")), None)

    def found_in(entries: list[mounts.MountEntry], holder: int | None) -> list[Mount]:
        return [Mount(e.source, e.point, holder, device) for e in entries
                if (device := device_of(e)) is not None]

    if not devices:
        return []
    found = found_in(mounts.mountinfo(), None)
    ours = mounts.current_namespace()
    for pid, namespace in mounts.namespaces():
        if namespace != ours:
            found += found_in(mounts.mountinfo_of(pid), pid)
    return found


# --- the policy ----------------------------------------------------------------------------

class Command(StrEnum):
    CREATE = "create-*"
    CREATE_KVM = "create-kvm"
    MOUNT_VM = "mount-vm"
    UMOUNT_VM = "umount-vm"
    REMOVE = "remove"
    CLONE = "clone"
    EXPORT = "export"
    CLEANUP = "cleanup"
    RELEASE = "release"


@dataclass(frozen=True)
class Allowed:
    """What a command lets pass that the rule would otherwise refuse."""

    read_only: bool = False  # mount-vm --read-only: a running VM looked at (warned about)
    # create-kvm --start: the UUID of the domain it starts; remove: of NAME's own domain.
    domain: str | None = None
    loops: bool = False  # umount-vm before detaching: the loop devices it is about to detach
    # create-kvm before it asks libvirt: a process is asked once libvirt has said whether
    # NAME's own domain exists (a running NAME is refused as existing, exit code 5).
    # remove before it asks libvirt likewise.
    processes: bool = False
    # remove while NAME's domain runs: the PIDs of its QEMU, which has the disk open.
    pids: frozenset[int] = frozenset()
    hint: str = field(default="", compare=False)  # release: what to do when the disk stays held


Check = Callable[[Users, str, Allowed], DiskInUse | None]


def _mounted_by_mount_vm(users: Users, what: str, allowed: Allowed) -> DiskInUse | None:
    if users.vm is not None and (where := users.mounted_at) is not None:
        return DiskInUse(f"{users.vm.name} is mounted at {where} (mount-vm)",
                         hint=f"umount-vm {users.vm.name} first")
    return None


def _mount_state(users: Users, what: str, allowed: Allowed) -> DiskInUse | None:
    if users.vm is not None and users.mount_state is not None:
        return DiskInUse(f"{users.vm.name} is mounted by mount-vm",
                         hint=f"umount-vm {users.vm.name} first")
    return None


def _mounted_here(users: Users, what: str, allowed: Allowed) -> DiskInUse | None:
    if here := [m for m in users.mounts if m.holder is None]:
        return DiskInUse(f"{what} is mounted: {', '.join(map(str, here))}",
                         hint=f"unmount it first (umount {here[0].point})")
    return None


def _mounted_elsewhere(users: Users, what: str, allowed: Allowed) -> DiskInUse | None:
    if found := users.mounts:
        return DiskInUse(
            f"{what} is mounted in another mount namespace: {', '.join(map(str, found))}",
            hint=f"end that process, or unmount it there (nsenter -m -t {found[0].holder} "
                 f"umount {found[0].point})")
    return None


def _on_loop(users: Users, what: str, allowed: Allowed) -> DiskInUse | None:
    if users.loops:
        return DiskInUse(f"{what} is in use by {', '.join(map(str, users.loops))}",
                         hint=LOOP_HINT)
    return None


def _held(users: Users, what: str, allowed: Allowed) -> DiskInUse | None:
    if users.holders:
        return DiskInUse(f"{what} is in use by {', '.join(users.holders)}")
    return None


def _a_domains_disk(users: Users, what: str, allowed: Allowed) -> DiskInUse | None:
    if found := [d for d in users.domains if d.uses_disk]:
        return DiskInUse(f"{what} is the disk of libvirt domain {', '.join(map(str, found))}",
                         hint="a domain's disk is never built over: remove the domain first "
                              f"(hostcreator remove {found[0].name} --stop), or choose another "
                              "name")
    return None


def _another_domains_disk(users: Users, what: str, allowed: Allowed) -> DiskInUse | None:
    if found := [d for d in users.domains if d.uses_disk and d.uuid != allowed.domain]:
        return DiskInUse(f"{what} is the disk of domain {', '.join(map(str, found))}",
                         hint="two domains must never share a disk")
    return None


def _open(users: Users, what: str, allowed: Allowed) -> DiskInUse | None:
    others = [p for p in users.processes if p not in allowed.pids]
    if not allowed.processes and others:
        return DiskInUse(f"{what} is open in process(es) {mounts.describe_processes(others)}",
                         hint="is a VM (QEMU) running from it? stop that process first")
    return None


def _left_behind(users: Users, what: str, allowed: Allowed) -> DiskInUse | None:
    """A half-mounted VM is cleaned up by umount-vm, never mounted over."""
    loops = [f"loop device {d}" for d in users.loops]
    found = users.leftovers + loops
    if not found:
        return None
    elsewhere = [str(m) for m in users.mounts if m.holder is not None]
    name = users.vm.name if users.vm else what
    hint = (ELSEWHERE_HINT if elsewhere and not users.leftovers
            else f"umount-vm {name} cleans that up")
    return DiskInUse(f"{name} is half-mounted or its disk is still attached: "
                     f"{', '.join(found + elsewhere)}", hint=hint)


def _mountpoint_not_empty(users: Users, what: str, allowed: Allowed) -> DiskInUse | None:
    target = users.vm.mountpoint if users.vm else None
    if target is not None and target.is_dir() and any(target.iterdir()):
        return DiskInUse(f"{target} is not empty",
                         hint="move its files away; mount-vm would hide them")
    return None


def _running(users: Users, what: str, allowed: Allowed) -> DiskInUse | None:
    """A running VM's disk is never mounted read-write (nor, unwarned, read-only)."""
    found = [f"libvirt domain {d}" for d in users.domains if d.running]
    if users.processes:
        found.append(f"process(es) {mounts.describe_processes(users.processes)} "
                     "with the disk open")
    if not found:
        return None
    name = users.vm.name if users.vm else what
    if allowed.read_only:
        logger.warning("warning: %s is in use (%s): mounting it read-only without journal "
                       "replay; what the VM wrote lately may be missing", name, "; ".join(found))
        return None
    return DiskInUse(f"{name} is running: {'; '.join(found)}",
                     hint=f"shut it down first, or look with mount-vm --read-only {name} "
                          "(no journal replay, nothing written)")


def _running_domain(users: Users, what: str, allowed: Allowed) -> DiskInUse | None:
    if found := [d for d in users.domains if d.uses_disk and d.running]:
        return DiskInUse(f"{what} is the disk of running libvirt domain "
                         f"{', '.join(map(str, found))}",
                         hint=f"shut it down first (virsh shutdown {found[0].name}): a disk is "
                              "copied while nothing writes it")
    return None


def _foreign_mount(users: Users, what: str, allowed: Allowed) -> DiskInUse | None:
    """Once umount-vm has undone its own mounts, one left here was made by hand."""
    for loop in users.loops:
        here = [str(m.point) for m in users.mounts if m.holder is None and m.device == loop]
        if here:
            return DiskInUse(f"{loop} is mounted at {', '.join(here)}, not by hostcreator",
                             hint="unmount that yourself, then try again")
    return None


def _not_detached(users: Users, what: str, allowed: Allowed) -> DiskInUse | None:
    if allowed.loops or not users.loops:
        return None
    why = [str(m) for m in users.mounts if m.holder is not None]
    if users.loop_processes:
        why.append(f"open by process(es) {mounts.describe_processes(users.loop_processes)}")
    return DiskInUse(f"{', '.join(map(str, users.loops))} could not be detached: still in use"
                     + (f" ({'; '.join(why)})" if why else ""), hint=ELSEWHERE_HINT)


def _still_attached(users: Users, what: str, allowed: Allowed) -> DiskInUse | None:
    if not users.loops:
        return None
    holders = sorted({m.holder for m in users.mounts if m.holder is not None})
    held = [mounts.describe_processes([h]) for h in holders]
    held += [f"a mount at {m.point}" for m in users.mounts if m.holder is None]
    if users.loop_processes:
        held.append(mounts.describe_processes(users.loop_processes))
    return DiskInUse(f"{what} is still attached to {', '.join(map(str, users.loops))}"
                     + (f": its file system is held by {', '.join(held)}" if held else ""),
                     hint=allowed.hint or None)


# For each command, what it refuses, in the order asked.
# A disk that is copied: nothing may have it mounted or open, nor a domain run from it.
COPIED: tuple[Check, ...] = (_mounted_by_mount_vm, _mounted_here, _mounted_elsewhere, _on_loop,
                             _held, _running_domain, _open)
RULES: dict[Command, tuple[Check, ...]] = {
    Command.CREATE: (_mounted_by_mount_vm, _mounted_here, _mounted_elsewhere, _on_loop, _held,
                     _a_domains_disk, _open),
    Command.CREATE_KVM: (_mounted_by_mount_vm, _on_loop, _held, _another_domains_disk, _open),
    Command.MOUNT_VM: (_left_behind, _mountpoint_not_empty, _running),
    Command.UMOUNT_VM: (_foreign_mount, _not_detached),
    Command.REMOVE: (_mounted_by_mount_vm, _mounted_here, _mounted_elsewhere, _on_loop, _held,
                     _another_domains_disk, _open),
    Command.CLONE: COPIED,
    Command.EXPORT: COPIED,
    Command.CLEANUP: (_mount_state,),
    Command.RELEASE: (_still_attached,),
}


def refuse(users: Users, command: Command, what: str, allowed: Allowed = Allowed()) -> None:
    """Raise DiskInUse for the first user COMMAND may not go ahead with (WHAT names the
    disk in messages); what ALLOWED lets pass is at most warned about."""
    for check in RULES[command]:
        if (error := check(users, what, allowed)) is not None:
            raise error


def wait_released(disk: Path, hint: str) -> None:
    """Wait until no loop device has DISK: only then is its last file system shut down.

    A loop device whose last user just went away needs a moment to go; one that
    stays is still used (its file system mounted in another mount namespace, a
    process holding it), and the error names who.
    """
    deadline = time.monotonic() + RELEASE_WAIT_SECONDS
    while (users := users_of(disk)).loops:
        if time.monotonic() > deadline:
            refuse(users, Command.RELEASE, str(disk), Allowed(hint=hint))
        time.sleep(0.2)
