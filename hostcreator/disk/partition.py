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
from dataclasses import dataclass, fields
from pathlib import Path

import parted

from hostcreator.errors import HostCreatorError, InvalidInput
from hostcreator.host import loopdev
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
    name: str  # the GPT partition name
    start: int  # bytes
    size: int  # bytes
    flag: int | None = None  # the parted flag it carries
    fstype: str | None = None  # the file system type parted records

    @property
    def end(self) -> int:
        """First byte after the partition."""
        return self.start + self.size


@dataclass(frozen=True)
class Layout:
    """The partitions of a disk by role, in their order on the disk."""

    bios: Part
    swap: Part
    root: Part

    @property
    def parts(self) -> tuple[Part, ...]:
        return tuple(getattr(self, role) for role in ROLES)


# The roles in their order on the disk: the only place that knows a partition's number.
ROLES = tuple(f.name for f in fields(Layout))


@dataclass(frozen=True)
class Nodes:
    """The device nodes of a disk's partitions, by role (as Layout names them)."""

    bios: Path
    swap: Path
    root: Path

    @property
    def all(self) -> tuple[Path, ...]:
        return tuple(getattr(self, role) for role in ROLES)


def node(device: Path, role: str) -> Path:
    """The node the kernel names for partition ROLE of the loop device DEVICE."""
    return Path(f"{device}p{ROLES.index(role) + 1}")


def find(device: Path) -> Nodes:
    """The partition nodes of DEVICE, whose table layout() made; the kernel re-reads it first."""
    return Nodes(*loopdev.wait_for_partitions(device, len(ROLES)))


def minimum_disk_size() -> int:
    return ALIGN + BIOS_BOOT_SIZE + SWAP_SIZE + MIN_ROOT_SIZE + ALIGN


def layout(disk_size: int) -> Layout:
    """Partitions aligned to 1 MiB, the root taking the rest of DISK_SIZE bytes."""
    if disk_size < minimum_disk_size():
        raise InvalidInput(
            f"a disk of {disk_size / GIB:.2f} GiB is too small",
            hint=f"at least {-(-minimum_disk_size() // GIB)} GiB are needed",
        )
    bios = Part("bios_grub", ALIGN, BIOS_BOOT_SIZE, flag=parted.PARTITION_BIOS_GRUB)
    swap = Part("swap", bios.end, SWAP_SIZE, flag=parted.PARTITION_SWAP,
                fstype="linux-swap(v1)")
    # Keep the last MiB free for the backup GPT, the root ends on a MiB boundary.
    root_end = (disk_size - ALIGN) // ALIGN * ALIGN
    root = Part("root", swap.end, root_end - swap.end, fstype="ext4")
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
            fs = parted.FileSystem(type=part.fstype, geometry=geometry) if part.fstype else None
            partition = parted.Partition(
                disk=disk, type=parted.PARTITION_NORMAL, fs=fs, geometry=geometry
            )
            disk.addPartition(partition, constraint=parted.Constraint(exactGeom=geometry))
            partition.name = part.name
            if part.flag is not None:
                partition.setFlag(part.flag)
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


def make_filesystems(nodes: Nodes, name: str) -> FileSystems:
    """mkswap and mkfs.ext4 with UUIDs chosen here, so they are known without blkid."""
    result = FileSystems(root_uuid=str(uuid.uuid4()), swap_uuid=str(uuid.uuid4()))
    run(["mkswap", "--uuid", result.swap_uuid, "--label", "swap", nodes.swap])
    run(["mkfs.ext4", "-F", "-q", "-U", result.root_uuid, "-L", ext4_label(name), nodes.root])
    run(["tune2fs", "-c", "0", "-i", "0", nodes.root])
    return result


def filesystem_uuid(node: Path) -> str | None:
    """The UUID of the file system (or swap) on NODE, probed from the device itself (no
    blkid cache: a copied disk would show its source's), or None when it has none."""
    result = run(["blkid", "--probe", "--output", "value", "--match-tag", "UUID", node],
                 capture=True, check=False)
    return result.stdout.strip() or None


def renew_filesystems(nodes: Nodes, name: str) -> FileSystems:
    """New UUIDs for the swap and the unmounted root of a copied disk, and the root
    labelled NAME: a clone that kept them would boot its source's root where both disks
    are attached, and two VMs would share them."""
    result = FileSystems(root_uuid=str(uuid.uuid4()), swap_uuid=str(uuid.uuid4()))
    # Swap holds nothing that outlives a boot: a new signature is all it needs.
    run(["mkswap", "--uuid", result.swap_uuid, "--label", "swap", nodes.swap])
    argv: list[str | Path] = ["tune2fs", "-U", result.root_uuid, "-L", ext4_label(name), nodes.root]
    if run(argv, check=False).returncode != 0:
        # tune2fs changes a UUID only on a freshly checked file system (metadata_csum);
        # e2fsck's 1 means it repaired something, which is a success as well.
        checked = run(["e2fsck", "-f", "-y", nodes.root], check=False)
        if checked.returncode not in (0, 1):
            raise HostCreatorError(f"e2fsck found errors it could not repair on {nodes.root} "
                                   f"(exit code {checked.returncode})",
                                   hint="check the source VM's file system (mount-vm, fsck)")
        run(argv)
    return result


def blank_swap(nodes: Nodes) -> None:
    """Discard the swap of a copied disk (pages of the memory of the VM that ran, held in
    holes now) and give it back its signature, UUID and label, so fstab still finds it."""
    swap_uuid = filesystem_uuid(nodes.swap)
    run(["blkdiscard", "--force", nodes.swap])
    if swap_uuid:
        run(["mkswap", "--uuid", swap_uuid, "--label", "swap", nodes.swap])
