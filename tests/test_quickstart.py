"""The README's Quick start, run as it is written, on this machine; then the VM's life.

The command's defaults must fit the host: here KVM guests hang (the probe says
so), so it is software emulation with one vCPU, and there is no bridge br0 nor an
active libvirt network, so it is QEMU's user-mode networking. The one guest it
boots is then used for `list` and `remove` against the real libvirtd.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import libvirt
import pytest
from conftest import DOMAIN_XML, run_cli, unique_name

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parent.parent
QUICK_START = ("./setup.sh && .venv/bin/create-debian demo && "
               ".venv/bin/create-kvm demo --wait")


def quick_start_command() -> str:
    """The first command of the README's Quick start."""
    readme = (REPO / "README.md").read_text()
    section = readme.split("## Quick start", 1)[1]
    block = re.search(r"```sh\n(.*?)```", section, re.DOTALL)
    assert block is not None, "no sh block in the Quick start"
    return block[1].splitlines()[0]


def test_quick_start_then_list_and_remove(debian_vm, vm_env, domains, libvirtd):
    command = quick_start_command()
    assert command == QUICK_START
    name = unique_name()
    domains.append(name)
    # The test's own directories, the rootfs cache debian_vm filled (so the build is a
    # warm one), and nothing about virt type, vCPUs or network: the defaults decide.
    settings = [line for line in vm_env.config.read_text().splitlines()
                if not line.startswith("VCPUS=")]
    settings.append(f'CACHE_DIR="{debian_vm.env.cache_dir}"')
    vm_env.config.write_text("\n".join(settings) + "\n")
    env = {**os.environ, "HOSTCREATOR_CONFIG": str(vm_env.config)}
    result = subprocess.run(["sh", "-c", command.replace(" demo", f" {name}")], cwd=REPO,
                            env=env, capture_output=True, text=True, timeout=1800,
                            stdin=subprocess.DEVNULL, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    said = result.stderr
    assert "virt type qemu (software emulation), as KVM guests do not run here" in said
    assert "1 vCPU: under software emulation" in said
    assert "network: QEMU's user mode" in said
    assert f"{name} is up after" in said

    with libvirt_connection(libvirtd) as conn:
        root = ET.fromstring(conn.lookupByName(name).XMLDesc(0))
    assert root.get("type") == "qemu"
    assert root.findtext("vcpu") == "1"
    assert root.find("devices/interface").get("type") == "user"

    listed = list_vm(vm_env, name, until=lambda vm: vm["addresses"])
    assert (listed["distribution"], listed["suite"]) == ("debian", debian_vm_suite(debian_vm))
    assert (listed["build"], listed["domain"], listed["mounted"]) == ("finished", "running", None)
    assert listed["disk"]["path"] == str(vm_env.image(name))
    assert listed["disk"]["size"] >= 4 << 30 and 0 < listed["disk"]["used"] < listed["disk"]["size"]
    # QEMU's user network gives the guest 10.0.2.15; its agent reports it.
    assert "10.0.2.15/24" in listed["addresses"]
    human = hostcreator("list", vm_env)
    assert re.search(rf"^{name} +debian ", human.stdout, re.MULTILINE), human.stdout

    # Refusals, each touching nothing: running without --stop; a disk another domain has.
    before = sorted(map(str, vm_env.base.rglob(f"*{name}*")))
    refused = hostcreator("remove", vm_env, name, "--yes", "--disk")
    assert refused.returncode == 3 and f"error: {name} is running" in refused.stderr
    other = unique_name()
    domains.append(other)
    with libvirt_connection(libvirtd) as conn:
        conn.defineXML(DOMAIN_XML.format(name=other, image=vm_env.image(name),
                                         console=vm_env.log_dir / f"{other}.serial.log"))
    refused = hostcreator("remove", vm_env, name, "--yes", "--stop", "--disk")
    assert refused.returncode == 3, refused.stderr
    assert f"is the disk of domain {other} (shut off)" in refused.stderr
    with libvirt_connection(libvirtd) as conn:
        conn.lookupByName(other).undefine()
        assert conn.lookupByName(name).isActive()
    assert sorted(map(str, vm_env.base.rglob(f"*{name}*"))) == before

    gone = hostcreator("remove", vm_env, name, "--yes", "--stop", "--disk", "--json")
    assert gone.returncode == 0, gone.stderr
    removed = json.loads(gone.stdout)["removed"]
    assert removed[0] == f"the domain {name}"
    assert f"image file {vm_env.image(name)}" in removed
    assert str(vm_env.journal_dir / f"{name}.json") in removed
    # Nothing of NAME is left: domain (and its NVRAM), disk, journal, logs, secrets,
    # state, locks - anything in the test's directories named after it.
    with libvirt_connection(libvirtd) as conn:
        assert name not in [d.name() for d in conn.listAllDomains(0)]
    assert not list(Path("/var/lib/libvirt/qemu/nvram").glob(f"{name}_*"))
    assert sorted(map(str, vm_env.base.rglob(f"*{name}*"))) == []
    again = hostcreator("remove", vm_env, name, "--yes")
    assert again.returncode == 0 and f"nothing of {name} is left to remove" in again.stderr
    assert name not in [vm["name"] for vm in json.loads(
        hostcreator("list", vm_env, "--json").stdout)["vms"]]


def debian_vm_suite(debian_vm) -> str:
    return json.loads((debian_vm.env.journal_dir / f"{debian_vm.name}.json").read_text())[
        "suite"]


def hostcreator(command: str, env, *args: str) -> subprocess.CompletedProcess[str]:
    return run_cli("hostcreator", command, "--config", str(env.config), *args, timeout=600)


def list_vm(env, name: str, until, seconds: float = 120) -> dict:
    """NAME's entry in `hostcreator list --json`, once UNTIL(entry) holds (the agent may
    answer a little after the login prompt showed)."""
    deadline = time.monotonic() + seconds
    while True:
        result = hostcreator("list", env, "--json")
        assert result.returncode == 0, result.stderr
        entry = next(vm for vm in json.loads(result.stdout)["vms"] if vm["name"] == name)
        if until(entry) or time.monotonic() > deadline:
            return entry
        time.sleep(2)


@contextlib.contextmanager
def libvirt_connection(uri: str):
    conn = libvirt.open(uri)
    try:
        yield conn
    finally:
        conn.close()
