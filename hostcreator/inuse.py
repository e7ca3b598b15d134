"""Is a VM running? Its libvirt domain, any domain using its disk, any process holding it.

Asked before a disk is mounted read-write. libvirt is asked read-only; where
it cannot be reached (no libvirt on this host, daemon stopped) that is said
in a warning and the check goes on with what the host itself shows: a process
that has the disk open (QEMU started by libvirt or by hand).
"""

from __future__ import annotations

import contextlib
import os
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from hostcreator import mounts
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


def running_domains(uri: str, name: str, disk: Path) -> list[str] | None:
    """Running (or paused) domains called NAME or using DISK; None when libvirt is out of reach."""
    try:
        import libvirt
    except ImportError:
        logger.warning("warning: libvirt-python is not installed: cannot ask libvirt "
                       "whether %s runs", name)
        return None
    # The binding prints every error to stderr by default; ours are reported as warnings.
    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
    try:
        conn = libvirt.openReadOnly(uri)
    except libvirt.libvirtError as exc:
        logger.warning("warning: libvirt at %s cannot be reached (%s): cannot tell whether a "
                       "libvirt domain runs %s", uri, exc.get_error_message(), name)
        return None
    try:
        found = []
        for domain in conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE):
            with contextlib.suppress(libvirt.libvirtError):
                if domain.name() == name or any(
                    same_file(source, disk) for source in disk_sources(conn, domain.XMLDesc(0))
                ):
                    found.append(domain.name())
        return sorted(found)
    finally:
        conn.close()


def disk_users(uri: str, name: str, disk: Path) -> list[str]:
    """What runs NAME or holds its DISK, as phrases for a message; empty when nothing does."""
    users = [f"libvirt domain {d} (running)" for d in running_domains(uri, name, disk) or []]
    pids = mounts.processes_using(disk)
    if pids:
        users.append(f"process(es) {mounts.describe_processes(pids)} with the disk open")
    return users


def _mountinfo_sources(path: Path) -> list[tuple[str, str]]:
    found = []
    with contextlib.suppress(OSError), open(path) as f:
        for line in f:
            fields = line.split()
            sep = fields.index("-")
            found.append((fields[4], fields[sep + 2]))
    return found


def mounted_elsewhere(device: Path) -> list[str]:
    """Mounts of DEVICE or its partitions in other mount namespaces, as phrases.

    A process that unshares its mounts (QEMU started by libvirtd does) keeps a copy of
    every mount of the moment; where the host's mounts do not propagate (no systemd
    making them shared) that copy keeps the file system, and its loop device, busy.
    """
    seen = {os.readlink("/proc/self/ns/mnt")}
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            namespace = os.readlink(entry / "ns" / "mnt")
        except OSError:
            continue
        if namespace in seen:
            continue
        seen.add(namespace)
        for point, source in _mountinfo_sources(entry / "mountinfo"):
            if source == str(device) or source.startswith(f"{device}p"):
                found.append(f"{source} at {point} in the mount namespace of process "
                             f"{mounts.describe_processes([int(entry.name)])}")
    return found
