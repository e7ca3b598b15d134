"""disk/copy.py from a block device, as export copies an LVM VM's disk: a loop device
stands in for the LV here (this host has no device-mapper; the LV itself is exported in
the lab host). Its size is the device's, its zero pieces holes in the copy."""

from __future__ import annotations

import hashlib
import os
from contextlib import ExitStack

import pytest
from test_copy import MIB, sparse_file

from hostcreator.disk import copy
from hostcreator.host import loopdev

pytestmark = pytest.mark.root


def test_a_block_device_is_copied_whole_into_a_sparse_file(tmp_path):
    source = sparse_file(tmp_path / "lv.img")
    with ExitStack() as stack:
        device = loopdev.attach(stack, source, read_only=True)
        assert copy.allocated_bytes(device) == copy.size_of(device) == 64 * MIB
        with ExitStack() as copying:
            copied = copy.copy(copying, device, tmp_path / "web-disk01.img", kind="export")
            assert copied.method is copy.Method.DEVICE
            assert (copied.size, copied.allocated) == (64 * MIB, 64 * MIB)
            data = copied.temporary.read_bytes()
            assert hashlib.sha256(data).digest() == hashlib.sha256(source.read_bytes()).digest()
            assert copy.allocated_bytes(copied.temporary) <= 3 * copy.BLOCK
            assert os.stat(copied.temporary).st_mode & 0o777 == 0o600
        # Not published: the temporary copy is gone with its stack.
        assert not copied.temporary.exists()
