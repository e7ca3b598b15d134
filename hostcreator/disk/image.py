"""Disk image formats other hypervisors read: a raw image converted by qemu-img.

qcow2 is written compressed (libvirt, Proxmox, OpenStack), VMDK as streamOptimized
(VMware, VirtualBox, the disk inside an OVA: compressed grains in one stream), and
raw stays sparse (qemu-img leaves holes where the source reads as zeros). The
source is only read. qemu-img's progress meter is handed on, a percentage at a time.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from hostcreator.run import run


class Format(StrEnum):
    QCOW2 = "qcow2"
    VMDK = "vmdk"
    OVA = "ova"
    RAW = "raw"


# qemu-img's output format and options for each disk format (an OVA holds a VMDK).
# lsilogic: the SCSI controller the OVF descriptor names, which VMware and VirtualBox
# both offer; the VMDK header says which adapter the disk was made for.
CONVERT: dict[Format, tuple[str, tuple[str, ...]]] = {
    Format.QCOW2: ("qcow2", ("-c", "-o", "compression_type=zlib")),
    Format.VMDK: ("vmdk", ("-o", "subformat=streamOptimized,adapter_type=lsilogic")),
    Format.OVA: ("vmdk", ("-o", "subformat=streamOptimized,adapter_type=lsilogic")),
    Format.RAW: ("raw", ()),
}
SUFFIX = {Format.QCOW2: ".qcow2", Format.VMDK: ".vmdk", Format.OVA: ".ova", Format.RAW: ".raw"}
PERCENT = re.compile(r"\(\s*(\d+(?:\.\d+)?)/100%\)")


@dataclass(frozen=True)
class Info:
    format: str
    virtual_size: int
    actual_size: int
    subformat: str | None  # VMDK's create type: streamOptimized, monolithicSparse...


def argv(source: Path, target: Path, fmt: Format) -> list[str]:
    """qemu-img's command line converting the raw SOURCE to TARGET in FMT's disk format."""
    output, options = CONVERT[fmt]
    return ["qemu-img", "convert", "-p", "-f", "raw", "-O", output, *options,
            str(source), str(target)]


def percent_of(piece: str) -> float | None:
    """The percentage in one piece of qemu-img's progress meter: '    (12.50/100%)'."""
    match = PERCENT.search(piece)
    return float(match[1]) if match else None


def convert(source: Path, target: Path, fmt: Format,
            progress: Callable[[float], None] | None = None) -> None:
    """Convert the raw image SOURCE into TARGET (which must not exist yet)."""

    def meter(piece: str) -> None:
        done = percent_of(piece)
        if done is not None and progress is not None:
            progress(done)

    run(argv(source, target, fmt), what=f"the conversion to {fmt}", progress=meter)


def info(path: Path) -> Info:
    """What qemu-img reads in PATH (its format is probed, never assumed)."""
    data = json.loads(run(["qemu-img", "info", "--output=json", str(path)],
                          capture=True).stdout)
    specific = data.get("format-specific", {}).get("data", {})
    return Info(data["format"], data["virtual-size"], data.get("actual-size", 0),
                specific.get("create-type"))
