"""The LVM backend, end to end, in the lab host (tests/lab.py): this host's kernel has no
device-mapper, the lab's has. The commands run in the lab as users run them, on
STORAGE=lvm VG_NAME=hclab (the lab's /etc/default/hostcreator)."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import DEBIAN_SUITE, unique_name
from guest import boot_and_report_together, check_report
from lab import INNER, THIN_POOL, VENV, VG, Lab, extents_of

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
                       rf"--size: SIZE: 100 GiB do not fit in volume group {VG}: \d+\.\d GiB "
                       "are free"),
    "missing-thin-pool": Refusal("create-debian {name} --set THIN_POOL=hcnopool", 2,
                                 f"THIN_POOL: volume group {VG} has no thin pool 'hcnopool'"),
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
        assert re.match("create-debian: error: " + case.message.format(name=name),
                        lines[0]), lines
        # The LV and its data as they were, no journal begun.
        assert (volumes(lab), lab.run(checksum).stdout) == before
        assert lab.run(f"test -e {lab.paths(name).journal}", check=False).returncode == 1
    finally:
        lab.run(f"lvremove -q -y {VG}/{name}-disk01 2>/dev/null || true")


# --- builds --------------------------------------------------------------------------

@dataclass
class LabVM:
    name: str
    stopped: str  # the output of the build interrupted by SIGTERM in its bootstrap stage
    code: int  # its exit code
    left: str  # loop devices and mounts of NAME once it had stopped
    journal: str  # its build journal then
    resumed: str  # the output of the --resume that finished it


def leftovers(lab: Lab, name: str) -> str:
    """Loop devices, and mounts that name NAME, in the lab ("" when there are none)."""
    loops = lab.run("losetup --noheadings --list").stdout.strip()
    mounted = lab.run(f"findmnt -rn -o TARGET | grep {name} || true").stdout.strip()
    return "\n".join(filter(None, (loops, mounted)))


def interrupted(lab: Lab, name: str, when: str, timeout: float = 900) -> tuple[int, str]:
    """create-debian NAME in the lab, sent SIGTERM once its log shows WHEN: its exit code
    and its output."""
    out = INNER / f"{name}.out"
    # The build in the background, its PID and then its exit code in files of their own.
    lab.run(f"sh -c 'create-debian {name} {DEBIAN_SUITE} >{out} 2>&1 </dev/null & "
            f"echo $! >{out}.pid; wait $!; echo $? >{out}.rc' </dev/null >/dev/null 2>&1 &")
    log = shlex.quote(str(lab.paths(name).log))
    lab.run(f"for i in $(seq {int(timeout)}); do grep -q {shlex.quote(when)} {log} "
            f"2>/dev/null && exit 0; test -e {out}.rc && exit 1; sleep 1; done; exit 1",
            timeout=timeout + 60)
    lab.run(f"kill -TERM $(cat {out}.pid)")
    lab.run(f"for i in $(seq 300); do test -e {out}.rc && exit 0; sleep 1; done; exit 1",
            timeout=400)
    code = int(lab.run(f"cat {out}.rc").stdout)
    return code, lab.run(f"cat {out}").stdout


@pytest.fixture(scope="module")
def lvm_vm(lab) -> LabVM:
    """The one full build in the lab (each costs minutes under TCG): create-debian on a
    blank linear LV made by hand bigger than SIZE (5 GiB, SIZE is 4), interrupted by
    SIGTERM in its bootstrap stage (unpacking the rootfs cache entry handed in), then
    finished by --resume."""
    name = unique_name()
    lab.run(f"lvcreate -q -L 5g -n {name}-disk01 {VG}")
    code, stopped = interrupted(lab, name, "rootfs cache hit")
    left = leftovers(lab, name)
    journal = lab.run(f"cat {lab.paths(name).journal}").stdout
    result = lab.run(f"create-debian {name} {DEBIAN_SUITE} --resume", timeout=1800)
    return LabVM(name, stopped, code, left, journal, result.stdout + result.stderr)


def fault_after(lab: Lab, stage: str, name: str, *options: str) -> str:
    """create-debian NAME failing right after its STAGE (HOSTCREATOR_FAULT)."""
    result = lab.run(f"HOSTCREATOR_FAULT=after:{stage} create-debian {name} {DEBIAN_SUITE} "
                     + " ".join(options), check=False, timeout=600)
    assert result.returncode == 1, result.stderr
    assert f"fault injected at after:{stage}" in result.stderr
    return result.stdout + result.stderr


@pytest.mark.parametrize("thin", [False, True], ids=["linear", "thin"])
def test_a_new_disk_is_an_lv_of_size_gib_linear_or_in_the_thin_pool(lab, thin):
    """create-debian makes NAME-disk01 of SIZE GiB: a linear LV, or with THIN_POOL a
    thin volume in that pool (stopped after the disk stage: the rest is lvm_vm's);
    `hostcreator remove NAME --disk` removes it."""
    name = unique_name()
    lv = f"{name}-disk01"
    try:
        output = fault_after(lab, "disk", name,
                             *([f"--set THIN_POOL={THIN_POOL}"] if thin else []))
        assert f"logical volume {VG}/{lv}" in output
        assert int(lv_field(lab, lv, "lv_size")) == 4 * GIB
        if thin:
            assert lv_field(lab, lv, "pool_lv") == THIN_POOL
            assert lv_field(lab, lv, "lv_attr").startswith("V")  # a thin volume
        else:
            assert lv_field(lab, lv, "lv_attr").startswith("-wi")  # linear, writable
        assert leftovers(lab, name) == ""
        # ...and `remove --disk` removes it, with the journal of the stopped build.
        lab.run(f"hostcreator remove {name} --disk --yes")
        assert lab.run(f"lvs {VG}/{lv}", check=False).returncode != 0
        assert lab.run(f"test -e {lab.paths(name).journal}", check=False).returncode == 1
    finally:
        lab.run(f"lvremove -q -y {VG}/{lv} 2>/dev/null; rm -f {lab.paths(name).journal}")


def test_a_blank_lv_made_bigger_by_hand_is_reused_and_an_interrupted_build_resumed(lab,
                                                                                 lvm_vm):
    lv = f"{lvm_vm.name}-disk01"
    assert f"reusing logical volume {VG}/{lv} (5.0 GiB)" in lvm_vm.stopped
    assert lvm_vm.code == 143 and "interrupted by SIGTERM" in lvm_vm.stopped, lvm_vm.stopped
    record = json.loads(lvm_vm.journal)
    assert (record["status"], record["stage"]) == ("interrupted", "bootstrap"), record
    assert lvm_vm.left == ""  # the interrupted build undid its loop device and mounts
    assert "rootfs cache hit" in lvm_vm.resumed  # the entry handed in: no bootstrap
    assert int(lv_field(lab, lv, "lv_size")) == 5 * GIB
    assert lv_field(lab, lv, "lv_attr").startswith("-wi")
    table = lab.run(f"wipefs --no-act --noheadings -O TYPE /dev/{VG}/{lv}").stdout.split()
    # The protective MBR, the GPT and its backup (at the end of the 5 GiB).
    assert sorted(table) == ["PMBR", "gpt", "gpt"], table
    assert leftovers(lab, lvm_vm.name) == ""


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
                         rf"{name}-disk01'[ />]", xml, re.S), xml
        assert lab.run(f"virsh -c qemu:///system domstate {name}").stdout.strip() == "running"
        # While it runs, the LV is refused to a build and to mount-vm.
        again = lab.run(f"create-debian {name} --restart", check=False)
        assert again.returncode == 3, again.stderr
        assert lab.run(f"mount-vm {name}", check=False).returncode == 3
    finally:
        lab.run(f"virsh -c qemu:///system destroy {name} 2>/dev/null; "
                f"virsh -c qemu:///system undefine {name} 2>/dev/null; true")


# --- clones and an export on LVM (issues 17 and 19) -------------------------------------

EXPORTS = INNER / "exports"


@dataclass
class LabClones:
    source: str  # what is seen of lvm_vm's disk before the clones (disk_seen)
    thin: dict  # lvm_vm, a linear LV, cloned into a thin volume in the pool: a copy
    linear: dict  # lvm_vm cloned into a new linear LV: a copy, bootable from its extents
    snapshot: dict  # thin cloned again: a thin snapshot
    export: dict  # snapshot exported as a sparse raw image into EXPORTS


def clone_in(lab: Lab, source: str, name: str, *options: str) -> dict:
    result = lab.run(f"hostcreator clone {source} {name} --json " + " ".join(options),
                     timeout=900)
    return json.loads(result.stdout)


def disk_seen(lab: Lab, name: str) -> str:
    """NAME's GPT (the first MiB and the last) and its root file system's superblock
    (mount count, times, UUID): what a write or a mount of its disk would change, read
    under TCG far quicker than its 5 GiB."""
    lv = f"/dev/{VG}/{name}-disk01"
    last = f"$(( $(blockdev --getsize64 {lv}) / 1048576 - 1 ))"
    return lab.run(
        f"{{ head -c 1M {lv}; dd if={lv} bs=1M count=1 skip={last} status=none; }} | "
        f"sha256sum && loop=$(losetup -r -P --show -f {lv}) && udevadm settle && "
        f"dumpe2fs -h ${{loop}}p3 2>/dev/null; losetup -d $loop").stdout


@pytest.fixture(scope="module")
def lab_clones(lab, lvm_vm) -> LabClones:
    """Three clones made in the lab by hostcreator clone, and an export of the third."""
    source = disk_seen(lab, lvm_vm.name)
    thin = clone_in(lab, lvm_vm.name, unique_name(), f"--set THIN_POOL={THIN_POOL}")
    linear = clone_in(lab, lvm_vm.name, unique_name())
    snapshot = clone_in(lab, thin["name"], unique_name())
    lab.run(f"mkdir -p {EXPORTS}")
    export = json.loads(lab.run(f"hostcreator export {snapshot['name']} --format raw "
                                f"--output {EXPORTS} --json", timeout=900).stdout)
    return LabClones(source, thin, linear, snapshot, export)


def test_clones_on_lvm_a_copy_into_a_thin_volume_a_linear_copy_and_a_thin_snapshot(
        lab, lvm_vm, lab_clones):
    thin, linear, snapshot = lab_clones.thin, lab_clones.linear, lab_clones.snapshot
    assert thin["method"] == "copy into a new logical volume"
    assert linear["method"] == "copy into a new logical volume"
    assert snapshot["method"] == "thin snapshot"
    for clone, pool, attr in ((thin, THIN_POOL, "V"), (linear, "", "-"),
                              (snapshot, THIN_POOL, "V")):
        lv = f"{clone['name']}-disk01"
        assert clone["disk"] == f"/dev/{VG}/{lv}"
        assert lv_field(lab, lv, "pool_lv") == pool
        assert lv_field(lab, lv, "lv_attr").startswith(attr)
        # Activated, not skipped (a thin snapshot's default): a disk like any other.
        assert lv_field(lab, lv, "lv_attr")[4] == "a", lv_field(lab, lv, "lv_attr")
        assert int(lv_field(lab, lv, "lv_size")) == 5 * GIB
    assert lv_field(lab, f"{snapshot['name']}-disk01", "origin") == f"{thin['name']}-disk01"
    # The thin copy of a 5 GiB LV holds what the VM uses, not 5 GiB.
    assert float(lv_field(lab, f"{thin['name']}-disk01", "data_percent")) < 60
    # Each its own file systems; the source's disk as it was; nothing left behind.
    uuids = {c["root_uuid"] for c in (thin, linear, snapshot)}
    assert len(uuids) == 3 and lvm_vm.name not in uuids
    assert disk_seen(lab, lvm_vm.name) == lab_clones.source
    names = lab.run(f"lvs --noheadings -o lv_name {VG}").stdout.split()
    assert [n for n in names if ".clone-" in n] == []
    assert leftovers(lab, lvm_vm.name) == ""
    # The three clones' disks mounted with mount-vm at once: no UUID shared, each root
    # its own (its host name, its fstab naming its new UUID).
    clones = (thin, linear, snapshot)
    points = [lab.run(f"mount-vm {c['name']}").stdout.strip().splitlines()[-1]
              for c in clones]
    try:
        for clone, point in zip(clones, points, strict=True):
            assert lab.run(f"cat {point}/etc/hostname").stdout.strip() == clone["name"]
            fstab = lab.run(f"cat {point}/etc/fstab").stdout
            assert f"UUID={clone['root_uuid']} /" in fstab, fstab
    finally:
        for c in clones:
            lab.run(f"umount-vm {c['name']}")


def test_an_lvm_vm_is_exported_from_its_lv(lab, lab_clones):
    export = lab_clones.export
    assert export["method"] == "sparse copy of the logical volume"
    assert export["disk"] == lab_clones.snapshot["disk"]
    assert export["disk_size"] == 5 * GIB
    # Sparse: the allocated bytes are what the VM uses, well below its 5 GiB.
    assert export["allocated"] < 3 * GIB, export
    # Its sealed copy became the output (the same file system): nothing left beside.
    assert lab.run("ls -A /var/lib/hostcreator/images 2>/dev/null || true").stdout.strip() \
        == ""


def test_the_lv_boots_from_its_extents_and_the_snapshots_export_too(lab, lvm_vm, lab_clones):
    """Last: it shuts the lab down, and boots from where the LV of the VM built on LVM
    lies in the lab's second disk, read on this host (QEMU's raw driver with offset and
    size); and the export of the thin snapshot (a clone of a clone), taken out of the
    lab's own disk (mount-vm of the lab, read-only). Both at once. The linear clone is
    a copy like the thin one, which the snapshot's boot shows whole; its extents are
    checked, its root mounted in the lab (the clones test)."""
    part = extents_of(lab, f"{lvm_vm.name}-disk01")
    linear = extents_of(lab, f"{lab_clones.linear['name']}-disk01")
    assert part.size == linear.size == 5 * GIB and linear.offset != part.offset
    lab.stop()
    exported = lab.base / "snapshot.raw"
    lab.copy_out(Path(lab_clones.export["path"]), exported)
    # The export's digest, checked here: hashing 5 GiB takes a minute under TCG.
    digest = subprocess.run(["sha256sum", exported], capture_output=True, text=True,
                            check=True).stdout.split()[0]
    assert digest == lab_clones.export["sha256"]
    snapshot = lab_clones.snapshot["name"]
    built, snapped = boot_and_report_together(
        [(lab.pv_image, lab.base / f"{lvm_vm.name}.console.log", part),
         (exported, lab.base / f"{snapshot}.console.log")], timeout=900)
    check_report(built, lvm_vm.name, DEBIAN_SUITE)
    # An export locks root's password (the generated one stays on the host); the rest of
    # the usual checks hold for it too.
    assert snapped["root_password"] == "L"
    check_report({**snapped, "root_password": "P"}, snapshot, DEBIAN_SUITE)
    assert snapped["root_uuid"] == lab_clones.snapshot["root_uuid"] != built["root_uuid"]
    assert snapped["machine_id"] != built["machine_id"]
    assert snapped["ssh_key"] != built["ssh_key"]
