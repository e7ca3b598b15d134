"""The boot loader: the distribution's grub script in the chroot, then a check.

The check matters: a grub.cfg naming the root by its build-time device
(/dev/loop0p3) boots nowhere, so the build fails instead of shipping it.
"""

from __future__ import annotations

import re
from pathlib import Path

from hostcreator.build import chroot
from hostcreator.disk.partition import FileSystems
from hostcreator.errors import HostCreatorError


def install(root: Path, script: str, disk: Path, fs: FileSystems) -> None:
    chroot.run_in(
        root,
        [script, str(disk)],
        env={"HOSTCREATOR_ROOT_UUID": fs.root_uuid},
        what=script,
    )
    verify(root, fs)


def verify(root: Path, fs: FileSystems) -> None:
    cfg = root / "boot" / "grub" / "grub.cfg"
    if not cfg.is_file():
        raise HostCreatorError(f"{cfg} was not written")
    roots = set(re.findall(r"\broot=(\S+)", cfg.read_text()))
    if not roots:
        raise HostCreatorError(f"{cfg} has no kernel entry")
    wrong = sorted(r for r in roots if r != f"UUID={fs.root_uuid}")
    if wrong:
        raise HostCreatorError(
            f"{cfg} names the root as {', '.join(wrong)}, not UUID={fs.root_uuid}"
        )
    if not (root / "boot" / "grub" / "i386-pc" / "core.img").is_file():
        raise HostCreatorError("GRUB was not installed for BIOS boot (no core.img)")
