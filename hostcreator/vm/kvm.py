"""create-kvm: the libvirt domain for a VM's disk, defined first, then started.

Every check comes before anything is changed: the disk exists and nothing
else uses it (a loop device means mount-vm or a build has it; another domain
may have it too), the live ISO, the bridge or libvirt network, libvirt
answering, and no domain of that name - an existing domain is never touched.
Then the persistent definition (booting the disk) is written with defineXML,
and only then the domain starts: from a one-off live configuration with the
ISO booted first (createXML, same name and UUID) when LIVE_ISO is set. So the
persistent definition is never missing or wrong, whatever happens between
the calls.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import libvirt

from hostcreator.build import recover
from hostcreator.config import Config, StorageKind
from hostcreator.disk import gpt, storage
from hostcreator.domain import bootwait, choose, virt
from hostcreator.domain import render as domain
from hostcreator.domain.console import log_size
from hostcreator.errors import (
    DomainExists,
    HostCreatorError,
    InvalidInput,
    UnfinishedBuild,
)
from hostcreator.host import inuse, places
from hostcreator.log import Progress, log_file, logger
from hostcreator.paths import VmPaths, validate_name
from hostcreator.state import journal
from hostcreator.state.lock import vm_lock


@dataclass
class Started:
    name: str
    choices: choose.Choices | None  # None for --start: the domain is as it was defined
    state: str = "running"
    up: bootwait.Up | None = None
    addresses: list[str] = field(default_factory=list)
    console_log: Path | None = None
    display: str | None = None

    def as_json(self) -> dict[str, Any]:
        """What create-kvm --json prints: the domain, its state and addresses, the choices."""
        chosen = self.choices
        return {
            "domain": self.name, "state": self.state,
            "virt_type": chosen and str(chosen.virt_type), "vcpus": chosen and chosen.vcpus,
            "network": chosen and {"type": str(chosen.network_type), "source": chosen.network},
            "chosen": list(chosen.notes) if chosen else [],
            "up": None if self.up is None else {"how": self.up.how,
                                                "seconds": round(self.up.seconds, 1)},
            "addresses": self.addresses, "console_log": self.console_log,
            "display": self.display,
        }


def check_live_iso(config: Config) -> None:
    iso = config.live_iso
    if iso is not None and not iso.is_file():
        raise InvalidInput(f"LIVE_ISO: {iso} is not a file",
                           hint="check LIVE_ISO or --live-iso, or unset it to boot the disk")


def local_disk(config: Config, name: str) -> storage.Storage:
    """NAME's disk, which must exist and be free (checked when libvirt runs on this host)."""
    disk = storage.for_vm(config, name)
    if virt.is_remote(config.libvirt_uri):
        logger.debug("libvirt is remote: %s is checked by libvirt there", disk.describe())
        return disk
    if not disk.exists():
        raise InvalidInput(f"{name} has no disk: {disk.describe()} does not exist",
                           hint=f"build it first: create-debian {name}")
    check_build_finished(config, name, disk)
    inuse.refuse(inuse.users_of(disk.path, vm=inuse.Vm.of(config, name)),
                 inuse.Command.CREATE_KVM, disk.describe(), inuse.Allowed(processes=True))
    return disk


def check_build_finished(config: Config, name: str, disk: storage.Storage) -> None:
    """A disk whose build did not finish (or is still running) is not booted; one without a
    journal (made by hand, or by the old kvm-hostcreator) only with a bootable layout."""
    record = journal.load(config.journal_dir, name)
    if record is None:
        found = gpt.check_bootable(disk.path, disk.describe())
        logger.info("note: %s has no build journal: hostcreator did not build %s (%s); it is "
                    "booted as it is", name, disk.describe(), found)
        return
    if not record.finished:
        raise UnfinishedBuild(
            f"the build of {name} did not finish: it {recover.describe(config, name, record)}",
            hint=f"finish it first: create-{record.distribution} {name} --resume (or --restart)",
        )


def check_locally(config: Config, name: str, writes: bool = True) -> storage.Storage:
    """Everything that can be checked without libvirt (and, when it WRITES, the directories
    of its lock, log and serial console)."""
    validate_name(name)
    if writes:
        places.check_writable(config, ("STATE_DIR", "LOG_DIR"))
    check_live_iso(config)
    choose.check_named_bridge(config)
    return local_disk(config, name)


def make_spec(config: Config, name: str, disk: storage.Storage,
              choices: choose.Choices) -> domain.DomainSpec:
    return domain.spec_for(config, name, disk.path,
                           disk_is_block=config.storage_kind is StorageKind.LVM,
                           choices=choices)


def render_checked(spec: domain.DomainSpec) -> tuple[str, str | None]:
    """The persistent XML and, with a live ISO, the first boot's XML, both checked."""
    persistent = domain.render(spec)
    domain.check(persistent)
    live = None
    if spec.live_iso is not None:
        live = domain.render(spec, live=True)
        domain.check(live)
    return persistent, live


def dry_run(config: Config, name: str) -> str:
    """The XML create-kvm would give libvirt; libvirt is not asked anything."""
    disk = check_locally(config, name, writes=False)
    choices = choose.choose(config, None, dry_run=True)
    for note in choices.notes:
        logger.info("%s", note)
    persistent, live = render_checked(make_spec(config, name, disk, choices))
    if live is None:
        return persistent
    return ("<!-- persistent definition (boots the disk) -->\n" + persistent
            + "<!-- first boot only: live configuration (boots the ISO first) -->\n" + live)


def refuse_existing(conn: libvirt.virConnect, name: str) -> None:
    dom = virt.lookup(conn, name)
    if dom is None:
        return
    if dom.isActive():
        hint = f"to make it anew, remove it first (hostcreator remove {name} --stop)"
    else:
        hint = f"start it: create-kvm {name} --start; or remove it first " \
               f"(hostcreator remove {name})"
    raise DomainExists(f"domain {name} exists already ({virt.state(dom)}); nothing was changed",
                       hint=hint)


def refuse_used_disk(conn: libvirt.virConnect, config: Config, path: Path,
                     started: str | None = None) -> None:
    """No other domain has the disk (nor, with a local libvirt, a loop device or a process:
    a QEMU started by hand); STARTED is the UUID of the domain create-kvm --start starts."""
    remote = virt.is_remote(config.libvirt_uri)
    users = inuse.users_of(path, domains=virt.domains_of(conn), remote=remote, host=not remote)
    inuse.refuse(users, inuse.Command.CREATE_KVM, str(path), inuse.Allowed(domain=started))


def check_libvirt(conn: libvirt.virConnect, config: Config, name: str, path: Path) -> None:
    refuse_existing(conn, name)
    refuse_used_disk(conn, config, path)


def define(conn: libvirt.virConnect, name: str, xml: str) -> libvirt.virDomain:
    try:
        return conn.defineXMLFlags(xml, libvirt.VIR_DOMAIN_DEFINE_VALIDATE)
    except libvirt.libvirtError as exc:
        raise HostCreatorError(f"libvirt did not accept the domain {name}: "
                               f"{virt.message(exc)}") from None


def start_failed(name: str, exc: libvirt.libvirtError) -> HostCreatorError:
    text = virt.message(exc)
    hint = (f"{name} stays defined: fix the cause, then `create-kvm {name} --start` "
            f"(or `hostcreator remove {name}` to begin again)")
    if "virtlogd" in text:
        hint = "virtlogd is not running: start it (virtlogd -d); then " + hint
    elif "Permission denied" in text:
        hint = ("QEMU runs as the unprivileged user of /etc/libvirt/qemu.conf: every directory "
                "above the disk and the ISO must be searchable by it (chmod o+x); then " + hint)
    return HostCreatorError(f"{name} is defined but did not start: {text}", hint=hint)


def start(conn: libvirt.virConnect, dom: libvirt.virDomain, live: str | None
          ) -> libvirt.virDomain:
    """Start DOM as defined, or once from the LIVE configuration of the same name and UUID."""
    try:
        if live is None:
            dom.create()
            return dom
        return conn.createXML(live, libvirt.VIR_DOMAIN_START_VALIDATE)
    except libvirt.libvirtError as exc:
        raise start_failed(dom.name(), exc) from None


def report(config: Config, dom: libvirt.virDomain, console: Path | None) -> None:
    name = dom.name()
    logger.info("    %s is running; its console: virsh -c %s console %s", name,
                config.libvirt_uri, name)
    if console is not None:
        logger.info("    serial console log: %s", console)
    if display := virt.display_of(dom):
        logger.info("    display: %s", display)


def finish(started: Started, dom: libvirt.virDomain, console: Path | None) -> Started:
    """STARTED with what the domain shows now: its state, addresses and display."""
    started.state = virt.state(dom)
    started.addresses = virt.addresses(dom)
    started.console_log = console
    started.display = virt.display_of(dom) if dom.isActive() else None
    if started.addresses:
        logger.info("    addresses: %s", ", ".join(started.addresses))
    return started


def wait(dom: libvirt.virDomain, console: Path | None, since: int, timeout: float
         ) -> bootwait.Up:
    up = bootwait.wait_for_guest(dom, console, since=since, timeout=timeout)
    logger.info("    %s is up after %.0f s: %s", dom.name(), up.seconds, up.how)
    return up


def create(config: Config, name: str, *, wait_seconds: float | None = None) -> Started:
    """Define NAME's domain from the templates and start it; never touch an existing one."""
    disk = check_locally(config, name)
    vm = VmPaths.of(config, name)
    progress = Progress(4 if wait_seconds is not None else 3)
    with virt.connect(config.libvirt_uri) as conn, vm_lock(vm, "create-kvm"):
        with progress.stage("checks"):
            check_libvirt(conn, config, name, disk.path)
            choices = choose.choose(config, conn)
            for note in choices.notes:
                logger.info("    %s", note)
            spec = make_spec(config, name, disk, choices)
            persistent, live = render_checked(spec)
        local = not virt.is_remote(config.libvirt_uri)
        if local:
            spec.console_log.parent.mkdir(parents=True, exist_ok=True)
        with log_file(vm.log):
            with progress.stage("define"):
                dom = define(conn, name, persistent)
                logger.info("    %s defined (%s, %d MiB, %d vCPUs, %s NIC%s)", name,
                            spec.virt_type, spec.memory, spec.vcpus, spec.nic.type,
                            f" {spec.nic.source}" if spec.nic.source else "")
            console = spec.console_log if local else None
            since = log_size(console)
            with progress.stage("start" + (f" from {spec.live_iso}" if live else "")):
                dom = start(conn, dom, live)
                report(config, dom, console)
            started = Started(name, choices)
            if wait_seconds is not None:
                with progress.stage("wait for the guest"):
                    started.up = wait(dom, console, since, wait_seconds)
            return finish(started, dom, console)


def start_existing(config: Config, name: str, *, wait_seconds: float | None = None) -> Started:
    """Start the existing, stopped domain NAME as it is defined (--start)."""
    vm = VmPaths.of(config, name)
    local = not virt.is_remote(config.libvirt_uri)
    with virt.connect(config.libvirt_uri) as conn, vm_lock(vm, "create-kvm --start"):
        dom = virt.lookup(conn, name)
        if dom is None:
            raise InvalidInput(f"there is no domain {name}",
                               hint=f"create-kvm {name} (without --start) defines it")
        console = virt.console_log_of(dom) if local else None
        since = log_size(console)
        if dom.isActive():
            logger.info("%s is running already", name)
        else:
            inactive = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
            for disk in virt.disk_sources(conn, inactive):
                if disk.writable:
                    refuse_used_disk(conn, config, Path(disk.path), started=dom.UUIDString())
            try:
                dom.create()
            except libvirt.libvirtError as exc:
                raise start_failed(name, exc) from None
            report(config, dom, console)
        started = Started(name, None)
        if wait_seconds is not None:
            started.up = wait(dom, console, since, wait_seconds)
        return finish(started, dom, console)
