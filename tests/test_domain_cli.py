"""create-kvm as a person uses it, where libvirt is not needed: --dry-run and the errors
found before libvirt is asked anything (an unreachable URI proves it was not asked)."""

from __future__ import annotations

import secrets
import subprocess
import xml.etree.ElementTree as ET

import pytest
from conftest import hand_made_disk, run_cli, unique_name

from hostcreator import cli

NOWHERE = "qemu+unix:///system?socket=/nonexistent/libvirt-sock"


@pytest.fixture
def setup(testenv):
    """A config file and a disk for a VM (made by hand: GPT and root file system, no
    journal); libvirt is unreachable."""
    name = unique_name()
    disk = testenv.image(name)
    hand_made_disk(disk)
    conf = testenv.write(LIBVIRT_URI=NOWHERE, NETWORK_TYPE="user", VIRT_TYPE="qemu")
    return name, conf, disk


def kvm(*args: str) -> subprocess.CompletedProcess[str]:
    return run_cli("create-kvm", *args, timeout=120)


def one_error(result: subprocess.CompletedProcess[str]) -> str:
    errors = [line for line in result.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1, result.stderr
    assert errors[0].startswith("create-kvm: error: ")
    assert "Traceback" not in result.stderr
    return errors[0]


@pytest.mark.unit
def test_help_and_both_entry_points():
    result = kvm("-h")
    assert result.returncode == 0
    for option in ("--memory", "--vcpus", "--virt-type", "--network", "--network-type",
                   "--uri", "--live-iso", "--dry-run", "--wait", "--start", "--config", "--set"):
        assert option in result.stdout, option
    result = run_cli("hostcreator", "create-kvm", "--help")
    assert result.returncode == 0 and "--dry-run" in result.stdout


@pytest.mark.unit
def test_dry_run_prints_the_xml_and_touches_nothing(setup, testenv):
    name, conf, disk = setup
    result = kvm(name, "--config", str(conf), "--dry-run", "--memory", "1536", "--vcpus", "3")
    assert result.returncode == 0, result.stderr
    root = ET.fromstring(result.stdout)
    assert root.get("type") == "qemu" and root.findtext("name") == name
    assert root.findtext("memory") == "1536" and root.findtext("vcpu") == "3"
    assert root.find("devices/disk/source").get("file") == str(disk)
    assert root.find("devices/interface").get("type") == "user"
    assert not testenv.log_dir.exists() and not testenv.state_dir.exists()


@pytest.mark.unit
def test_dry_run_with_options_overriding_the_file(setup, tmp_path):
    name, conf, _disk = setup
    iso = tmp_path / "boot.iso"
    iso.write_bytes(b"\0" * 2048)
    result = kvm(name, "--config", str(conf), "--dry-run", "--network-type", "network",
                 "--network", "lan", "--virt-type", "kvm", "--live-iso", str(iso),
                 "--set", "GRAPHICS=spice")
    assert result.returncode == 0, result.stderr
    persistent, _, live = result.stdout.partition("<!-- first boot only")
    persistent_root = ET.fromstring(persistent.split("-->", 1)[1])
    live_root = ET.fromstring(live.split("-->", 1)[1])
    assert persistent_root.get("type") == "kvm"
    assert persistent_root.find("devices/interface/source").get("network") == "lan"
    assert persistent_root.find("devices/graphics").get("type") == "spice"
    assert [d.get("device") for d in persistent_root.iterfind("devices/disk")] == ["disk"]
    cdrom = live_root.find("devices/disk[@device='cdrom']")
    assert cdrom.find("source").get("file") == str(iso)
    assert cdrom.find("boot").get("order") == "1"
    assert live_root.findtext("uuid") == persistent_root.findtext("uuid")


@pytest.mark.unit
def test_unreachable_libvirt_is_one_line_with_a_hint(setup, tmp_path):
    name, conf, _disk = setup
    result = kvm(name, "--config", str(conf))
    assert result.returncode == 1
    assert f"cannot connect to libvirt at {NOWHERE}" in one_error(result)
    assert "hint: is libvirtd running?" in result.stderr
    result = kvm(name, "--config", str(conf), "--start")
    assert result.returncode == 1 and "cannot connect to libvirt" in one_error(result)


@pytest.mark.unit
def test_remote_uri_is_passed_through_to_libvirt(setup):
    name, conf, _disk = setup
    # A remote host's disks and bridges are not ours to check; the URI goes to libvirt as is.
    # (Port 1 of the loopback address: nothing listens, nothing leaves this host.)
    uri = "qemu+ssh://root@127.0.0.1:1/system"
    result = kvm(name, "--config", str(conf), "--uri", uri, "--network-type", "bridge",
                 "--network", "hcnobr0")
    assert result.returncode == 1
    assert f"cannot connect to libvirt at {uri}" in one_error(result)
    assert "hint: check the URI" in result.stderr


@pytest.mark.root
def test_disk_attached_to_a_loop_device_is_in_use(setup, tmp_path):
    name, conf, disk = setup
    loop = subprocess.run(["losetup", "--show", "-f", str(disk)], capture_output=True,
                          text=True, check=True).stdout.strip()
    try:
        result = kvm(name, "--config", str(conf))
        assert result.returncode == 3
        assert f"is in use by {loop}" in one_error(result)
        assert "hint: is the VM mounted (umount-vm) or a build still running?" in result.stderr
    finally:
        subprocess.run(["losetup", "-d", loop], check=True)


@pytest.mark.unit
@pytest.mark.parametrize("argv,expected", [
    (["vm1", "--wait"], ["vm1", "--wait", "600"]),
    (["vm1", "--wait", "90"], ["vm1", "--wait", "90"]),
    (["--wait", "vm1"], ["--wait", "600", "vm1"]),
    (["vm1", "--wait", "--start"], ["vm1", "--wait", "600", "--start"]),
    (["vm1", "--", "--wait"], ["vm1", "--", "--wait"]),
    (["vm1"], ["vm1"]),
])
def test_wait_takes_an_optional_number_of_seconds(argv, expected):
    assert cli.optional_wait(argv) == expected


@pytest.mark.unit
def test_wait_seconds_must_be_positive(setup):
    name, conf, _disk = setup
    result = kvm(name, "--config", str(conf), "--wait", "0")
    assert result.returncode == 2 and "--wait" in result.stderr



@pytest.mark.root
def test_an_existing_bridge_is_used(setup):
    name, conf, _disk = setup
    bridge = f"hcbr{secrets.token_hex(3)}"
    subprocess.run(["ip", "link", "add", bridge, "type", "bridge"], check=True)
    try:
        result = kvm(name, "--config", str(conf), "--dry-run", "--network-type", "bridge",
                     "--network", bridge)
        assert result.returncode == 0, result.stderr
        nic = ET.fromstring(result.stdout).find("devices/interface")
        assert nic.get("type") == "bridge" and nic.find("source").get("bridge") == bridge
    finally:
        subprocess.run(["ip", "link", "del", bridge], check=True)
