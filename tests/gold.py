"""A small hand-made gold VM (no boot loader, nothing to boot): its disk as create-debian
leaves it after a few boots (GPT, swap, an ext4 root holding what a VM that has run keeps)
and its finished journal. For the root tests of the commands that copy a VM's disk
(clone, export)."""

from __future__ import annotations

import subprocess
from contextlib import ExitStack
from pathlib import Path

from conftest import hand_made_disk

from hostcreator.disk import partition
from hostcreator.host import loopdev, mounts
from hostcreator.state import journal
from hostcreator.state.journal import Journal, Stage, Status

MACHINE_ID = "0123456789abcdef0123456789abcdef"
# What a VM that has booted and been used keeps; the clone must have none of it.
TRACES = ("etc/ssh/ssh_host_ed25519_key", "etc/ssh/ssh_host_ed25519_key.pub",
          "var/lib/systemd/random-seed", "var/lib/systemd/credential.secret",
          "var/lib/dhcp/dhclient.enp1s0.leases", "var/lib/systemd/network/dhcp-duid",
          f"var/log/journal/{MACHINE_ID}/system.journal", "root/.bash_history")


def grub_cfg(root_uuid: str) -> str:
    return (f"search --no-floppy --fs-uuid --set=root {root_uuid}\n"
            f"menuentry 'Debian' {{\n  search --no-floppy --fs-uuid --set=root {root_uuid}\n"
            f"  linux /boot/vmlinuz root=UUID={root_uuid} ro console=ttyS0\n}}\n")


def attached(stack: ExitStack, image: Path, read_only: bool = False) -> partition.Nodes:
    return partition.find(loopdev.attach(stack, image, read_only=read_only))


def uuid_of(node: Path) -> str:
    return subprocess.run(["blkid", "--probe", "-o", "value", "-s", "UUID", str(node)],
                          capture_output=True, text=True, check=True).stdout.strip()


def make_gold(env, name: str, tree: dict[str, str] | None = None) -> Path:
    """NAME's disk as create-debian leaves it after a few boots, and its finished journal."""
    image = env.image(name)
    hand_made_disk(image)
    with ExitStack() as stack:
        nodes = attached(stack, image)
        subprocess.run(["mkswap", str(nodes.swap)], check=True, capture_output=True)
        root_uuid = uuid_of(nodes.root)
        root = mounts.mount(stack, nodes.root, env.base / "gold-root", fstype="ext4")
        files = {"etc/hostname": f"{name}\n",
                 "etc/hosts": f"127.0.0.1\tlocalhost\n127.0.1.1\t{name}\n",
                 "etc/machine-id": f"{MACHINE_ID}\n", "var/lib/dbus/machine-id": MACHINE_ID,
                 "etc/fstab": f"UUID={root_uuid} / ext4 errors=remount-ro 0 1\n",
                 "boot/grub/grub.cfg": grub_cfg(root_uuid),
                 "boot/grub/i386-pc/core.img": "core",
                 **{trace: "of the gold\n" for trace in TRACES}, **(tree or {})}
        for rel, text in files.items():
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            (root / rel).write_text(text)
    (env.base / "gold-root").rmdir()
    journal.save(env.journal_dir, Journal(name, "debian", "trixie", image, done=list(Stage),
                                          status=Status.FINISHED))
    return image
