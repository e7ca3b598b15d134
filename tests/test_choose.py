"""What create-kvm chooses for the host: the KVM probe, the vCPUs, the network.

This host cannot show a KVM guest that runs (/dev/kvm opens, guests hang), so the
kvm branch of the probe is shown with a fake QEMU that prints what a booted guest
prints; the real probe's "no" on this host is asserted by tests/test_quickstart.py (e2e).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from hostcreator import config
from hostcreator.config import NetworkType, VirtType
from hostcreator.domain import choose, kvmprobe, qemu
from hostcreator.errors import InvalidInput

pytestmark = pytest.mark.unit


def empty_file(tmp_path: Path) -> Path:
    """A configuration file that sets nothing."""
    path = tmp_path / "empty.conf"
    path.touch()
    return path

# A stand-in for qemu-system-x86_64: writes to the -serial file what the booted payload
# would (or nothing), and counts its calls beside itself.
FAKE_QEMU = """#!{python}
import pathlib, sys
here = pathlib.Path(sys.argv[0]).parent
with open(here / "calls", "a") as f:
    f.write(" ".join(sys.argv[1:]) + "\\n")
serial = sys.argv[sys.argv.index("-serial") + 1].removeprefix("file:")
if (here / "runs").exists():
    pathlib.Path(serial).write_bytes(b"[    0.9] Kernel panic - not syncing: VFS: Unable to "
                                     b"mount root fs on unknown-block(0,0)\\r\\n")
"""


@pytest.fixture
def fake_kvm(tmp_path, monkeypatch):
    """A host whose /dev/kvm answers and whose QEMU is the fake; returns its directory."""
    bin_dir = tmp_path / "fake"
    bin_dir.mkdir()
    qemu = bin_dir / "qemu"
    qemu.write_text(FAKE_QEMU.format(python=sys.executable))
    qemu.chmod(0o755)
    (bin_dir / "runs").touch()
    boot_id = tmp_path / "boot_id"
    boot_id.write_text("boot-1\n")
    monkeypatch.setattr(kvmprobe, "QEMU", str(qemu))
    monkeypatch.setattr(kvmprobe, "device_answers", lambda device: True)
    monkeypatch.setattr(kvmprobe, "BOOT_ID", boot_id)
    kernels = tmp_path / "boot"
    kernels.mkdir()
    (kernels / "vmlinuz-6.1.0-test").write_bytes(b"not really a kernel")
    monkeypatch.setattr(kvmprobe, "KERNELS", kernels)
    monkeypatch.setattr(kvmprobe, "TIMEOUT", 3.0)
    return bin_dir


def load(tmp_path: Path, **settings: str) -> config.Config:
    return config.load(empty_file(tmp_path), {"STATE_DIR": str(tmp_path / "state"), **settings},
                       environ={})


def calls(bin_dir: Path) -> list[str]:
    path = bin_dir / "calls"
    return path.read_text().splitlines() if path.exists() else []


def test_kvm_is_chosen_when_a_guest_runs_under_it(fake_kvm, tmp_path):
    chosen = choose.choose(load(tmp_path), None, sys_net=tmp_path)
    assert (chosen.virt_type, chosen.vcpus) == (VirtType.KVM, qemu.KVM_VCPUS)
    assert chosen.notes[0].startswith("virt type kvm: the host's kernel vmlinuz-6.1.0-test")
    assert "-accel kvm" in calls(fake_kvm)[0]
    # Cached for this boot of the host: no second boot, and the output says so.
    again = choose.choose(load(tmp_path), None, sys_net=tmp_path)
    assert again.virt_type is VirtType.KVM and again.probe.cached
    assert "cached for this boot" in again.notes[0]
    assert len(calls(fake_kvm)) == 1


def test_a_dry_run_starts_no_qemu_and_keeps_nothing(fake_kvm, tmp_path):
    # create-kvm --dry-run writes nothing, not even the probe's cache (or STATE_DIR), and
    # boots nothing: without a kept answer it plans with qemu and says so.
    chosen = choose.choose(load(tmp_path), None, sys_net=tmp_path, dry_run=True)
    assert (chosen.virt_type, chosen.vcpus, chosen.probe) == (
        VirtType.QEMU, qemu.EMULATED_VCPUS, None)
    assert "create-kvm would probe" in chosen.notes[0]
    assert calls(fake_kvm) == [] and not (tmp_path / "state").exists()
    # With the answer kept for this boot of the host, the dry run takes it.
    choose.choose(load(tmp_path), None, sys_net=tmp_path)
    again = choose.choose(load(tmp_path), None, sys_net=tmp_path, dry_run=True)
    assert again.virt_type is VirtType.KVM and again.probe.cached
    assert len(calls(fake_kvm)) == 1


def test_a_wrong_network_costs_no_probe(fake_kvm, tmp_path):
    with pytest.raises(InvalidInput, match="'lab' is neither a bridge"):
        choose.choose(load(tmp_path, NETWORK="lab"), Conn(), sys_net=tmp_path)
    assert calls(fake_kvm) == []


@pytest.mark.parametrize("offered", [True, False], ids=["offers-kvm", "no-kvm"])
def test_kvm_only_when_the_local_libvirt_offers_it(fake_kvm, tmp_path, offered):
    chosen = choose.choose(load(tmp_path), Conn(kvm=offered, default=True), sys_net=tmp_path)
    assert chosen.virt_type is (VirtType.KVM if offered else VirtType.QEMU)
    assert chosen.probe.works and len(calls(fake_kvm)) == 1
    if not offered:
        assert "libvirt does not offer kvm domains" in chosen.notes[0]


def test_the_console_is_read_once_more_after_qemu_ended(tmp_path, monkeypatch):
    # QEMU prints the panic and exits at once: between a read of the console and the
    # question whether it still runs, it may do both.
    kernel = tmp_path / "vmlinuz-test"
    kernel.write_bytes(b"")

    class Ends:
        returncode: int | None = None

        def __init__(self, argv: list[str]) -> None:
            self.console = Path(argv[argv.index("-serial") + 1].removeprefix("file:"))

        def poll(self) -> int | None:
            if self.returncode is None:
                self.console.write_bytes(b"Kernel panic - not syncing: VFS: Unable to mount "
                                         b"root fs on unknown-block(0,0)\r\n")
                self.returncode = 0
            return self.returncode

    monkeypatch.setattr(kvmprobe, "spawn", lambda argv, output: Ends(argv))
    monkeypatch.setattr(kvmprobe, "stop", lambda proc: None)
    works, detail, _seconds = kvmprobe.boot("kvm", kernel, 5.0)
    assert works, detail


def test_the_host_kernel_is_booted_when_there_is_one(fake_kvm, tmp_path):
    kernels = kvmprobe.KERNELS  # the fake_kvm host's /boot
    result = kvmprobe.probe(tmp_path / "state")
    assert result.works and "vmlinuz-6.1.0-test" in result.detail
    assert f"-kernel {kernels}/vmlinuz-6.1.0-test" in calls(fake_kvm)[0]


def test_without_a_kernel_to_boot_the_answer_is_software_emulation(fake_kvm, tmp_path,
                                                                    monkeypatch):
    # A boot sector is no proof: it runs under this machine's KVM, where a kernel hangs.
    monkeypatch.setattr(kvmprobe, "KERNELS", tmp_path / "no-boot")
    chosen = choose.choose(load(tmp_path), None, sys_net=tmp_path)
    assert chosen.virt_type is VirtType.QEMU and not chosen.probe.works
    assert "no Linux kernel in" in chosen.notes[0] and calls(fake_kvm) == []


def test_a_guest_that_prints_nothing_means_software_emulation(fake_kvm, tmp_path):
    (fake_kvm / "runs").unlink()
    chosen = choose.choose(load(tmp_path), None, sys_net=tmp_path)
    assert (chosen.virt_type, chosen.vcpus) == (VirtType.QEMU, qemu.EMULATED_VCPUS)
    assert "KVM guests do not run here" in chosen.notes[0]
    assert "printed nothing" in chosen.notes[0]
    assert chosen.notes[1].startswith("1 vCPU: under software emulation")


def test_a_new_boot_of_the_host_probes_again(fake_kvm, tmp_path):
    (fake_kvm / "runs").unlink()
    assert not kvmprobe.probe(tmp_path / "state").works
    (fake_kvm / "runs").touch()
    assert not kvmprobe.probe(tmp_path / "state").works  # cached
    kvmprobe.BOOT_ID.write_text("boot-2\n")
    assert kvmprobe.probe(tmp_path / "state").works
    assert len(calls(fake_kvm)) == 2


def test_given_settings_are_not_second_guessed(fake_kvm, tmp_path):
    chosen = choose.choose(load(tmp_path, VIRT_TYPE="qemu", VCPUS="3", NETWORK_TYPE="user"),
                           None, sys_net=tmp_path)
    assert (chosen.virt_type, chosen.vcpus, chosen.network_type, chosen.network) == (
        VirtType.QEMU, 3, NetworkType.USER, None)
    assert chosen.notes == () and calls(fake_kvm) == []


def test_kvm_device_that_does_not_answer(tmp_path):
    assert not kvmprobe.device_answers(tmp_path / "no-kvm")
    assert not kvmprobe.device_answers(Path("/dev/null"))  # opens, but does not speak KVM
    result = kvmprobe.probe(tmp_path / "state", device=tmp_path / "no-kvm")
    assert not result.works and "does not open" in result.detail


def bridge(sys_net: Path, name: str) -> None:
    (sys_net / name / "bridge").mkdir(parents=True)


class Network:
    def __init__(self, active: bool) -> None:
        self.active = active

    def isActive(self) -> bool:
        return self.active


class Conn:
    """libvirt with the given networks (and kvm domains or not). Starting the real
    `default` network would add a bridge and NAT rules to this shared host, so the active
    one is faked."""

    def __init__(self, kvm: bool = True, **networks: bool) -> None:
        self.networks = networks
        self.kvm = kvm

    def getCapabilities(self) -> str:
        kvm = "<domain type='kvm'/>" if self.kvm else ""
        return (f"<capabilities><guest><arch name='x86_64'><domain type='qemu'/>{kvm}</arch>"
                "</guest></capabilities>")

    def networkLookupByName(self, name: str) -> Network:
        import libvirt

        if name not in self.networks:
            raise libvirt.libvirtError(f"no network {name}")
        return Network(self.networks[name])


QEMU = {"VIRT_TYPE": "qemu"}


@pytest.mark.parametrize(("bridges", "networks", "expected"), [
    (["br0"], {"default": True}, (NetworkType.BRIDGE, "br0")),
    ([], {"default": True}, (NetworkType.NETWORK, "default")),
    ([], {"default": False}, (NetworkType.USER, None)),
    (["br1"], {}, (NetworkType.USER, None)),
], ids=["bridge", "libvirt-network", "user-inactive", "user-no-network"])
def test_network_auto(tmp_path, bridges, networks, expected):
    for name in bridges:
        bridge(tmp_path, name)
    chosen = choose.choose(load(tmp_path, **QEMU), Conn(**networks), sys_net=tmp_path)
    assert (chosen.network_type, chosen.network) == expected
    assert chosen.notes[-1].startswith("network: ")


def test_network_auto_with_a_named_one(tmp_path):
    bridge(tmp_path, "br7")
    chosen = choose.choose(load(tmp_path, NETWORK="br7", **QEMU), Conn(), sys_net=tmp_path)
    assert (chosen.network_type, chosen.network) == (NetworkType.BRIDGE, "br7")
    chosen = choose.choose(load(tmp_path, NETWORK="lab", **QEMU), Conn(lab=True),
                           sys_net=tmp_path)
    assert (chosen.network_type, chosen.network) == (NetworkType.NETWORK, "lab")
    with pytest.raises(InvalidInput, match="'lab' is neither a bridge of this host nor an "
                       "active libvirt network"):
        choose.choose(load(tmp_path, NETWORK="lab", **QEMU), Conn(lab=False), sys_net=tmp_path)


def test_named_and_missing_stays_an_error(tmp_path):
    with pytest.raises(InvalidInput, match="bridge 'br0' does not exist"):
        choose.choose(load(tmp_path, NETWORK_TYPE="bridge", **QEMU), Conn(), sys_net=tmp_path)
    with pytest.raises(InvalidInput, match="libvirt network 'default' is not active"):
        choose.choose(load(tmp_path, NETWORK_TYPE="network", **QEMU), Conn(default=False),
                      sys_net=tmp_path)
