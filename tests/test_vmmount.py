"""mount-vm / umount-vm on a disk built by the real create-debian: round trip, idempotency,
half-mounted leftovers, a person's shell in the chroot, create refusing a mounted VM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from contextlib import ExitStack
from pathlib import Path

import pytest
from conftest import unique_name
from mountvm import ok, private_copy

from hostcreator import config
from hostcreator.host import inuse, loopdev, mounts

pytestmark = pytest.mark.e2e


@pytest.fixture
def vm(debian_vm):
    with private_copy(debian_vm) as vm:
        yield vm


def chroot(root: Path, script: str) -> str:
    result = subprocess.run(["chroot", root, "sh", "-c", script], capture_output=True,
                            text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stderr
    return result.stdout


def assert_clean_file_system(image: Path) -> None:
    """The root file system is clean after umount-vm: nothing waits in the journal."""
    with ExitStack() as stack:
        device = loopdev.attach(stack, image, read_only=True)
        root = loopdev.wait_for_partitions(device, 3)[2]
        result = subprocess.run(["e2fsck", "-fn", root], capture_output=True, text=True)
        assert result.returncode == 0, result.stdout + result.stderr


def test_round_trip_chroot_change_is_on_the_disk(vm, debian_vm):
    result = ok(vm.mount())
    assert result.stdout.strip() == str(vm.mountpoint)
    assert f"{vm.name} is mounted at {vm.mountpoint} (read-write, /dev/loop" in result.stderr
    assert f"umount-vm {vm.name}" in result.stderr
    state = vm.state()
    assert state["complete"] and not state["read_only"]
    assert state["disk"] == str(vm.image) and vm.loops() == [state["loop"]]
    expected = [vm.mountpoint, *(vm.mountpoint / b for b in ("dev", "dev/pts", "proc", "sys"))]
    assert state["mounts"] == [str(p) for p in expected]
    assert list(reversed(mounts.mounts_below(vm.mountpoint))) == expected

    out = chroot(vm.mountpoint, "echo 'changed in the chroot' > /etc/hc-mount-test; "
                 "cat /etc/hostname; test -c /dev/null && test -r /proc/self/status && "
                 "test -d /sys/block && test -d /dev/pts && dpkg-query -W -f='${Version}' "
                 "base-files")
    assert out.startswith(f"{debian_vm.name}\n")  # the copy keeps the name it was built with

    result = ok(vm.umount())
    assert f"{vm.name}: unmounted {vm.mountpoint}/sys," in result.stderr
    assert f"{vm.name}: detached /dev/loop" in result.stderr
    assert vm.leftovers() == []
    assert not vm.mountpoint.exists()
    assert_clean_file_system(vm.image)

    ok(vm.mount("--read-only"))
    assert (vm.mountpoint / "etc" / "hc-mount-test").read_text() == "changed in the chroot\n"
    ok(vm.umount())
    assert vm.leftovers() == []


def test_both_commands_are_idempotent(vm):
    result = ok(vm.umount())
    assert f"{vm.name} was not mounted; nothing to do" in result.stderr
    first = ok(vm.mount())
    state = vm.state()
    again = ok(vm.mount())
    assert again.stdout == first.stdout
    assert f"{vm.name} is already mounted at {vm.mountpoint} (read-write" in again.stderr
    assert vm.state() == state and vm.loops() == [state["loop"]]
    # A read-write mount serves a read-only request; not the other way round.
    assert ok(vm.mount("--read-only")).stdout == first.stdout
    listing = ok(vm.cli("mount-vm", "--list")).stdout
    assert any(line.split()[:3] == [vm.name, "read-write", state["loop"]]
               for line in listing.splitlines())
    ok(vm.umount())
    result = ok(vm.umount())
    assert "was not mounted; nothing to do" in result.stderr
    assert vm.leftovers() == []

    ok(vm.mount("--read-only"))
    result = vm.mount()
    assert result.returncode == 3
    assert f"{vm.name} is mounted read-only at {vm.mountpoint}" in result.stderr
    ok(vm.umount())
    assert vm.leftovers() == []


def test_root_mounted_but_binds_missing(vm):
    ok(vm.mount())
    for bind in ("sys", "proc", "dev/pts", "dev"):
        subprocess.run(["umount", vm.mountpoint / bind], check=True)
    assert mounts.mounts_below(vm.mountpoint) == [vm.mountpoint]
    listing = ok(vm.cli("hostcreator", "status")).stdout
    assert f"{vm.name}  half-mounted (read-write)" in listing
    result = vm.mount()
    assert result.returncode == 3
    assert "is half-mounted or its disk is still attached" in result.stderr
    assert f"hint: umount-vm {vm.name} cleans that up" in result.stderr
    result = ok(vm.umount())
    assert f"unmounted {vm.mountpoint}\n" in result.stderr
    assert vm.leftovers() == []
    ok(vm.mount())
    ok(vm.umount())


def test_loop_attached_but_nothing_mounted(vm):
    device = subprocess.run(["losetup", "--show", "-f", "-P", vm.image], check=True,
                            capture_output=True, text=True).stdout.strip()
    result = vm.mount()
    assert result.returncode == 3 and f"loop device {device}" in result.stderr
    result = ok(vm.umount())
    assert f"{vm.name}: detached {device}" in result.stderr
    assert vm.leftovers() == []


def test_what_a_killed_create_left_in_the_build_root(vm):
    build = vm.env.state_dir / "build" / vm.name
    build.mkdir(parents=True, exist_ok=True)
    device = subprocess.run(["losetup", "--show", "-f", "-P", vm.image], check=True,
                            capture_output=True, text=True).stdout.strip()
    subprocess.run(["partx", "-u", device], check=False)
    subprocess.run(["mount", f"{device}p3", build], check=True)
    subprocess.run(["mount", "-t", "proc", "proc", build / "proc"], check=True)
    result = ok(vm.umount())
    assert f"unmounted {build}/proc, {build}" in result.stderr
    assert f"detached {device}" in result.stderr
    assert vm.leftovers() == []


def test_state_whose_loop_device_is_gone_or_reused(vm, tmp_path):
    ok(vm.mount())
    loop = vm.state()["loop"]
    subprocess.run(["umount", "-R", vm.mountpoint], check=True)
    subprocess.run(["losetup", "-d", loop], check=True)
    # Someone else's file now sits on the recorded loop device: never ours to detach.
    other = tmp_path / "other.img"
    other.write_bytes(b"\0" * 1024 * 1024)
    subprocess.run(["losetup", loop, other], check=True)
    try:
        result = vm.mount()
        assert result.returncode == 3 and "state file" in result.stderr
        result = ok(vm.umount())
        assert f"forgot the stale state file {vm.state_file}" in result.stderr
        assert f"loop device {loop} (no longer attached to {vm.image})" in result.stderr
        assert loopdev.loop_devices_of(other) == [loop]
        assert vm.leftovers() == []
    finally:
        subprocess.run(["losetup", "-d", loop], check=False)
    ok(vm.mount())
    ok(vm.umount())


@pytest.mark.parametrize("how", ["chroot", "cwd", "open file"])
def test_umount_refuses_while_a_person_uses_the_mount_and_kills_nothing(vm, how):
    ok(vm.mount())
    if how == "chroot":
        argv, cwd = ["chroot", str(vm.mountpoint), "sleep", "600"], None
    elif how == "cwd":
        argv, cwd = ["sleep", "600"], vm.mountpoint / "etc"
    else:
        argv, cwd = ["sh", "-c", f"exec 3<{vm.mountpoint}/etc/hostname; exec sleep 600"], None
    shell = subprocess.Popen(argv, cwd=cwd, stdin=subprocess.DEVNULL)
    try:
        result = vm.umount()
        assert result.returncode == 3, result.stderr
        assert f"{vm.mountpoint} is still in use by process(es) {shell.pid} (sleep)" \
            in result.stderr
        assert "leave the chroot" in result.stderr
        assert shell.poll() is None, "umount-vm killed the user's process"
        assert len(mounts.mounts_below(vm.mountpoint)) == 5
        assert vm.state()["complete"]
        assert "already mounted" in ok(vm.mount()).stderr
    finally:
        shell.send_signal(signal.SIGTERM)
        shell.wait(timeout=30)
    ok(vm.umount())
    assert vm.leftovers() == []


def test_create_debian_refuses_while_mounted(vm):
    ok(vm.mount())
    result = vm.cli("create-debian", vm.name, "--force")
    assert result.returncode == 3, result.stderr
    assert f"error: {vm.name} is mounted at {vm.mountpoint} (mount-vm)" in result.stderr
    assert f"hint: umount-vm {vm.name} first" in result.stderr
    assert len(mounts.mounts_below(vm.mountpoint)) == 5
    ok(vm.umount())


def test_a_failing_mount_vm_undoes_what_it_did(vm):
    ok(vm.mount())
    subprocess.run(["umount", vm.mountpoint / "sys"], check=True)
    (vm.mountpoint / "sys").rmdir()
    (vm.mountpoint / "sys").write_text("not a directory\n")
    ok(vm.umount())
    # Disk attached, root and three binds mounted, then the fourth bind fails.
    result = vm.mount()
    assert result.returncode == 1, result.stderr
    assert f"/sys in {vm.name} is not a directory" in result.stderr
    assert "Traceback" not in result.stderr
    assert vm.leftovers() == []
    assert not vm.mountpoint.exists()


def test_no_disk(vm):
    result = vm.cli("mount-vm", unique_name("hcnone"))
    assert result.returncode == 2 and "has no disk" in result.stderr


def test_unreachable_libvirt_is_a_warning(vm):
    result = ok(vm.cli("mount-vm", vm.name, "--set",
                       "LIBVIRT_URI=qemu+unix:///system?socket=/nonexistent/sock"))
    assert "warning: libvirt at qemu+unix:///system?socket=/nonexistent/sock cannot be " \
           "reached" in result.stderr
    ok(vm.umount())


def test_is_mounted_for_create_kvm(vm, debian_vm):
    cfg = config.load(debian_vm.env.config, environ={})

    def mounted_at() -> Path | None:
        return inuse.users_of(vm.image, vm=inuse.Vm.of(cfg, vm.name)).mounted_at

    assert mounted_at() is None
    ok(vm.mount())
    assert mounted_at() == vm.mountpoint
    ok(vm.umount())
    assert mounted_at() is None


def test_a_build_started_meanwhile_does_not_keep_the_disk(vm):
    """A build's namespace, made while NAME is mounted, starts with a copy of the mounts;
    it lets go of the copies of loop-backed ones, so umount-vm detaches NAME's disk at
    once - also on a host whose / is private, as this one's is (no systemd)."""
    ok(vm.mount())
    loop = vm.state()["loop"]
    ready = vm.mountpoint.parent / f"{vm.name}.ns"
    code = ("import pathlib, sys, time; from hostcreator.host import mounts; "
            "mounts.private_namespace(); pathlib.Path(sys.argv[1]).write_text('x'); "
            "time.sleep(600)")
    holder = subprocess.Popen([sys.executable, "-c", code, str(ready)], stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while not ready.exists():
            assert time.monotonic() < deadline and holder.poll() is None, "no namespace"
            time.sleep(0.1)
        # It let go of its copy at once (the host's unmount need not reach it)...
        assert f" {vm.mountpoint} " not in Path(f"/proc/{holder.pid}/mountinfo").read_text()
        ok(vm.umount())
        assert loop not in vm.loops() and vm.leftovers() == []  # ...so the disk is free
    finally:
        holder.terminate()
        holder.wait(timeout=30)
        ready.unlink(missing_ok=True)


def test_a_copy_of_the_mount_in_another_namespace_is_named(vm):
    """A process that unshared its mounts (QEMU under libvirtd does) keeps the disk busy."""
    ok(vm.mount())
    holder = subprocess.Popen(["unshare", "--mount", "--propagation", "private", "sleep", "600"],
                              stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while os.readlink(f"/proc/{holder.pid}/ns/mnt") == os.readlink("/proc/self/ns/mnt"):
            assert time.monotonic() < deadline, "unshare did not start"
            time.sleep(0.1)
        loop = vm.state()["loop"]
        result = vm.umount()
        assert result.returncode == 3, result.stderr
        assert (f"{loop} could not be detached: still in use ({loop}p3 at {vm.mountpoint} in "
                f"the mount namespace of process {holder.pid} (sleep)") in result.stderr
        assert mounts.mounts_below(vm.mountpoint) == []
        assert "half-mounted" in ok(vm.cli("hostcreator", "status")).stdout
        assert vm.mount().returncode == 3
    finally:
        holder.terminate()
        holder.wait(timeout=30)
    deadline = time.monotonic() + 30
    while vm.loops():  # the loop device goes once the last copy of the mount is gone
        assert time.monotonic() < deadline, vm.loops()
        time.sleep(0.2)
    result = ok(vm.umount())
    assert "forgot the stale" in result.stderr
    assert vm.leftovers() == []
