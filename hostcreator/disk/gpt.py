"""What a disk holds, read from the file or block device itself (nothing is attached):
its GPT partitions, which file system a root can be on each holds, and whether they are
the layout hostcreator makes (partition.Layout, by role).

create-kvm boots disks that hostcreator did not build (made by the old kvm-hostcreator
scripts or by hand) when they have that much of a bootable layout; an empty file or
one without a partition table is refused before anything is defined. mount-vm mounts
the root by its role in hostcreator's layout, so it needs that layout: checked here
before a loop device is attached.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass, replace
from pathlib import Path

from hostcreator.disk import partition
from hostcreator.errors import InvalidInput

SIGNATURE = b"EFI PART"
# Where a GPT header is: LBA 1 of 512- or 4096-byte sectors.
SECTOR_SIZES = (512, 4096)
MAX_ENTRIES = 1024
# File systems a root is on, by their magic: (offset in the partition, bytes).
ROOT_FILESYSTEMS = {
    "ext2/3/4": (1024 + 56, b"\x53\xef"),
    "xfs": (0, b"XFSB"),
    "btrfs": (0x10040, b"_BHRfS_M"),
}
@dataclass(frozen=True)
class Partition:
    number: int  # its entry in the table, from 1
    name: str  # the GPT partition name
    start: int  # bytes
    size: int
    kind: str | None = None  # the file system a root can be on it holds (read())


def partitions(fd: int) -> list[Partition] | None:
    """The GPT's partitions of the open disk FD, or None when it has no GPT."""
    for sector in SECTOR_SIZES:
        header = os.pread(fd, 92, sector)
        if header[:8] != SIGNATURE:
            continue
        entries_lba, count, entry_size = struct.unpack_from("<QII", header, 72)
        if entry_size < 128 or not 0 < count <= MAX_ENTRIES:
            return []
        table = os.pread(fd, count * entry_size, entries_lba * sector)
        found = []
        for number in range(len(table) // entry_size):
            entry = table[number * entry_size:(number + 1) * entry_size]
            first, last = struct.unpack_from("<QQ", entry, 32)
            if entry[:16] != bytes(16) and last >= first:
                name = entry[56:128].decode("utf-16-le", "replace").split("\0", 1)[0]
                found.append(Partition(number + 1, name, first * sector,
                                       (last - first + 1) * sector))
        return found
    return None


def filesystem(fd: int, part: Partition) -> str | None:
    """The kind of file system a root can be on that PART holds, or None."""
    for kind, (offset, magic) in ROOT_FILESYSTEMS.items():
        if offset + len(magic) <= part.size and \
                os.pread(fd, len(magic), part.start + offset) == magic:
            return kind
    return None


def read(path: Path, what: str) -> tuple[int, list[Partition] | None]:
    """PATH's size and its GPT's partitions, each with the root file system it holds."""
    try:
        with open(path, "rb") as f:
            parts = partitions(f.fileno())
            if parts is not None:
                parts = [replace(p, kind=filesystem(f.fileno(), p)) for p in parts]
            return os.fstat(f.fileno()).st_size, parts
    except OSError as exc:
        raise InvalidInput(f"cannot read {what}: {exc.strerror}") from None


def layout(parts: list[Partition]) -> partition.Layout | None:
    """PARTS by role when they are the partitions of hostcreator's layout, in its order
    (partition.ROLES knows their places), else None."""
    if [p.number for p in parts] != list(range(1, len(partition.ROLES) + 1)):
        return None
    return partition.Layout(*(partition.Part(p.name, p.start, p.size, fstype=p.kind)
                              for p in parts))


def check_bootable(path: Path, what: str) -> str:
    """PATH (WHAT, for messages) has a GPT with a root file system; returns what was found
    (by role when the disk has hostcreator's layout)."""
    size, parts = read(path, what)
    refusal = "refused: it has no bootable layout"
    if parts is None:
        empty = " (it is empty)" if size == 0 and path.is_file() else ""
        raise InvalidInput(f"{what} holds no GPT partition table{empty}; {refusal}",
                           hint="build it with create-debian or create-ubuntu")
    ours = layout(parts)
    if ours is not None and ours.root.fstype is not None:
        return f"the partitions create-debian makes ({', '.join(partition.ROLES)}), " \
               f"{ours.root.fstype} on root"
    root = next((p for p in parts if p.kind is not None), None)
    if root is None:
        raise InvalidInput(f"{what} has no partition with a root file system; {refusal}",
                           hint="build it with create-debian or create-ubuntu")
    return f"a GPT of {len(parts)} partition(s), {root.kind} on partition {root.number}"


# mount-vm mounts the root as ext4 (which reads ext2 and ext3 too).
MOUNTABLE = "ext2/3/4"
MOUNT_HINT = "mount-vm knows disks with BIOS boot, swap and root partitions"


def check_mountable(path: Path, what: str) -> None:
    """PATH has hostcreator's layout with an ext2/3/4 root in its place: mount-vm finds
    the root by its role (partition.find), after attaching the disk."""
    _size, parts = read(path, what)
    if parts is None:
        raise InvalidInput(f"{what} holds no GPT partition table: not a disk create-debian made",
                           hint=MOUNT_HINT)
    ours = layout(parts)
    if ours is None:
        raise InvalidInput(f"{what} does not have the partitions create-debian makes "
                           f"({', '.join(partition.ROLES)}, in that order): its GPT has "
                           f"{len(parts)}", hint=MOUNT_HINT)
    if ours.root.fstype != MOUNTABLE:
        raise InvalidInput(f"{what} has no {MOUNTABLE} file system on its root partition",
                           hint=MOUNT_HINT)
