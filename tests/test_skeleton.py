from __future__ import annotations

import os
from pathlib import Path

import pytest

from hostcreator import config
from hostcreator.build import bootloader, skeleton
from hostcreator.distro.debian import DEBIAN
from hostcreator.distro.ubuntu import UBUNTU
from hostcreator.resources import shipped

pytestmark = pytest.mark.unit


def test_substitute_text_binary_and_untouched():
    assert skeleton.substitute(b"deb x %DISTR% main\n%DISTR%", "trixie") == \
        b"deb x trixie main\ntrixie"
    assert skeleton.substitute(b"\x00%DISTR%", "trixie") is None
    assert skeleton.substitute(b"\xff\xfe%DISTR%", "trixie") is None
    assert skeleton.substitute(b"no token", "trixie") is None


def test_install_copies_tree_replaces_tokens_and_keeps_modes(tmp_path):
    skel = tmp_path / "skel"
    (skel / "etc" / "apt").mkdir(parents=True)
    (skel / "root" / "bin").mkdir(parents=True)
    (skel / "etc" / "apt" / "sources.list").write_text("suite %DISTR% and %DISTR%-updates\n")
    (skel / "etc" / "blob").write_bytes(b"\x00\x01%DISTR%")
    script = skel / "root" / "bin" / "install.sh"
    script.write_text("#!/bin/sh\necho %DISTR%\n")
    script.chmod(0o755)
    os.symlink("apt/sources.list", skel / "etc" / "link")
    root = tmp_path / "root"
    (root / "root").mkdir(parents=True, mode=0o700)
    os.chmod(root / "root", 0o700)
    edited = skeleton.install(skel, root, "bookworm")
    assert sorted(map(str, edited)) == ["etc/apt/sources.list", "root/bin/install.sh"]
    assert (root / "etc/apt/sources.list").read_text() == "suite bookworm and bookworm-updates\n"
    assert (root / "etc/blob").read_bytes() == b"\x00\x01%DISTR%"
    assert os.access(root / "root/bin/install.sh", os.X_OK)
    assert os.readlink(root / "etc/link") == "apt/sources.list"
    assert (root / "root").stat().st_mode & 0o777 == 0o700  # not opened up by the copy


def test_skeleton_directory_fallbacks(tmp_path):
    cfg = config.load(Path("/dev/null"), environ={}).replace(hook_dir=tmp_path)
    assert skeleton.find(cfg) == shipped("skel")
    (tmp_path / "skel").mkdir()
    assert skeleton.find(cfg) == tmp_path / "skel"
    assert skeleton.find(cfg.replace(skel_dir=tmp_path)) == tmp_path


def test_shipped_skeleton_has_the_chroot_scripts():
    skel = shipped("skel")
    for script in ("install.sh", "grub.sh"):
        assert os.access(skel / "root" / "bin" / script, os.X_OK)


def test_grub_script_a_skeleton_of_its_own_for_one_distribution_is_preferred(tmp_path):
    bin_dir = tmp_path / "root" / "bin"
    bin_dir.mkdir(parents=True)
    (bin_dir / "grub.sh").write_text("")
    assert bootloader.script_for(tmp_path, DEBIAN) == "/root/bin/grub.sh"
    (bin_dir / "grub-debian.sh").write_text("")  # an older skeleton's name
    assert bootloader.script_for(tmp_path, DEBIAN) == "/root/bin/grub-debian.sh"
    assert bootloader.script_for(tmp_path, UBUNTU) == "/root/bin/grub.sh"
    assert DEBIAN.boot_packages == ("linux-image-amd64", "grub-pc")
