"""What a disk holds, read from the file or block device itself (nothing is attached):
its GPT partitions and whether one of them holds a file system a root can be on.

create-kvm boots disks that hostcreator did not build (made by the old kvm-hostcreator
scripts or by hand) when they have that much of a bootable layout; an empty file or
one without a partition table is refused before anything is defined.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path

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
    number: int
    start: int  # bytes
    size: int


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
                found.append(Partition(number + 1, first * sector, (last - first + 1) * sector))
        return found
    return None


def root_filesystem(fd: int, parts: list[Partition]) -> tuple[Partition, str] | None:
    """The first partition holding a file system a root can be on, and that one's kind."""
    for part in parts:
        for kind, (offset, magic) in ROOT_FILESYSTEMS.items():
            if offset + len(magic) <= part.size and \
                    os.pread(fd, len(magic), part.start + offset) == magic:
                return part, kind
    return None


def check_bootable(path: Path, what: str) -> str:
    """PATH (WHAT, for messages) has a GPT with a root file system; returns what was found."""
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            parts = partitions(f.fileno())
            root = root_filesystem(f.fileno(), parts) if parts else None
    except OSError as exc:
        raise InvalidInput(f"cannot read {what}: {exc.strerror}") from None
    refusal = "refused: it has no bootable layout"
    if parts is None:
        empty = " (it is empty)" if size == 0 and path.is_file() else ""
        raise InvalidInput(f"{what} holds no GPT partition table{empty}; {refusal}",
                           hint="build it with create-debian or create-ubuntu")
    if root is None:
        raise InvalidInput(f"{what} has no partition with a root file system; {refusal}",
                           hint="build it with create-debian or create-ubuntu")
    part, kind = root
    return f"a GPT of {len(parts)} partition(s), {kind} on partition {part.number}"
