"""Is a disk in use? Domains running it or defined with it, processes holding it, mounts.

Asked before a disk is mounted read-write (mount-vm) or built on
(storage.check_disk_free). libvirt is asked read-only; where it cannot be
reached (no libvirt on this host, daemon stopped) that is said in a warning and
the check goes on with what the host itself shows: a process that has the disk
open (QEMU started by libvirt or by hand), its file systems mounted in any mount
namespace.
"""

from __future__ import annotations

import contextlib
import os
import stat
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from hostcreator.host import mounts
from hostcreator.log import logger


def same_file(a: str | Path, b: Path) -> bool:
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    with contextlib.suppress(OSError):
        return os.path.samefile(a, b)
    return False


def disk_sources(conn: Any, xml: str) -> list[str]:
    """The files and block devices the <disk> elements of a domain XML point at."""
    sources = []
    for source in ET.fromstring(xml).iterfind("./devices/disk/source"):
        if path := source.get("file") or source.get("dev"):
            sources.append(path)
        elif (pool := source.get("pool")) and (volume := source.get("volume")):
            with contextlib.suppress(Exception):
                sources.append(conn.storagePoolLookupByName(pool)
                               .storageVolLookupByName(volume).path())
    return sources


@contextlib.contextmanager
def _read_only(uri: str, question: str) -> Iterator[Any]:
    """A read-only connection to libvirt at URI, or None (saying in a warning what
    cannot be told: QUESTION) when libvirt is out of reach."""
    try:
        import libvirt
    except ImportError:
        logger.warning("warning: libvirt-python is not installed: cannot ask libvirt %s",
                       question)
        yield None
        return
    # The binding prints every error to stderr by default; ours are reported as warnings.
    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
    try:
        conn = libvirt.openReadOnly(uri)
    except libvirt.libvirtError as exc:
        logger.warning("warning: libvirt at %s cannot be reached (%s): cannot tell %s", uri,
                       exc.get_error_message(), question)
        yield None
        return
    try:
        yield conn
    finally:
        with contextlib.suppress(libvirt.libvirtError):
            conn.close()


def running_domains(uri: str, name: str, disk: Path) -> list[str] | None:
    """Running (or paused) domains called NAME or using DISK; None when libvirt is out of reach."""
    with _read_only(uri, f"whether a libvirt domain runs {name}") as conn:
        if conn is None:
            return None
        import libvirt

        found = []
        for domain in conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE):
            with contextlib.suppress(libvirt.libvirtError):
                if domain.name() == name or any(
                    same_file(source, disk) for source in disk_sources(conn, domain.XMLDesc(0))
                ):
                    found.append(domain.name())
        return sorted(found)


def domains_with_disk(uri: str, disk: Path) -> list[str]:
    """Every libvirt domain, running or only defined, with DISK as a disk, as 'name (state)'.

    Empty when libvirt is out of reach (a warning says so).
    """
    from hostcreator.domain import virt  # virt builds on this module

    with _read_only(uri, f"whether a libvirt domain uses {disk}") as conn:
        if conn is None:
            return []
        return virt.domains_using(conn, disk, local=not virt.is_remote(uri))


def disk_users(uri: str, name: str, disk: Path) -> list[str]:
    """What runs NAME or holds its DISK, as phrases for a message; empty when nothing does."""
    users = [f"libvirt domain {d} (running)" for d in running_domains(uri, name, disk) or []]
    pids = mounts.processes_using(disk)
    if pids:
        users.append(f"process(es) {mounts.describe_processes(pids)} with the disk open")
    return users


class Mount(NamedTuple):
    source: str
    point: Path
    holder: int | None  # a process of the other mount namespace it is in; None: ours

    def __str__(self) -> str:
        where = "" if self.holder is None else (
            f" in the mount namespace of process {mounts.describe_processes([self.holder])}")
        return f"{self.source} at {self.point}{where}"


def device_numbers(device: Path) -> set[str]:
    """'MAJOR:MINOR' of the block device DEVICE and of its partitions (from sysfs)."""
    with contextlib.suppress(OSError):
        info = os.stat(device)
        if stat.S_ISBLK(info.st_mode):
            number = f"{os.major(info.st_rdev)}:{os.minor(info.st_rdev)}"
            parts = Path("/sys/dev/block", number).glob("*/partition")
            return {number, *((p.parent / "dev").read_text().strip() for p in parts)}
    return set()


def mounts_of(devices: Sequence[Path], *, ours: bool = True) -> list[Mount]:
    """Mounts of DEVICES or their partitions: in our mount namespace (with OURS) and in
    the namespace of every other process.

    A process that unshares its mounts (QEMU started by libvirtd does) keeps a copy of
    every mount of the moment; where the host's mounts do not propagate (no systemd
    making them shared) that copy keeps the file system, and its loop device, busy.
    """
    numbers = set().union(*map(device_numbers, devices))
    names = [str(d) for d in devices]

    def on_devices(entry: mounts.MountEntry) -> bool:
        # By number, as the source may name the device otherwise (/dev/mapper/vg-lv).
        return entry.device in numbers or any(
            entry.source == n or entry.source.startswith(f"{n}p") for n in names)

    found = [Mount(e.source, e.point, None) for e in mounts.mountinfo() if on_devices(e)] \
        if ours else []
    ours_ns = mounts.current_namespace()
    for pid, namespace in mounts.namespaces():
        if namespace != ours_ns:
            found += [Mount(e.source, e.point, pid) for e in mounts.mountinfo_of(pid)
                      if on_devices(e)]
    return found


def mounted_elsewhere(device: Path) -> list[str]:
    """Mounts of DEVICE or its partitions in other mount namespaces, as phrases."""
    return [str(m) for m in mounts_of([device], ours=False)]
