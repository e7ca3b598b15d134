"""What of the lab host (tests/lab.py) can be checked without building or booting it:
QEMU's command line, the configuration its builds read, its hook, where an LV lies."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from lab import INNER_CONFIG, LAB_MEMORY_MIB, VENV, VG, WHEELS, Lab, extents_of, in_stage

from hostcreator.config import StorageKind
from hostcreator.domain import qemu

pytestmark = pytest.mark.unit


def drives(argv: list[str]) -> list[str]:
    return [argv[i + 1] for i, arg in enumerate(argv) if arg == "-drive"]


def test_qemu_boots_a_slice_of_a_file_and_takes_further_disks():
    argv = qemu.qemu_argv(Path("/pv.img"), Path("/c.log"), part=qemu.Slice(1 << 20, 4 << 30))
    assert drives(argv) == ["driver=raw,offset=1048576,size=4294967296,file.driver=file,"
                            "file.filename=/pv.img,if=virtio,cache=unsafe"]
    assert "-snapshot" in argv  # the PV image stays as the lab left it
    lab = qemu.qemu_argv(Path("/lab.img"), Path("/c.log"), memory=LAB_MEMORY_MIB,
                         snapshot=False, ssh_port=2222, extra_disks=[Path("/pv.img")])
    assert drives(lab) == ["file=/lab.img,format=raw,if=virtio,cache=unsafe",
                           "file=/pv.img,format=raw,if=virtio,cache=unsafe"]
    assert "-snapshot" not in lab
    assert "user,model=virtio-net-pci,hostfwd=tcp:127.0.0.1:2222-:22" in lab


@pytest.fixture
def staged(tmp_path: Path) -> tuple[Lab, Path]:
    lab = Lab(tmp_path / "lab")
    lab.base.mkdir()
    stage = lab.base / "stage"
    lab._stage_inner(stage)
    return lab, stage


def test_the_labs_builds_read_lvm_in_its_volume_group(staged):
    lab, stage = staged
    inner = lab.inner()
    assert inner.storage_kind is StorageKind.LVM and inner.vg_name == VG
    assert inner.skel_dir is None  # the wheel's own skeleton
    assert in_stage(stage, INNER_CONFIG).read_text() == lab.inner_config.read_text()
    for secret in (inner.root_password_file, inner.ssh_authorized_keys):
        assert secret is not None and in_stage(stage, secret).is_file()
    assert (in_stage(stage, inner.hook_dir) / "postconfig.sh").is_file()
    # Named as the lab names them: its default directories.
    assert lab.paths("web1").journal == inner.journal_dir / "web1.json"
    assert lab.inner(Path("/elsewhere")).cache_dir == Path("/elsewhere")


def test_the_labs_hook_installs_the_wheel_without_an_index(staged):
    lab, stage = staged
    wheel = "hostcreator-1.0-py3-none-any.whl"
    hook = lab._postconfig_hook(stage, wheel)
    assert subprocess.run(["sh", "-n"], input=hook, text=True).returncode == 0
    assert f"{VENV}/bin/pip install -q --no-index" in hook
    # By its name: a glob would be expanded by the host's shell, not in the chroot.
    assert f"{WHEELS}/{wheel}" in hook and "*.whl" not in hook
    assert "--no-deps" not in hook  # Debian's libraries must satisfy the wheel


class FakeLab:
    """What the lab's LVM prints, for extents_of."""

    def __init__(self, answers: dict[str, str]) -> None:
        self.answers = answers

    def run(self, command: str) -> subprocess.CompletedProcess[str]:
        out = next(v for k, v in self.answers.items() if command.startswith(k))
        return subprocess.CompletedProcess(command, 0, out, "")


def test_extents_of_a_linear_lv_are_a_slice_of_the_pv():
    lab = FakeLab({"lvs": "  /dev/vdb:256-1279|1024\n", "pvs": "  1048576\n",
                   "vgs": "  4194304\n"})
    part = extents_of(lab, "web1-disk01")  # type: ignore[arg-type]
    assert part == qemu.Slice(1048576 + 256 * 4194304, 1024 * 4194304)
    split = FakeLab({"lvs": "  /dev/vdb:0-9|10\n  /dev/vdb:20-29|10\n"})
    with pytest.raises(Exception, match="has 2 segments, not one"):
        extents_of(split, "web1-disk01")  # type: ignore[arg-type]
