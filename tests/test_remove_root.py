"""remove's refusals that need a loop device: before libvirt is asked, before the lock."""

from __future__ import annotations

from contextlib import ExitStack

import pytest
from conftest import NOWHERE, hand_made_disk, run_cli, unique_name

from hostcreator import paths
from hostcreator.host import loopdev

pytestmark = pytest.mark.root


def test_a_disk_on_a_loop_device_is_refused_before_libvirt_is_asked(testenv):
    name = unique_name()
    conf = testenv.write(LIBVIRT_URI=NOWHERE)
    disk = testenv.image(name)
    hand_made_disk(disk)
    with ExitStack() as stack:
        loop = loopdev.attach(stack, disk)
        result = run_cli("hostcreator", "remove", name, "--yes", "--disk", "-c", str(conf),
                         timeout=60)
    errors = [line for line in result.stderr.splitlines() if "error:" in line]
    assert errors == [f"remove: error: image file {disk} is in use by {loop}"], result.stderr
    assert result.returncode == 3
    assert disk.exists() and not paths.lock_file(testenv.state_dir, name).exists()
