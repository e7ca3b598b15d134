"""The libvirt domain of a VM: what it has (DomainSpec), then its XML.

The XML comes from the jinja2 templates in templates/: domain.xml.j2 composes
one part per kind of device (templates/devices/), so each device is written
in one place. The persistent definition boots the VM's disk; the one-off live
configuration of a first boot from LIVE_ISO is the same domain (name, UUID,
MAC address, devices) with the ISO attached and booted first.
"""

from __future__ import annotations

import secrets
import tempfile
import uuid
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import jinja2

from hostcreator import __version__
from hostcreator.config import Config, Graphics, NetworkType, VirtType
from hostcreator.domain.choose import Choices
from hostcreator.domain.virt import MADE_BY
from hostcreator.errors import HostCreatorError
from hostcreator.log import logger
from hostcreator.paths import VmPaths
from hostcreator.run import missing_commands, run

MACHINE = "q35"
VALIDATOR = "virt-xml-validate"

_templates = jinja2.Environment(
    loader=jinja2.PackageLoader("hostcreator.domain", "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
    keep_trailing_newline=True,
)


def template(name: str) -> jinja2.Template:
    """One of templates/ (the domain XML, the OVF descriptor of an export)."""
    return _templates.get_template(name)


def random_mac() -> str:
    """A MAC address in the range QEMU/KVM guests use (52:54:00), chosen at random."""
    return "52:54:00:" + ":".join(f"{b:02x}" for b in secrets.token_bytes(3))


@dataclass(frozen=True)
class Disk:
    device: str  # disk or cdrom
    source: Path
    block: bool  # a block device (a logical volume) rather than a file
    target: str
    bus: str
    boot_order: int
    readonly: bool = False

    @property
    def source_type(self) -> str:
        return "block" if self.block else "file"

    @property
    def source_attribute(self) -> str:
        return "dev" if self.block else "file"

    @property
    def cache(self) -> str | None:
        # Direct I/O suits a block device; files may live where O_DIRECT fails (tmpfs).
        return "none" if self.block and self.device == "disk" else None

    @property
    def discard(self) -> bool:
        # The guest's TRIM keeps a sparse image sparse and an LV thin.
        return self.device == "disk"


@dataclass(frozen=True)
class Nic:
    type: NetworkType
    source: str | None
    mac: str


@dataclass(frozen=True)
class DomainSpec:
    name: str
    uuid: str
    memory: int
    vcpus: int
    virt_type: VirtType  # kvm or qemu, never auto
    disk: Path
    disk_is_block: bool
    nic: Nic
    console_log: Path
    graphics: Graphics = Graphics.VNC
    live_iso: Path | None = None
    machine: str = MACHINE

    def disks(self, live: bool = False) -> list[Disk]:
        """The disks; the live configuration boots the ISO first, then the disk."""
        iso = self.live_iso if live else None
        disks = [Disk("disk", self.disk, self.disk_is_block, "vda", "virtio",
                      boot_order=2 if iso else 1)]
        if iso is not None:
            disks.append(Disk("cdrom", iso, False, "sda", "sata", boot_order=1, readonly=True))
        return disks


def spec_for(config: Config, name: str, disk: Path, *, disk_is_block: bool,
             choices: Choices) -> DomainSpec:
    """The domain of NAME from the configuration and what was chosen for this host; a new
    UUID and MAC address."""
    return DomainSpec(
        name=name,
        uuid=str(uuid.uuid4()),
        memory=config.memory,
        vcpus=choices.vcpus,
        virt_type=choices.virt_type,
        disk=disk,
        disk_is_block=disk_is_block,
        nic=Nic(choices.network_type, choices.network, random_mac()),
        console_log=VmPaths.of(config, name).serial_log,
        graphics=config.graphics,
        live_iso=config.live_iso,
    )


def render(spec: DomainSpec, *, live: bool = False) -> str:
    """The domain XML: the persistent definition, or with LIVE the first boot's one."""
    if live and spec.live_iso is None:
        raise ValueError("a live configuration needs a live ISO")
    return template("domain.xml.j2").render(
        spec=spec,
        disks=spec.disks(live),
        nic=spec.nic,
        description=f"{spec.name}, {MADE_BY} {__version__}",
    )


def check(xml: str) -> None:
    """Fail before libvirt sees XML that is not well-formed or not a valid domain."""
    try:
        ET.fromstring(xml)
    except ET.ParseError as exc:
        raise HostCreatorError(f"the rendered domain XML is not well-formed: {exc}",
                               hint="a template or a setting holds a broken value") from None
    if missing_commands([VALIDATOR]):
        logger.debug("%s is not installed: the domain XML is only checked for form",
                     VALIDATOR)
        return
    with tempfile.NamedTemporaryFile("w", suffix=".xml", prefix="hostcreator-") as f:
        f.write(xml)
        f.flush()
        result = run([VALIDATOR, f.name, "domain"], capture=True, check=False)
    if result.returncode != 0:
        problem = next((line for line in result.tail if line.strip()), "no reason given")
        raise HostCreatorError(f"the rendered domain XML is not valid: {problem}",
                               hint="run with --dry-run to see it; the log has the details")
