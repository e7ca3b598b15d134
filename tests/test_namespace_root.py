"""A private mount namespace lets go of the copies of other disks' mounts it starts with
(a VM mounted by mount-vm, another build's tree), and keeps what its own paths lie on."""

from __future__ import annotations

import subprocess
import sys
import time
from contextlib import ExitStack
from pathlib import Path

import pytest

from hostcreator.host import loopdev, mounts

pytestmark = pytest.mark.root

HOLD = ("import pathlib, sys, time; from hostcreator.host import mounts; "
        "mounts.private_namespace(keep=[pathlib.Path(p) for p in sys.argv[2:]]); "
        "pathlib.Path(sys.argv[1]).write_text('x'); time.sleep(600)")


def copies_in_a_new_namespace(tmp_path: Path, point: Path, *keep: Path) -> list[str]:
    """The mount points below POINT in a namespace made by private_namespace(KEEP)."""
    ready = tmp_path / "ready"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(ready), *map(str, keep)],
                              stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while not ready.exists():
            assert time.monotonic() < deadline and holder.poll() is None, "no namespace"
            time.sleep(0.05)
        return [str(e.point) for e in mounts.mountinfo_of(holder.pid)
                if e.point == point or point in e.point.parents]
    finally:
        holder.terminate()
        holder.wait(timeout=30)
        ready.unlink(missing_ok=True)


@pytest.fixture
def loop_mount(tmp_path):
    """A small ext4 image on a loop device, mounted with a bind below it (as mount-vm's)."""
    image = tmp_path / "disk.img"
    subprocess.run(["truncate", "-s", "16M", image], check=True)
    subprocess.run(["mkfs.ext4", "-q", "-F", image], check=True)
    point = tmp_path / "mnt"
    with ExitStack() as stack:
        device = loopdev.attach(stack, image)
        mounts.mount(stack, device, point, fstype="ext4")
        (point / "proc").mkdir()
        mounts.mount(stack, "/proc", point / "proc", bind=True)
        yield point


def test_copies_of_loop_mounts_are_let_go_of(tmp_path, loop_mount):
    assert copies_in_a_new_namespace(tmp_path, loop_mount) == []
    assert mounts.mounts_below(loop_mount) == [loop_mount / "proc", loop_mount]  # ours stay


def test_a_mount_its_own_paths_lie_on_is_kept(tmp_path, loop_mount):
    kept = copies_in_a_new_namespace(tmp_path, loop_mount, loop_mount / "images")
    assert kept == [str(loop_mount), str(loop_mount / "proc")]
