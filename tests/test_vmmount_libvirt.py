"""Never behind a running VM's back: a real libvirtd runs a domain (type qemu) on the disk.

That mount-vm --read-only works beside a guest that is up is shown on the Quick start's
VM (tests/test_quickstart.py), which is booted anyway.
"""

from __future__ import annotations

from pathlib import Path

import libvirt
import pytest
from conftest import DOMAIN_XML, unique_name
from mountvm import private_copy

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
