"""hostcreator clone on a small hand-made gold disk (GPT, swap, an ext4 root holding what a
VM that has run keeps): the clone's own identity, read back from its disk; the gold's
image unchanged; nothing left behind after success or after a failure. No VM is booted
here (test_clone_e2e.py boots two clones of a real build)."""

from __future__ import annotations

import json
import os
import subprocess
from contextlib import ExitStack
from pathlib import Path

import pytest
from conftest import (
    TEST_SSH_KEY,
    command,
    hermetic_environ,
    run_cli,
    sha256,
    terminate_when,
    unique_name,
)
from gold import TRACES, attached, grub_cfg, make_gold, uuid_of

from hostcreator.disk import partition
from hostcreator.host import loopdev, mounts

pytestmark = pytest.mark.root

NOWHERE = "qemu+unix:///system?socket=/nonexistent/libvirt-sock"


@pytest.fixture
def gold(testenv):
    keys = testenv.base / "authorized_keys"
    keys.write_text(TEST_SSH_KEY + "\n")
    testenv.write(LIBVIRT_URI=NOWHERE, SSH_AUTHORIZED_KEYS=str(keys))
    name = unique_name()
    return name, make_gold(testenv, name)


def clone(testenv, source: str, name: str, **kwargs) -> subprocess.CompletedProcess[str]:
    return run_cli("hostcreator", "clone", source, name, "--config", str(testenv.config), "--json",
                   timeout=120, **kwargs)


def read_root(env, image: Path) -> tuple[dict[str, str], dict[str, bool], str, str, str]:
    """From IMAGE: some files ("" when missing), which TRACES exist, the root and swap
    UUIDs, the root label."""
    with ExitStack() as stack:
        nodes = attached(stack, image, read_only=True)
        root_uuid, swap_uuid = uuid_of(nodes.root), uuid_of(nodes.swap)
        label = subprocess.run(["blkid", "--probe", "-o", "value", "-s", "LABEL",
                                str(nodes.root)], capture_output=True, text=True).stdout.strip()
        root = mounts.mount(stack, nodes.root, env.base / "look", fstype="ext4",
                            options=("ro", "noload"))
        texts = {rel: (root / rel).read_text() if (root / rel).exists() else "" for rel in (
            "etc/hostname", "etc/hosts", "etc/machine-id", "etc/fstab", "boot/grub/grub.cfg",
            "root/.ssh/authorized_keys")}
        present = {rel: (root / rel).exists() for rel in (*TRACES, "var/lib/dbus/machine-id")}
    (env.base / "look").rmdir()
    return texts, present, root_uuid, swap_uuid, label


def test_clone_has_its_own_identity_and_the_gold_is_unchanged(testenv, gold):
    source, image = gold
    with ExitStack() as stack:
        nodes = attached(stack, image, read_only=True)
        old_root, old_swap = uuid_of(nodes.root), uuid_of(nodes.swap)
    before = sha256(image)
    name = unique_name()
    result = clone(testenv, source, name)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["method"] in ("reflink", "copy of the allocated extents")
    assert f"copy {source}'s disk ({summary['method']})" in result.stderr
    assert sha256(image) == before
    new_image = testenv.image(name)
    assert summary["disk"] == str(new_image)
    assert sorted(p.name for p in testenv.image_dir.iterdir()) == sorted(
        [image.name, new_image.name])  # no temporary copy left
    texts, present, root_uuid, swap_uuid, label = read_root(testenv, new_image)
    assert (root_uuid, swap_uuid) == (summary["root_uuid"], summary["swap_uuid"])
    assert root_uuid != old_root and swap_uuid != old_swap
    assert label == partition.ext4_label(name)
    assert texts["etc/hostname"] == f"{name}\n"
    assert f"127.0.1.1\t{name}" in texts["etc/hosts"] and source not in texts["etc/hosts"]
    assert texts["etc/machine-id"] == ""
    assert f"UUID={root_uuid} " in texts["etc/fstab"]
    assert f"UUID={swap_uuid} " in texts["etc/fstab"] and old_root not in texts["etc/fstab"]
    assert old_root not in texts["boot/grub/grub.cfg"]
    assert texts["boot/grub/grub.cfg"] == grub_cfg(root_uuid)
    assert texts["root/.ssh/authorized_keys"] == TEST_SSH_KEY + "\n"
    assert not any(present.values()), present
    record = testenv.journal(name)
    assert (record["status"], record["source"], record["root_uuid"]) == (
        "finished", source, root_uuid)
    # The gold itself still reads as it was.
    texts, present, gold_root, _swap, _label = read_root(testenv, image)
    assert texts["etc/hostname"] == f"{source}\n" and all(present.values())
    assert gold_root == old_root
    assert sha256(image) == before
    # Gold and clone are mounted side by side (mount-vm), then let go.
    config = str(testenv.config)
    both = [run_cli("mount-vm", n, "--config", config, timeout=60) for n in (source, name)]
    unmounted = [run_cli("umount-vm", n, "--config", config, timeout=60) for n in (source, name)]
    assert [r.returncode for r in both + unmounted] == [0] * 4, [r.stderr for r in both]


def test_a_failed_identity_leaves_nothing(testenv, gold):
    """A guest's link out of its root (var/lib/dhcpcd -> a host directory) stops the clone
    in the middle of its identity: the host's file stays, the copy goes, nothing stays
    mounted or attached."""
    source, image = gold
    host_dir = testenv.base / "host-dhcpcd"
    host_dir.mkdir()
    (host_dir / "lease").write_text("the host's\n")
    with ExitStack() as stack:
        nodes = attached(stack, image)
        root = mounts.mount(stack, nodes.root, testenv.base / "r", fstype="ext4")
        (root / "var/lib/dhcpcd").symlink_to(host_dir)
    (testenv.base / "r").rmdir()
    before = sha256(image)
    name = unique_name()
    result = clone(testenv, source, name)
    assert result.returncode == 1, result.stderr
    errors = [line for line in result.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and "leads out of the VM's root" in errors[0], result.stderr
    assert (host_dir / "lease").read_text() == "the host's\n"
    assert [p.name for p in testenv.image_dir.iterdir()] == [image.name]
    assert not (testenv.journal_dir / f"{name}.json").exists()
    assert loopdev.loop_devices_of(image) == []
    assert sha256(image) == before


def test_a_fault_before_the_copy_is_named_leaves_nothing(testenv, gold):
    source, image = gold
    name = unique_name()
    env = {**hermetic_environ(), "HOSTCREATOR_FAULT": "clone:before:publish"}
    result = clone(testenv, source, name, env=env)
    assert result.returncode == 1, result.stderr
    assert "fault injected at clone:before:publish" in result.stderr
    assert json.loads(result.stdout)["error"]["exit_code"] == 1
    assert [p.name for p in testenv.image_dir.iterdir()] == [image.name]
    assert not (testenv.journal_dir / f"{name}.json").exists()
    assert not mounts.mounts_below(testenv.state_dir)


def test_clone_refuses_a_mounted_source_and_an_existing_name(testenv, gold):
    source, _image = gold
    mounted = run_cli("mount-vm", source, "--config", str(testenv.config), timeout=60)
    assert mounted.returncode == 0, mounted.stderr
    try:
        name = unique_name()
        result = clone(testenv, source, name)
        assert result.returncode == 3, result.stderr
        assert f"{source} is mounted at" in result.stderr
        assert json.loads(result.stdout)["error"]["exit_code"] == 3
        assert not testenv.image(name).exists() and not testenv.log_dir.joinpath(
            f"{name}.log").exists()
        assert not (testenv.journal_dir / f"{name}.json").exists()
    finally:
        run_cli("umount-vm", source, "--config", str(testenv.config), timeout=60)
    other = unique_name()
    make_gold(testenv, other)
    before = sha256(testenv.image(other))
    result = clone(testenv, source, other)
    assert result.returncode == 3, result.stderr
    assert f"{other} has a disk already" in result.stderr
    assert sha256(testenv.image(other)) == before


def loops_below(top: Path) -> list[str]:
    """losetup's lines of the loop devices whose file lies below TOP."""
    listing = subprocess.run(["losetup", "-a"], capture_output=True, text=True).stdout
    return [line for line in listing.splitlines() if str(top) in line]


def mounted_by(pid: int, top: Path) -> list[str]:
    """Mount points at or below TOP as process PID sees them."""
    return [str(e.point) for e in mounts.mountinfo_of(pid)
            if e.point == top or top in e.point.parents]


def test_sigterm_in_the_identity_stage_leaves_nothing(testenv, gold):
    """The clone is paused where it holds the most (the copy attached, its root mounted):
    the gold's /etc/hosts is a FIFO, which the clone reads while nobody writes it."""
    source, image = gold
    with ExitStack() as stack:
        root = mounts.mount(stack, attached(stack, image).root, testenv.base / "r",
                            fstype="ext4")
        (root / "etc/hosts").unlink()
        os.mkfifo(root / "etc/hosts")
    (testenv.base / "r").rmdir()
    name = unique_name()
    build_root = testenv.state_dir / "build" / name
    seen: list[list[str]] = []

    def ready(pid: int) -> bool:
        if not mounted_by(pid, build_root):
            return False
        # In the clone's own namespace only; the copy is attached.
        seen.extend([[str(m) for m in mounts.mounts_below(build_root)],
                     loops_below(testenv.image_dir)])
        return True

    code, err = terminate_when([command("hostcreator"), "clone", source, name, "--config",
                                str(testenv.config)], ready, timeout=30)
    assert seen[0] == [], seen
    assert seen[1] and ".clone-" in seen[1][0], seen
    assert code == 143, err
    assert "interrupted by SIGTERM" in err, err
    assert [p.name for p in testenv.image_dir.iterdir()] == [image.name]
    assert not (testenv.journal_dir / f"{name}.json").exists()
    assert mounts.mounts_below(testenv.state_dir) == []
    assert loops_below(testenv.base) == []


def test_a_copy_left_by_a_killed_clone_is_removed_by_the_next(testenv, gold):
    source, _image = gold
    name = unique_name()
    target = testenv.image(name)
    # PID 4194304 is above any pid_max: that process is gone.
    left = target.with_name(f".{target.name}.clone-4194304")
    left.write_bytes(b"half a copy")
    with ExitStack() as stack:
        loopdev.attach(stack, left)
        stack.pop_all()  # as SIGKILL leaves it: still attached
    result = clone(testenv, source, name)
    assert result.returncode == 0, result.stderr
    assert f"removed {left}, left by a clone that was killed" in result.stderr
    assert not left.exists() and loopdev.loop_devices_of(left) == []
