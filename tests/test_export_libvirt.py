"""hostcreator export against the real libvirtd: NAME's disk under a running domain is
refused (a copy of a disk that changes meanwhile would be a broken file system), and a
shut-off one is not. The domain boots nothing (the hand-made gold has no boot loader)."""

from __future__ import annotations

import json

import pytest
from conftest import DOMAIN_XML, run_cli, unique_name
from gold import make_gold

pytestmark = pytest.mark.libvirt


def test_a_running_domain_is_refused_a_shut_off_one_is_not(vm_env, domains, libvirtd):
    import libvirt

    vm_env.write(LIBVIRT_URI=libvirtd)
    name = unique_name()
    image = make_gold(vm_env, name)
    out = vm_env.base / "out"
    out.mkdir()
    domain = unique_name()
    domains.append(domain)
    # Read-only: the firmware that finds nothing to boot writes nothing either.
    xml = DOMAIN_XML.format(name=domain, image=image, console=vm_env.base / "console.log")
    xml = xml.replace("<target dev='vda' bus='virtio'/>",
                      "<target dev='vda' bus='virtio'/>\n      <readonly/>")
    conn = libvirt.open(libvirtd)
    try:
        dom = conn.defineXML(xml)
        dom.create()
        args = ("hostcreator", "export", name, "--format", "qcow2", "--output", str(out),
                "--config", str(vm_env.config), "--json")
        result = run_cli(*args, timeout=300)
        assert result.returncode == 3, result.stderr
        assert f"is the disk of running libvirt domain {domain}" in result.stderr
        assert json.loads(result.stdout)["error"]["exit_code"] == 3
        assert list(out.iterdir()) == []
        dom.destroy()
        result = run_cli(*args, timeout=300)
        assert result.returncode == 0, result.stderr
        assert [p.name for p in out.iterdir()] == [f"{name}.qcow2"]
    finally:
        conn.close()
