"""The boot loader: the skeleton's grub script in the chroot, then a check.

One script serves every distribution: /root/bin/grub.sh DISK PACKAGE..., the
packages (kernel, what it needs, GRUB) given from the distribution's data. A
skeleton of its own may still ship a script for one distribution,
/root/bin/grub-DISTR.sh (the names of older skeletons): it is preferred when
present, and called the same way.

The check matters: a grub.cfg naming the root by its build-time device
(/dev/loop0p3) boots nowhere, so the build fails instead of shipping it.
"""

from __future__ import annotations

import re
from pathlib import Path

from hostcreator.build import chroot
from hostcreator.disk.partition import FileSystems
from hostcreator.distro import Distribution
from hostcreator.errors import HostCreatorError

COMMON_SCRIPT = "/root/bin/grub.sh"


def script_for(root: Path, distribution: Distribution) -> str:
    """The skeleton's grub-DISTR.sh when it has one, else the common grub.sh."""
    own = f"/root/bin/grub-{distribution.name}.sh"
    return own if (root / own.lstrip("/")).is_file() else COMMON_SCRIPT


def install(root: Path, distribution: Distribution, disk: Path, fs: FileSystems) -> None:
    script = script_for(root, distribution)
    chroot.run_in(
        root,
        [script, str(disk), *distribution.boot_packages],
        env={"HOSTCREATOR_ROOT_UUID": fs.root_uuid},
        what=script,
    )
    verify(root, fs)


def config_file(root: Path) -> Path:
    return root / "boot" / "grub" / "grub.cfg"


def follow(root: Path, old: FileSystems, new: FileSystems) -> None:
    """A copied disk's grub.cfg names its new UUIDs where it named the old ones (the
    root's `search --fs-uuid`, `root=UUID=`, a `resume=UUID=` of the swap), then is checked.

    GRUB's core.img needs nothing: grub-install on one disk hard-codes the root's
    partition number in it, not the file system's UUID.
    """
    cfg = config_file(root)
    if not cfg.is_file():
        raise HostCreatorError(f"{cfg} is missing: the disk has no boot loader")
    text = cfg.read_text()
    for before, after in ((old.root_uuid, new.root_uuid), (old.swap_uuid, new.swap_uuid)):
        if before:
            text = text.replace(before, after)
    cfg.write_text(text)
    verify(root, new)


def verify(root: Path, fs: FileSystems) -> None:
    cfg = config_file(root)
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
