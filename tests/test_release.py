"""A mount namespace cloned during a build must not keep the build's file system alive."""

from __future__ import annotations

import subprocess
import time
from contextlib import ExitStack
from pathlib import Path

import pytest

from hostcreator import loopdev, mounts, storage

pytestmark = [pytest.mark.root]


def small_fs(tmp_path):
    image = tmp_path / "fs.img"
    with open(image, "wb") as f:
        f.truncate(64 * 2**20)
    subprocess.run(["mkfs.ext4", "-q", "-F", image], check=True)
    return image


def namespace(propagation: str) -> subprocess.Popen:
    """A process in a mount namespace cloned from ours now, as libvirt makes for a VM."""
    proc = subprocess.Popen(["unshare", "--mount", f"--propagation={propagation}",
                             "sleep", "300"])
    deadline = time.monotonic() + 10
    while Path(f"/proc/{proc.pid}/comm").read_text().strip() != "sleep":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    return proc


@pytest.mark.parametrize("propagation,released", [("slave", True), ("private", False)])
def test_unmount_reaches_a_namespace_cloned_during_the_build(tmp_path, propagation, released):
    image = small_fs(tmp_path)
    root = tmp_path / "root"
    root.mkdir()
    proc = None
    try:
        with ExitStack() as stack:
            device = loopdev.attach(stack, image)
            mounts.shared_mount_point(stack, root)
            mounts.mount(stack, device, root, fstype="ext4", options=("nobarrier",))
            (root / "file").write_text("data")
            mounts.syncfs(root)
            proc = namespace(propagation)
        # Unmounted and detached here; libvirt's slave copy went with it, a private one
        # keeps the file system, and so the loop device, alive - and names its holder.
        attached = storage.loop_devices_of(image)
        if released:
            assert attached == []
        else:
            assert attached and str(proc.pid) in " ".join(
                mounts.namespaces_holding(Path(attached[0])))
    finally:
        if proc is not None:
            proc.kill()
            proc.wait()
        deadline = time.monotonic() + 10
        while storage.loop_devices_of(image) and time.monotonic() < deadline:
            time.sleep(0.1)
    assert storage.loop_devices_of(image) == []
