"""The proof of issue 19: every format hostcreator export writes boots, with an identity of
its own. qcow2 as a libvirt domain (type qemu); the OVA untarred, its manifest and
descriptor checked against its files, its VMDK read by readers that are not its writer
(tests/appliance.py, and libvmdk's vmdkinfo), converted back to raw and booted; the VMDK
and raw exports too. The gold's disk is unchanged by every export. Slow: four boots under
software emulation, at once."""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from appliance import check_ova, create_type, read_vmdk
from conftest import DOMAIN_XML, removed_domains, run_cli, sha256, unique_name
from guest import REPORT_END, boot_and_report, console_errors, parse_report

pytestmark = pytest.mark.e2e

BOOT_SECONDS = 900


def export(vm, fmt: str, out: Path) -> dict:
    result = run_cli("hostcreator", "export", vm.name, "--format", fmt, "--output", str(out),
                     "--config", str(vm.env.config), "--json", timeout=900)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def exports(debian_vm):
    """A directory for the exports of debian_vm, and the gold's checksum before them."""
    out = debian_vm.env.base / "exports"
    out.mkdir(exist_ok=True)
    before = sha256(debian_vm.image)
    yield out
    assert sha256(debian_vm.image) == before
    shutil.rmtree(out)


def check_exported(report: dict[str, str], vm, gold_report: dict[str, str]) -> None:
    """An export of VM boots as VM's appliance, with an identity of its own made at its
    first boot, and nothing of the build's login but root's SSH keys."""
    assert report.get("hostname") == vm.name, report
    assert report["root_uuid"] == gold_report["root_uuid"]
    assert report["fstab_root"] == f"UUID={report['root_uuid']}"
    assert f"root=UUID={report['root_uuid']}" in report["cmdline"]
    assert re.fullmatch(r"[0-9a-f]{32}", report["machine_id"])
    assert report["machine_id"] != gold_report["machine_id"]
    assert report["ssh_keys_new"] == "yes" and report["keygen"] == "yes"
    assert report["ssh_key"].startswith("SHA256:")
    assert report["ssh_key"] != gold_report["ssh_key"]
    assert report["root_password"] == "L"  # locked: the build's password stayed behind
    assert report["authorized_keys"] == "1"
    assert report["swap_uuid"] == gold_report["swap_uuid"]  # the swap was blanked, kept
    assert re.fullmatch(r"e\w+=10\.0\.2\.\d+/24", report["ipv4"]), report["ipv4"]
    assert report["failed_units"] == "", report["failed_units"]
    assert report["console_errors"] == "", report["console_errors"]


def to_raw(path: Path, fmt: str) -> Path:
    raw = path.with_name(path.name + ".raw")
    subprocess.run(["qemu-img", "convert", "-f", fmt, "-O", "raw", str(path), str(raw)],
                   check=True, capture_output=True)
    return raw


def wait_for_report(console: Path, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        data = console.read_bytes() if console.exists() else b""
        if REPORT_END.search(data):
            return data.decode("utf-8", "replace")
        time.sleep(2)
    pytest.fail(f"no report within {timeout} s; console: {console}")


def qcow2_domain_xml(name: str, qcow2: Path, console: Path) -> str:
    # With ACPI, as create-kvm's domains have it (a guest without it logs an ACPI error).
    return (DOMAIN_XML.format(name=name, image=qcow2, console=console)
            .replace("type='raw'", "type='qcow2'")
            .replace("</os>", "</os>\n  <features><acpi/><apic/></features>")
            .replace("  </devices>", "    <interface type='user'><model type='virtio'/>"
                                     "</interface>\n  </devices>"))


def boot_domain(libvirtd: str, name: str, qcow2: Path, console: Path) -> dict[str, str]:
    """The qcow2 export as a libvirt domain of type qemu, until its report."""
    import libvirt

    conn = libvirt.open(libvirtd)
    try:
        domain = conn.defineXML(qcow2_domain_xml(name, qcow2, console))
        domain.create()
        try:
            text = wait_for_report(console, BOOT_SECONDS)
        finally:
            # Its QEMU holds the image's lock: qemu-img info then reads it.
            with contextlib.suppress(libvirt.libvirtError):  # it may have stopped itself
                domain.destroy()
    finally:
        conn.close()
    report = parse_report(text)
    report["console_errors"] = "|".join(console_errors(text))
    return report


@dataclass
class Exported:
    summary: dict
    path: Path  # what was booted: the export, or its disk converted to raw
    vmdk: Path | None = None  # an OVA's disk, untarred
    report: dict[str, str] = field(default_factory=dict)


@pytest.fixture(scope="module")
def exported(debian_vm, exports, libvirtd) -> Iterator[dict[str, Exported]]:
    """debian_vm exported in every format, then the four booted at once: the qcow2 as a
    libvirt domain, the OVA's VMDK, the VMDK and the raw image (converted to raw where
    they are not) under QEMU. Four guests of one vCPU on two cores take about twice one
    boot, not four times."""
    found: dict[str, Exported] = {}
    for fmt in ("qcow2", "ova", "vmdk", "raw"):
        out = exports if fmt in ("qcow2", "ova") else exports / f"{debian_vm.name}.{fmt}"
        summary = export(debian_vm, fmt, out)
        found[fmt] = Exported(summary, Path(summary["path"]))
    work = exports / "ova"
    work.mkdir()
    _envelope, found["ova"].vmdk = check_ova(found["ova"].path, debian_vm.name, work)
    found["ova"].path = to_raw(found["ova"].vmdk, "vmdk")
    found["vmdk"].path = to_raw(found["vmdk"].path, "vmdk")
    logs = debian_vm.env.log_dir
    name = unique_name()
    removal = removed_domains(libvirtd)
    next(removal).append(name)
    try:
        with ThreadPoolExecutor(max_workers=4) as pool:
            futures = {"qcow2": pool.submit(boot_domain, libvirtd, name, found["qcow2"].path,
                                            logs / f"{name}.serial.log")}
            for fmt in ("ova", "vmdk", "raw"):
                futures[fmt] = pool.submit(boot_and_report, found[fmt].path,
                                           logs / f"{fmt}.report.log", BOOT_SECONDS)
            for fmt, future in futures.items():
                found[fmt].report = future.result()
        yield found
    finally:
        next(removal, None)


def test_qcow2_boots_as_a_libvirt_domain(debian_vm, debian_vm_report, exported):
    qcow2 = exported["qcow2"]
    info = json.loads(subprocess.run(["qemu-img", "info", "--output=json", str(qcow2.path)],
                                     capture_output=True, text=True, check=True).stdout)
    assert info["format"] == "qcow2" and info["virtual-size"] == qcow2.summary["disk_size"]
    check_exported(qcow2.report, debian_vm, debian_vm_report)


def test_ova_is_consistent_read_by_others_and_boots(debian_vm, debian_vm_report, exported):
    ova = exported["ova"]
    vmdk = ova.vmdk
    assert vmdk is not None
    assert read_vmdk(vmdk).capacity == ova.summary["disk_size"]
    info = json.loads(subprocess.run(["qemu-img", "info", "--output=json", str(vmdk)],
                                     capture_output=True, text=True, check=True).stdout)
    assert info["format-specific"]["data"]["create-type"] == "streamOptimized"
    vmdkinfo = shutil.which("vmdkinfo")
    assert vmdkinfo, "vmdkinfo is missing: apt-get install libvmdk-utils (setup.sh does)"
    seen = subprocess.run([vmdkinfo, str(vmdk)], capture_output=True, text=True)
    assert seen.returncode == 0, seen.stderr
    assert re.search(r"stream", seen.stdout, re.IGNORECASE), seen.stdout
    check_exported(ova.report, debian_vm, debian_vm_report)


@pytest.mark.parametrize("fmt", ["vmdk", "raw"])
def test_vmdk_and_raw_boot(debian_vm, debian_vm_report, exported, fmt):
    if fmt == "vmdk":
        assert create_type(read_vmdk(Path(exported[fmt].summary["path"]))) == "streamOptimized"
    check_exported(exported[fmt].report, debian_vm, debian_vm_report)
