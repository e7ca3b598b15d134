"""What makes a VM itself: hostname, machine-id, SSH host keys, random seed.

The hostname is written during the build; the rest is removed at the end of
the build so that every VM creates its own at its first boot, and two VMs made
from the same files (or the same cache) never share them.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from hostcreator.log import logger

ROOT_ALIASES = (
    "alias ll='ls -l'",
    "alias tm='tail -f -n 100 /var/log/syslog'",
)


def set_hostname(root: Path, name: str) -> None:
    (root / "etc" / "hostname").write_text(f"{name}\n")
    hosts = root / "etc" / "hosts"
    lines = hosts.read_text().splitlines() if hosts.exists() else ["127.0.0.1\tlocalhost"]
    lines = [line for line in lines if not line.startswith("127.0.1.1")]
    at = next((i + 1 for i, line in enumerate(lines) if line.startswith("127.0.0.1")), 0)
    lines.insert(at, f"127.0.1.1\t{name}")
    hosts.write_text("\n".join(lines) + "\n")


def add_root_aliases(root: Path) -> None:
    """The aliases users of the old scripts are used to, once."""
    profile = root / "root" / ".profile"
    text = profile.read_text() if profile.exists() else ""
    missing = [a for a in ROOT_ALIASES if a not in text]
    if missing:
        profile.write_text(text + ("\n" if text and not text.endswith("\n") else "")
                           + "\n".join(missing) + "\n")


UNIQUE_FILES = (
    "var/lib/dbus/machine-id",
    "var/lib/systemd/random-seed",
    "var/lib/systemd/credential.secret",
)


def reset(root: Path) -> None:
    """Remove what must differ between VMs; the VM makes its own at first boot."""
    # An empty (not missing) machine-id makes systemd generate and commit one at boot.
    (root / "etc" / "machine-id").write_text("")
    for rel in UNIQUE_FILES:
        path = root / rel
        if path.is_symlink() or path.exists():
            path.unlink()
    for key in (root / "etc" / "ssh").glob("ssh_host_*"):
        key.unlink()
        logger.debug("removed %s", key)
    for deb in (root / "var" / "cache" / "apt" / "archives").glob("*.deb"):
        with contextlib.suppress(OSError):
            deb.unlink()


def link_resolv_conf(root: Path) -> None:
    """Hand /etc/resolv.conf back to systemd-resolved when the VM has it."""
    if (root / "usr" / "lib" / "systemd" / "systemd-resolved").exists():
        target = root / "etc" / "resolv.conf"
        if target.is_symlink() or target.exists():
            target.unlink()
        target.symlink_to("../run/systemd/resolve/stub-resolv.conf")
