"""The README's Quick start, run as it is written, on this machine; then the VM's life.

The command's defaults must fit the host: here KVM guests hang (the probe says
so), so it is software emulation with one vCPU, and there is no bridge br0 nor an
active libvirt network, so it is QEMU's user-mode networking.

One build (from the rootfs cache debian_vm filled) and one guest serve every test
here, in the order they are written (boot once, check many things): the defaults,
what libvirt was given, `list`, mount-vm beside the running guest, create-kvm never
redefining, a second start that --wait tells from the first, and at the end
`remove`, which leaves nothing of it.
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
from conftest import BIN, DOMAIN_XML, TestEnv, reachable_env, removed_domains, run_cli, unique_name

from hostcreator.domain.console import LOGIN_PROMPT
from hostcreator.host import mounts

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parent.parent
SETUP = "./setup.sh && "
QUICK_START = f"{SETUP}.venv/bin/create-debian demo && .venv/bin/create-kvm demo --wait"
INACTIVE = libvirt.VIR_DOMAIN_XML_INACTIVE
WAIT = 600


def quick_start_command() -> str:
    """The first command of the README's Quick start."""
    readme = (REPO / "README.md").read_text()
    section = readme.split("## Quick start", 1)[1]
    block = re.search(r"```sh\n(.*?)```", section, re.DOTALL)
    assert block is not None, "no sh block in the Quick start"
    return block[1].splitlines()[0]


@pytest.fixture(scope="module")
def quick_start(tmp_path_factory, debian_vm, libvirtd):
    """What follows `./setup.sh && ` in the Quick start (the test run is itself the
    proof of setup.sh: CI runs it first), with the test's own configuration: its
    directories, the rootfs cache debian_vm filled (so the build is a warm one), and
    nothing about virt type, vCPUs or network: the defaults decide."""
    command = quick_start_command()
    assert command == QUICK_START
    envs = reachable_env(tmp_path_factory)
    env = next(envs)
    cleanup = removed_domains(libvirtd)
    names = next(cleanup)
    name = unique_name()
    names.append(name)
    settings = [line for line in env.config.read_text().splitlines()
                if not line.startswith(("VCPUS=", "CACHE_DIR="))]
    settings.append(f'CACHE_DIR="{debian_vm.env.cache_dir}"')
    env.config.write_text("\n".join(settings) + "\n")
    # .venv/bin of the checkout is where setup.sh installs; this run's are BIN's.
    script = command.removeprefix(SETUP).replace(".venv/bin/", f"{BIN}/")
    started = time.monotonic()
    result = subprocess.run(["sh", "-c", script.replace(" demo", f" {name}")], cwd=REPO,
                            env={**os.environ, "HOSTCREATOR_CONFIG": str(env.config)},
                            capture_output=True, text=True, timeout=1800,
                            stdin=subprocess.DEVNULL, check=False)
    print(f"\nthe Quick start's build and boot took {time.monotonic() - started:.0f} s")
    yield env, name, result
    with contextlib.suppress(StopIteration):
        next(cleanup)
    with contextlib.suppress(StopIteration):
        next(envs)


@pytest.fixture(scope="module")
def conn(libvirtd):
    connection = libvirt.open(libvirtd)
    yield connection
    connection.close()


def test_the_defaults_fit_this_host(quick_start, conn):
    env, name, result = quick_start
    assert result.returncode == 0, result.stderr[-3000:]
    said = result.stderr
    assert "virt type qemu (software emulation), as KVM guests do not run here" in said
    assert "1 vCPU: under software emulation" in said
    assert "network: QEMU's user mode" in said
    assert re.search(rf"{name} is up after \d+ s: ", said), said

    dom = conn.lookupByName(name)
    assert dom.isActive() and dom.isPersistent()
    root = ET.fromstring(dom.XMLDesc(INACTIVE))
    assert root.get("type") == "qemu"
    assert root.findtext("vcpu") == "1"
    assert root.find("devices/interface").get("type") == "user"
    disks = root.findall("devices/disk")
    assert [d.get("device") for d in disks] == ["disk"]
    assert disks[0].find("source").get("file") == str(env.image(name))
    assert disks[0].find("boot").get("order") == "1"
    console = env.log_dir / f"{name}.serial.log"
    assert root.find("devices/serial/log").get("file") == str(console)
    # Up means the agent answered or the prompt showed; the agent may come first.
    assert login_prompt(console), console.read_text(errors="replace")[-2000:]
    assert (env.log_dir / f"{name}.log").exists()


def test_list_shows_it_with_its_address(quick_start):
    env, name, _ = quick_start
    listed = list_vm(env, name, until=lambda vm: vm["addresses"])
    journal = env.journal(name)
    assert (listed["distribution"], listed["suite"]) == ("debian", journal["suite"])
    assert (listed["build"], listed["domain"], listed["mounted"]) == ("finished", "running", None)
    assert listed["disk"]["path"] == str(env.image(name))
    assert listed["disk"]["size"] >= 4 << 30 and 0 < listed["disk"]["used"] < listed["disk"]["size"]
    # QEMU's user network gives the guest 10.0.2.15; its agent reports it.
    assert "10.0.2.15/24" in listed["addresses"]
    human = hostcreator("list", env)
    assert re.search(rf"^{name} +debian ", human.stdout, re.MULTILINE), human.stdout


def test_mount_vm_beside_the_running_guest_only_read_only(quick_start):
    env, name, _ = quick_start
    mount = ("mount-vm", name, "--config", str(env.config))
    refused = run_cli(*mount, timeout=300)
    assert refused.returncode == 3, refused.stderr
    assert f"error: {name} is running: libvirt domain {name} (running)" in refused.stderr
    assert "(qemu-system-x86) with the disk open" in refused.stderr
    assert f"mount-vm --read-only {name}" in refused.stderr
    assert not (env.state_dir / f"{name}.json").exists()

    result = run_cli(*mount, "--read-only", timeout=300)
    assert result.returncode == 0, result.stderr
    assert f"warning: {name} is in use (libvirt domain {name} (running)" in result.stderr
    mountpoint = Path(result.stdout.strip())
    try:
        options = next(line.split()[3] for line in Path("/proc/self/mounts").read_text()
                       .splitlines() if line.split()[1] == str(mountpoint))
        assert options.split(",")[0] == "ro" and "norecovery" in options.split(",")
        assert (mountpoint / "etc/hostname").read_text() == f"{name}\n"
        assert subprocess.run(["touch", mountpoint / "x"], capture_output=True).returncode != 0
        assert len(mounts.mounts_below(mountpoint)) == 5
    finally:
        done = run_cli("umount-vm", name, "--config", str(env.config), timeout=300)
    assert done.returncode == 0, done.stderr
    assert env.leaks() == []


def test_create_kvm_never_redefines_and_waits_for_this_boot(quick_start, conn):
    env, name, _ = quick_start
    dom = conn.lookupByName(name)
    persistent = dom.XMLDesc(INACTIVE)
    domain_id = dom.ID()
    again = create_kvm(env, name, "--memory", "512")
    assert again.returncode == 5, again.stderr
    assert f"domain {name} exists already (running); nothing was changed" in again.stderr
    assert dom.isActive() and dom.ID() == domain_id and dom.XMLDesc(INACTIVE) == persistent

    # Destroyed, the domain keeps its definition; create-kvm says how to start it.
    dom.destroy()
    assert not dom.isActive() and dom.XMLDesc(INACTIVE) == persistent
    again = create_kvm(env, name)
    assert again.returncode == 5 and "(shut off)" in again.stderr
    assert f"create-kvm {name} --start" in again.stderr

    # --start boots it again as defined; --wait looks only at this boot's console output.
    result = create_kvm(env, name, "--start", "--wait", str(WAIT), timeout=WAIT + 300)
    assert result.returncode == 0, result.stderr
    up = re.search(rf"{name} is up after (\d+) s", result.stderr)
    assert up and int(up[1]) >= 5, result.stderr  # not fooled by the first boot's prompt
    assert dom.isActive() and dom.XMLDesc(INACTIVE) == persistent


def test_remove_refuses_first_then_leaves_nothing(quick_start, conn):
    env, name, _ = quick_start
    # Refusals, each touching nothing: running without --stop; a disk another domain has.
    before = sorted(map(str, env.base.rglob(f"*{name}*")))
    refused = hostcreator("remove", env, name, "--yes", "--disk")
    assert refused.returncode == 3 and f"error: {name} is running" in refused.stderr
    other = unique_name()
    conn.defineXML(DOMAIN_XML.format(name=other, image=env.image(name),
                                     console=env.log_dir / f"{other}.serial.log"))
    try:
        refused = hostcreator("remove", env, name, "--yes", "--stop", "--disk")
    finally:
        conn.lookupByName(other).undefine()
    assert refused.returncode == 3, refused.stderr
    assert f"is the disk of domain {other} (shut off)" in refused.stderr
    assert conn.lookupByName(name).isActive()
    assert sorted(map(str, env.base.rglob(f"*{name}*"))) == before

    gone = hostcreator("remove", env, name, "--yes", "--stop", "--disk", "--json")
    assert gone.returncode == 0, gone.stderr
    removed = json.loads(gone.stdout)["removed"]
    assert removed[0] == f"the domain {name}"
    assert f"image file {env.image(name)}" in removed
    assert str(env.journal_dir / f"{name}.json") in removed
    # Nothing of NAME is left: domain, disk, journal, logs, secrets, state, locks -
    # anything in the test's directories named after it.
    assert name not in [d.name() for d in conn.listAllDomains(0)]
    assert sorted(map(str, env.base.rglob(f"*{name}*"))) == []
    again = hostcreator("remove", env, name, "--yes")
    assert again.returncode == 0 and f"nothing of {name} is left to remove" in again.stderr
    assert name not in [vm["name"] for vm in json.loads(
        hostcreator("list", env, "--json").stdout)["vms"]]


def login_prompt(console: Path, seconds: float = 180) -> bool:
    """Whether the console log shows a login prompt within SECONDS."""
    deadline = time.monotonic() + seconds
    while not LOGIN_PROMPT.search(console.read_bytes()):
        if time.monotonic() > deadline:
            return False
        time.sleep(2)
    return True


def create_kvm(env: TestEnv, name: str, *args: str, timeout: float = 300):
    return run_cli("create-kvm", name, "--config", str(env.config), *args, timeout=timeout)


def hostcreator(command: str, env: TestEnv, *args: str) -> subprocess.CompletedProcess[str]:
    return run_cli("hostcreator", command, "--config", str(env.config), *args, timeout=600)


def list_vm(env: TestEnv, name: str, until, seconds: float = 120) -> dict:
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
