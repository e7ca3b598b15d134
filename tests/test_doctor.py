"""hostcreator doctor: a test per check, on this host, and the exit code of the real CLI.

Real where this host shows the answer: root, the host tools, the debootstrap scripts and
keyrings, a file: mirror, libvirt (the libvirtd fixture), the KVM probe (here it says
that KVM guests do not run), a bridge made for the test, IMAGE_DIR on ext4 (no
reflinks), loop devices, OVMF, the rootfs cache, journals and mount-vm. Faked (each
says so) only where this host cannot show the other answer: a user who is not root, a
working KVM, a volume group (no lvm2, no device-mapper here), a file system that makes
reflinks, a host without loop-control, OVMF, swtpm or virtlogd.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
from contextlib import ExitStack
from pathlib import Path

import pytest
from conftest import NOWHERE, hand_made_disk, run_cli, unique_name
from test_cache import fake_entry

from hostcreator import paths
from hostcreator import run as run_module
from hostcreator.build import cache
from hostcreator.config import Config
from hostcreator.disk import copy, storage
from hostcreator.domain import choose, kvmprobe
from hostcreator.errors import InvalidInput
from hostcreator.host import loopdev
from hostcreator.state import mountstate
from hostcreator.vm import doctor
from hostcreator.vm.doctor import Status

unit = pytest.mark.unit
root = pytest.mark.root
with_libvirt = pytest.mark.libvirt
ORDER = ["root", "host tools", "debian suite", "ubuntu suite", "debian mirror",
         "ubuntu mirror", "libvirt", "kvm", "network", "storage", "reflink", "loop devices",
         "uefi firmware", "secure boot", "swtpm", "rootfs cache", "unfinished builds",
         "mounted vms"]


def check(cfg: Config, name: str) -> doctor.Check | None:
    """The line of the check NAME, made as the report makes it."""
    entry = next(e for e in doctor.entries() if e.name == name)
    with ExitStack() as stack:
        return doctor.run_check(entry, doctor.Host(cfg, stack))


def line(cfg: Config, name: str) -> doctor.Check:
    found = check(cfg, name)
    assert found is not None, f"{name} does not apply"
    return found


def local_mirror(base: Path, *suites: str, origin: str = "Debian") -> str:
    """A file: archive whose dists/SUITE/Release heads say ORIGIN."""
    for suite in suites:
        release = base / "mirror" / "dists" / suite / "Release"
        release.parent.mkdir(parents=True)
        release.write_text(f"Origin: {origin}\nSuite: {suite}\nCodename: {suite}\n")
    return f"file://{base / 'mirror'}"


# --- root and the host tools ----------------------------------------------------------------


@root
def test_root_is_ok_as_root(testenv):
    assert line(testenv.load(), "root").status is Status.OK


@unit
def test_not_root_is_a_required_failure(testenv, monkeypatch):
    # The tests run as root: another user is faked.
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    found = line(testenv.load(), "root")
    assert (found.status, found.required) == (Status.FAILED, True)
    assert found.hint == "run it as root: sudo hostcreator doctor"


@unit
def test_the_host_tools_are_found(testenv):
    found = line(testenv.load(), "host tools")
    assert found.status in (Status.OK, Status.WARNING)  # warning: no mmdebstrap
    assert "debootstrap" in found.detail and "qemu-system-x86_64" in found.detail


@unit
def test_missing_host_tools_name_their_packages(testenv, tmp_path, monkeypatch):
    # A host without the tools: the commands are looked for in an empty directory.
    (tmp_path / "bin").mkdir()
    monkeypatch.setattr(run_module, "SYSTEM_PATH", str(tmp_path / "bin"))
    found = line(testenv.load(STORAGE="lvm", VG_NAME="vg0"), "host tools")
    assert (found.status, found.required) == (Status.FAILED, True)
    assert found.detail.startswith("missing host command(s): debootstrap, rsync")
    assert "lvcreate" in found.detail
    assert found.hint is not None and found.hint.startswith("apt-get install ")
    for package in ("debootstrap", "e2fsprogs", "lvm2", "qemu-system-x86", "zstd", "gpgv"):
        assert package in found.hint.split(), found.hint


# --- the suites, their keyrings and the archive ---------------------------------------------


@unit
def test_the_default_suites_have_a_script_and_a_keyring(testenv):
    cfg = testenv.load()
    debian, ubuntu = line(cfg, "debian suite"), line(cfg, "ubuntu suite")
    assert debian.status is Status.OK and debian.detail.startswith("trixie: ")
    assert "/usr/share/keyrings/debian-archive-keyring.gpg" in debian.detail
    assert ubuntu.status is Status.OK and ubuntu.detail.startswith("resolute: ")
    assert "/usr/share/keyrings/ubuntu-archive-keyring.gpg" in ubuntu.detail


@unit
def test_a_missing_keyring_fails_with_its_package(testenv, tmp_path):
    cfg = testenv.load(KEYRING=str(tmp_path / "none.gpg"))
    for name, package in (("debian", "debian-archive-keyring"), ("ubuntu", "ubuntu-keyring")):
        found = line(cfg, f"{name} suite")
        assert found.status is Status.FAILED and "none.gpg is missing" in found.detail
        assert found.hint == f"apt-get install {package}, or set KEYRING to a keyring file"
        assert not found.required


@unit
def test_no_signature_check_is_a_warning(testenv):
    found = line(testenv.load(INSECURE_NO_SIGNATURE_CHECK="yes"), "debian suite")
    assert found.status is Status.WARNING and "NOT checked" in found.detail


@unit
def test_distr_is_the_suite_of_its_distribution_and_a_typo_of_both(testenv):
    cfg = testenv.load(DISTR="jammy")
    assert line(cfg, "debian suite").detail.startswith("trixie: ")
    assert line(cfg, "ubuntu suite").detail.startswith("jammy: ")
    typo = testenv.load(DISTR="trixy")
    for name in ("debian", "ubuntu"):
        found = line(typo, f"{name} suite")
        assert (found.status, found.detail) == (Status.FAILED,
                                                f"unknown {name} suite 'trixy'")


@unit
def test_the_mirror_offers_the_suite(testenv, tmp_path):
    cfg = testenv.load(MIRROR=local_mirror(tmp_path, "trixie"))
    debian = line(cfg, "debian mirror")
    assert debian.status is Status.OK and debian.detail.startswith(
        f"file://{tmp_path}/mirror offers trixie")
    ubuntu = line(cfg, "ubuntu mirror")  # MIRROR is one setting for both distributions
    assert ubuntu.status is Status.FAILED and "has no dists/resolute/Release" in ubuntu.detail
    assert not ubuntu.required


@unit
def test_a_mirror_that_does_not_answer_fails_quickly(testenv):
    # Port 9 (discard) of the loopback address: nothing listens, the refusal is immediate.
    found = line(testenv.load(MIRROR="http://127.0.0.1:9/debian"), "debian mirror")
    assert found.status is Status.FAILED and "the archive is unreachable" in found.detail
    assert found.hint == "check the network, MIRROR and APT_PROXY; nothing was touched"
    assert found.seconds < doctor.MIRROR_TIMEOUT


# --- libvirt, KVM, the network -------------------------------------------------------------


@unit
def test_libvirt_that_does_not_answer_is_a_required_failure(testenv):
    found = line(testenv.load(LIBVIRT_URI=NOWHERE), "libvirt")
    assert (found.status, found.required) == (Status.FAILED, True)
    assert found.detail.startswith(f"cannot connect to libvirt at {NOWHERE}")
    assert found.hint is not None and "is libvirtd running?" in found.hint


@with_libvirt
def test_libvirt_answers_with_its_version(testenv, libvirtd):
    found = line(testenv.load(LIBVIRT_URI=libvirtd), "libvirt")
    assert found.status is Status.OK, found
    assert found.detail.startswith(f"{libvirtd}: libvirt 9.0.0, QEMU ")
    assert "qemu" in found.detail.rpartition("domain types ")[2].split(", ")


@with_libvirt
def test_libvirt_without_virtlogd_fails(testenv, libvirtd, monkeypatch):
    # virtlogd runs here: its socket is looked for where there is none.
    monkeypatch.setattr(doctor, "VIRTLOGD_SOCKET", testenv.base / "virtlogd-sock")
    found = line(testenv.load(LIBVIRT_URI=libvirtd), "libvirt")
    assert found.status is Status.FAILED and "virtlogd is not running" in found.detail


@root
def test_kvm_that_does_not_work_here_is_a_warning(testenv):
    # The real probe, as VIRT_TYPE=auto makes it: on this host KVM guests do not run.
    found = line(testenv.load(LIBVIRT_URI=NOWHERE), "kvm")
    assert (found.status, found.required) == (Status.WARNING, False), found
    assert found.detail.startswith("virt type qemu (software emulation), as KVM guests do "
                                   "not run here: ")
    assert found.hint is not None and "nested virtualization" in found.hint
    assert (testenv.state_dir / kvmprobe.CACHE_FILE).is_file()  # kept, as create-kvm keeps it
    forced = line(testenv.load(LIBVIRT_URI=NOWHERE, VIRT_TYPE="kvm"), "kvm")
    assert forced.status is Status.FAILED and forced.detail.startswith("VIRT_TYPE=kvm, but ")


@unit
def test_kvm_that_works_is_ok(testenv, monkeypatch):
    # KVM guests do not run on this host: the probe's answer is faked.
    seen = kvmprobe.Probe(True, "the host's kernel vmlinuz-6.1.0 ran under kvm in 0.9 s", "b")
    monkeypatch.setattr(kvmprobe, "probe", lambda state_dir: seen)
    found = line(testenv.load(LIBVIRT_URI=NOWHERE), "kvm")
    assert found.status is Status.OK
    assert found.detail == f"virt type kvm: {seen.describe()}"
    chosen = line(testenv.load(LIBVIRT_URI=NOWHERE, VIRT_TYPE="qemu"), "kvm")
    assert chosen.status is Status.OK and "VIRT_TYPE=qemu" in chosen.detail


@unit
def test_a_named_bridge_that_is_no_bridge_fails(testenv):
    found = line(testenv.load(NETWORK_TYPE="bridge", NETWORK="lo"), "network")
    assert (found.status, found.detail) == (Status.FAILED,
                                            "'lo' is a network interface, not a bridge")


@unit
def test_without_bridge_and_libvirt_the_network_is_user_mode(testenv, tmp_path, monkeypatch):
    # The host's own interfaces are not the test's: a /sys/class/net without br0.
    monkeypatch.setattr(choose, "SYS_NET", tmp_path)
    found = line(testenv.load(LIBVIRT_URI=NOWHERE), "network")
    assert found.status is Status.WARNING and "QEMU's user mode" in found.detail
    assert found.hint is not None and "virsh net-start default" in found.hint
    named = line(testenv.load(LIBVIRT_URI=NOWHERE, NETWORK="lab"), "network")
    assert named.status is Status.WARNING and "cannot be asked" in named.detail


@with_libvirt
def test_a_libvirt_network_that_does_not_exist_fails(testenv, libvirtd):
    name = unique_name("hcdoc")
    found = line(testenv.load(LIBVIRT_URI=libvirtd, NETWORK_TYPE="network", NETWORK=name),
                 "network")
    assert (found.status, found.detail) == (Status.FAILED,
                                            f"libvirt network {name!r} does not exist")


@pytest.fixture
def bridge():
    """A bridge of this host without ports, down: nothing goes through it. Removed after."""
    name = f"hcdoc{secrets.token_hex(2)}"
    subprocess.run(["ip", "link", "add", name, "type", "bridge"], check=True)
    try:
        yield name
    finally:
        subprocess.run(["ip", "link", "del", name], check=True)


@root
def test_a_bridge_of_this_host_is_ok(testenv, bridge):
    found = line(testenv.load(LIBVIRT_URI=NOWHERE, NETWORK=bridge), "network")
    assert (found.status, found.detail) == (Status.OK, f"network: the bridge {bridge}")
    named = line(testenv.load(NETWORK_TYPE="bridge", NETWORK=bridge), "network")
    assert (named.status, named.detail) == (Status.OK, f"NETWORK_TYPE=bridge: {bridge}")


# --- storage --------------------------------------------------------------------------------


@unit
def test_image_dir_free_space(testenv):
    found = line(testenv.load(), "storage")
    assert (found.status, found.required) == (Status.OK, True)
    assert found.detail.startswith(f"image files in {testenv.image_dir}: ")
    assert check(testenv.load(), "thin pool") is None  # LVM only
    too_big = line(testenv.load(SIZE="1000000"), "storage")
    assert too_big.status is Status.WARNING and "less than SIZE=1000000 GiB" in too_big.detail
    assert not testenv.image_dir.exists()  # asked, not made


@unit
def test_an_image_dir_without_files_fails(testenv):
    found = line(testenv.load(IMAGE_DIR="/proc/self"), "storage")
    assert found.status is Status.FAILED
    assert found.detail.startswith("IMAGE_DIR: no file can be written in /proc/self")


def fake_lvm(monkeypatch, free: int | None, pool_attr: str | None = None) -> None:
    """LVM cannot run here (no lvm2, no device-mapper): vgs and lvs answer as for a
    volume group with FREE bytes free (None: no such group) and a pool of POOL_ATTR."""
    def answer(argv, **_kwargs):
        if argv[0] == "vgs":
            code, out = (5, "") if free is None else (0, f"  {free}\n")
        else:
            code, out = (5, "") if pool_attr is None else (0, f"  {pool_attr}\n")
        return run_module.Result(list(argv), code, out, [])

    monkeypatch.setattr(storage, "run", answer)


@unit
def test_a_volume_group_and_its_free_space(testenv, monkeypatch):
    fake_lvm(monkeypatch, free=20 * doctor.GIB)
    found = line(testenv.load(VG_NAME="vg0"), "storage")
    assert (found.status, found.detail) == (Status.OK, "volume group vg0: 20.0 GiB free")
    assert check(testenv.load(VG_NAME="vg0"), "reflink") is None  # image files only
    full = line(testenv.load(VG_NAME="vg0", SIZE="40"), "storage")
    assert full.status is Status.WARNING and "SIZE=40 GiB does not fit" in full.detail


@unit
def test_a_missing_volume_group_fails(testenv, monkeypatch):
    fake_lvm(monkeypatch, free=None)
    found = line(testenv.load(VG_NAME="vg0"), "storage")
    assert (found.status, found.detail) == (Status.FAILED, "volume group 'vg0' not found")
    assert found.required


@unit
@pytest.mark.parametrize("attr,status", [("twi-aotz--", Status.OK), ("-wi-a-----", Status.FAILED),
                                         (None, Status.FAILED)])
def test_the_thin_pool(testenv, monkeypatch, attr, status):
    fake_lvm(monkeypatch, free=doctor.GIB, pool_attr=attr)
    cfg = testenv.load(VG_NAME="vg0", THIN_POOL="pool", SIZE="40")
    assert line(cfg, "storage").status is Status.OK  # thin volumes may exceed the free space
    found = line(cfg, "thin pool")
    assert (found.status, found.required) == (status, True)
    if status is Status.FAILED:
        assert found.detail == "THIN_POOL: volume group vg0 has no thin pool 'pool'"


@unit
def test_ext4_makes_no_reflinks_and_the_probe_leaves_nothing(testenv):
    testenv.image_dir.mkdir()
    found = line(testenv.load(), "reflink")
    assert found.status is Status.WARNING, found  # the tests' directory is on ext4
    assert found.hint == "for clones in a moment: IMAGE_DIR on XFS or btrfs"
    assert list(testenv.image_dir.iterdir()) == []


@unit
def test_a_file_system_that_makes_reflinks(testenv, monkeypatch):
    # This host has no file system with reflinks (XFS, btrfs): the clone is faked.
    monkeypatch.setattr(copy, "_reflink", lambda source, target: True)
    found = line(testenv.load(), "reflink")
    assert found.status is Status.OK and "makes reflinks" in found.detail


# --- loop devices, firmware, swtpm ----------------------------------------------------------


@root
def test_a_free_loop_device_is_found_and_none_attached(testenv):
    before = subprocess.run(["losetup", "--list"], capture_output=True, text=True).stdout
    found = line(testenv.load(), "loop devices")
    assert (found.status, found.required) == (Status.OK, True)
    assert found.detail.startswith("/dev/loop") and " is free" in found.detail
    assert subprocess.run(["losetup", "--list"], capture_output=True, text=True).stdout == before


@unit
def test_without_loop_control_loop_devices_fail(testenv, monkeypatch):
    # This host has /dev/loop-control: it is looked for where there is none.
    monkeypatch.setattr(loopdev, "LOOP_CONTROL", testenv.base / "loop-control")
    found = line(testenv.load(), "loop devices")
    assert (found.status, found.hint) == (Status.FAILED, "load the loop module: modprobe loop")


@unit
def test_ovmf_is_found(testenv):
    for name in ("uefi firmware", "secure boot"):
        found = line(testenv.load(), name)
        assert found.status is Status.OK and str(doctor.OVMF_DIR) in found.detail


@unit
def test_without_ovmf_uefi_is_a_warning(testenv, monkeypatch):
    # setup.sh installs OVMF here: its directory is looked for where there is none.
    monkeypatch.setattr(doctor, "OVMF_DIR", testenv.base / "OVMF")
    for name in ("uefi firmware", "secure boot"):
        found = line(testenv.load(), name)
        assert (found.status, found.hint) == (Status.WARNING, "apt-get install ovmf")
        assert "BIOS VMs need none" in found.detail and not found.required


@unit
@pytest.mark.parametrize("commands,status", [(("sh",), Status.OK),
                                             (("hcdoc-no-swtpm",), Status.WARNING)])
def test_swtpm(testenv, monkeypatch, commands, status):
    # Whether swtpm is installed is this host's matter: commands that are, or are not.
    monkeypatch.setattr(doctor, "SWTPM_COMMANDS", commands)
    found = line(testenv.load(), "swtpm")
    assert found.status is status and not found.required
    if status is Status.WARNING:
        assert found.hint == "apt-get install hcdoc-no-swtpm"


# --- the rootfs cache, unfinished builds, mounted VMs ----------------------------------------


@unit
def test_the_rootfs_cache(testenv, tmp_path):
    cfg = testenv.load()
    assert line(cfg, "rootfs cache").detail.endswith(": empty (the first build of each "
                                                     "suite bootstraps it)")
    rootfs = cache.RootfsCache.under(testenv.cache_dir)
    tree = tmp_path / "tree"
    (tree / "etc").mkdir(parents=True)
    (tree / "etc" / "os-release").write_text("ID=debian\n")
    values = {"format": cache.FORMAT, "distribution": "debian", "suite": "trixie"}
    rootfs.base.mkdir(parents=True)
    rootfs.store(cache.key_of(values), values, tree)
    found = line(cfg, "rootfs cache")
    assert found.status is Status.OK and ": 1 entries, " in found.detail


@unit
def test_old_and_unfinished_cache_entries_are_a_warning(testenv):
    rootfs = cache.RootfsCache.under(testenv.cache_dir)
    fake_entry(rootfs, "a" * 64, age_days=30)
    (rootfs.base / f".tmp-{'b' * 64}-4242").mkdir()
    found = line(testenv.load(), "rootfs cache")
    assert found.status is Status.WARNING and found.hint == "hostcreator cache prune"
    assert "1 unfinished, 1 older than CACHE_MAX_AGE=7 days" in found.detail


def write_journal(testenv, name: str, text: str) -> None:
    testenv.journal_dir.mkdir(exist_ok=True)
    (testenv.journal_dir / f"{name}.json").write_text(text)


@unit
def test_unfinished_builds_and_unreadable_journals(testenv):
    assert line(testenv.load(), "unfinished builds").detail == f"none in {testenv.journal_dir}"
    disk = str(paths.image_file(testenv.image_dir, "web1"))
    write_journal(testenv, "web1", json.dumps({"name": "web1", "distribution": "debian",
                                               "suite": "trixie", "disk": disk,
                                               "status": "failed"}))
    write_journal(testenv, "web2", "{not json")
    found = line(testenv.load(), "unfinished builds")
    assert found.status is Status.WARNING and found.detail.startswith("web1 ")
    assert "the build journal of web2 cannot be read" in found.detail
    assert found.hint is not None and found.hint.startswith(
        "hostcreator cleanup NAME (for web1 web2), then ")


@unit
def test_a_half_mounted_vm_is_a_warning(testenv):
    cfg = testenv.load()
    assert line(cfg, "mounted vms").status is Status.OK
    state = mountstate.MountState("web1", paths.image_file(testenv.image_dir, "web1"),
                                  testenv.mount_dir / "web1", read_only=True)
    (testenv.state_dir / "mounts").mkdir(parents=True)
    paths.state_file(testenv.state_dir / "mounts", "web1").write_text(
        json.dumps(state.to_json()))
    found = line(cfg, "mounted vms")
    assert found.status is Status.WARNING and "web1 half-mounted" in found.detail
    assert found.hint == "umount-vm NAME clears it: web1"


@root
def test_a_vm_mounted_by_mount_vm_is_ok(testenv):
    name = unique_name()
    testenv.write(LIBVIRT_URI=NOWHERE)  # this host's domains are not the test's
    hand_made_disk(testenv.image(name))
    mounted = run_cli("mount-vm", name, "--config", str(testenv.config), timeout=120)
    assert mounted.returncode == 0, mounted.stderr
    try:
        found = line(testenv.load(), "mounted vms")
        assert (found.status, found.detail) == (
            Status.OK, f"{name} read-write at {testenv.mount_dir / name}")
    finally:
        umounted = run_cli("umount-vm", name, "--config", str(testenv.config), timeout=120)
        assert umounted.returncode == 0, umounted.stderr


# --- the report -----------------------------------------------------------------------------


@unit
def test_errors_and_defects_of_a_check_are_failed_lines(testenv):
    def defect(_host):
        raise RuntimeError("boom\nagain")

    def refused(_host):
        raise InvalidInput("no such thing", hint="make it")

    with ExitStack() as stack:
        host = doctor.Host(testenv.load(), stack)
        broken = doctor.run_check(doctor.Entry("x", defect), host)
        error = doctor.run_check(doctor.Entry("y", refused, required=True), host)
    assert broken is not None and error is not None
    assert (broken.status, broken.detail) == (Status.FAILED,
                                              "internal error: RuntimeError: boom again")
    assert broken.hint == doctor.INTERNAL_HINT
    assert (error.status, error.detail, error.hint, error.required) == (
        Status.FAILED, "no such thing", "make it", True)


def doctor_settings(testenv, tmp_path, uri: str) -> Path:
    """The test's configuration for the whole report: the archive a file: mirror."""
    return testenv.write(LIBVIRT_URI=uri, MIRROR=local_mirror(tmp_path, "trixie"))


@unit
def test_a_required_failure_gives_exit_code_1(testenv, tmp_path):
    conf = doctor_settings(testenv, tmp_path, NOWHERE)
    result = run_cli("hostcreator", "doctor", "--config", str(conf), timeout=120)
    assert result.returncode == 1, result.stderr
    lines = result.stdout.splitlines()
    assert [row.split("  ")[0] for row in lines if not row.startswith(" ")][:-1] == ORDER
    libvirt = next(row for row in lines if row.startswith("libvirt "))
    assert libvirt.split()[1] == "failed"
    assert lines[-1].endswith(" failed")
    errors = [row for row in result.stderr.splitlines() if "error:" in row]
    assert len(errors) == 1 and errors[0].startswith("doctor: error: required checks failed: ")
    assert "libvirt" in errors[0]
    as_json = run_cli("hostcreator", "doctor", "--config", str(conf), "--json", timeout=120)
    assert as_json.returncode == 1, as_json.stderr
    report = json.loads(as_json.stdout)
    assert [c["name"] for c in report["checks"]] == ORDER
    assert report["exit_code"] == 1 and "libvirt" in report["failed_required"]
    assert {c["status"] for c in report["checks"]} <= {"ok", "warning", "failed"}
    assert testenv.leaks() == []


@with_libvirt
def test_warnings_keep_exit_code_0(testenv, tmp_path, libvirtd):
    conf = doctor_settings(testenv, tmp_path, libvirtd)
    result = run_cli("hostcreator", "doctor", "--config", str(conf), "--json", timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    by_name = {c["name"]: c for c in report["checks"]}
    assert report["exit_code"] == 0 and report["failed_required"] == []
    assert all(by_name[n]["status"] != "failed" for n in
               ("root", "host tools", "libvirt", "storage", "loop devices"))
    # Not required: a warning (KVM does not work here) and a failure (the file: mirror has
    # no Ubuntu suite) leave the exit code 0.
    assert by_name["kvm"]["status"] == "warning"
    assert "KVM guests do not run here" in by_name["kvm"]["detail"]
    assert by_name["ubuntu mirror"]["status"] == "failed"
    human = run_cli("hostcreator", "doctor", "--config", str(conf), timeout=120)
    assert human.returncode == 0 and "error:" not in human.stderr, human.stderr
    kvm = human.stdout.splitlines().index(next(r for r in human.stdout.splitlines()
                                               if r.startswith("kvm ")))
    assert human.stdout.splitlines()[kvm + 1].strip().startswith("hint: ")
