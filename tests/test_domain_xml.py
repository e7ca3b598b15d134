"""The domain XML as data: rendered for several option sets, parsed, compared to golden
files (HOSTCREATOR_REGENERATE=1 rewrites them) and validated with virt-xml-validate."""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from conftest import DATA

from hostcreator import config
from hostcreator.config import Graphics, NetworkType, VirtType
from hostcreator.domain import choose, ovf
from hostcreator.domain import render as domain
from hostcreator.errors import HostCreatorError

pytestmark = pytest.mark.unit

GOLDEN = DATA / "domain"
REGENERATE = os.environ.get("HOSTCREATOR_REGENERATE") == "1"
UUID = "8f7a33c2-5d1e-4b8a-9c0e-2a6f4d3b1e07"
MAC = "52:54:00:12:34:56"


def spec(**changes) -> domain.DomainSpec:
    base = domain.DomainSpec(
        name="web1", uuid=UUID, memory=2048, vcpus=2, virt_type=VirtType.KVM,
        disk=Path("/var/lib/hostcreator/images/web1-disk01.img"), disk_is_block=False,
        nic=domain.Nic(NetworkType.BRIDGE, "br0", MAC),
        console_log=Path("/var/log/hostcreator/web1.serial.log"),
    )
    return dataclasses.replace(base, **changes)


CASES = {
    "bridge-kvm-file-vnc": spec(),
    "network-qemu-lvm-spice": spec(
        name="db2", memory=4096, vcpus=4, virt_type=VirtType.QEMU,
        disk=Path("/dev/vg0/db2-disk01"), disk_is_block=True,
        nic=domain.Nic(NetworkType.NETWORK, "default", MAC), graphics=Graphics.SPICE,
        console_log=Path("/var/log/hostcreator/db2.serial.log"),
    ),
    "user-qemu-file-nographics": spec(
        memory=512, vcpus=1, virt_type=VirtType.QEMU,
        nic=domain.Nic(NetworkType.USER, None, MAC), graphics=Graphics.NONE,
    ),
    "live-iso-persistent": spec(live_iso=Path("/srv/iso/rescue.iso")),
}
RENDERED = {name: domain.render(s) for name, s in CASES.items()}
RENDERED["live-iso-live"] = domain.render(CASES["live-iso-persistent"], live=True)


def parse(xml: str) -> ET.Element:
    return ET.fromstring(xml)


def disks(root: ET.Element) -> dict[str, ET.Element]:
    return {d.get("device", ""): d for d in root.iterfind("devices/disk")}


@pytest.mark.parametrize("case", sorted(RENDERED))
def test_matches_golden_file(case):
    golden = GOLDEN / f"{case}.xml"
    if REGENERATE:
        GOLDEN.mkdir(parents=True, exist_ok=True)
        golden.write_text(RENDERED[case])
    assert golden.exists(), f"{golden} missing: run with HOSTCREATOR_REGENERATE=1"
    assert RENDERED[case] == golden.read_text()


@pytest.mark.parametrize("case", sorted(RENDERED))
def test_validates_with_virt_xml_validate(case, tmp_path):
    assert shutil.which("virt-xml-validate"), "setup.sh installs libvirt-clients"
    path = tmp_path / f"{case}.xml"
    path.write_text(RENDERED[case])
    result = subprocess.run(["virt-xml-validate", str(path), "domain"], capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    domain.check(RENDERED[case])


def test_bridge_kvm_file_holds_what_was_asked():
    root = parse(RENDERED["bridge-kvm-file-vnc"])
    assert root.get("type") == "kvm"
    assert root.findtext("name") == "web1" and root.findtext("uuid") == UUID
    assert root.find("memory").get("unit") == "MiB" and root.findtext("memory") == "2048"
    assert root.findtext("vcpu") == "2"
    assert root.find("cpu").get("mode") == "host-passthrough"
    assert root.find("os/type").get("machine") == "q35"
    disk = disks(root)["disk"]
    assert disk.get("type") == "file"
    assert disk.find("source").get("file") == "/var/lib/hostcreator/images/web1-disk01.img"
    assert disk.find("target").attrib == {"dev": "vda", "bus": "virtio"}
    assert disk.find("driver").get("type") == "raw"
    assert disk.find("driver").get("cache") is None  # files may be where O_DIRECT fails
    assert disk.find("boot").get("order") == "1"
    assert "cdrom" not in disks(root)
    nic = root.find("devices/interface")
    assert nic.get("type") == "bridge" and nic.find("source").get("bridge") == "br0"
    assert nic.find("mac").get("address") == MAC
    assert nic.find("model").get("type") == "virtio"
    serial = root.find("devices/serial")
    assert serial.get("type") == "pty"
    assert serial.find("log").get("file") == "/var/log/hostcreator/web1.serial.log"
    assert serial.find("target").get("port") == "0"
    console = root.find("devices/console")
    assert console.get("type") == "pty" and console.find("target").get("type") == "serial"
    channel = root.find("devices/channel")
    assert channel.get("type") == "unix"
    assert channel.find("target").get("name") == "org.qemu.guest_agent.0"
    graphics = root.find("devices/graphics")
    assert graphics.get("type") == "vnc" and graphics.get("listen") == "127.0.0.1"
    assert root.find("devices/rng/backend").text == "/dev/urandom"


def test_network_qemu_lvm_spice_holds_what_was_asked():
    root = parse(RENDERED["network-qemu-lvm-spice"])
    assert root.get("type") == "qemu"
    assert root.find("cpu").get("mode") == "maximum"
    assert root.findtext("memory") == "4096" and root.findtext("vcpu") == "4"
    disk = disks(root)["disk"]
    assert disk.get("type") == "block"
    assert disk.find("source").get("dev") == "/dev/vg0/db2-disk01"
    assert disk.find("driver").get("cache") == "none"
    nic = root.find("devices/interface")
    assert nic.get("type") == "network" and nic.find("source").get("network") == "default"
    assert root.find("devices/graphics").get("type") == "spice"


def test_user_networking_without_display():
    root = parse(RENDERED["user-qemu-file-nographics"])
    nic = root.find("devices/interface")
    assert nic.get("type") == "user" and nic.find("source") is None
    assert root.find("devices/graphics") is None and root.find("devices/video") is None
    assert root.findtext("memory") == "512" and root.findtext("vcpu") == "1"


def test_live_configuration_boots_the_iso_first_and_is_otherwise_the_same_domain():
    persistent = parse(RENDERED["live-iso-persistent"])
    live = parse(RENDERED["live-iso-live"])
    assert "cdrom" not in disks(persistent)
    assert disks(persistent)["disk"].find("boot").get("order") == "1"
    cdrom = disks(live)["cdrom"]
    assert cdrom.find("source").get("file") == "/srv/iso/rescue.iso"
    assert cdrom.find("readonly") is not None
    assert cdrom.find("boot").get("order") == "1"
    assert disks(live)["disk"].find("boot").get("order") == "2"
    for path in ("name", "uuid", "devices/interface/mac", "devices/serial/log"):
        assert ET.tostring(live.find(path)) == ET.tostring(persistent.find(path)), path


# The templates rendered whole, each by its module; every other one is a part of the domain.
TOP_TEMPLATES = {"domain.xml.j2": domain, "appliance.ovf.j2": ovf}


def test_every_template_part_is_used():
    templates = Path(domain.__file__).parent / "templates"
    main = (templates / "domain.xml.j2").read_text()
    for part in templates.rglob("*.j2"):
        name = part.relative_to(templates).as_posix()
        if name in TOP_TEMPLATES:
            source = Path(TOP_TEMPLATES[name].__file__).read_text()
            assert f'"{name}"' in source, f"{name} is never rendered"
        else:
            assert f"'{name}'" in main, f"{name} is never included"


def test_values_are_escaped():
    xml = domain.render(spec(disk=Path("/srv/a&b'<c>.img")))
    assert disks(parse(xml))["disk"].find("source").get("file") == "/srv/a&b'<c>.img"


def test_live_rendering_needs_an_iso():
    with pytest.raises(ValueError):
        domain.render(spec(), live=True)


def test_check_rejects_broken_and_invalid_xml():
    with pytest.raises(HostCreatorError, match="not well-formed"):
        domain.check("<domain><name>x</domain>")
    with pytest.raises(HostCreatorError, match="not valid"):
        domain.check("<domain type='qemu'><nonsense/></domain>")


def test_spec_from_configuration(monkeypatch):
    monkeypatch.setattr(config, "DEFAULT_FILE", Path("/nonexistent"))
    monkeypatch.setattr(config, "LEGACY_FILE", Path("/nonexistent"))
    cfg = config.load(None, {"MEMORY": "1024", "VCPUS": "3", "NETWORK_TYPE": "user",
                             "VIRT_TYPE": "qemu", "LOG_DIR": "/l", "GRAPHICS": "spice",
                             "LIVE_ISO": "/x.iso"}, environ={})
    choices = choose.choose(cfg, None)
    assert choices.notes == ()  # nothing was left to choose
    made = domain.spec_for(cfg, "vm7", Path("/d.img"), disk_is_block=False, choices=choices)
    assert (made.memory, made.vcpus, made.graphics) == (1024, 3, Graphics.SPICE)
    assert made.virt_type is VirtType.QEMU
    assert made.nic.type is NetworkType.USER and made.nic.source is None
    assert re.fullmatch(r"52:54:00(:[0-9a-f]{2}){3}", made.nic.mac)
    assert made.console_log == Path("/l/vm7.serial.log")
    assert made.live_iso == Path("/x.iso")
    other = domain.spec_for(cfg, "vm7", Path("/d.img"), disk_is_block=False, choices=choices)
    assert other.uuid != made.uuid  # a new domain is a new machine
