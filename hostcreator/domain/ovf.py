"""An exported VM as an OVA: the OVF descriptor, its manifest and the package.

The descriptor is OVF 1.x (DMTF DSP0243; templates/appliance.ovf.j2): one disk
file, the disk with its capacity and the bytes it holds, one network, and one
virtual system with its operating system (the CIM ids VirtualBox reads, the
guest ids VMware reads), vCPUs, memory, an LSI Logic SCSI controller (VMware and
VirtualBox both offer it and Debian's and Ubuntu's initramfs carry its driver),
the disk, an E1000 NIC, the product (name, vendor, version) and, for a disk built
for UEFI, the firmware. The manifest gives each file's SHA-256 as
`SHA256(file)= hex`. The package is a ustar tar holding, in this order, the
descriptor, the manifest and the disk, as OVF requires (the descriptor first, so
that an importer reads it before the disk streams by).
"""

from __future__ import annotations

import hashlib
import io
import tarfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from hostcreator.domain.render import template
from hostcreator.errors import HostCreatorError

DISK_FORMAT = "http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized"
# vmx-10: a hardware family every VMware product of the last decade runs;
# VirtualBox imports it as well.
SYSTEM_TYPE = "vmx-10"
CONTROLLER = "lsilogic"
NIC = "E1000"
NETWORK = "NAT"
# ustar keeps a member's size in 11 octal digits.
USTAR_MAX = 8**11 - 1
CHUNK = 1 << 20


@dataclass(frozen=True)
class OperatingSystem:
    cim_id: int  # CIM_OperatingSystem's OSType, what OperatingSystemSection ovf:id holds
    vmware: str  # VMware's guest id
    description: str


# 64-bit guests: CIM's "Debian 64-Bit" and "Ubuntu 64-Bit".
SYSTEMS = {
    "debian": OperatingSystem(96, "debian10_64Guest", "Debian GNU/Linux (64-bit)"),
    "ubuntu": OperatingSystem(94, "ubuntu64Guest", "Ubuntu Linux (64-bit)"),
}


@dataclass(frozen=True)
class Appliance:
    """What the descriptor says of one exported VM."""

    name: str
    distribution: str
    suite: str
    vcpus: int
    memory_mib: int
    capacity: int  # the virtual disk's size in bytes
    populated_size: int  # the bytes of it that hold data
    disk_file: str  # the VMDK's name inside the package
    disk_file_size: int
    vendor: str
    version: str
    efi: bool = False

    @property
    def os(self) -> OperatingSystem:
        return SYSTEMS[self.distribution]

    @property
    def descriptor_file(self) -> str:
        return f"{self.name}.ovf"

    @property
    def manifest_file(self) -> str:
        return f"{self.name}.mf"


def disk_file_of(name: str) -> str:
    return f"{name}-disk1.vmdk"


def descriptor(appliance: Appliance) -> str:
    return template("appliance.ovf.j2").render(
        a=appliance, disk_format=DISK_FORMAT, system_type=SYSTEM_TYPE, controller=CONTROLLER,
        nic=NIC, network=NETWORK)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def manifest(digests: Iterable[tuple[str, str]]) -> str:
    """One line per (file name, SHA-256 hex digest), in the form OVF gives."""
    return "".join(f"SHA256({name})= {digest}\n" for name, digest in digests)


def _size(member: bytes | Path) -> int:
    return len(member) if isinstance(member, bytes) else member.stat().st_size


def package(target: Path, members: Sequence[tuple[str, bytes | Path]]) -> None:
    """Write the ustar tar TARGET holding MEMBERS (the name inside, and the data or the
    file here), in their order."""
    for name, member in members:
        if _size(member) > USTAR_MAX:
            raise HostCreatorError(f"{name} has {_size(member)} bytes, more than a ustar "
                                   "archive (an OVA) can hold (8 GiB)",
                                   hint="export it as --format vmdk or qcow2 instead")
    with tarfile.open(target, "w", format=tarfile.USTAR_FORMAT) as tar:
        for name, member in members:
            info = tarfile.TarInfo(name)
            info.size = _size(member)
            info.mode = 0o644
            info.mtime = int(time.time())
            info.uname = info.gname = "root"
            if isinstance(member, bytes):
                tar.addfile(info, io.BytesIO(member))
            else:
                with open(member, "rb") as f:
                    tar.addfile(info, f)
