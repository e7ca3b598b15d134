"""Loop devices with partition scanning, and waiting for partition nodes.

No udev runs on many build hosts (and in containers), so nothing may rely on
/dev/disk/by-*: partitions are found from sysfs (pyudev enumerates it), after
asking the kernel to re-read the table with the BLKRRPART ioctl. Some kernels
do not parse GPT themselves (CONFIG_EFI_PARTITION off); then `partx --update`
reads the table in user space and adds the partitions with BLKPG. A node that
devtmpfs has not made is made from its sysfs device number.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import stat
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pyudev

from hostcreator.errors import HostCreatorError
from hostcreator.log import logger
from hostcreator.run import run

BLKRRPART = 0x125F
# Through it losetup finds (and where all are taken, adds) a free loop device.
LOOP_CONTROL = Path("/dev/loop-control")


def attach(stack: ExitStack, backing: Path, read_only: bool = False) -> Path:
    """Attach BACKING to a free loop device; the detach is registered on STACK."""
    argv = ["losetup", "--show", "--find", "--partscan"]
    if read_only:
        argv.append("--read-only")
    device = Path(run([*argv, backing], capture=True).stdout.strip())
    stack.callback(detach, device)
    logger.debug("attached %s to %s", backing, device)
    return device


def free_device() -> Path:
    """A free loop device, as `losetup --find` finds one for attach(); nothing is attached."""
    return Path(run(["losetup", "--find"], capture=True).stdout.strip())


def detach(device: Path) -> None:
    """Detach DEVICE; a teardown step, so it logs and never raises."""
    try:
        with open(device, "rb") as f:
            os.fsync(f.fileno())
    except OSError:
        pass
    try:
        run(["losetup", "--detach", device])
    except HostCreatorError as exc:
        logger.warning("warning: could not detach %s: %s", device, exc)


@contextlib.contextmanager
def locked(device: Path) -> Iterator[None]:
    """DEVICE (a whole disk) locked as systemd-udevd understands it, while its partition
    table is written and read back: udevd re-reads the table of a disk a writer closed
    (its "watch"), which removes and adds the partitions again, unless the disk is
    locked (flock, systemd's block device locking); we would then find none."""
    fd = os.open(device, os.O_RDONLY | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def reread_partitions(device: Path) -> None:
    fd = os.open(device, os.O_RDONLY)
    try:
        fcntl.ioctl(fd, BLKRRPART)
    except OSError as exc:
        raise HostCreatorError(f"the kernel did not re-read the partitions of {device}: "
                               f"{exc.strerror}") from None
    finally:
        os.close(fd)


def _ensure_node(device: pyudev.Device) -> Path:
    node = Path("/dev") / device.sys_name
    if not node.exists():
        # devtmpfs normally makes it; where it did not, make it from sysfs.
        os.mknod(node, 0o660 | stat.S_IFBLK, device.device_number)
    return node


def partitions(device: Path, expected: int) -> list[Path]:
    """The partition nodes of DEVICE in order; the table must have been re-read."""
    context = pyudev.Context()
    disk = pyudev.Devices.from_name(context, "block", device.name)
    parts = sorted(
        context.list_devices(subsystem="block", DEVTYPE="partition", parent=disk),
        key=lambda d: int(d.attributes.asstring("partition")),
    )
    if len(parts) != expected:
        raise HostCreatorError(
            f"{device} shows {len(parts)} partitions, {expected} expected"
        )
    return [_ensure_node(p) for p in parts]


def _count(device: Path) -> int:
    return len(list(Path(f"/sys/class/block/{device.name}").glob(f"{device.name}p*")))


def wait_for_partitions(device: Path, expected: int) -> list[Path]:
    """Re-read the table and return the partition nodes, without sleeping.

    BLKRRPART and BLKPG return once the kernel has registered the partitions,
    so sysfs is complete when they return.
    """
    reread_partitions(device)
    if _count(device) != expected:
        run(["partx", "--update", device])
    return partitions(device, expected)


def loop_devices_of(backing: Path) -> list[str]:
    """Loop devices that have BACKING as their backing file."""
    result = run(["losetup", "--noheadings", "--output", "NAME", "--associated", backing],
                 capture=True)
    return [line.strip() for line in result.stdout.splitlines() if line.strip()]


def backing_file(device: Path) -> Path | None:
    with contextlib.suppress(OSError):
        text = Path(f"/sys/class/block/{device.name}/loop/backing_file").read_text()
        return Path(text.strip())
    return None
