"""VmPaths: every file of a VM named in one place, and only for a valid name."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from hostcreator import config
from hostcreator.errors import InvalidInput
from hostcreator.paths import VmPaths
from hostcreator.state import journal, lock, mountstate
from hostcreator.state.statefile import StateFiles

pytestmark = pytest.mark.unit


@pytest.fixture
def cfg(tmp_path):
    return config.load(Path("/dev/null"), environ={}).replace(
        image_dir=tmp_path / "images", log_dir=tmp_path / "log", state_dir=tmp_path / "state",
        journal_dir=tmp_path / "journal", mount_dir=tmp_path / "mnt")


def test_every_file_of_a_vm(cfg, tmp_path):
    vm = VmPaths.of(cfg, "web1")
    assert vm.name == "web1"
    assert vm.image == vm.disk == tmp_path / "images" / "web1-disk01.img"
    assert vm.log == tmp_path / "log" / "web1.log"
    assert vm.serial_log == tmp_path / "log" / "web1.serial.log"
    assert vm.console_log == tmp_path / "log" / "web1.console.log"
    assert vm.journal == tmp_path / "journal" / "web1.json"
    assert vm.lock == tmp_path / "state" / "locks" / "web1.lock"
    assert vm.mount_state == tmp_path / "state" / "mounts" / "web1.json"
    assert vm.build_root == tmp_path / "state" / "build" / "web1"
    assert vm.mountpoint == tmp_path / "mnt" / "web1"


def test_the_state_modules_name_the_same_files(cfg):
    vm = VmPaths.of(cfg, "web1")
    assert journal.path_of(cfg.journal_dir, "web1") == vm.journal
    assert mountstate.path_of(cfg.state_dir, "web1") == vm.mount_state
    with lock.vm_lock(vm, "a test"):
        assert lock.held_by(vm.lock) == f"a test by PID {os.getpid()}"
    assert lock.held_by(vm.lock) is None


def test_lvm_disk_is_the_logical_volume(cfg, tmp_path):
    vm = VmPaths.of(cfg.replace(vg_name="vg0"), "web1")
    assert vm.disk == Path("/dev/vg0/web1-disk01")
    assert vm.image == tmp_path / "images" / "web1-disk01.img"


@pytest.mark.parametrize("name", ["", "../etc", "Web1", "a/b"])
def test_only_for_a_valid_name(cfg, name):
    with pytest.raises(InvalidInput, match="not a valid host name"):
        VmPaths.of(cfg, name)


def test_a_file_not_named_after_a_vm_is_not_listed(tmp_path):
    files = StateFiles(tmp_path, "test state", dict)
    for stem in ("web1", "Not_A_Name", "db-2"):
        (tmp_path / f"{stem}.json").write_text("{}")
    (tmp_path / "web3.json.tmp").write_text("{")
    assert files.names() == ["db-2", "web1"]


def test_an_unreadable_file_is_warned_about_and_taken_as_absent(tmp_path, caplog):
    files = StateFiles(tmp_path, "test state", dict)
    files.path("web1").write_text("{not json")
    assert files.load("web1") is None
    assert f"ignoring the unreadable test state {tmp_path}/web1.json" in caplog.text
    assert files.load("web2") is None


def test_a_lock_file_removed_before_it_was_locked_is_not_the_lock(cfg, monkeypatch):
    # `hostcreator remove` unlinks NAME's lock file while holding it; a command that
    # opened the old file just before must take the new one, or two would hold "the" lock.
    import fcntl

    vm = VmPaths.of(cfg, "web1")
    real_flock, calls = fcntl.flock, []

    def flock_after_removal(fd, operation):
        if not calls:
            vm.lock.unlink()  # as remove does, between our open and our flock
        calls.append(fd)
        return real_flock(fd, operation)

    monkeypatch.setattr(lock.fcntl, "flock", flock_after_removal)
    with lock.vm_lock(vm, "test"):
        assert len(calls) == 2 and vm.lock.exists()
        monkeypatch.setattr(lock.fcntl, "flock", real_flock)
        with pytest.raises(lock.Busy, match="web1 is busy: test by PID"), \
                lock.vm_lock(vm, "second"):
            pass
