"""mount-vm's state file, listing and refusals that need no root and no disk."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import run_cli

from hostcreator import config
from hostcreator.domain import virt
from hostcreator.errors import DiskInUse
from hostcreator.host import inuse
from hostcreator.paths import VmPaths
from hostcreator.state import mountstate
from hostcreator.state.mountstate import MountState
from hostcreator.vm import mount as vmmount

pytestmark = pytest.mark.unit


@pytest.fixture
def cfg(testenv):
    return testenv.load()


def a_state(cfg, name="web1", **changes):
    state = MountState(name, cfg.image_dir / f"{name}-disk01.img", cfg.mount_dir / name,
                       read_only=False, loop=Path("/dev/loop99"),
                       mounts=[cfg.mount_dir / name, cfg.mount_dir / name / "dev"],
                       complete=True, pid=42, since="2024-01-01 00:00:00")
    for key, value in changes.items():
        setattr(state, key, value)
    return state


def test_mount_dir_setting_and_mountpoint(cfg, testenv):
    assert config.BY_KEY["MOUNT_DIR"].default() == Path("/mnt/hostcreator")
    assert VmPaths.of(cfg, "web1").mountpoint == testenv.mount_dir / "web1"


def test_state_round_trip_is_plain_json(cfg):
    state = a_state(cfg)
    mountstate.save(cfg.state_dir, state)
    path = mountstate.path_of(cfg.state_dir, "web1")
    assert path == cfg.state_dir / "mounts" / "web1.json"
    data = json.loads(path.read_text())
    assert data["loop"] == "/dev/loop99" and data["version"] == mountstate.VERSION
    assert data["mounts"] == [str(m) for m in state.mounts]
    assert mountstate.load(cfg.state_dir, "web1") == state
    assert mountstate.names(cfg.state_dir) == ["web1"]
    assert not list(path.parent.glob("*.tmp"))


def test_removing_twice_is_harmless(cfg):
    mountstate.save(cfg.state_dir, a_state(cfg))
    mountstate.remove(cfg.state_dir, "web1")
    mountstate.remove(cfg.state_dir, "web1")
    assert mountstate.load(cfg.state_dir, "web1") is None
    assert mountstate.names(cfg.state_dir) == []


def test_unreadable_state_is_warned_about_but_still_counts_as_mounted(cfg, caplog):
    path = mountstate.path_of(cfg.state_dir, "web1")
    path.parent.mkdir(parents=True)
    path.write_text("{not json")
    assert mountstate.load(cfg.state_dir, "web1") is None
    assert "unreadable state file" in caplog.text
    assert is_mounted(cfg, "web1") == cfg.mount_dir / "web1"


def is_mounted(cfg, name):
    return users(cfg, name).mounted_at


def users(cfg, name):
    """Who uses NAME's disk (none here: the disk does not exist), mount-vm's state included."""
    return inuse.users_of(cfg.image_dir / f"{name}-disk01.img", vm=inuse.Vm.of(cfg, name))


def test_is_mounted_and_the_refusal_for_create(cfg):
    assert is_mounted(cfg, "web1") is None
    inuse.refuse(users(cfg, "web1"), inuse.Command.CREATE, "the disk")
    mountstate.save(cfg.state_dir, a_state(cfg, mountpoint=Path("/elsewhere/web1")))
    assert is_mounted(cfg, "web1") == Path("/elsewhere/web1")
    with pytest.raises(DiskInUse) as exc:
        inuse.refuse(users(cfg, "web1"), inuse.Command.CREATE, "the disk")
    assert "web1 is mounted at /elsewhere/web1" in exc.value.message
    assert exc.value.hint == "umount-vm web1 first"
    assert is_mounted(cfg, "web2") is None


def test_listing_marks_a_state_whose_mounts_are_gone_as_half_mounted(cfg):
    mountstate.save(cfg.state_dir, a_state(cfg))
    mountstate.save(cfg.state_dir, a_state(cfg, "web2", read_only=True, complete=False))
    found = vmmount.list_mounted(cfg)
    assert [(i.name, i.mode, i.loop) for i in found] == [
        ("web1", "half-mounted (read-write)", "/dev/loop99"),
        ("web2", "half-mounted (read-only)", "/dev/loop99"),
    ]


def test_disk_sources_of_a_domain_xml():
    xml = """<domain><devices>
      <disk type='file'><source file='/img/a.img'/></disk>
      <disk type='block'><source dev='/dev/vg0/b-disk01'/></disk>
      <disk type='file' device='cdrom'><target dev='sdc'/></disk>
      <interface type='user'/>
    </devices></domain>"""
    assert virt.disk_sources(None, xml) == [inuse.DiskSource("/img/a.img", True),
                                            inuse.DiskSource("/dev/vg0/b-disk01", True)]


def test_create_debian_refuses_a_mounted_vm_before_touching_anything(cfg):
    mountstate.save(cfg.state_dir, a_state(cfg))
    result = run_cli("create-debian", "web1", "--config", str(cfg.source))
    assert result.returncode == 3, result.stderr
    assert (f"create-debian: error: web1 is mounted at {cfg.mount_dir / 'web1'} (mount-vm)"
            in result.stderr)
    assert "create-debian: hint: umount-vm web1 first" in result.stderr
    assert not cfg.image_dir.exists() and not cfg.log_dir.exists()


@pytest.mark.parametrize("argv", [["mount-vm", "--list"], ["hostcreator", "status"]])
def test_listing_commands(cfg, argv):
    result = run_cli(*argv, "--config", str(cfg.source))
    assert result.returncode == 0 and result.stdout == ""
    assert "no VM is mounted" in result.stderr
    mountstate.save(cfg.state_dir, a_state(cfg))
    result = run_cli(*argv, "--config", str(cfg.source))
    assert result.returncode == 0
    header, row = result.stdout.splitlines()
    assert header.split() == ["NAME", "MODE", "LOOP", "SINCE", "MOUNTPOINT"]
    assert row.startswith("web1 ") and row.endswith(str(cfg.mount_dir / "web1"))
