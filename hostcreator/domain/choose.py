"""What create-kvm chooses where the configuration leaves it to the host.

- VIRT_TYPE=auto: kvm only when a guest was seen running under KVM here
  (kvmprobe) and the local libvirt offers kvm (a remote host: when its libvirt
  offers it), else qemu. A dry run starts no QEMU: it takes the probe's kept
  answer, else plans with qemu and says that create-kvm would probe.
- VCPUS not set: 1 under software emulation, where a Linux guest with several
  vCPUs at times panics at boot (README, bench/tcg_smp.py), else 2.
- NETWORK_TYPE=auto: the bridge NETWORK (default br0) when this host has it,
  else the libvirt network NETWORK (default `default`) when it is active, else
  QEMU's user-mode networking. A NETWORK named explicitly that is neither is an
  error, as is a named bridge or network that is missing.
Each choice made here comes with a line that says why, for the output.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import libvirt

from hostcreator.config import Config, NetworkType, VirtType
from hostcreator.domain import kvmprobe, qemu, virt
from hostcreator.errors import InvalidInput

SYS_NET = Path("/sys/class/net")
BRIDGE = "br0"
LIBVIRT_NETWORK = "default"


@dataclass(frozen=True)
class Choices:
    virt_type: VirtType  # kvm or qemu, never auto
    vcpus: int
    network_type: NetworkType  # never auto
    network: str | None  # the bridge or libvirt network; None for user-mode
    notes: tuple[str, ...] = ()  # why, for each choice made here
    probe: kvmprobe.Probe | None = None


def is_bridge(name: str, sys_net: Path = SYS_NET) -> bool:
    return (sys_net / name / "bridge").is_dir()


def check_bridge(name: str, sys_net: Path = SYS_NET) -> None:
    """A bridge named for NETWORK_TYPE=bridge must be a bridge of this host."""
    if not (sys_net / name).exists():
        raise InvalidInput(
            f"bridge {name!r} does not exist on this host",
            hint="create it (ip link add NAME type bridge), set NETWORK (--network), or use "
                 "--network-type user or network",
        )
    if not is_bridge(name, sys_net):
        raise InvalidInput(f"{name!r} is a network interface, not a bridge",
                           hint="set NETWORK to a bridge, or choose another NETWORK_TYPE")


def network_active(conn: libvirt.virConnect | None, name: str) -> bool:
    if conn is None:
        return False
    try:
        return bool(conn.networkLookupByName(name).isActive())
    except libvirt.libvirtError:
        return False


def virt_type(config: Config, conn: libvirt.virConnect | None, dry_run: bool = False
              ) -> tuple[VirtType, str | None, kvmprobe.Probe | None]:
    if config.virt_type is not VirtType.AUTO:
        return config.virt_type, None, None
    if virt.is_remote(config.libvirt_uri):
        if conn is not None and virt.offers_kvm(conn):
            return VirtType.KVM, "virt type kvm: the remote host's libvirt offers it", None
        return VirtType.QEMU, "virt type qemu (software emulation): the remote host's " \
            "libvirt does not offer kvm (or was not asked)", None
    if dry_run:  # no QEMU is started: the answer kept for this boot of the host, if any
        probe = kvmprobe.cached_only(config.state_dir)
        if probe is None:
            return VirtType.QEMU, "virt type qemu for this plan: create-kvm would probe " \
                "whether a KVM guest runs here (--dry-run starts no QEMU); VIRT_TYPE sets it", None
    else:
        probe = kvmprobe.probe(config.state_dir)
    if not probe.works:
        return (VirtType.QEMU, "virt type qemu (software emulation), as KVM guests do not run "
                f"here: {probe.describe()}; VIRT_TYPE=kvm forces it", probe)
    if conn is not None and not virt.offers_kvm(conn):
        return (VirtType.QEMU, f"virt type qemu (software emulation): a KVM guest runs here "
                f"({probe.describe()}), but libvirt does not offer kvm domains (can its QEMU "
                "user open /dev/kvm?); VIRT_TYPE=kvm forces it", probe)
    return VirtType.KVM, f"virt type kvm: {probe.describe()}", probe


def vcpus(config: Config, chosen: VirtType) -> tuple[int, str | None]:
    if config.vcpus is not None:
        return config.vcpus, None
    if chosen is VirtType.QEMU:
        return qemu.EMULATED_VCPUS, f"{qemu.EMULATED_VCPUS} vCPU: under software emulation " \
            "a Linux guest with several at times panics at boot; VCPUS sets the number"
    return qemu.KVM_VCPUS, None


def explicit_network(config: Config, conn: libvirt.virConnect | None, sys_net: Path
                     ) -> tuple[NetworkType, str | None]:
    kind = config.network_type
    if kind is NetworkType.USER:
        return kind, None
    if kind is NetworkType.BRIDGE:
        name = config.network or BRIDGE
        if not virt.is_remote(config.libvirt_uri):
            check_bridge(name, sys_net)
        return kind, name
    name = config.network or LIBVIRT_NETWORK
    if conn is not None:
        virt.check_network(conn, name)
    return kind, name


def auto_network(config: Config, conn: libvirt.virConnect | None, sys_net: Path
                 ) -> tuple[NetworkType, str | None, str]:
    local = not virt.is_remote(config.libvirt_uri)
    if config.network:  # named: it must be there, as a bridge or as a libvirt network
        name = config.network
        if local and is_bridge(name, sys_net):
            return NetworkType.BRIDGE, name, f"network: the bridge {name}"
        if network_active(conn, name) or conn is None:
            return NetworkType.NETWORK, name, f"network: libvirt's network {name}"
        if not local:
            return NetworkType.BRIDGE, name, f"network: the bridge {name} (of the remote host)"
        raise InvalidInput(f"NETWORK {name!r} is neither a bridge of this host nor an active "
                           "libvirt network",
                           hint="see `ip -br link` and `virsh net-list --all`; or unset "
                                "NETWORK to let create-kvm choose")
    if local and is_bridge(BRIDGE, sys_net):
        return NetworkType.BRIDGE, BRIDGE, f"network: the bridge {BRIDGE}"
    if network_active(conn, LIBVIRT_NETWORK):
        return (NetworkType.NETWORK, LIBVIRT_NETWORK,
                f"network: libvirt's network {LIBVIRT_NETWORK} (NAT; there is no bridge "
                f"{BRIDGE})")
    asked = "is not active" if conn is not None else "was not asked for (--dry-run)"
    return (NetworkType.USER, None, f"network: QEMU's user mode (NAT inside QEMU; there is "
            f"no bridge {BRIDGE}, libvirt's network {LIBVIRT_NETWORK} {asked}); NETWORK and "
            "NETWORK_TYPE choose another")


def check_named_bridge(config: Config, sys_net: Path = SYS_NET) -> None:
    """Before libvirt is asked: a bridge named with NETWORK_TYPE=bridge exists here."""
    if config.network_type is NetworkType.BRIDGE and not virt.is_remote(config.libvirt_uri):
        check_bridge(config.network or BRIDGE, sys_net)


def choose(config: Config, conn: libvirt.virConnect | None, sys_net: Path = SYS_NET, *,
           dry_run: bool = False) -> Choices:
    """The virt type, vCPUs and network of NAME's domain; CONN None: libvirt is not asked;
    DRY_RUN: no QEMU is started for the KVM probe (its kept answer, else qemu). The network
    first: a NETWORK that is wrong costs no probe."""
    if config.network_type is NetworkType.AUTO:
        kind, network, net_note = auto_network(config, conn, sys_net)
    else:
        (kind, network), net_note = explicit_network(config, conn, sys_net), None
    chosen, virt_note, probe = virt_type(config, conn, dry_run)
    count, vcpu_note = vcpus(config, chosen)
    notes = tuple(n for n in (virt_note, vcpu_note, net_note) if n)
    return Choices(chosen, count, kind, network, notes, probe)
