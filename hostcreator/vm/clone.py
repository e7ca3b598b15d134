"""hostcreator clone SOURCE NAME: a new VM from the disk of a finished VM, with its own
identity, ready for create-kvm NAME.

The recipe: every refusal first (check), before anything is made; then, holding
both VMs' locks, the copy of SOURCE's disk under a temporary name (disk/copy.py:
a reflink or the allocated extents), NAME's identity given to that copy
(identity.renew: new file-system UUIDs, fstab, grub.cfg, hostname, what a VM
that ran made for itself removed, NAME's login), and only then the copy named
NAME's disk and NAME's journal written, finished, naming SOURCE. An interrupted
or failed clone undoes its mounts and loop device and removes the copy: nothing
is left that looks like a VM. SOURCE's disk is only ever opened read-only.

With STORAGE=lvm the copy is a new logical volume (disk/lvcopy.py: a thin
snapshot of a thin volume, else a copy of the LV), made under a temporary name
and renamed NAME-disk01 when complete.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hostcreator import faults
from hostcreator.build import access, identity
from hostcreator.config import Config, StorageKind
from hostcreator.disk import copy, gpt, lvcopy, storage
from hostcreator.disk.partition import FileSystems
from hostcreator.domain import virt
from hostcreator.errors import DiskInUse, DomainExists, InvalidInput, UnfinishedBuild
from hostcreator.host import inuse, loopdev, mounts, places
from hostcreator.log import Progress, log_file, logger
from hostcreator.paths import VmPaths, disk_name, lv_path
from hostcreator.run import require_commands
from hostcreator.state import journal
from hostcreator.state.journal import Journal, Stage, Status
from hostcreator.state.lock import vm_lock

HOST_COMMANDS = ("losetup", "partx", "mount", "umount", "blkid", "mkswap", "tune2fs", "e2fsck")
LVM_COMMANDS = ("lvs", "lvcreate", "lvchange", "lvrename", "lvremove")
DIRECTORIES = ("IMAGE_DIR", "LOG_DIR", "STATE_DIR", "JOURNAL_DIR", "SECRETS_DIR")
STAGES = 3


@dataclass
class Clone:
    """What clone was asked and found while checking."""

    config: Config
    source: str
    name: str
    source_journal: Journal
    login: access.Login
    domains: Sequence[inuse.DomainView] | None = None
    timings: list[tuple[str, float]] = field(default_factory=list)

    @property
    def paths(self) -> VmPaths:
        return VmPaths.of(self.config, self.name)

    @property
    def source_disk(self) -> Path:
        return VmPaths.of(self.config, self.source).disk

    @property
    def disk(self) -> Path:
        return self.paths.disk

    @property
    def vg(self) -> str | None:
        """The volume group of both disks with STORAGE=lvm; None for image files."""
        return self.config.vg_name if self.config.storage_kind is StorageKind.LVM else None


# --- the refusals ------------------------------------------------------------------------

def check(config: Config, source: str, name: str) -> Clone:
    """Every refusal that needs no lock, in the order of the cheapest first."""
    VmPaths.of(config, source)
    VmPaths.of(config, name)
    if source == name:
        raise InvalidInput(f"a VM cannot be cloned onto itself ({name})",
                           hint="name the new VM otherwise")
    require_commands(HOST_COMMANDS + (LVM_COMMANDS if config.storage_kind is StorageKind.LVM
                                      else ()))
    places.check_writable(config, DIRECTORIES)
    found = check_source(config, source)
    check_name_is_free(config, name)
    login = access.plan(config, VmPaths.of(config, name).root_password)
    clone = Clone(config, source, name, found, login)
    check_room(clone)
    return clone


def check_source(config: Config, source: str, command: str = "clone copies") -> Journal:
    """SOURCE has a disk of create-debian's layout, and its build finished (COMMAND says
    what takes it, for the hint)."""
    disk = storage.for_vm(config, source)
    disk.check()
    if not disk.exists():
        raise InvalidInput(f"{source} has no disk: {disk.describe()} does not exist")
    record = journal.load(config.journal_dir, source)
    if record is None:
        raise InvalidInput(f"{source} was not built by hostcreator: it has no build journal "
                           f"({journal.path_of(config.journal_dir, source)})",
                           hint=f"{command} VMs that create-debian or create-ubuntu built")
    if not record.finished:
        raise UnfinishedBuild(f"the build of {source} {record.describe()}",
                              hint=f"finish it first: create-{record.distribution} {source} "
                                   "--resume")
    gpt.check_mountable(disk.path, disk.describe())
    return record


def check_name_is_free(config: Config, name: str) -> None:
    """NAME has no disk and no journal (a domain is asked with libvirt, in_use)."""
    disk = storage.for_vm(config, name)
    disk.check()
    if disk.exists():
        raise DiskInUse(f"{name} has a disk already: {disk.describe()}",
                        hint="clone never overwrites a disk: choose another name")
    record = journal.load(config.journal_dir, name)
    if record is not None and not record.finished:
        raise UnfinishedBuild(f"the build of {name} {record.describe()}",
                              hint=f"hostcreator cleanup {name}, then remove its journal "
                                   f"{journal.path_of(config.journal_dir, name)}")
    if record is not None:
        raise InvalidInput(f"{name} is known already: its build journal "
                           f"{journal.path_of(config.journal_dir, name)} says it was built",
                           hint="choose another name, or remove that journal")


def check_room(clone: Clone) -> None:
    """The copy's allocated bytes fit in IMAGE_DIR (a reflink needs fewer); on LVM, a copy
    of the LV fits in the volume group, or THIN_POOL exists (a thin snapshot needs no
    room of its own)."""
    if clone.vg is None:
        places.check_free(clone.config.image_dir, copy.allocated_bytes(clone.source_disk),
                          f"IMAGE_DIR: the copy of {clone.source}'s disk",
                          hint="free some space, or set IMAGE_DIR to a larger file system")
        return
    source = lvcopy.volume(clone.vg, disk_name(clone.source))
    if not source.thin:
        target = storage.LvmStorage(clone.vg, lvcopy.temporary_name(disk_name(clone.name)),
                                    clone.config.thin_pool)
        target.check_room(source.size, f"the copy of {clone.source}'s disk")


def check_use(clone: Clone, ask_libvirt: bool = True) -> None:
    """No domain called NAME; nothing uses SOURCE's disk (inuse's CLONE rule)."""
    uri = clone.config.libvirt_uri
    if ask_libvirt:
        clone.domains = virt.domains_at(uri, f"whether a domain {clone.name} exists or "
                                             f"{clone.source} runs")()
    if taken := [d for d in clone.domains or () if d.name == clone.name]:
        raise DomainExists(f"domain {clone.name} exists already "
                           f"({'running' if taken[0].running else 'shut off'}); nothing was made",
                           hint="choose another name, or remove it first (virsh undefine "
                                f"{clone.name})")
    views = clone.domains
    users = inuse.users_of(clone.source_disk, vm=inuse.Vm.of(clone.config, clone.source),
                           domains=(lambda: views) if ask_libvirt else None,
                           remote=virt.is_remote(uri))
    inuse.refuse(users, inuse.Command.CLONE, f"{clone.source}'s disk {clone.source_disk}")


# --- the recipe --------------------------------------------------------------------------

def clone(config: Config, source: str, name: str) -> dict[str, Any]:
    """Clone SOURCE as NAME; see the module documentation. Returns the summary."""
    job = check(config, source, name)
    check_use(job)
    with ExitStack() as locks:
        locks.enter_context(vm_lock(job.paths, "clone"))
        locks.enter_context(vm_lock(VmPaths.of(config, source), f"clone to {name}"))
        locks.enter_context(log_file(job.paths.log))
        # Asked again under the locks: a mount-vm or a QEMU may have come meanwhile.
        check_name_is_free(config, name)
        check_use(job, ask_libvirt=False)
        remove_stale_copies(job.disk, vg=job.vg)
        return make(job)


def remove_stale_copies(disk: Path, kind: str = "clone", vg: str | None = None) -> None:
    """What a clone (or KIND) of the same NAME killed by SIGKILL left: its copy (a file
    beside DISK, or an LV in VG), perhaps still on a loop device (its mounts went with its
    mount namespace). NAME's lock is held."""
    if vg is not None:
        for lv in lvcopy.stale(vg, disk.name, kind):
            path = lv_path(vg, lv)
            for device in loopdev.loop_devices_of(path):
                loopdev.detach(Path(device))
            inuse.refuse(inuse.users_of(path), inuse.Command.RELEASE, str(path))
            lvcopy.remove(vg, lv)
            logger.info("removed logical volume %s/%s, left by a %s that was killed", vg,
                        lv, kind)
        return
    for path in copy.stale(disk, kind):
        for device in loopdev.loop_devices_of(path):
            loopdev.detach(Path(device))
        inuse.refuse(inuse.users_of(path), inuse.Command.RELEASE, str(path))
        path.unlink()
        logger.info("removed %s, left by a%s %s that was killed", path,
                    "n" if kind[0] in "aeiou" else "", kind)


def make(job: Clone) -> dict[str, Any]:
    progress = Progress(total=STAGES)
    logger.info("clone %s as %s", job.source, job.name)
    with ExitStack() as stack:
        with progress.stage(f"copy {job.source}'s disk"):
            if job.vg is None:
                copied = copy.copy(stack, job.source_disk, job.disk)
            else:
                copied = lvcopy.clone(stack, job.vg, job.source_disk.name, job.disk.name,
                                      job.config.thin_pool)
            progress.note(str(copied.method))
        # As a build's: nobody sees the copy's root mounted, and a domain libvirt starts
        # meanwhile gets no copy of the mount.
        mounts.private_namespace(keep=[*job.config.paths(), job.source_disk, job.disk])
        with progress.stage(f"identity of {job.name}"), ExitStack() as attached:
            # Undone last, once nothing is mounted on it any more.
            attached.callback(_remove_dir, job.paths.build_root)
            filesystems = identity.renew(attached, copied.temporary, job.name,
                                         job.paths.build_root, job.login)
        with progress.stage("finish"):
            faults.point("clone:before:publish")
            inuse.wait_released(copied.temporary, hint="the copy is removed once it is free")
            if job.vg is None:
                copy.publish(copied, job.disk)
            else:
                lvcopy.publish(copied, job.vg, job.disk.name)
            save_journal(job, filesystems)
        stack.pop_all()
    logger.info("%s is cloned from %s: %s\n%s", job.name, job.source, job.disk,
                progress.summary())
    for line in access.describe(job.login, job.name):
        logger.info("  %s", line)
    logger.info("  start it: create-kvm %s", job.name)
    return summary(job, copied, filesystems, progress)


def _remove_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.rmdir()


def save_journal(job: Clone, filesystems: FileSystems) -> None:
    """NAME's journal: a finished build, as create-* leaves one, naming its source."""
    src = job.source_journal
    record = Journal(job.name, src.distribution, src.suite, job.disk, done=list(Stage),
                     pid=os.getpid(), root_uuid=filesystems.root_uuid,
                     swap_uuid=filesystems.swap_uuid, rootfs=src.rootfs, source=job.source,
                     settings=journal.settings_of(job.config), started=journal.now())
    record.runs.append(f"{record.started} cloned from {job.source} by PID {os.getpid()}")
    record.stop(Status.FINISHED)
    journal.save(job.config.journal_dir, record)


def summary(job: Clone, copied: copy.Copied, filesystems: FileSystems,
            progress: Progress) -> dict[str, Any]:
    return {
        "name": job.name, "source": job.source, "disk": str(job.disk),
        "method": str(copied.method), "size": copied.size, "allocated": copied.allocated,
        "distribution": job.source_journal.distribution, "suite": job.source_journal.suite,
        "root_uuid": filesystems.root_uuid, "swap_uuid": filesystems.swap_uuid,
        "timings": {title: round(seconds, 2) for title, seconds in progress.timings},
        "login": access.describe(job.login, job.name), "log": str(job.paths.log),
        "journal": str(job.paths.journal),
    }
