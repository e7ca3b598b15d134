"""hostcreator list, hostcreator remove and create-kvm --json against the real libvirtd.

Each VM is a hand-made disk (hand_made_disk) with a finished build journal and a
domain defined from DOMAIN_XML that is never started: list sees it shut off, and
remove's refusals and removals need no guest. Only create-kvm --json starts its
domain (create-kvm always does); the disk boots nothing and the domain is destroyed
at once. Every domain a test makes is undefined after it (the `domains` fixture).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import conftest
import libvirt
import pytest
from conftest import DOMAIN_XML, hand_made_disk, run_cli, unique_name

from hostcreator import paths
from hostcreator.domain import virt
from hostcreator.host import loopdev
from hostcreator.state import journal

INACTIVE = libvirt.VIR_DOMAIN_XML_INACTIVE
DISK_SIZE = 64 << 20  # hand_made_disk's
OVMF = Path("/usr/share/OVMF")
BIOS_OS = "<os><type arch='x86_64'>hvm</type><boot dev='hd'/></os>"
UEFI_OS = ("<os><type arch='x86_64'>hvm</type>"
           "<loader readonly='yes' type='pflash'>{loader}</loader><nvram>{nvram}</nvram>"
           "<boot dev='hd'/></os><features><acpi/></features>")  # UEFI needs ACPI


@pytest.fixture
def conn(libvirtd: str):
    connection = libvirt.open(libvirtd)
    yield connection
    connection.close()


@pytest.fixture
def env(testenv: conftest.TestEnv, libvirtd: str) -> conftest.TestEnv:
    testenv.write(LIBVIRT_URI=libvirtd)
    return testenv


def hostcreator(env: conftest.TestEnv, *argv: str) -> subprocess.CompletedProcess[str]:
    return run_cli("hostcreator", *argv, "--config", str(env.config), timeout=300)


def hand_made_vm(env: conftest.TestEnv, name: str) -> Path:
    """NAME's disk, a finished build journal, a build log and a secret, as a build leaves
    them (no boot loader: nothing would boot)."""
    disk = env.image(name)
    hand_made_disk(disk)
    journal.save(env.journal_dir, journal.Journal(
        name, "debian", "trixie", disk, status=journal.Status.FINISHED,
        done=list(journal.Stage)))
    env.log_dir.mkdir(exist_ok=True)
    (env.log_dir / f"{name}.log").write_text("the build's log\n")
    secrets = env.secrets_dir / name
    secrets.mkdir(parents=True)
    (secrets / "root-password").write_text("hcpw-test\n")
    return disk


def define(conn: libvirt.virConnect, env: conftest.TestEnv, name: str, disk: Path,
           os_element: str = BIOS_OS) -> libvirt.virDomain:
    """A domain NAME on DISK (DOMAIN_XML, with OS_ELEMENT as its <os>), defined only."""
    xml = DOMAIN_XML.format(name=name, image=disk, console=env.log_dir / f"{name}.serial.log")
    assert BIOS_OS in xml
    return conn.defineXML(xml.replace(BIOS_OS, os_element))


def defined(conn: libvirt.virConnect, names: list[str]) -> dict[str, str]:
    """The inactive XML of each domain of NAMES that is defined."""
    return {n: dom.XMLDesc(INACTIVE) for n in names if (dom := virt.lookup(conn, n))}


def files(env: conftest.TestEnv) -> dict[str, tuple[int, int]]:
    """Every file and directory below the test's directories, with size and modification
    time; not the mount points (mount-vm binds /proc there) nor the lock files and the
    directories made for them (a refusal under the lock keeps its file, by design:
    state/lock.py)."""
    locks = paths.lock_dir(env.state_dir)
    skip = {env.mount_dir, locks, *locks.parents}
    found: dict[str, tuple[int, int]] = {}
    for top, dirs, names in os.walk(env.base):
        dirs[:] = [d for d in dirs if Path(top, d) != env.mount_dir and Path(top, d) != locks]
        found.update({str(Path(top, d)): (0, 0) for d in dirs if Path(top, d) not in skip})
        for name in names:
            st = os.lstat(Path(top, name))
            found[str(Path(top, name))] = (st.st_size, st.st_mtime_ns)
    return found


def named_after(env: conftest.TestEnv, name: str) -> list[str]:
    return sorted(str(p) for p in env.base.rglob(f"*{name}*"))


def errors(result: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in result.stderr.splitlines() if ": error: " in line]


@pytest.fixture
def vm(env: conftest.TestEnv, conn: libvirt.virConnect, domains: list[str]) -> tuple[str, Path]:
    """A hand-made VM (its name and disk) whose domain is defined, never started."""
    name = unique_name()
    domains.append(name)
    disk = hand_made_vm(env, name)
    define(conn, env, name, disk)
    return name, disk


@contextmanager
def mounted(env: conftest.TestEnv, name: str) -> Iterator[None]:
    """NAME mounted by mount-vm for the block, unmounted by umount-vm after it."""
    assert run_cli("mount-vm", name, "--config", str(env.config), timeout=300).returncode == 0
    try:
        yield
    finally:
        assert run_cli("umount-vm", name, "--config", str(env.config),
                       timeout=300).returncode == 0


class Unchanged:
    """The files of the test's directories and the domains of NAMES, as they were made; a
    refused command must leave both so."""

    def __init__(self, env: conftest.TestEnv, conn: libvirt.virConnect, *names: str) -> None:
        self.env, self.conn, self.names = env, conn, list(names)
        self.files, self.domains = files(env), defined(conn, self.names)

    def check(self) -> None:
        assert files(self.env) == self.files
        assert defined(self.conn, self.names) == self.domains


# --- list ----------------------------------------------------------------------------------

@pytest.mark.libvirt
def test_list_shows_a_defined_domain_shut_off_with_its_disk(env, vm):
    name, disk = vm
    human = hostcreator(env, "list")
    assert human.returncode == 0, human.stderr
    assert re.search(rf"^{name} +debian trixie +{re.escape(str(disk))} +0\.1G +0\.\dG +finished"
                     r" +shut off +no +-$", human.stdout, re.MULTILINE), human.stdout

    as_json = hostcreator(env, "list", "--json")
    assert as_json.returncode == 0, as_json.stderr
    # Only the one VM of the test's directories: domains of this host that create-kvm made
    # elsewhere (other tests') are listed too, by design.
    listed = [vm for vm in json.loads(as_json.stdout)["vms"] if vm["disk"] and
              vm["disk"]["path"].startswith(f"{env.base}/")]
    assert [vm["name"] for vm in listed] == [name]
    entry = listed[0]
    assert (entry["distribution"], entry["suite"], entry["build"]) == ("debian", "trixie",
                                                                        "finished")
    assert (entry["domain"], entry["addresses"], entry["mounted"]) == ("shut off", [], None)
    assert entry["disk"]["path"] == str(disk) and entry["disk"]["size"] == DISK_SIZE
    assert 0 < entry["disk"]["used"] < DISK_SIZE  # sparse: only what parted and mkfs wrote


@pytest.mark.libvirt
def test_list_shows_a_vm_mounted_by_mount_vm(env, vm):
    name, _ = vm
    with mounted(env, name):
        result = hostcreator(env, "list", "--json")
    assert result.returncode == 0, result.stderr
    entry = next(e for e in json.loads(result.stdout)["vms"] if e["name"] == name)
    assert (entry["domain"], entry["mounted"]) == ("shut off", "read-write")


# --- remove: refusals, each leaving everything as it was ------------------------------------

@pytest.mark.libvirt
def test_remove_refuses_a_disk_another_domain_uses(env, conn, domains, vm):
    name, disk = vm
    other = unique_name()
    domains.append(other)
    define(conn, env, other, disk)
    before = Unchanged(env, conn, name, other)
    result = hostcreator(env, "remove", name, "--yes", "--disk")
    assert errors(result) == [f"remove: error: image file {disk} is the disk of domain "
                              f"{other} (shut off)"], result.stderr
    assert result.returncode == 3
    before.check()


@pytest.mark.libvirt
def test_remove_refuses_a_disk_on_a_loop_device(env, conn, vm):
    name, disk = vm
    before = Unchanged(env, conn, name)
    with ExitStack() as stack:
        loop = loopdev.attach(stack, disk)
        result = hostcreator(env, "remove", name, "--yes", "--disk")
    assert errors(result) == [f"remove: error: image file {disk} is in use by {loop}"], \
        result.stderr
    assert result.returncode == 3
    before.check()


@pytest.mark.libvirt
def test_remove_refuses_a_vm_mounted_by_mount_vm(env, conn, vm):
    name, _ = vm
    with mounted(env, name):
        before = Unchanged(env, conn, name)
        result = hostcreator(env, "remove", name, "--yes", "--disk", "--json")
        before.check()
    message = f"{name} is mounted at {env.mount_dir / name} (mount-vm)"
    assert errors(result) == [f"remove: error: {message}"], result.stderr
    assert json.loads(result.stdout)["error"] == {
        "message": message, "hint": f"umount-vm {name} first", "exit_code": 3}
    assert result.returncode == 3


# --- remove: what it removes ---------------------------------------------------------------

@pytest.mark.libvirt
def test_remove_with_disk_leaves_nothing_and_again_finds_nothing(env, conn, vm):
    name, disk = vm
    gone = hostcreator(env, "remove", name, "--yes", "--disk", "--json")
    assert gone.returncode == 0, gone.stderr
    done = json.loads(gone.stdout)
    assert (done["name"], done["kept"], done["nothing"]) == (name, None, False)
    assert done["removed"] == [
        f"the domain {name}", str(env.journal_dir / f"{name}.json"),
        str(env.log_dir / f"{name}.log"), str(env.secrets_dir / name), f"image file {disk}"]
    assert virt.lookup(conn, name) is None
    assert named_after(env, name) == []

    again = hostcreator(env, "remove", name, "--yes")
    assert again.returncode == 0, again.stderr
    assert f"nothing of {name} is left to remove" in again.stderr
    assert errors(again) == []
    assert name not in [vm["name"] for vm in json.loads(hostcreator(env, "list", "--json")
                                                        .stdout)["vms"]]


@pytest.mark.libvirt
def test_remove_takes_the_domains_nvram_and_keeps_the_disk(env, conn, domains):
    name = unique_name()
    domains.append(name)
    disk = hand_made_vm(env, name)
    nvram = env.base / f"{name}_VARS.fd"  # libvirt would make it at the first start
    shutil.copy(OVMF / "OVMF_VARS_4M.fd", nvram)
    dom = define(conn, env, name, disk,
                 UEFI_OS.format(loader=OVMF / "OVMF_CODE_4M.fd", nvram=nvram))
    assert ET.fromstring(dom.XMLDesc(INACTIVE)).findtext("os/nvram") == str(nvram)

    result = hostcreator(env, "remove", name, "--yes")
    assert result.returncode == 0, result.stderr
    assert f"removed the domain {name}" in result.stderr
    assert f"kept image file {disk} (--disk removes it too)" in result.stderr
    assert virt.lookup(conn, name) is None
    assert not nvram.exists()
    assert named_after(env, name) == [str(disk)]


# --- create-kvm --dry-run --json, create-kvm --json ----------------------------------------

def create_kvm(env: conftest.TestEnv, name: str, *args: str) -> subprocess.CompletedProcess[str]:
    return run_cli("create-kvm", name, "--config", str(env.config), "--virt-type", "qemu",
                   "--network-type", "user", "--json", *args, timeout=300)


@pytest.mark.libvirt
def test_create_kvm_dry_run_json_creates_nothing(env, conn, domains):
    name = unique_name()
    domains.append(name)
    disk = hand_made_vm(env, name)
    before = files(env)
    result = create_kvm(env, name, "--dry-run")
    assert result.returncode == 0, result.stderr
    printed = json.loads(result.stdout)
    assert (printed["domain"], printed["dry_run"]) == (name, True)
    root = ET.fromstring(printed["xml"])
    assert (root.get("type"), root.findtext("name")) == ("qemu", name)
    assert root.find("devices/disk/source").get("file") == str(disk)
    assert root.find("devices/interface").get("type") == "user"
    assert virt.lookup(conn, name) is None
    assert files(env) == before and not paths.lock_dir(env.state_dir).exists()


@pytest.mark.libvirt
def test_create_kvm_json_defines_and_says_what_it_made(vm_env, conn, domains):
    # vm_env: QEMU, as libvirt's unprivileged user, reaches the disk (create-kvm's domain
    # has no static seclabel as DOMAIN_XML has).
    name = unique_name()
    domains.append(name)
    disk = hand_made_vm(vm_env, name)
    vm_env.write(LIBVIRT_URI=conftest.LIBVIRT_URI)
    result = create_kvm(vm_env, name)
    dom = virt.lookup(conn, name)
    if dom is not None and dom.isActive():
        dom.destroy()  # SeaBIOS finds nothing to boot: nothing to wait for, keep the CPU free
    assert result.returncode == 0, result.stderr
    said = json.loads(result.stdout)
    display = said.pop("display")
    assert said == {
        "domain": name, "state": "running", "virt_type": "qemu", "vcpus": 1,
        "network": {"type": "user", "source": None}, "chosen": [], "up": None,
        "addresses": [], "console_log": str(vm_env.log_dir / f"{name}.serial.log")}
    assert re.fullmatch(r"vnc on [0-9.]+:\d+", display), display
    assert dom is not None and dom.isPersistent() and virt.made_by_hostcreator(dom)
    root = ET.fromstring(dom.XMLDesc(INACTIVE))
    assert root.find("devices/disk/source").get("file") == str(disk)
    assert root.findtext("vcpu") == "1"
