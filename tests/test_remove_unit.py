"""remove's pieces that need no libvirt: the logical volume's argv (LVM cannot run here:
no device-mapper, so lvremove's answer is faked), and the files it names."""

from __future__ import annotations

from pathlib import Path

import pytest

from hostcreator import config
from hostcreator import run as run_module
from hostcreator.disk import storage
from hostcreator.paths import VmPaths
from hostcreator.vm import remove

pytestmark = pytest.mark.unit


def empty_file(tmp_path: Path) -> Path:
    """A configuration file that sets nothing."""
    path = tmp_path / "empty.conf"
    path.touch()
    return path


def test_a_logical_volume_is_removed_with_lvremove(monkeypatch):
    seen = []

    def lvremove(argv, **_kwargs):
        seen.append(list(argv))
        return run_module.Result(list(argv), 0, "", [])

    monkeypatch.setattr(storage, "run", lvremove)
    storage.LvmStorage("vg0", "web1-disk01").delete()
    assert seen == [["lvremove", "--yes", "vg0/web1-disk01"]]


def test_what_remove_names_for_a_vm(tmp_path):
    cfg = config.load(empty_file(tmp_path), {
        "LOG_DIR": f"{tmp_path}/log", "JOURNAL_DIR": f"{tmp_path}/j",
        "STATE_DIR": f"{tmp_path}/st", "MOUNT_DIR": f"{tmp_path}/mnt",
        "SECRETS_DIR": f"{tmp_path}/sec"}, environ={})
    vm = VmPaths.of(cfg, "web1")
    assert remove.files_of(vm) == [
        tmp_path / "j/web1.json", tmp_path / "log/web1.log", tmp_path / "log/web1.serial.log",
        tmp_path / "log/web1.console.log", tmp_path / "log/web1.console.qemu.log"]
    assert remove.dirs_of(vm) == [
        tmp_path / "sec/web1", tmp_path / "st/build/web1", tmp_path / "mnt/web1"]
