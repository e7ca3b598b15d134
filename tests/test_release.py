"""Success is reported only once the disk's loop device is gone; what holds it is named."""

from __future__ import annotations

import subprocess
import time
from contextlib import ExitStack
from pathlib import Path

import pytest

from hostcreator.errors import DiskInUse
from hostcreator.host import inuse, loopdev

pytestmark = pytest.mark.root


def small_fs(tmp_path: Path) -> Path:
    image = tmp_path / "fs.img"
    with open(image, "wb") as f:
        f.truncate(64 * 2**20)
    subprocess.run(["mkfs.ext4", "-q", "-F", image], check=True)
    return image


def test_a_file_system_mounted_in_another_namespace_is_named(tmp_path, monkeypatch):
    monkeypatch.setattr(inuse, "RELEASE_WAIT_SECONDS", 1.0)
    image = small_fs(tmp_path)
    point = tmp_path / "point"
    point.mkdir()
    holder = None
    try:
        with ExitStack() as stack:
            device = loopdev.attach(stack, image)
            # A process in a namespace of its own mounts it, and keeps it.
            holder = subprocess.Popen(
                ["unshare", "--mount", "--propagation=private", "sh", "-c",
                 f"mount {device} {point} && touch {tmp_path}/mounted && exec sleep 600"])
            deadline = time.monotonic() + 10
            while not (tmp_path / "mounted").exists():
                assert time.monotonic() < deadline and holder.poll() is None
                time.sleep(0.05)
        with pytest.raises(DiskInUse) as caught:
            inuse.wait_released(image, hint="h")
        assert f"held by {holder.pid} (sleep)" in str(caught.value)
    finally:
        if holder is not None:
            holder.kill()
            holder.wait()
    inuse.wait_released(image, hint="h")  # gone with the namespace: nothing raised
    assert loopdev.loop_devices_of(image) == []
