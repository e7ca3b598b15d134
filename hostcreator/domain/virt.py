"""What hostcreator asks libvirt, through libvirt-python (never by parsing virsh output).

libvirt errors become HostCreatorError with a hint; libvirt's own habit of
printing every error on stderr is switched off, so the user sees one line.
"""

from __future__ import annotations

import contextlib
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import libvirt

from hostcreator.errors import HostCreatorError, InvalidInput
from hostcreator.host import inuse
from hostcreator.log import logger

AGENT_CHANNEL = "org.qemu.guest_agent.0"
# What create-kvm writes into a domain's <description> (render.render); list reads it.
MADE_BY = "made by hostcreator"


def _quiet(_context: object, _error: object) -> None:
    pass


libvirt.registerErrorHandler(_quiet, None)


def message(exc: libvirt.libvirtError) -> str:
    text = exc.get_error_message() or str(exc)
    return text.strip().splitlines()[0] if text.strip() else "unknown libvirt error"


def is_remote(uri: str) -> bool:
    """Whether URI names another host (qemu+ssh://host/system): its files are not ours."""
    return bool(urlsplit(uri).netloc)


@contextlib.contextmanager
def connect(uri: str) -> Iterator[libvirt.virConnect]:
    """A read-write connection to libvirt at URI, closed again at the end."""
    logger.debug("connecting to libvirt at %s", uri)
    try:
        conn = libvirt.open(uri)
    except libvirt.libvirtError as exc:
        if is_remote(uri):
            hint = "check the URI (LIBVIRT_URI, --uri) and that the host lets you in"
        else:
            hint = ("is libvirtd running? start it (systemctl start libvirtd, or without "
                    "systemd: virtlogd -d && libvirtd -d), or check LIBVIRT_URI / --uri")
        raise HostCreatorError(f"cannot connect to libvirt at {uri}: {message(exc)}",
                               hint=hint) from None
    try:
        yield conn
    finally:
        with contextlib.suppress(libvirt.libvirtError):
            conn.close()


def lookup(conn: libvirt.virConnect, name: str) -> libvirt.virDomain | None:
    """The domain called NAME, running or not, or None."""
    try:
        return conn.lookupByName(name)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
            return None
        raise HostCreatorError(f"cannot look up domain {name}: {message(exc)}") from None


def state(dom: libvirt.virDomain) -> str:
    return "running" if dom.isActive() else "shut off"


def disk_sources(conn: libvirt.virConnect | None, xml: str) -> list[inuse.DiskSource]:
    """The files and block devices the <disk> elements of a domain XML point at (a pool's
    volume by its path, when CONN can tell it)."""
    sources = []
    for disk in ET.fromstring(xml).iterfind("devices/disk"):
        source = disk.find("source")
        if source is None:
            continue
        path = source.get("file") or source.get("dev")
        if not path and conn is not None and (pool := source.get("pool")) \
                and (volume := source.get("volume")):
            with contextlib.suppress(libvirt.libvirtError):
                path = conn.storagePoolLookupByName(pool).storageVolLookupByName(volume).path()
        if path:
            writable = disk.get("device", "disk") in ("disk", "lun") \
                and disk.find("readonly") is None
            sources.append(inuse.DiskSource(path, writable))
    return sources


def domain_views(conn: libvirt.virConnect) -> list[inuse.DomainView]:
    """Every domain with the disks of its live and (for a running one) persistent XML."""
    views = []
    for dom in conn.listAllDomains(0):
        try:
            xmls = [dom.XMLDesc(0)]
            running = bool(dom.isActive())
            if running and dom.isPersistent():
                xmls.append(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
            disks = tuple(dict.fromkeys(s for xml in xmls for s in disk_sources(conn, xml)))
            views.append(inuse.DomainView(dom.name(), dom.UUIDString(), running, disks))
        except libvirt.libvirtError:
            continue  # it went away while we looked
    return views


def domains_of(conn: libvirt.virConnect) -> inuse.DomainReader:
    """The domains of an open connection, for inuse.users_of."""
    return lambda: domain_views(conn)


def domains_at(uri: str, question: str) -> inuse.DomainReader:
    """The domains at URI, asked read-only when the rule needs them, for inuse.users_of.

    Where libvirt cannot be reached a warning says what cannot be told (QUESTION) and
    there are none: the rest of the rule still applies.
    """
    def read() -> list[inuse.DomainView] | None:
        try:
            conn = libvirt.openReadOnly(uri)
        except libvirt.libvirtError as exc:
            logger.warning("warning: libvirt at %s cannot be reached (%s): cannot tell %s",
                           uri, message(exc), question)
            return None
        try:
            return domain_views(conn)
        finally:
            with contextlib.suppress(libvirt.libvirtError):
                conn.close()
    return read


def check_network(conn: libvirt.virConnect, name: str) -> None:
    """The libvirt network NAME exists and is active."""
    try:
        network = conn.networkLookupByName(name)
    except libvirt.libvirtError:
        raise InvalidInput(
            f"libvirt network {name!r} does not exist",
            hint="see `virsh net-list --all`; set NETWORK (--network) or NETWORK_TYPE",
        ) from None
    if not network.isActive():
        raise InvalidInput(f"libvirt network {name!r} is not active",
                           hint=f"start it: virsh net-start {name}")


def domain_types(conn: libvirt.virConnect) -> list[str]:
    """The types of x86_64 domains libvirt's host offers (kvm, qemu: software emulation)."""
    caps = ET.fromstring(conn.getCapabilities())
    found = (d.get("type") for d in caps.iterfind("guest/arch[@name='x86_64']/domain"))
    return list(dict.fromkeys(t for t in found if t))


def offers_kvm(conn: libvirt.virConnect) -> bool:
    """Whether libvirt's host offers x86_64 domains of type kvm (for a remote host)."""
    return "kvm" in domain_types(conn)


def version_text(number: int) -> str:
    """A libvirt version number (major * 1,000,000 + minor * 1,000 + release) as 9.0.0."""
    return f"{number // 1_000_000}.{number // 1000 % 1000}.{number % 1000}"


def made_by_hostcreator(dom: libvirt.virDomain) -> bool:
    """Whether create-kvm made the domain: its <description> says so (MADE_BY)."""
    description = ET.fromstring(dom.XMLDesc(0)).findtext("description") or ""
    return MADE_BY in description


def console_log_of(dom: libvirt.virDomain) -> Path | None:
    """The log file of the domain's first serial port, if it has one."""
    log = ET.fromstring(dom.XMLDesc(0)).find("devices/serial/log")
    file = log.get("file") if log is not None else None
    return Path(file) if file else None


def agent_connected(dom: libvirt.virDomain) -> bool:
    """Whether the guest agent has opened its channel (libvirt tracks that in the live XML)."""
    try:
        root = ET.fromstring(dom.XMLDesc(0))
    except libvirt.libvirtError:
        return False
    return any(t.get("name") == AGENT_CHANNEL and t.get("state") == "connected"
               for t in root.iterfind("devices/channel/target"))


def agent_hostname(dom: libvirt.virDomain) -> str | None:
    """The guest's host name as its agent reports it, or None while the agent does not answer."""
    if not agent_connected(dom):
        return None
    try:
        info = dom.guestInfo(libvirt.VIR_DOMAIN_GUEST_INFO_HOSTNAME, 0)
    except libvirt.libvirtError:
        return None
    return str(info.get("hostname", ""))


def addresses(dom: libvirt.virDomain) -> list[str]:
    """The running guest's IP addresses (CIDR) from its agent, else libvirt's DHCP leases."""
    if not dom.isActive():
        return []
    sources = [libvirt.VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_LEASE]
    if agent_connected(dom):
        sources.insert(0, libvirt.VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_AGENT)
    for source in sources:
        try:
            interfaces = dom.interfaceAddresses(source, 0)
        except libvirt.libvirtError:
            continue  # no agent answering, no libvirt network with leases
        found = [f"{a['addr']}/{a['prefix']}" for name, iface in sorted(interfaces.items())
                 if name != "lo" for a in iface.get("addrs") or []]
        if found:
            return found
    return []


def display_of(dom: libvirt.virDomain) -> str | None:
    """'vnc on 127.0.0.1:5900' for a running domain with a display."""
    graphics = ET.fromstring(dom.XMLDesc(0)).find("devices/graphics")
    if graphics is None or graphics.get("port") in (None, "-1"):
        return None
    return f"{graphics.get('type')} on {graphics.get('listen', '127.0.0.1')}:{graphics.get('port')}"
