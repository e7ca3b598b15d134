"""/etc/fstab of the VM: root and swap by UUID, so the disk boots on any machine."""

from __future__ import annotations

from pathlib import Path

from hostcreator.disk.partition import FileSystems


def render(fs: FileSystems) -> str:
    return (
        "# /etc/fstab: written by hostcreator; file systems by UUID.\n"
        "# <file system>                            <mount point> <type> <options>  <dump> <pass>\n"
        f"UUID={fs.root_uuid} /             ext4   errors=remount-ro 0 1\n"
        f"UUID={fs.swap_uuid} none          swap   sw                0 0\n"
    )


def write(root: Path, fs: FileSystems) -> None:
    (root / "etc" / "fstab").write_text(render(fs))
