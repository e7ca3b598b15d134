"""hostcreator list: every VM hostcreator knows, and where each one stands.

A VM is known by any trace of it: a build journal, a disk <NAME>-disk01 in
IMAGE_DIR or in VG_NAME, a mount-vm record, or a libvirt domain that hostcreator
made (its description says so) or that uses one of those disks. For each: the
distribution and suite (from the journal), the disk (path, size, space used),
the build's state, the domain's state, its IP addresses (the guest agent, else
libvirt's DHCP leases) and whether mount-vm has it mounted.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import libvirt

from hostcreator import paths
from hostcreator.config import Config, StorageKind
from hostcreator.disk import storage
from hostcreator.domain import virt
from hostcreator.errors import HostCreatorError
from hostcreator.host import inuse
from hostcreator.log import logger
from hostcreator.run import run
from hostcreator.state import journal
from hostcreator.vm import mount as vmmount


@dataclass
class Disk:
    path: str
    size: int | None = None  # bytes
    used: int | None = None  # bytes allocated (an image file is sparse)


@dataclass
class Vm:
    name: str
    distribution: str | None = None
    suite: str | None = None
    disk: Disk | None = None
    build: str = "unknown"  # finished, failed, interrupted, running, or unknown: no journal
    build_detail: str | None = None
    domain: str = "none"  # running, shut off, ..., none, or unknown: libvirt did not answer
    addresses: list[str] = field(default_factory=list)
    mounted: str | None = None  # read-write, read-only, half-mounted (...)

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def image_disks(image_dir: Path) -> dict[str, Disk]:
    found = {}
    with contextlib.suppress(FileNotFoundError):
        for path in sorted(image_dir.iterdir()):
            if (name := paths.name_of_image(path)) and path.is_file():
                st = path.stat()
                found[name] = Disk(str(path), st.st_size, st.st_blocks * 512)
    return found


def lvm_disks(vg: str) -> dict[str, Disk]:
    result = run(storage.lvs_command(vg), capture=True, check=False)
    if result.returncode != 0:
        logger.warning("warning: cannot list the volume group %s: %s", vg,
                       next(iter(result.tail), "lvs failed"))
        return {}
    return {name: Disk(str(v.path), v.size) for v in storage.parse_lvs(result.stdout)
            if (name := paths.name_of_disk(v.name))}


def disks(config: Config) -> dict[str, Disk]:
    found = image_disks(config.image_dir)
    if config.storage_kind is StorageKind.LVM and config.vg_name:
        found.update(lvm_disks(config.vg_name))
    return found


@contextlib.contextmanager
def libvirt_or_none(uri: str) -> Iterator[libvirt.virConnect | None]:
    """A connection to libvirt, or None (with a warning) where it cannot be reached; an
    error inside the block is not taken for that one."""
    with contextlib.ExitStack() as stack:
        conn: libvirt.virConnect | None = None
        try:
            conn = stack.enter_context(virt.connect(uri))
        except HostCreatorError as exc:
            logger.warning("warning: %s: the domains are not listed", exc.message)
        yield conn


class Found(NamedTuple):
    """A domain of a known VM, and what libvirt said of its disks."""

    dom: libvirt.virDomain
    view: inuse.DomainView


def ours(conn: libvirt.virConnect, known: dict[str, Disk]) -> dict[str, Found]:
    """The domains hostcreator made or that use a known disk, by the VM's name."""
    views = virt.domain_views(conn)
    # Which domain uses which disk is the in-use rule's question (inuse.users_of).
    by_disk = {d.uuid: vm for vm, disk in known.items()
               for d in inuse.users_of(Path(disk.path), domains=lambda: views).domains}
    found = {}
    for view in views:
        try:
            dom = conn.lookupByUUIDString(view.uuid)
            made_here = virt.made_by_hostcreator(dom)
        except libvirt.libvirtError:
            continue  # it went away while we looked
        if (vm := by_disk.get(view.uuid)) is not None:
            found[vm] = Found(dom, view)
        elif made_here or view.name in known:
            found[view.name] = Found(dom, view)
    return found


def build_state(config: Config, vm: Vm) -> None:
    record = journal.load_or_warn(config.journal_dir, vm.name)
    if record is None:
        return
    vm.distribution, vm.suite = record.distribution, record.suite
    vm.build = str(record.status)
    vm.build_detail = record.describe()
    if vm.disk is None:
        vm.disk = Disk(str(record.disk))


def domain_state(found: Found, vm: Vm) -> None:
    if vm.disk is None and (writable := [d.path for d in found.view.disks if d.writable]):
        vm.disk = Disk(writable[0])
    try:
        vm.domain = virt.state(found.dom)
        vm.addresses = virt.addresses(found.dom)
    except libvirt.libvirtError:
        vm.domain = "unknown"


def list_vms(config: Config) -> list[Vm]:
    """Every VM hostcreator knows, by name."""
    found = disks(config)
    mounted = {m.name: m.mode for m in vmmount.list_mounted(config)}
    names = set(found) | set(journal.names(config.journal_dir)) | set(mounted)
    with libvirt_or_none(config.libvirt_uri) as conn:
        domains = ours(conn, found) if conn is not None else {}
        vms = []
        for name in sorted(names | set(domains)):
            vm = Vm(name, disk=found.get(name), mounted=mounted.get(name))
            build_state(config, vm)
            if conn is None:
                vm.domain = "unknown"
            elif name in domains:
                domain_state(domains[name], vm)
            vms.append(vm)
    return vms
