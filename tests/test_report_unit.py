"""The plan's list of scripts (--dry-run): hooks on the host, then the chroot's scripts."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from hostcreator import distro
from hostcreator.build import hooks, report

pytestmark = pytest.mark.unit


def build(tmp_path, skel_files=()):
    skel = tmp_path / "skel"
    for rel in ("root/bin/install.sh", "root/bin/grub.sh", *skel_files):
        (skel / rel).parent.mkdir(parents=True, exist_ok=True)
        (skel / rel).write_text("#!/bin/sh\n")
    hook_dir = tmp_path / "hooks"
    hook_dir.mkdir()
    (hook_dir / hooks.POSTCONFIG).write_text("#!/bin/sh\n")
    (hook_dir / hooks.POSTCONFIG).chmod(0o755)
    return SimpleNamespace(config=SimpleNamespace(hook_dir=hook_dir), skel=skel,
                           distribution=distro.get("debian"))


def test_the_plan_names_the_common_grub_script(tmp_path):
    b = build(tmp_path)
    assert report.scripts(b) == ["/root/bin/install.sh (in the chroot)",
                                 str(b.config.hook_dir / hooks.POSTCONFIG),
                                 "/root/bin/grub.sh (in the chroot)"]


def test_the_plan_names_a_skeletons_own_grub_script_and_custom_script(tmp_path):
    b = build(tmp_path, ("root/bin/grub-debian.sh", "root/bin/install-custom.sh"))
    assert report.scripts(b) == ["/root/bin/install.sh (in the chroot)",
                                 "/root/bin/install-custom.sh (in the chroot)",
                                 str(b.config.hook_dir / hooks.POSTCONFIG),
                                 "/root/bin/grub-debian.sh (in the chroot)"]
