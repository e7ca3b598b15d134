from __future__ import annotations

from pathlib import Path

import pytest

from hostcreator.disk import partition
from hostcreator.disk.partition import GIB, MIB
from hostcreator.errors import InvalidInput

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("size", [4 * GIB, 8 * GIB, 4 * GIB + 12345, 100 * GIB + 3 * MIB // 2])
def test_layout(size):
    plan = partition.layout(size)
    bios, swap, root = plan.parts
    assert (bios.start, bios.size) == (MIB, 4 * MIB)
    assert (swap.start, swap.size) == (5 * MIB, 1020 * MIB)
    assert root.start == 1025 * MIB
    for part in plan.parts:
        assert part.start % MIB == 0 and part.size % MIB == 0
    assert bios.end == swap.start and swap.end == root.start
    # the backup GPT needs the last 33 sectors: at least one MiB stays free
    assert size - root.end >= MIB
    assert size - root.end < 2 * MIB


def test_too_small_disk_is_refused():
    with pytest.raises(InvalidInput, match="too small"):
        partition.layout(3 * GIB)
    partition.layout(partition.minimum_disk_size())


def test_wipe_zeroes_head_and_tail_and_keeps_file_sparse(tmp_path):
    image = tmp_path / "disk.img"
    size = 2 * GIB
    with open(image, "wb") as f:
        f.truncate(size)
        for offset in (0, 512 * MIB, GIB + 4096, size - 4096):
            f.seek(offset)
            f.write(b"\xff" * 4096)
    partition.wipe(image, size)
    data = image.read_bytes()
    assert data[:GIB].count(0) == GIB
    assert data[GIB + 4096:GIB + 8192] == b"\xff" * 4096  # outside the wiped areas
    assert data[-MIB:].count(0) == MIB
    assert image.stat().st_blocks * 512 <= 8192


def test_wipe_of_a_small_disk_zeroes_all_of_it(tmp_path):
    image = tmp_path / "small.img"
    image.write_bytes(b"\x01" * (3 * MIB))
    partition.wipe(image, 3 * MIB)
    assert image.read_bytes() == bytes(3 * MIB)


def test_ext4_label_fits_sixteen_bytes():
    assert partition.ext4_label("a" * 63) == "a" * 16
    assert partition.ext4_label("web1") == "web1"


def test_the_layout_names_each_partition_by_role_and_only_it_knows_their_numbers():
    import parted

    plan = partition.layout(8 * GIB)
    assert partition.ROLES == ("bios", "swap", "root")
    assert plan.parts == (plan.bios, plan.swap, plan.root)
    assert (plan.bios.name, plan.bios.flag, plan.bios.fstype) == (
        "bios_grub", parted.PARTITION_BIOS_GRUB, None)
    assert (plan.swap.flag, plan.swap.fstype) == (parted.PARTITION_SWAP, "linux-swap(v1)")
    assert (plan.root.flag, plan.root.fstype) == (None, "ext4")
    loop = Path("/dev/loop7")
    assert [partition.node(loop, role) for role in partition.ROLES] == [
        Path("/dev/loop7p1"), Path("/dev/loop7p2"), Path("/dev/loop7p3")]
    nodes = partition.Nodes(*(partition.node(loop, role) for role in partition.ROLES))
    assert nodes.root == Path("/dev/loop7p3") and nodes.all[0] == Path("/dev/loop7p1")
