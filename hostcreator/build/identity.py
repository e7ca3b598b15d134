"""What makes a VM itself: hostname, machine-id, SSH host keys, random seed.

The hostname is written during the build; the rest is removed at the end of
the build so that every VM creates its own at its first boot, and two VMs made
from the same files (or the same cache) never share them.

A copy of a disk (hostcreator clone) gets a new identity without booting:
renew() attaches it, gives its file systems new UUIDs, and inside it the
hostname, fstab and grub.cfg that follow them, the removal of everything a VM
that has run made for itself (forget_runs), and its own login. An exported copy
(hostcreator export) is sealed instead (seal()): the same reset and removal, and
what tells who used it (logins, system logs), but no new identity or login at
all: root's password is locked, and each import makes its own machine-id, host
keys and seed at its first boot. Every mount and the loop device are undone on
the stack given.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from contextlib import ExitStack
from pathlib import Path

from hostcreator.build import access, bootloader, chroot
from hostcreator.disk import fstab, partition
from hostcreator.errors import HostCreatorError
from hostcreator.host import loopdev, mounts
from hostcreator.log import logger
from hostcreator.run import run

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


# What a VM that has run made for itself, beside UNIQUE_FILES and the SSH host keys:
# its DHCP leases (a clone would ask for its source's address), networkd's state,
# its journal (named by the old machine-id) and root's shell history.
RUN_TRACES = (
    "var/lib/dhcp/*.lease*",
    "var/lib/dhcpcd/*",
    "var/lib/NetworkManager/*.lease",
    "var/lib/systemd/network/*",
    "var/log/journal/*",
    "root/.bash_history",
    "root/.lesshst",
    "root/.python_history",
    "root/.viminfo",
)


def inside(root: Path, path: Path) -> bool:
    """PATH's directory, all links followed, lies in ROOT: a guest's absolute link
    (/var/lib/dhcp -> /elsewhere) must never lead to the host's files."""
    real_root = Path(os.path.realpath(root))
    real = Path(os.path.realpath(path.parent))
    return real == real_root or real_root in real.parents


def _remove(root: Path, path: Path) -> None:
    if not inside(root, path):
        raise HostCreatorError(f"{path} leads out of the VM's root (a symbolic link above "
                               "it): not removed")
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink()
    logger.debug("removed %s", path)


def forget(root: Path, patterns: tuple[str, ...]) -> None:
    for pattern in patterns:
        for path in sorted(root.glob(pattern)):
            _remove(root, path)


def forget_runs(root: Path) -> None:
    """Remove what a VM made while it ran (RUN_TRACES); the clone makes its own."""
    forget(root, RUN_TRACES)


# What renew_inside writes, and the directories reset() removes files from: a guest's
# absolute link there (etc/ssh -> /etc/ssh) would make them the host's files.
WRITTEN = ("etc/hostname", "etc/hosts", "etc/fstab", "etc/machine-id", "boot/grub/grub.cfg")
EMPTIED = ("etc/ssh", "var/lib/dbus", "var/lib/systemd", "var/cache/apt/archives")


def check_inside(root: Path, written: tuple[str, ...] = WRITTEN) -> None:
    """Nothing renew_inside (or seal_inside) writes or removes leads out of ROOT."""
    for rel in written:
        path = root / rel
        if path.is_symlink() or not inside(root, path):
            raise HostCreatorError(f"{path} is a symbolic link or below one: not written")
    for rel in EMPTIED:
        if not inside(root, root / rel / "x"):
            raise HostCreatorError(f"{root / rel} leads out of the VM's root (a symbolic "
                                   "link): nothing removed there")


def renew_inside(root: Path, name: str, old: partition.FileSystems,
                 new: partition.FileSystems) -> None:
    """The copied root at ROOT becomes NAME's: hostname, what must differ between VMs,
    fstab and grub.cfg naming the new UUIDs."""
    check_inside(root)
    set_hostname(root, name)
    reset(root)
    forget_runs(root)
    fstab.write(root, new)
    bootloader.follow(root, old, new)


def renew(stack: ExitStack, disk: Path, name: str, mountpoint: Path,
          login: access.Login) -> partition.FileSystems:
    """Give the copied DISK (an image file) NAME's identity; see the module documentation.
    The root is mounted at MOUNTPOINT; the mount and the loop device are undone on STACK."""
    loop = loopdev.attach(stack, disk)
    nodes = partition.find(loop)
    old = partition.FileSystems(partition.filesystem_uuid(nodes.root) or "",
                                partition.filesystem_uuid(nodes.swap) or "")
    new = partition.renew_filesystems(nodes, name)
    root = mounts.mount(stack, nodes.root, mountpoint, fstype="ext4")
    renew_inside(root, name, old, new)
    if login.password is not None:
        # chpasswd runs in the VM's root, as in a build: with its /proc and a /dev.
        chroot.enter(stack, root, [loop, *nodes.all],
                     {new.root_uuid: nodes.root, new.swap_uuid: nodes.swap})
    access.install(root, login)
    return new


# What an appliance must not tell beyond RUN_TRACES: who logged in, and the system's logs.
SEAL_TRACES = (
    "var/log/wtmp*",
    "var/log/btmp*",
    "var/log/lastlog",
    "var/log/syslog*",
    "var/log/auth.log*",
    "var/log/messages*",
    "var/log/kern.log*",
    "var/log/daemon.log*",
    "root/.ssh/known_hosts*",
)
SEAL_WRITTEN = ("etc/machine-id", "etc/shadow")
LOCKED = "*"


def lock_root_password(root: Path) -> bool:
    """Root of the VM at ROOT gets no password (its hash would travel with the appliance:
    the generated one is NAME's secret, kept on this host); its SSH keys stay. Whether
    there was one to remove."""
    shadow = root / "etc" / "shadow"
    if not shadow.exists():
        return False
    lines = shadow.read_text().splitlines(keepends=True)
    changed = False
    for number, line in enumerate(lines):
        fields = line.split(":")
        if fields[0] == "root" and len(fields) > 2 and fields[1] not in ("", "*", "!", "!*"):
            fields[1] = LOCKED
            lines[number] = ":".join(fields)
            changed = True
    if changed:
        # Written in place: the file keeps its owner and mode (root:shadow 0640).
        with open(shadow, "r+") as f:
            f.write("".join(lines))
            f.truncate()
    return changed


def seal_inside(root: Path) -> bool:
    """The copied root at ROOT carries nothing of its VM's own; whether root's password
    was removed."""
    check_inside(root, SEAL_WRITTEN)
    reset(root)
    forget(root, RUN_TRACES + SEAL_TRACES)
    return lock_root_password(root)


def seal(stack: ExitStack, disk: Path, mountpoint: Path) -> bool:
    """Seal the copied DISK (an image file) for export; see the module documentation. The
    freed blocks and the swap are discarded (holes in the copy), so nothing removed can
    be read back from the appliance and it is smaller. Whether root's password was
    removed."""
    loop = loopdev.attach(stack, disk)
    nodes = partition.find(loop)
    partition.blank_swap(nodes)
    with ExitStack() as mounted:
        root = mounts.mount(mounted, nodes.root, mountpoint, fstype="ext4")
        removed = seal_inside(root)
        trimmed = run(["fstrim", root], check=False)
        if trimmed.returncode != 0:
            logger.warning("warning: the free blocks of %s could not be discarded (fstrim "
                           "failed): the removed files may still be read from the image",
                           disk)
    return removed
