"""The LVM backend, end to end, in the lab host (tests/lab.py): this host's kernel has no
device-mapper, the lab's has. The commands run in the lab as users run them, on
STORAGE=lvm VG_NAME=hclab (the lab's /etc/default/hostcreator)."""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass

import pytest
from conftest import DEBIAN_SUITE, unique_name
from guest import boot_and_report, check_report
from lab import THIN_POOL, VENV, VG, Lab, extents_of

import hostcreator

pytestmark = pytest.mark.lab
GIB = 1024**3


def volumes(lab: Lab) -> str:
    """What `lvs` says of the VG: compared before and after every refusal."""
    return lab.run(f"lvs --noheadings --units b -o lv_name,lv_size,pool_lv,lv_attr {VG}").stdout


def lv_field(lab: Lab, lv: str, field: str) -> str:
    return lab.run(f"lvs --noheadings --nosuffix --units b -o {field} {VG}/{lv}").stdout.strip()


def test_the_lab_runs_hostcreator_from_its_wheel_and_has_the_volume_group(lab):
    assert lab.run("hostcreator --version").stdout.split()[-1] == hostcreator.__version__
    where = lab.run(f"{VENV}/bin/python -c 'import hostcreator; print(hostcreator.__file__)'")
    # Installed as a package, not an editable checkout.
    assert re.fullmatch(rf"{VENV}/lib/python3\.\d+/site-packages/hostcreator/__init__\.py",
                        where.stdout.strip()), where.stdout
    assert lab.run(f"{VENV}/bin/pip show -f hostcreator").stdout.count("__editable__") == 0
    assert lv_field(lab, THIN_POOL, "lv_attr").startswith("t")  # a thin pool
    assert lab.run("virsh -c qemu:///system version").returncode == 0


# --- refusals: before anything is touched, the VG as it was ---------------------------

@dataclass
class Refusal:
    argv: str
    code: int
    message: str
    setup: str = ""  # a shell line that makes the LV the refusal is about


REFUSALS = {
    "missing-vg": Refusal("create-debian {name} --vg hcnovg", 2,
                          "volume group 'hcnovg' not found"),
    "no-room": Refusal("create-debian {name} --size 100", 2,
                       rf"volume group '{VG}' has \d+\.\d GiB free, {{name}}-disk01 needs "
                       "100 GiB"),
    "missing-thin-pool": Refusal("create-debian {name} --set THIN_POOL=hcnopool", 2,
                                 f"volume group '{VG}' has no thin pool 'hcnopool'"),
    "lv-too-small": Refusal("create-debian {name}", 2,
                            rf"logical volume {VG}/{{name}}-disk01 has 1\.0 GiB, at least",
                            setup=f"lvcreate -q -L 1g -n {{name}}-disk01 {VG}"),
    "lv-with-data": Refusal("create-debian {name}", 3,
                            rf"logical volume {VG}/{{name}}-disk01 already holds data \(ext4\)",
                            setup=f"lvcreate -q -L 4g -n {{name}}-disk01 {VG} && "
                                  f"mkfs.ext4 -q /dev/{VG}/{{name}}-disk01 && "
                                  f"head -c 1M /dev/urandom | dd of=/dev/{VG}/{{name}}-disk01 "
                                  "bs=1M seek=40 conv=notrunc status=none"),
}


@pytest.mark.parametrize("case", REFUSALS.values(), ids=REFUSALS.keys())
def test_refusals_leave_the_volume_group_as_it_was(lab, case):
    name = unique_name()
    lv = f"/dev/{VG}/{name}-disk01"
    try:
        if case.setup:
            lab.run(case.setup.format(name=name))
        # Where a build writes first (the first GiB is zeroed, the GPT at both ends):
        # the first 64 MiB and the last one, read quicker than 4 GiB under TCG.
        checksum = (f"test -e {lv} && {{ head -c 64M {lv}; dd if={lv} bs=1M skip=4095 "
                    f"status=none; }} | sha256sum || true")
        before = volumes(lab), lab.run(checksum).stdout
        result = lab.run(case.argv.format(name=name), check=False, timeout=300)
        assert result.returncode == case.code, result.stderr
        lines = result.stderr.strip().splitlines()
        assert re.match(r"(error: )?" + case.message.format(name=name), lines[0]), lines
        # The LV and its data as they were, no journal begun.
        assert (volumes(lab), lab.run(checksum).stdout) == before
        assert lab.run(f"test -e /var/lib/hostcreator/journal/{name}.json", check=False) \
            .returncode == 1
    finally:
        lab.run(f"lvremove -q -y {VG}/{name}-disk01 2>/dev/null || true")


# --- builds --------------------------------------------------------------------------

@dataclass
class LabVM:
    name: str
    output: str


@pytest.fixture(scope="module")
def lvm_vm(lab) -> LabVM:
    """A VM built in the lab by create-debian on a new linear LV."""
    name = unique_name()
    result = lab.run(f"create-debian {name} {DEBIAN_SUITE}", timeout=1800)
    return LabVM(name, result.stdout + result.stderr)


def test_create_debian_makes_the_lv_of_size_gib_and_builds_on_it(lab, lvm_vm):
    lv = f"{lvm_vm.name}-disk01"
    assert int(lv_field(lab, lv, "lv_size")) == 4 * GIB
    assert lv_field(lab, lv, "lv_attr").startswith("-wi")  # linear, writable, not thin
    assert f"logical volume {VG}/{lv}" in lvm_vm.output
    assert "rootfs cache hit" in lvm_vm.output  # the entry handed in: no bootstrap
    table = lab.run(f"wipefs --no-act --noheadings -o TYPE /dev/{VG}/{lv}").stdout.split()
    assert sorted(table) == ["PMBR", "gpt"]
    # Nothing left: no loop device, no mount below the build's directories.
    assert lab.run("losetup --noheadings --list").stdout.strip() == ""
    assert lab.run("findmnt -rn -o TARGET | grep -c hostcreator || true").stdout.strip() == "0"


def test_mount_vm_and_umount_vm_work_on_the_lv(lab, lvm_vm):
    name = lvm_vm.name
    point = lab.run(f"mount-vm {name}").stdout.strip().splitlines()[-1]
    try:
        assert lab.run(f"cat {shlex.quote(point)}/etc/hostname").stdout.strip() == name
        assert lab.run(f"chroot {shlex.quote(point)} hostname -F /etc/hostname && echo ok")\
            .returncode == 0
        loops = lab.run("losetup --noheadings --list -O NAME,BACK-FILE").stdout
        assert f"/dev/mapper/{VG}-{name}--disk01" in loops or f"{VG}/{name}-disk01" in loops \
            or "dm-" in loops, loops
    finally:
        lab.run(f"umount-vm {name}")
    assert lab.run(f"findmnt -rn {shlex.quote(point)}", check=False).returncode == 1
    assert lab.run("losetup --noheadings --list").stdout.strip() == ""


def test_create_kvm_starts_a_domain_on_the_lv_as_a_block_disk(lab, lvm_vm):
    name = lvm_vm.name
    try:
        lab.run(f"create-kvm {name}", timeout=600)
        xml = lab.run(f"virsh -c qemu:///system dumpxml {name}").stdout
        assert re.search(rf"<disk type='block' device='disk'>.*?<source dev='/dev/{VG}/"
                         rf"{name}-disk01'/>", xml, re.S), xml
        assert lab.run(f"virsh -c qemu:///system domstate {name}").stdout.strip() == "running"
        # While it runs, the LV is refused to a build and to mount-vm.
        again = lab.run(f"create-debian {name} --restart", check=False)
        assert again.returncode == 3, again.stderr
        assert lab.run(f"mount-vm {name}", check=False).returncode == 3
    finally:
        lab.run(f"virsh -c qemu:///system destroy {name} 2>/dev/null; "
                f"virsh -c qemu:///system undefine {name} 2>/dev/null; true")


def fault_after_disk(lab: Lab, name: str, *options: str) -> str:
    """create-debian NAME failing right after its disk stage (HOSTCREATOR_FAULT)."""
    result = lab.run(f"HOSTCREATOR_FAULT=after:disk create-debian {name} {DEBIAN_SUITE} "
                     + " ".join(options), check=False, timeout=600)
    assert result.returncode == 1, result.stderr
    assert "fault injected at after:disk" in result.stderr
    return result.stdout + result.stderr


def test_thin_pool_makes_the_new_disk_a_thin_volume_in_it(lab):
    name = unique_name()
    lv = f"{name}-disk01"
    try:
        fault_after_disk(lab, name, f"--set THIN_POOL={THIN_POOL}")
        assert lv_field(lab, lv, "pool_lv") == THIN_POOL
        assert lv_field(lab, lv, "lv_attr").startswith("V")  # a thin volume
        assert int(lv_field(lab, lv, "lv_size")) == 4 * GIB
    finally:
        lab.run(f"lvremove -q -y {VG}/{lv}; rm -f /var/lib/hostcreator/journal/{name}.json")


def test_a_blank_thin_lv_made_bigger_by_hand_is_reused_and_a_stopped_build_resumed(lab):
    """An existing blank LV is built on at its own size (here a thin volume of 5 GiB
    made by hand); a build stopped after its disk stage leaves no mount or loop
    device, and --resume finishes it on the same LV."""
    name = unique_name()
    lv = f"{name}-disk01"
    lab.run(f"lvcreate -q -V 5g --thin -n {lv} {VG}/{THIN_POOL}")
    try:
        output = fault_after_disk(lab, name, f"--set THIN_POOL={THIN_POOL}")
        assert f"reusing logical volume {VG}/{lv} (5.0 GiB)" in output
        assert lab.run("losetup --noheadings --list").stdout.strip() == ""
        assert lab.run(f"findmnt -rn -o TARGET | grep -c {name} || true").stdout.strip() == "0"
        lab.run(f"create-debian {name} {DEBIAN_SUITE} --set THIN_POOL={THIN_POOL} --resume",
                timeout=1800)
        assert int(lv_field(lab, lv, "lv_size")) == 5 * GIB
        assert lv_field(lab, lv, "pool_lv") == THIN_POOL
        table = lab.run(f"wipefs --no-act --noheadings -o TYPE /dev/{VG}/{lv}").stdout.split()
        assert sorted(table) == ["PMBR", "gpt"]
    finally:
        lab.run(f"lvremove -q -y {VG}/{lv}")


def test_the_lv_boots_from_its_extents_in_the_pv_image(lab, lvm_vm):
    """Last: it shuts the lab down, and boots the VM from where the LV lies in the lab's
    second disk, read on this host (QEMU's raw driver with offset and size)."""
    part = extents_of(lab, f"{lvm_vm.name}-disk01")
    assert part.size == 4 * GIB
    lab.stop()
    report = boot_and_report(lab.pv_image, lab.base / f"{lvm_vm.name}.console.log",
                             part=part)
    check_report(report, lvm_vm.name, DEBIAN_SUITE)
