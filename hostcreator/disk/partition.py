"""The disk layout: GPT with GRUB BIOS boot, swap and an ext4 root.

The layout is pure arithmetic (layout()), written with pyparted
(write_table()); wiping, mkswap and mkfs.ext4 complete the stage.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import stat
import struct
import uuid
from dataclasses import dataclass
from pathlib import Path

import parted

from hostcreator.errors import HostCreatorError, InvalidInput
from hostcreator.host.libc import libc
from hostcreator.run import run

MIB = 1024**2
GIB = 1024**3
ALIGN = MIB
BIOS_BOOT_SIZE = 4 * MIB
SWAP_SIZE = 1020 * MIB
# Below this the root file system cannot hold a system with a kernel.
MIN_ROOT_SIZE = 2 * GIB
WIPE_HEAD = GIB
# The backup GPT lives in the last 33 sectors; a whole MiB is zeroed.
WIPE_TAIL = MIB
BLKZEROOUT = 0x127F
FALLOC_FL_KEEP_SIZE = 0x01
FALLOC_FL_PUNCH_HOLE = 0x02


@dataclass(frozen=True)
class Part:
    name: str
    start: int  # bytes
    size: int  # bytes

    @property
    def end(self) -> int:
        """First byte after the partition."""
        return self.start + self.size


@dataclass(frozen=True)
class Layout:
    bios_boot: Part
    swap: Part
    root: Part

    @property
    def parts(self) -> tuple[Part, Part, Part]:
        return (self.bios_boot, self.swap, self.root)


def minimum_disk_size() -> int:
    return ALIGN + BIOS_BOOT_SIZE + SWAP_SIZE + MIN_ROOT_SIZE + ALIGN


def layout(disk_size: int) -> Layout:
    """Partitions aligned to 1 MiB, the root taking the rest of DISK_SIZE bytes."""
    if disk_size < minimum_disk_size():
        raise InvalidInput(
            f"a disk of {disk_size / GIB:.2f} GiB is too small",
            hint=f"at least {-(-minimum_disk_size() // GIB)} GiB are needed",
        )
    bios = Part("bios_grub", ALIGN, BIOS_BOOT_SIZE)
    swap = Part("swap", bios.end, SWAP_SIZE)
    # Keep the last MiB free for the backup GPT, the root ends on a MiB boundary.
    root_end = (disk_size - ALIGN) // ALIGN * ALIGN
    root = Part("root", swap.end, root_end - swap.end)
    return Layout(bios, swap, root)


def _zero(fd: int, offset: int, length: int) -> None:
    """Zero a byte range without writing where the kernel can do it for us.

    A file gets a hole punched (it stays sparse); a block device BLKZEROOUT
    (thin volumes stay thin); anything else gets zeros written.
    """
    mode = os.fstat(fd).st_mode
    if stat.S_ISREG(mode):
        if libc.fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset, length) == 0:
            return
    elif stat.S_ISBLK(mode):
        try:
            fcntl.ioctl(fd, BLKZEROOUT, struct.pack("QQ", offset, length))
            return
        except OSError:
            pass
    chunk = bytes(4 * MIB)
    os.lseek(fd, offset, os.SEEK_SET)
    remaining = length
    while remaining:
        remaining -= os.write(fd, chunk[: min(len(chunk), remaining)])


def wipe(device: Path, disk_size: int) -> None:
    """Zero the first GiB (or the whole disk if smaller) and the GPT backup area.

    DEVICE is the image file or the logical volume itself, before it is attached
    to a loop device, so that no stale cached sectors can survive the wipe.
    """
    fd = os.open(device, os.O_WRONLY)
    try:
        head = min(WIPE_HEAD, disk_size)
        _zero(fd, 0, head)
        tail_start = max(head, disk_size - WIPE_TAIL)
        if tail_start < disk_size:
            _zero(fd, tail_start, disk_size - tail_start)
        os.fsync(fd)
    finally:
        os.close(fd)


def write_table(device: Path, plan: Layout) -> None:
    """Write a fresh GPT with the three partitions of PLAN to DEVICE."""
    dev = parted.getDevice(str(device))
    try:
        sector = dev.sectorSize
        disk = parted.freshDisk(dev, "gpt")
        for part in plan.parts:
            geometry = parted.Geometry(
                device=dev, start=part.start // sector, length=part.size // sector
            )
            fstype = {"swap": "linux-swap(v1)", "root": "ext4"}.get(part.name)
            fs = parted.FileSystem(type=fstype, geometry=geometry) if fstype else None
            partition = parted.Partition(
                disk=disk, type=parted.PARTITION_NORMAL, fs=fs, geometry=geometry
            )
            disk.addPartition(partition, constraint=parted.Constraint(exactGeom=geometry))
            partition.name = part.name
            if part.name == "bios_grub":
                partition.setFlag(parted.PARTITION_BIOS_GRUB)
            elif part.name == "swap":
                partition.setFlag(parted.PARTITION_SWAP)
        # Only the device: the partition nodes are made by loopdev (BLKRRPART).
        disk.commitToDevice()
    except parted.PartedException as exc:
        raise HostCreatorError(f"partitioning {device} failed: {exc}") from None
    finally:
        with contextlib.suppress(Exception):
            dev.removeFromCache()


@dataclass(frozen=True)
class FileSystems:
    root_uuid: str
    swap_uuid: str


def ext4_label(name: str) -> str:
    """ext4 labels hold at most 16 bytes."""
    return name[:16]


def make_filesystems(swap: Path, root: Path, name: str) -> FileSystems:
    """mkswap and mkfs.ext4 with UUIDs chosen here, so they are known without blkid."""
    result = FileSystems(root_uuid=str(uuid.uuid4()), swap_uuid=str(uuid.uuid4()))
    run(["mkswap", "--uuid", result.swap_uuid, "--label", "swap", swap])
    run(["mkfs.ext4", "-F", "-q", "-U", result.root_uuid, "-L", ext4_label(name), root])
    run(["tune2fs", "-c", "0", "-i", "0", root])
    return result
