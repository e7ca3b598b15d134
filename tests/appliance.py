"""Reading what hostcreator export writes, independently of the writer (qemu-img): the
header of a VMDK as VMware's sparse extent format lays it out, and an OVA's members,
manifest and descriptor checked against each other. For test_export.py and its e2e."""

from __future__ import annotations

import re
import struct
import tarfile
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

from conftest import sha256

OVF = "{http://schemas.dmtf.org/ovf/envelope/1}"
# VMware's SparseExtentHeader, little-endian: magic, version, flags, capacity (sectors),
# grain size, descriptor offset and size (sectors), GTEs per GT, rgd, gd, overhead,
# unclean shutdown, the four line-end check characters, the compression algorithm.
HEADER = struct.Struct("<IIIQQQQIQQQB4sH")
MAGIC = 0x564D444B  # "KDMV"
COMPRESSED = 1 << 16  # flags: grains are compressed
MARKERS = 1 << 17  # flags: the stream has markers
DEFLATE = 1
SECTOR = 512


@dataclass(frozen=True)
class Vmdk:
    version: int
    compressed: bool
    markers: bool
    deflate: bool
    capacity: int  # bytes
    descriptor: str


def read_vmdk(path: Path) -> Vmdk:
    with open(path, "rb") as f:
        head = f.read(HEADER.size)
        fields = HEADER.unpack(head)
        magic, version, flags, capacity, _grain, offset, size = fields[:7]
        assert magic == MAGIC, f"{path} is no sparse VMDK"
        f.seek(offset * SECTOR)
        descriptor = f.read(size * SECTOR).rstrip(b"\0").decode()
    return Vmdk(version, bool(flags & COMPRESSED), bool(flags & MARKERS),
                fields[-1] == DEFLATE, capacity * SECTOR, descriptor)


def create_type(vmdk: Vmdk) -> str | None:
    match = re.search(r'^createType="(\w+)"', vmdk.descriptor, re.MULTILINE)
    return match[1] if match else None


def extent_file(vmdk: Vmdk) -> str | None:
    match = re.search(r'^RW \d+ SPARSE "([^"]+)"', vmdk.descriptor, re.MULTILINE)
    return match[1] if match else None


def check_ova(path: Path, name: str, work: Path) -> tuple[ET.Element, Path]:
    """PATH's members in order, in ustar; its manifest and descriptor agreeing with the
    files, the VMDK streamOptimized. The descriptor, and the VMDK extracted into WORK."""
    with open(path, "rb") as f:
        assert f.read(SECTOR)[257:265] == b"ustar\x0000"
    with tarfile.open(path) as tar:
        names = [m.name for m in tar.getmembers()]
        assert names == [f"{name}.ovf", f"{name}.mf", f"{name}-disk1.vmdk"]
        tar.extractall(work, filter="data")
    manifest = (work / names[1]).read_text().splitlines()
    assert manifest == [f"SHA256({n})= {sha256(work / n)}" for n in (names[0], names[2])]
    envelope = ET.parse(work / names[0]).getroot()
    (file,) = envelope.iter(f"{OVF}File")
    vmdk_path = work / names[2]
    assert file.get(f"{OVF}href") == names[2]
    assert int(file.get(f"{OVF}size")) == vmdk_path.stat().st_size
    vmdk = read_vmdk(vmdk_path)
    assert (create_type(vmdk), extent_file(vmdk)) == ("streamOptimized", names[2])
    assert vmdk.compressed and vmdk.markers and vmdk.deflate and vmdk.version == 3
    (disk,) = envelope.iter(f"{OVF}Disk")
    assert int(disk.get(f"{OVF}capacity")) == vmdk.capacity
    assert 0 < int(disk.get(f"{OVF}populatedSize")) <= vmdk.capacity
    return envelope, vmdk_path
