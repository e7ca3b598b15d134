"""The guest's network: DHCP (the skeleton's systemd-networkd file) or a static address.

IP_ADDRESS (with GATEWAY and DNS) replaces the skeleton's DHCP file by a
static one; DNS alone is added to the DHCP file as a drop-in. The settings are
checked together before anything is touched.
"""

from __future__ import annotations

from pathlib import Path

from hostcreator.config import Config
from hostcreator.errors import InvalidInput

NETWORK_DIR = Path("etc/systemd/network")
DHCP_FILE = "80-hostcreator-dhcp.network"
STATIC_FILE = "80-hostcreator-static.network"
# The NICs the skeleton's DHCP file matches: the same for a static address.
MATCH = "Name=en* eth*"


def check(config: Config) -> None:
    """IP_ADDRESS, GATEWAY, DNS and DHCP fit together."""
    ip, gateway = config.ip_address, config.gateway
    if ip is None:
        if gateway is not None:
            raise InvalidInput(f"GATEWAY={gateway} needs IP_ADDRESS",
                               hint="with DHCP the gateway comes from the DHCP server")
        return
    if config.dhcp:
        raise InvalidInput(f"IP_ADDRESS={ip} and DHCP=yes exclude each other",
                           hint="leave out DHCP for a static address, or IP_ADDRESS for DHCP")
    if gateway is not None:
        if gateway.version != ip.version or gateway not in ip.network:
            raise InvalidInput(f"GATEWAY={gateway} is outside the subnet {ip.network} of "
                               f"IP_ADDRESS={ip}", hint="a gateway the VM can reach directly")
        if gateway == ip.ip:
            raise InvalidInput(f"GATEWAY={gateway} is the VM's own address (IP_ADDRESS)")


def address(config: Config) -> str:
    """The VM's address as a user reaches it: the static one, else a placeholder."""
    return str(config.ip_address.ip) if config.ip_address is not None else "ADDRESS"


def describe(config: Config) -> str:
    if config.ip_address is None:
        return "DHCP" + (f", DNS {' '.join(map(str, config.dns))}" if config.dns else "")
    parts = [f"static {config.ip_address}"]
    if config.gateway is not None:
        parts.append(f"gateway {config.gateway}")
    if config.dns:
        parts.append(f"DNS {' '.join(map(str, config.dns))}")
    return ", ".join(parts)


def static_network(config: Config) -> str:
    lines = ["# Written by hostcreator: the static address of IP_ADDRESS.", "[Match]", MATCH,
             "", "[Network]", "DHCP=no", f"Address={config.ip_address}"]
    if config.gateway is not None:
        lines.append(f"Gateway={config.gateway}")
    lines += [f"DNS={server}" for server in config.dns]
    return "\n".join(lines) + "\n"


def write(root: Path, config: Config) -> list[Path]:
    """The guest's networkd configuration for CONFIG; returns the files written."""
    directory = root / NETWORK_DIR
    if config.ip_address is not None:
        (directory / DHCP_FILE).unlink(missing_ok=True)
        target = directory / STATIC_FILE
        directory.mkdir(parents=True, exist_ok=True)
        target.write_text(static_network(config))
        return [target]
    if config.dns:
        dropin = directory / f"{DHCP_FILE}.d" / "hostcreator-dns.conf"
        dropin.parent.mkdir(parents=True, exist_ok=True)
        dropin.write_text("# Written by hostcreator: the name servers of DNS.\n[Network]\n"
                          + "".join(f"DNS={server}\n" for server in config.dns))
        return [dropin]
    return []
