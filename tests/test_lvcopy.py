"""disk/lvcopy.py: what clone asks of LVM, and what it makes of LVM's answers. LVM cannot
run on this host (no device-mapper): `run` is faked here and the argv asserted; the real
thin snapshot and LV copy are proven in the lab host (tests/test_lvm_lab.py)."""

from __future__ import annotations

import os
from contextlib import ExitStack
from pathlib import Path

import pytest

from hostcreator import run as run_module
from hostcreator.disk import copy, lvcopy
from hostcreator.errors import HostCreatorError

pytestmark = pytest.mark.unit

LVS = ("  gold-disk01|Vwi-a-tz--|pool|4294967296\n"
       "  pool|twi-aotz--||8589934592\n"
       "  thick-disk01|-wi-a-----||4294967296\n")


def test_lvs_lines_are_read_as_volumes():
    gold, pool, thick = lvcopy.parse_volumes("hclab", LVS)
    assert (gold.name, gold.pool, gold.size, gold.thin) == ("gold-disk01", "pool", 4 << 30,
                                                            True)
    assert not pool.thin and not thick.thin and thick.pool == ""
    with pytest.raises(HostCreatorError, match="cannot parse lvs output line"):
        lvcopy.parse_volumes("hclab", "gold-disk01|Vwi-a-tz--|pool\n")


def test_commands():
    assert lvcopy.snapshot_command("vg", "gold-disk01", "web-disk01.clone-7") == [
        "lvcreate", "--yes", "--snapshot", "--setactivationskip", "n", "--name",
        "web-disk01.clone-7", "vg/gold-disk01"]
    assert lvcopy.create_command("vg", "t", 4096, None)[-3:] == ["--size", "4096b", "vg"]
    assert lvcopy.create_command("vg", "t", 4096, "pool")[-4:] == [
        "--virtualsize", "4096b", "--thin", "vg/pool"]
    assert lvcopy.temporary_name("web-disk01", pid=7) == "web-disk01.clone-7"


class FakeLvm:
    """run() as LVM would answer: the volumes LVS lists, and every argv kept."""

    def __init__(self, volumes: str = LVS, fail: str = "") -> None:
        self.volumes = volumes
        self.fail = fail
        self.calls: list[list[str]] = []

    def __call__(self, argv, check=True, capture=False, **_kwargs):
        argv = [str(a) for a in argv]
        self.calls.append(argv)
        if argv[0] == "lvs":
            wanted = argv[-1].partition("/")[2]
            lines = [line for line in self.volumes.splitlines()
                     if not wanted or line.split("|")[0].strip() == wanted]
            return run_module.Result(argv, 0, "\n".join(lines) + "\n", [])
        if self.fail and argv[0] == self.fail:
            if check:
                raise HostCreatorError(f"{argv[0]} failed")
            return run_module.Result(argv, 5, "", ["it failed"])
        return run_module.Result(argv, 0, "", [])


def test_a_thin_volume_is_cloned_by_an_activated_thin_snapshot(monkeypatch):
    lvm = FakeLvm()
    monkeypatch.setattr(lvcopy, "run", lvm)
    with ExitStack() as stack:
        copied = lvcopy.clone(stack, "hclab", "gold-disk01", "web-disk01", None)
        temporary = lvcopy.temporary_name("web-disk01")
        assert copied.temporary == Path("/dev/hclab") / temporary
        assert copied.method is copy.Method.THIN_SNAPSHOT and copied.size == 4 << 30
        assert lvm.calls[1] == lvcopy.snapshot_command("hclab", "gold-disk01", temporary)
        assert lvm.calls[2] == ["lvchange", "--yes", "--activate", "y", f"hclab/{temporary}"]
        lvcopy.publish(copied, "hclab", "web-disk01")
        assert lvm.calls[-1] == ["lvrename", "hclab", temporary, "web-disk01"]
        stack.pop_all()
    assert not any(c[0] == "lvremove" for c in lvm.calls)


def test_a_clone_that_fails_removes_its_snapshot(monkeypatch):
    lvm = FakeLvm(fail="lvchange")
    monkeypatch.setattr(lvcopy, "run", lvm)
    with pytest.raises(HostCreatorError), ExitStack() as stack:
        lvcopy.clone(stack, "hclab", "gold-disk01", "web-disk01", None)
    assert lvm.calls[-1] == ["lvremove", "--yes",
                             f"hclab/{lvcopy.temporary_name('web-disk01')}"]


def test_a_name_taken_meanwhile_is_never_replaced(monkeypatch):
    lvm = FakeLvm(fail="lvrename")
    monkeypatch.setattr(lvcopy, "run", lvm)
    copied = copy.Copied(Path("/dev/hclab/web-disk01.clone-7"), copy.Method.THIN_SNAPSHOT,
                         1, 1)
    with pytest.raises(HostCreatorError, match="could not be named web-disk01"):
        lvcopy.publish(copied, "hclab", "web-disk01")


def test_stale_temporary_volumes_are_those_of_gone_processes(monkeypatch):
    gone = 2**22 + 1  # above pid_max's default: no such process
    volumes = LVS + (f"  web-disk01.clone-{gone}|Vwi-a-tz--|pool|4096\n"
                     f"  web-disk01.clone-{os.getpid()}|Vwi-a-tz--|pool|4096\n"
                     f"  web-disk01.export-{gone}|Vwi-a-tz--|pool|4096\n")
    monkeypatch.setattr(lvcopy, "run", FakeLvm(volumes))
    assert lvcopy.stale("hclab", "web-disk01") == [f"web-disk01.clone-{gone}"]
