"""create-kvm against the real libvirtd: define, start, wait, refuse, first boot from an ISO.

Guests run with software emulation (type qemu: KVM hangs on the test machines) and
QEMU user-mode networking. Every domain a test makes is destroyed and undefined after
it (the `domains` fixture), whatever happened.
"""

from __future__ import annotations

import re
import subprocess
import time
import uuid
import xml.etree.ElementTree as ET
from pathlib import Path

import conftest
import libvirt
import pytest
from conftest import run_cli, unique_name

from hostcreator.config import NetworkType, VirtType
from hostcreator.domain import render as domain
from hostcreator.domain import virt

WAIT = 600
INACTIVE = libvirt.VIR_DOMAIN_XML_INACTIVE


@pytest.fixture
def conn(libvirtd: str):
    connection = libvirt.open(libvirtd)
    yield connection
    connection.close()


def create_kvm(name: str, env: conftest.TestEnv, *args: str) -> subprocess.CompletedProcess[str]:
    return run_cli("create-kvm", name, "--config", str(env.config), "--virt-type", "qemu",
                   "--network-type", "user", *args, timeout=WAIT + 300)


def blank_disk(env: conftest.TestEnv, name: str) -> Path:
    """A disk that exists but boots nothing (a GPT and a root file system, no boot loader):
    enough where the guest need not come up."""
    path = env.image(name)
    conftest.hand_made_disk(path)
    return path


def tiny_iso(directory: Path) -> Path:
    content = directory / "iso-content"
    content.mkdir()
    (content / "README").write_text("hostcreator test ISO\n")
    iso = directory / "live.iso"
    subprocess.run(["xorriso", "-as", "mkisofs", "-quiet", "-V", "HCTEST", "-o", str(iso),
                    str(content)], check=True, capture_output=True)
    return iso


def disks(xml: str) -> dict[str, ET.Element]:
    return {d.get("device", ""): d for d in ET.fromstring(xml).iterfind("devices/disk")}


def panicking_copy(vm: conftest.BuiltVM, name: str, env: conftest.TestEnv) -> Path:
    """A copy of VM's disk whose kernel panics at boot: no root file system it can mount."""
    image = vm.copy(name, into=env)
    assert run_cli("mount-vm", name, "--config", str(env.config)).returncode == 0
    try:
        grub_cfg = env.mount_dir / name / "boot/grub/grub.cfg"
        text, count = re.subn(r"^(\s*linux\s.*)$", r"\1 rdinit=/hctest-none root=/dev/hctest-none",
                              grub_cfg.read_text(), flags=re.MULTILINE)
        assert count >= 1
        grub_cfg.write_text(text)
    finally:
        assert run_cli("umount-vm", name, "--config", str(env.config)).returncode == 0
    return image


@pytest.mark.e2e
def test_a_kernel_panic_ends_the_waiting_at_once(debian_vm, vm_env, domains, conn):
    name = unique_name()
    domains.append(name)
    panicking_copy(debian_vm, name, vm_env)
    panic = "kernel panic: VFS: Unable to mount root fs"

    # boot-test: QEMU of its own.
    result = run_cli("hostcreator", "boot-test", name, "--config", str(vm_env.config),
                     "--timeout", str(WAIT), timeout=WAIT + 60)
    assert result.returncode == 1, result.stderr
    assert f"boot-test: error: the guest will not come up: its {panic}" in result.stderr
    assert "was not up after" not in result.stderr

    # create-kvm --wait: the domain's console, written by virtlogd.
    result = create_kvm(name, vm_env, "--wait", str(WAIT))
    assert result.returncode == 1, result.stderr
    assert f"create-kvm: error: {name} will not come up: its {panic}" in result.stderr
    assert f"`virsh destroy {name}` stops it" in result.stderr
    # Hung, not stopped: the domain is the user's to look at.
    assert conn.lookupByName(name).isActive()


@pytest.mark.libvirt
def test_first_boot_from_a_live_iso_keeps_the_persistent_definition(vm_env, domains, conn):
    name = unique_name()
    domains.append(name)
    image = blank_disk(vm_env, name)
    iso = tiny_iso(vm_env.base)
    result = create_kvm(name, vm_env, "--live-iso", str(iso))
    assert result.returncode == 0, result.stderr
    assert f"start from {iso}" in result.stderr

    dom = conn.lookupByName(name)
    assert dom.isActive() and dom.isPersistent()
    live, persistent = dom.XMLDesc(0), dom.XMLDesc(INACTIVE)
    assert disks(live)["cdrom"].find("source").get("file") == str(iso)
    assert disks(live)["cdrom"].find("boot").get("order") == "1"
    assert disks(live)["disk"].find("boot").get("order") == "2"
    assert list(disks(persistent)) == ["disk"]
    assert disks(persistent)["disk"].find("source").get("file") == str(image)
    assert disks(persistent)["disk"].find("boot").get("order") == "1"
    live_root, persistent_root = ET.fromstring(live), ET.fromstring(persistent)
    assert live_root.findtext("uuid") == persistent_root.findtext("uuid")
    assert live_root.find("devices/interface/mac").get("address") \
        == persistent_root.find("devices/interface/mac").get("address")

    dom.destroy()
    assert dom.isPersistent() and dom.XMLDesc(INACTIVE) == persistent


@pytest.mark.libvirt
def test_missing_iso_defines_nothing(vm_env, domains, conn):
    name = unique_name()
    domains.append(name)
    blank_disk(vm_env, name)
    result = create_kvm(name, vm_env, "--live-iso", str(vm_env.base / "missing.iso"))
    assert result.returncode == 2
    assert "LIVE_ISO: " in result.stderr and "is not a file" in result.stderr
    assert virt.lookup(conn, name) is None


@pytest.mark.libvirt
def test_disk_of_another_domain_is_in_use(vm_env, domains, conn):
    name, other = unique_name(), unique_name()
    domains += [name, other]
    image = blank_disk(vm_env, name)
    spec = domain.DomainSpec(other, str(uuid.uuid4()), 256, 1, VirtType.QEMU, image,
                             False, domain.Nic(NetworkType.USER, None, domain.random_mac()),
                             vm_env.log_dir / f"{other}.serial.log")
    conn.defineXML(domain.render(spec))
    result = create_kvm(name, vm_env)
    assert result.returncode == 3, result.stderr
    assert f"{image} is the disk of domain {other} (shut off)" in result.stderr
    assert virt.lookup(conn, name) is None


@pytest.mark.libvirt
def test_disk_open_in_a_process_is_not_booted_twice(vm_env, domains, conn):
    name = unique_name()
    domains.append(name)
    image = blank_disk(vm_env, name)
    with open(image, "rb") as disk:  # a QEMU started by hand, say
        holder = subprocess.Popen(["sleep", "300"], stdin=disk)
    try:
        deadline = time.monotonic() + 10
        while Path(f"/proc/{holder.pid}/comm").read_text().strip() != "sleep":
            assert time.monotonic() < deadline
            time.sleep(0.05)
        result = create_kvm(name, vm_env)
        assert result.returncode == 3, result.stderr
        assert f"{image} is open in process(es) {holder.pid} (sleep)" in result.stderr
        assert virt.lookup(conn, name) is None
    finally:
        holder.kill()
        holder.wait()


@pytest.mark.libvirt
def test_missing_libvirt_network(vm_env, domains, conn):
    name = unique_name()
    domains.append(name)
    blank_disk(vm_env, name)
    result = create_kvm(name, vm_env, "--network-type", "network", "--network", "hctest-nonet")
    assert result.returncode == 2
    assert "libvirt network 'hctest-nonet' does not exist" in result.stderr
    assert virt.lookup(conn, name) is None


@pytest.mark.libvirt
def test_start_needs_an_existing_domain(vm_env, domains, conn):
    name = unique_name()
    domains.append(name)
    result = create_kvm(name, vm_env, "--start")
    assert result.returncode == 2
    assert f"there is no domain {name}" in result.stderr
    assert virt.lookup(conn, name) is None


@pytest.mark.libvirt
def test_wait_timeout_names_the_last_console_lines(vm_env, domains, conn):
    name = unique_name()
    domains.append(name)
    blank_disk(vm_env, name)  # SeaBIOS finds nothing to boot: the guest never comes up
    result = create_kvm(name, vm_env, "--wait", "5")
    assert result.returncode == 1, result.stderr
    error = [line for line in result.stderr.splitlines() if "error:" in line]
    assert len(error) == 1, result.stderr
    assert f"{name} was not up after 5 s (no login prompt, no guest agent); " \
           "last console lines: " in error[0]
    assert f"hint: it is still running: `virsh console {name}`" in result.stderr
    assert conn.lookupByName(name).isActive()  # a slow guest is left to boot on
