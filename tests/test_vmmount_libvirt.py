"""Never behind a running VM's back: a real libvirtd runs a domain (type qemu) on the disk."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import libvirt
import pytest
from conftest import DOMAIN_XML, unique_name
from mountvm import ok, private_copy

from hostcreator.host import mounts

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="session")
def libvirt_conn(libvirtd):
    """A connection to the libvirtd that conftest's fixture made sure runs."""
    conn = libvirt.open(libvirtd)
    yield conn
    conn.close()


@pytest.fixture
def vm(debian_vm):
    with private_copy(debian_vm) as vm:
        yield vm


@pytest.fixture
def start_domain(libvirt_conn, vm):
    """Define and start a domain on VM's disk; destroyed and undefined whatever happens."""
    domains = []

    def start(name: str) -> Path:
        console = vm.env.log_dir / f"{name}.console.log"
        console.parent.mkdir(parents=True, exist_ok=True)
        domain = libvirt_conn.defineXML(DOMAIN_XML.format(name=name, image=vm.image,
                                                      console=console))
        domains.append(domain)
        domain.create()
        return console

    yield start
    for domain in domains:
        try:
            if domain.isActive():
                domain.destroy()
        finally:
            domain.undefine()


def wait_for_console(path: Path, text: str, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists() or text not in path.read_text(errors="replace"):
        assert time.monotonic() < deadline, f"{text!r} not on {path} after {timeout} s"
        time.sleep(1)


def test_refused_while_another_domain_uses_the_disk(vm, start_domain):
    other = unique_name("hcother")
    start_domain(other)
    result = vm.mount()
    assert result.returncode == 3, result.stderr
    assert f"mount-vm: error: {vm.name} is running: libvirt domain {other} (running)" \
        in result.stderr
    # QEMU holds the image open: the host sees that too, libvirt or not.
    assert "(qemu-system-x86) with the disk open" in result.stderr
    assert f"mount-vm --read-only {vm.name}" in result.stderr
    assert vm.leftovers() == []


def test_refused_while_its_domain_runs_and_read_only_works(vm, start_domain, debian_vm):
    console = start_domain(vm.name)
    # Booted: the guest has its root mounted read-write and its journal in use.
    wait_for_console(console, "login:")

    result = vm.mount()
    assert result.returncode == 3, result.stderr
    assert f"error: {vm.name} is running: libvirt domain {vm.name} (running)" in result.stderr
    assert vm.leftovers() == []

    result = ok(vm.mount("--read-only"))
    assert f"warning: {vm.name} is in use (libvirt domain {vm.name} (running)" in result.stderr
    mountpoint = Path(result.stdout.strip())
    assert mountpoint == vm.mountpoint and vm.state()["read_only"]
    options = next(line.split()[3] for line in Path("/proc/self/mounts").read_text()
                   .splitlines() if line.split()[1] == str(mountpoint))
    assert options.split(",")[0] == "ro" and "norecovery" in options.split(",")
    assert vm.loops() and all(storage_read_only(d) for d in vm.loops())
    # The copy keeps the host name it was built with.
    out = subprocess.run(["chroot", mountpoint, "cat", "/etc/hostname"], capture_output=True,
                         text=True, check=True).stdout
    assert out == f"{debian_vm.name}\n"
    assert subprocess.run(["touch", mountpoint / "x"], capture_output=True).returncode != 0
    assert len(mounts.mounts_below(mountpoint)) == 5
    assert "already mounted" in ok(vm.mount("--read-only")).stderr

    ok(vm.umount())
    assert vm.leftovers() == []


def storage_read_only(device: str) -> bool:
    return Path(f"/sys/class/block/{Path(device).name}/ro").read_text().strip() == "1"
