"""hostcreator remove NAME: the domain and every file hostcreator keeps for NAME.

Every refusal comes before anything is touched. First what needs neither libvirt
nor the lock: the name, --disk with a remote libvirt, and the in-use rule for
remove (host/inuse.py) as far as the host tells it: NAME mounted by mount-vm;
its disk mounted anywhere, attached to a loop device, held. Then, under NAME's
lock, the rest of the rule: the disk of another domain, or open in a process
other than the QEMU of NAME's running domain; a domain called NAME that
create-kvm did not make and that does not use NAME's disk is not NAME's; a
running domain only with --stop. Once confirmed, all of it is asked again.
Then the domain is shut down (--stop: ACPI first, destroyed after a timeout;
then nothing else may have the disk open) and undefined with its NVRAM and TPM
state; the journal, the logs, the secrets and the state files go; the disk
only with --disk (the image file, or lvremove for a logical volume). What is
already gone is said so, and is no error.
"""

from __future__ import annotations

import contextlib
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import libvirt

from hostcreator.config import Config
from hostcreator.disk import storage
from hostcreator.domain import virt
from hostcreator.errors import DiskInUse, DomainExists, HostCreatorError, InvalidInput
from hostcreator.host import inuse, mounts
from hostcreator.log import logger
from hostcreator.paths import VmPaths, validate_name
from hostcreator.state.lock import vm_lock

STOP_SECONDS = 60
POLL_SECONDS = 0.5
# What undefine takes with the domain: firmware variables, TPM state, saved state,
# snapshot and checkpoint metadata (names missing from an older libvirt-python count 0).
# Oldest first (the libvirt release that brought each): undefine drops the newest ones an
# older libvirt does not know (Ubuntu 22.04's 8.0 lacks TPM, 8.9).
UNDEFINE_FLAGS = tuple(getattr(libvirt, flag, 0) for flag in (
    "VIR_DOMAIN_UNDEFINE_MANAGED_SAVE",  # 0.9.4
    "VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA",  # 0.9.5
    "VIR_DOMAIN_UNDEFINE_NVRAM",  # 1.2.9
    "VIR_DOMAIN_UNDEFINE_CHECKPOINTS_METADATA",  # 5.6.0
    "VIR_DOMAIN_UNDEFINE_TPM"))  # 8.9.0


def files_of(vm: VmPaths) -> list[Path]:
    """Every file hostcreator keeps for the VM, but the disk and the lock."""
    return [vm.journal, vm.log, vm.serial_log, vm.console_log, vm.qemu_log]


def dirs_of(vm: VmPaths) -> list[Path]:
    """Directories of the VM's own: its secrets (all of it), the empty build root and
    mount point."""
    return [vm.secrets, vm.build_root, vm.mountpoint]


@dataclass
class Plan:
    name: str
    domain: libvirt.virDomain | None = None
    files: list[Path] = field(default_factory=list)
    dirs: list[Path] = field(default_factory=list)
    secrets: Path | None = None  # removed with all in it; other directories only when empty
    disk: storage.Storage | None = None  # deleted (--disk)
    kept: storage.Storage | None = None  # there, and left (no --disk)

    @property
    def nothing(self) -> bool:
        return self.domain is None and not self.files and not self.dirs and self.disk is None

    def describe(self) -> list[str]:
        what = []
        if self.domain is not None:
            what.append(f"the domain {self.name} ({virt.state(self.domain)})")
        what += [str(p) for p in self.files + self.dirs]
        if self.disk is not None:
            what.append(f"the disk: {self.disk.describe()}")
        return what


@dataclass
class Removed:
    name: str
    removed: list[str]
    kept: str | None = None

    def as_json(self) -> dict[str, object]:
        return {"name": self.name, "removed": self.removed, "kept": self.kept,
                "nothing": not self.removed}


def running_refused(name: str) -> DiskInUse:
    return DiskInUse(f"{name} is running", hint=f"--stop shuts it down first (destroyed after "
                     f"{STOP_SECONDS} s), or stop it yourself (virsh shutdown {name})")


def check_locally(config: Config, name: str, *, disk: bool) -> storage.Storage:
    """The refusals that need neither libvirt nor NAME's lock, asked first (as create-kvm's
    check_locally): the name; --disk with a remote libvirt; NAME mounted by mount-vm; its disk
    mounted, on a loop device or held (the processes are asked once libvirt has said whether
    NAME's own domain runs)."""
    validate_name(name)
    the_disk = storage.for_vm(config, name)
    if virt.is_remote(config.libvirt_uri):
        if disk:
            raise InvalidInput(f"--disk with a remote libvirt ({config.libvirt_uri}): the disk "
                               "is on that host, not here",
                               hint=f"remove {name} without --disk, and delete its disk there")
        return the_disk
    inuse.refuse(inuse.users_of(the_disk.path, vm=inuse.Vm.of(config, name)),
                 inuse.Command.REMOVE, the_disk.describe(), inuse.Allowed(processes=True))
    return the_disk


def check_disk(config: Config, conn: libvirt.virConnect, name: str, disk: storage.Storage,
               domain: libvirt.virDomain | None) -> inuse.Users:
    """The in-use rule for remove (inuse.RULES): NAME not mounted by mount-vm; its disk not
    mounted, not attached, no other domain's, open in no process but the QEMU of NAME's running
    domain (asked again once --stop has ended it). With a remote libvirt only its domains are
    asked, the paths as text."""
    remote = virt.is_remote(config.libvirt_uri)
    users = inuse.users_of(disk.path, vm=inuse.Vm.of(config, name),
                           domains=virt.domains_of(conn), remote=remote, host=not remote)
    mine = domain.UUIDString() if domain is not None else None
    pids: frozenset[int] = frozenset()
    if mine is not None and domain is not None and domain.isActive():
        pids = frozenset(p for p in users.processes if mounts.runs_domain(p, mine))
    inuse.refuse(users, inuse.Command.REMOVE, disk.describe(),
                 inuse.Allowed(domain=mine, pids=pids))
    return users


def check_ours(name: str, domain: libvirt.virDomain | None, users: inuse.Users) -> None:
    """The domain NAME is undefined only when create-kvm made it or it uses NAME's disk: a
    domain made by hand that only has the name is not NAME's."""
    if domain is None or virt.made_by_hostcreator(domain):
        return
    uuid = domain.UUIDString()
    if not any(d.uuid == uuid and d.uses_disk for d in users.domains):
        raise DomainExists(f"the domain {name} was not made by hostcreator and does not use "
                           f"{name}'s disk; nothing was changed",
                           hint=f"it is not {name}'s: remove it yourself (virsh undefine {name})"
                                " if it is to go")


def plan(config: Config, conn: libvirt.virConnect, name: str, *, disk: bool, stop: bool
         ) -> Plan:
    """What remove would remove; every refusal is raised here, before anything is touched."""
    found = Plan(name, domain=virt.lookup(conn, name))
    the_disk = storage.for_vm(config, name)
    users = check_disk(config, conn, name, the_disk, found.domain)
    check_ours(name, found.domain, users)
    if found.domain is not None and found.domain.isActive() and not stop:
        raise running_refused(name)
    local_files(config, name, found)
    if not virt.is_remote(config.libvirt_uri) and the_disk.exists():
        if disk:
            found.disk = the_disk
        else:
            found.kept = the_disk
    return found


def local_files(config: Config, name: str, found: Plan) -> Plan:
    """FOUND with the files and directories of NAME's that are there."""
    vm = VmPaths.of(config, name)
    found.files = [p for p in files_of(vm) if p.exists()]
    found.dirs = [p for p in dirs_of(vm) if p.is_dir()]
    found.secrets = vm.secrets
    return found


def stop_domain(dom: libvirt.virDomain, seconds: float) -> None:
    """Shut DOM down (ACPI); destroy it when it has not stopped after SECONDS."""
    name = dom.name()
    logger.info("    shutting %s down (destroyed after %.0f s)", name, seconds)
    with contextlib.suppress(libvirt.libvirtError):  # it may be stopping already
        dom.shutdown()
    deadline = time.monotonic() + seconds
    while dom.isActive() and time.monotonic() < deadline:
        time.sleep(POLL_SECONDS)
    if dom.isActive():
        logger.info("    %s did not stop within %.0f s: destroying it", name, seconds)
        try:
            dom.destroy()
        except libvirt.libvirtError as exc:
            if dom.isActive():  # else it stopped by itself meanwhile
                raise HostCreatorError(f"cannot stop {name}: {virt.message(exc)}",
                                       hint=f"stop it yourself (virsh destroy {name}), then "
                                            f"remove {name} again") from None


def undefine(dom: libvirt.virDomain) -> None:
    """Undefine DOM with what belongs to it; flags this libvirt does not know are left out,
    the newest first."""
    flags = list(UNDEFINE_FLAGS)
    while True:
        try:
            dom.undefineFlags(sum(flags))
            return
        except libvirt.libvirtError as exc:
            if exc.get_error_code() not in (libvirt.VIR_ERR_INVALID_ARG,
                                            libvirt.VIR_ERR_NO_SUPPORT) or not any(flags):
                raise HostCreatorError(f"cannot undefine {dom.name()}: "
                                       f"{virt.message(exc)}") from None
            flags.pop()


def remove_dir(directory: Path, everything: bool) -> str | None:
    """Remove DIRECTORY (with all in it when EVERYTHING, else only when empty: never what is
    not ours); why it is still there, else None."""
    failed: list[str] = []
    if everything:
        shutil.rmtree(directory, onerror=lambda _f, path, info: failed.append(
            f"{path}: {getattr(info[1], 'strerror', None) or info[1]}"))
    else:
        with contextlib.suppress(OSError):
            directory.rmdir()
    if not directory.exists():
        return None
    return f"{directory} ({failed[0] if failed else 'not empty'})"


def carry_out(found: Plan, *, stop: bool, stop_seconds: float,
              recheck: Callable[[], object] = lambda: None) -> list[str]:
    """Remove what FOUND names; a domain that runs now is stopped only with STOP, and once
    it has stopped RECHECK asks the in-use rule again. Secrets that stay are an error, raised
    once the rest is done."""
    done = []
    if (dom := found.domain) is not None:
        if dom.isActive():
            if not stop:  # started since it was asked
                raise running_refused(found.name)
            stop_domain(dom, stop_seconds)
            recheck()  # its QEMU is gone now: nothing else may have the disk open
        undefine(dom)
        done.append(f"the domain {found.name}")
    for path in found.files:
        path.unlink(missing_ok=True)
        done.append(str(path))
    left = []
    for directory in found.dirs:
        why = remove_dir(directory, everything=directory == found.secrets)
        if why is None:
            done.append(str(directory))
        elif directory == found.secrets:
            left.append(why)
    if found.disk is not None:
        found.disk.delete()
        done.append(found.disk.describe())
    if left:
        raise HostCreatorError(f"{found.name} is removed, but for its secrets: {'; '.join(left)}",
                               hint="remove them yourself (rm -r as root)")
    return done


def same(a: Plan, b: Plan) -> bool:
    """Whether A and B name the same domain and disk (what the user confirmed)."""
    uuid = [p.domain.UUIDString() if p.domain is not None else None for p in (a, b)]
    disks = [p.disk.describe() if p.disk is not None else None for p in (a, b)]
    return uuid[0] == uuid[1] and disks[0] == disks[1]


def remove(config: Config, name: str, *, disk: bool = False, stop: bool = False,
           confirm: Callable[[list[str]], bool] = lambda _what: True,
           stop_seconds: float = STOP_SECONDS) -> Removed:
    """Remove NAME's domain and files (and with DISK its disk), after CONFIRM says yes."""
    the_disk = check_locally(config, name, disk=disk)
    vm = VmPaths.of(config, name)
    with virt.connect(config.libvirt_uri) as conn, vm_lock(vm, "remove"):
        found = plan(config, conn, name, disk=disk, stop=stop)
        kept = found.kept.describe() if found.kept is not None else None
        done = []
        if not found.nothing:
            if not confirm(found.describe()):
                raise HostCreatorError(f"{name} was not removed: not confirmed")
            # Asked again: while it asked, a domain may have started or come, the disk
            # been taken.
            again = plan(config, conn, name, disk=disk, stop=stop)
            if not same(found, again):
                raise HostCreatorError(f"{name} changed while remove asked; nothing was removed",
                                       hint=f"remove {name} again to see what it removes now")
            done = carry_out(again, stop=stop, stop_seconds=stop_seconds, recheck=lambda: (
                check_disk(config, conn, name, the_disk, again.domain)))
        # Removed: the lock file goes too, still held (a refusal keeps it). A command
        # that opened it meanwhile sees that it is no longer the file at its path
        # (state/lock.py) and takes the new one.
        vm.lock.unlink(missing_ok=True)
    return Removed(name, done, kept)


def interrupted(name: str) -> str:
    """What is left when remove NAME is interrupted (the CLI says it)."""
    return (f"remove may have stopped midway: what is left of {name} is removed by "
            f"`hostcreator remove {name}` again")
