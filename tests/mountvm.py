"""A private copy of the built VM disk for the mount-vm tests, and the commands on it."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from conftest import run_cli, unique_name

from hostcreator.host import loopdev, mounts
from hostcreator.state import mountstate


class VM:
    """A copy of the built disk under its own name (sparse, so it is quick)."""

    def __init__(self, built, name: str) -> None:
        self.env = built.env
        self.name = name
        self.image = built.copy(name)

    def cli(self, *argv: str) -> subprocess.CompletedProcess[str]:
        return run_cli(*argv, "--config", str(self.env.config), timeout=300)

    def mount(self, *options: str) -> subprocess.CompletedProcess[str]:
        return self.cli("mount-vm", self.name, *options)

    def umount(self) -> subprocess.CompletedProcess[str]:
        return self.cli("umount-vm", self.name)

    @property
    def mountpoint(self) -> Path:
        return self.env.mount_dir / self.name

    @property
    def build_root(self) -> Path:
        return self.env.state_dir / "build" / self.name

    @property
    def state_file(self) -> Path:
        return mountstate.path_of(self.env.state_dir, self.name)

    def state(self) -> dict:
        return json.loads(self.state_file.read_text())

    def loops(self) -> list[str]:
        return loopdev.loop_devices_of(self.image)

    def leftovers(self) -> list[str]:
        found = [f"loop {d}" for d in self.loops()]
        for top in (self.mountpoint, self.build_root):
            found += [f"mount {m}" for m in mounts.mounts_below(top)]
        if self.state_file.exists():
            found.append(f"state {self.state_file}")
        return found

    def force_cleanup(self) -> None:
        """Without hostcreator: what a failed test left must not outlive it."""
        for top in (self.mountpoint, self.build_root):
            mounts.unmount_tree(top)
        for dev in self.loops():
            subprocess.run(["losetup", "-d", dev], check=False)
        self.state_file.unlink(missing_ok=True)


@contextmanager
def shared_mount(path: Path) -> Iterator[None]:
    """PATH as a shared mount, as on a host where systemd mounts everything shared.

    libvirtd starts every QEMU in a mount namespace that is a slave of the host's: where
    the host's mounts are private (this test machine has no systemd), a domain that
    another test run starts while a VM is mounted here keeps a copy of the mount, and
    the loop device with it, until it stops. umount-vm then rightly refuses (a test shows
    that); the other tests must not depend on what else runs on the machine.
    """
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "--bind", path, path], check=True)
    try:
        subprocess.run(["mount", "--make-shared", path], check=True)
        yield
    finally:
        subprocess.run(["umount", path], check=True)


@contextmanager
def private_copy(built) -> Iterator[VM]:
    """A VM copy that leaves no mount, loop device, state file or image behind."""
    vm = VM(built, unique_name("hcmnt"))
    try:
        with shared_mount(vm.env.mount_dir):
            try:
                yield vm
            finally:
                left = vm.leftovers()
                if left:
                    vm.force_cleanup()
        assert not left, f"left behind: {left}"
    finally:
        vm.image.unlink(missing_ok=True)


def ok(result: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert result.returncode == 0, result.stdout + result.stderr
    return result
