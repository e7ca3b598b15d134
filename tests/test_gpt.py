"""disk/gpt.py: what a disk holds, read from the disk itself, and by role when it has
hostcreator's layout (partition.ROLES)."""

from __future__ import annotations

import pytest
from conftest import hand_made_disk

from hostcreator.disk import gpt, partition
from hostcreator.errors import InvalidInput

pytestmark = pytest.mark.unit


def test_hostcreators_layout_is_read_by_role(tmp_path):
    disk = tmp_path / "d.img"
    hand_made_disk(disk)
    _size, parts = gpt.read(disk, "the disk")
    assert parts is not None
    found = gpt.layout(parts)
    assert found is not None
    assert [p.name for p in found.parts] == ["bios_grub", "swap", "root"]
    assert (found.root.start, found.root.size, found.root.fstype) == (13 << 20, 48 << 20,
                                                                      "ext2/3/4")
    assert found.bios.fstype is None and found.swap.fstype is None
    assert gpt.check_bootable(disk, "the disk") == \
        f"the partitions create-debian makes ({', '.join(partition.ROLES)}), ext2/3/4 on root"
    gpt.check_mountable(disk, "the disk")


def test_another_layout_boots_but_is_not_mounted(tmp_path):
    # One root partition, as an old script may have made: create-kvm boots it (GRUB finds
    # the root), mount-vm would look for the root in the third partition.
    disk = tmp_path / "d.img"
    hand_made_disk(disk, only_root=True)
    _size, parts = gpt.read(disk, "the disk")
    assert parts is not None and gpt.layout(parts) is None
    assert gpt.check_bootable(disk, "the disk") == \
        "a GPT of 1 partition(s), ext2/3/4 on partition 1"
    with pytest.raises(InvalidInput, match=r"does not have the partitions create-debian makes "
                       r"\(bios, swap, root, in that order\): its GPT has 1"):
        gpt.check_mountable(disk, "the disk")


def test_a_disk_without_a_table_or_a_root_is_refused(tmp_path):
    empty = tmp_path / "empty.img"
    empty.write_bytes(b"")
    with pytest.raises(InvalidInput, match=r"holds no GPT partition table \(it is empty\)"):
        gpt.check_bootable(empty, "the disk")
    bare = tmp_path / "bare.img"
    hand_made_disk(bare, root_fs=False)
    with pytest.raises(InvalidInput, match="has no partition with a root file system"):
        gpt.check_bootable(bare, "the disk")
    with pytest.raises(InvalidInput, match="has no ext2/3/4 file system on its root partition"):
        gpt.check_mountable(bare, "the disk")
