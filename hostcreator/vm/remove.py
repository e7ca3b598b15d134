"""hostcreator remove NAME: the domain and every file hostcreator keeps for NAME.

Every refusal comes before anything is touched: the in-use rule for remove
(host/inuse.py: NAME mounted by mount-vm; its disk mounted anywhere, attached
to a loop device, the disk of another domain, or open in a process other than
NAME's own QEMU), then its domain running (unless --stop). Then, under NAME's
lock: the domain is shut down (--stop: ACPI first, destroyed after a timeout;
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
from hostcreator.errors import DiskInUse, HostCreatorError
from hostcreator.host import inuse
from hostcreator.log import logger
from hostcreator.paths import VmPaths
from hostcreator.state.lock import vm_lock

STOP_SECONDS = 60
POLL_SECONDS = 0.5
# What undefine takes with the domain: firmware variables, TPM state, saved state,
# snapshot and checkpoint metadata (names missing from an older libvirt-python count 0).
UNDEFINE_FLAGS = tuple(getattr(libvirt, flag, 0) for flag in (
    "VIR_DOMAIN_UNDEFINE_NVRAM", "VIR_DOMAIN_UNDEFINE_TPM", "VIR_DOMAIN_UNDEFINE_MANAGED_SAVE",
    "VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA", "VIR_DOMAIN_UNDEFINE_CHECKPOINTS_METADATA"))


def files_of(vm: VmPaths) -> list[Path]:
    """Every file hostcreator keeps for the VM, but the disk and the lock."""
    # boot-test's QEMU writes its own output beside the console log.
    return [vm.journal, vm.log, vm.serial_log, vm.console_log,
            vm.console_log.with_suffix(".qemu.log")]


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


def check_disk(config: Config, conn: libvirt.virConnect, name: str, disk: storage.Storage,
               domain: libvirt.virDomain | None) -> None:
    """The in-use rule for remove (inuse.RULES): NAME not mounted by mount-vm; its disk not
    mounted, not attached, no other domain's, open only in NAME's own running QEMU (asked
    again once --stop has ended it)."""
    users = inuse.users_of(disk.path, vm=inuse.Vm.of(config, name),
                           domains=virt.domains_of(conn))
    running = domain is not None and bool(domain.isActive())
    mine = domain.UUIDString() if domain is not None else None
    inuse.refuse(users, inuse.Command.REMOVE, disk.describe(),
                 inuse.Allowed(domain=mine, processes=running))


def plan(config: Config, conn: libvirt.virConnect, name: str, *, disk: bool, stop: bool
         ) -> Plan:
    """What remove would remove; every refusal is raised here, before anything is touched."""
    found = Plan(name, domain=virt.lookup(conn, name))
    the_disk = storage.for_vm(config, name)
    check_disk(config, conn, name, the_disk, found.domain)
    if found.domain is not None and found.domain.isActive() and not stop:
        raise DiskInUse(f"{name} is running", hint=f"--stop shuts it down first (destroyed "
                        f"after {STOP_SECONDS} s), or stop it yourself (virsh shutdown {name})")
    vm = VmPaths.of(config, name)
    found.files = [p for p in files_of(vm) if p.exists()]
    found.dirs = [p for p in dirs_of(vm) if p.is_dir()]
    found.secrets = vm.secrets
    if the_disk.exists():
        if disk:
            found.disk = the_disk
        else:
            found.kept = the_disk
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
        dom.destroy()


def undefine(dom: libvirt.virDomain) -> None:
    """Undefine DOM with what belongs to it; flags this libvirt does not know are left out."""
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
            flags.pop()  # the newest flag first


def carry_out(found: Plan, stop_seconds: float) -> list[str]:
    done = []
    if (dom := found.domain) is not None:
        if dom.isActive():
            stop_domain(dom, stop_seconds)
            if (the_disk := found.disk or found.kept) is not None:
                # Its QEMU is gone now: nothing else may have the disk open.
                inuse.refuse(inuse.users_of(the_disk.path), inuse.Command.REMOVE,
                             the_disk.describe())
        undefine(dom)
        done.append(f"the domain {found.name}")
    for path in found.files:
        path.unlink(missing_ok=True)
        done.append(str(path))
    for directory in found.dirs:
        if directory == found.secrets:
            shutil.rmtree(directory, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):  # only when empty: never what is not ours
                directory.rmdir()
        if not directory.exists():
            done.append(str(directory))
    if found.disk is not None:
        found.disk.delete()
        done.append(found.disk.describe())
    return done


def remove(config: Config, name: str, *, disk: bool = False, stop: bool = False,
           confirm: Callable[[list[str]], bool] = lambda _what: True,
           stop_seconds: float = STOP_SECONDS) -> Removed:
    """Remove NAME's domain and files (and with DISK its disk), after CONFIRM says yes."""
    vm = VmPaths.of(config, name)
    with virt.connect(config.libvirt_uri) as conn, vm_lock(vm, "remove"):
        found = plan(config, conn, name, disk=disk, stop=stop)
        kept = found.kept.describe() if found.kept is not None else None
        if not found.nothing and not confirm(found.describe()):
            raise HostCreatorError(f"{name} was not removed: not confirmed")
        done = [] if found.nothing else carry_out(found, stop_seconds)
        # Removed: the lock file goes too, still held (a refusal keeps it). A command
        # that opened it meanwhile sees that it is no longer the file at its path
        # (state/lock.py) and takes the new one.
        vm.lock.unlink(missing_ok=True)
    return Removed(name, done, kept)
