from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from hostcreator import config
from hostcreator.disk import partition, storage
from hostcreator.domain import virt
from hostcreator.errors import DiskInUse, InvalidInput
from hostcreator.host import inuse

LVS_OUTPUT = """\
  root|vg0|21474836480|/dev/vg0/root
  web1-disk01|vg0|8589934592|/dev/vg0/web1-disk01
  thin pool|vg0|1073741824|
"""
# libvirt's own in-process test driver: real answers, no daemon needed.
TEST_URI = "test:///default"


def ensure(disk: storage.Storage, force: bool = False) -> int:
    """As a build provides its disk: nothing may use an existing one, then it is checked."""
    if disk.exists():
        users = inuse.users_of(disk.path, domains=virt.domains_at(TEST_URI, "whether in use"))
        inuse.refuse(users, inuse.Command.CREATE, disk.describe())
    return storage.ensure_blank_disk(disk, 4, force, partition.minimum_disk_size())


@pytest.mark.unit
def test_lvs_command_and_parsing():
    assert storage.lvs_command("vg0") == [
        "lvs", "--noheadings", "--nosuffix", "--units", "b", "--separator", "|",
        "-o", "lv_name,vg_name,lv_size,lv_path", "vg0",
    ]
    volumes = storage.parse_lvs(LVS_OUTPUT)
    assert [v.name for v in volumes] == ["root", "web1-disk01", "thin pool"]
    assert volumes[1].size == 8 * partition.GIB
    assert volumes[1].path == Path("/dev/vg0/web1-disk01")
    assert volumes[2].path == Path("/dev/vg0/thin pool")  # inactive LVs have no lv_path


@pytest.mark.unit
def test_lvs_garbage_is_an_error():
    with pytest.raises(Exception, match="cannot parse lvs output"):
        storage.parse_lvs("  something unexpected\n")


@pytest.mark.unit
def test_lvcreate_command():
    assert storage.lvcreate_command("vg0", "web1-disk01", 16) == [
        "lvcreate", "--yes", "--wipesignatures", "y", "-n", "web1-disk01", "-L", "16g", "vg0"
    ]
    assert storage.lvcreate_command("vg0", "web1-disk01", 16, "pool") == [
        "lvcreate", "--yes", "--wipesignatures", "y", "-n", "web1-disk01", "-V", "16g",
        "--thin", "vg0/pool",
    ]


@pytest.mark.unit
def test_backend_choice_and_names(tmp_path):
    base = config.load(Path("/dev/null"), environ={})
    lvm = storage.for_vm(base.replace(vg_name="vg0"), "web1")
    assert isinstance(lvm, storage.LvmStorage)
    assert lvm.path == Path("/dev/vg0/web1-disk01")
    assert lvm.describe() == "logical volume vg0/web1-disk01"
    assert lvm.thin_pool is None
    thin = storage.for_vm(base.replace(vg_name="vg0", thin_pool="pool"), "web1")
    assert isinstance(thin, storage.LvmStorage) and thin.thin_pool == "pool"
    file = storage.for_vm(base.replace(image_dir=tmp_path), "web1")
    assert isinstance(file, storage.FileStorage)
    assert file.path == tmp_path / "web1-disk01.img"


@pytest.mark.unit
def test_new_image_is_sparse_and_of_the_size_asked(tmp_path):
    disk = storage.FileStorage(tmp_path / "sub" / "a-disk01.img")
    size = ensure(disk)
    assert size == 4 * partition.GIB == disk.path.stat().st_size
    assert disk.path.stat().st_blocks == 0


@pytest.mark.unit
def test_existing_blank_image_is_reused_with_its_own_size(tmp_path):
    disk = storage.FileStorage(tmp_path / "a-disk01.img")
    with open(disk.path, "wb") as f:
        f.truncate(6 * partition.GIB)
    assert ensure(disk) == 6 * partition.GIB


@pytest.mark.unit
def test_image_holding_a_file_system_is_refused_unless_forced(tmp_path):
    disk = storage.FileStorage(tmp_path / "a-disk01.img")
    with open(disk.path, "wb") as f:
        f.truncate(4 * partition.GIB)
    subprocess.run(["mkfs.ext4", "-q", "-F", disk.path], check=True)
    before = disk.path.read_bytes()[:2 * 1024 * 1024]
    with pytest.raises(DiskInUse, match=r"already holds data \(ext4\)") as exc:
        ensure(disk)
    assert "--force" in exc.value.hint
    assert disk.path.read_bytes()[:2 * 1024 * 1024] == before
    assert ensure(disk, force=True)


@pytest.mark.unit
def test_existing_image_too_small_is_refused(tmp_path):
    disk = storage.FileStorage(tmp_path / "a-disk01.img")
    with open(disk.path, "wb") as f:
        f.truncate(2 * partition.GIB)
    with pytest.raises(InvalidInput, match="at least"):
        ensure(disk)


@pytest.mark.unit
def test_image_path_that_is_a_directory_is_refused(tmp_path):
    (tmp_path / "a-disk01.img").mkdir()
    with pytest.raises(InvalidInput, match="not a regular file"):
        storage.FileStorage(tmp_path / "a-disk01.img").exists()


@pytest.mark.root
def test_image_attached_to_a_loop_device_is_refused_even_when_forced(tmp_path):
    disk = storage.FileStorage(tmp_path / "a-disk01.img")
    with open(disk.path, "wb") as f:
        f.truncate(4 * partition.GIB)
    dev = subprocess.run(["losetup", "--show", "-f", disk.path], capture_output=True,
                         text=True, check=True).stdout.strip()
    try:
        with pytest.raises(DiskInUse, match=f"in use by {dev}"):
            ensure(disk, force=True)
    finally:
        subprocess.run(["losetup", "-d", dev], check=True)
