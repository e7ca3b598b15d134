"""hostcreator export without root: the OVF descriptor parsed and checked, the manifest's
form, the OVA's order and tar format, qemu-img's command lines and progress, the seal of
a root tree, and the refusals decided before anything is written."""

from __future__ import annotations

import errno
import re
import sys
import tarfile
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from hostcreator import run as run_module
from hostcreator.build import identity
from hostcreator.disk import image
from hostcreator.disk.image import Format
from hostcreator.domain import ovf
from hostcreator.errors import HostCreatorError, InvalidInput
from hostcreator.state.journal import Journal, Stage, Status
from hostcreator.vm import export

pytestmark = pytest.mark.unit

NS = {"ovf": "http://schemas.dmtf.org/ovf/envelope/1",
      "rasd": "http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/"
              "CIM_ResourceAllocationSettingData",
      "vssd": "http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_VirtualSystemSettingData",
      "vmw": "http://www.vmware.com/schema/ovf"}
OVF = f"{{{NS['ovf']}}}"
VMW = f"{{{NS['vmw']}}}"
GIB = 1 << 30


def appliance(**changes) -> ovf.Appliance:
    values = dict(name="hctest-web", distribution="debian", suite="trixie", vcpus=2,
                  memory_mib=2048, capacity=8 * GIB, populated_size=GIB,
                  disk_file="hctest-web-disk1.vmdk", disk_file_size=400 << 20,
                  vendor="hctest vendor", version="2.5")
    return ovf.Appliance(**{**values, **changes})


def parsed(a: ovf.Appliance) -> ET.Element:
    return ET.fromstring(ovf.descriptor(a).encode())


def items(envelope: ET.Element) -> dict[int, ET.Element]:
    """The VirtualHardwareSection's items by ResourceType."""
    found = {}
    for item in envelope.iterfind(".//ovf:VirtualHardwareSection/ovf:Item", NS):
        found[int(item.findtext("rasd:ResourceType", namespaces=NS))] = item
    return found


def test_the_descriptor_is_an_ovf_1_envelope():
    text = ovf.descriptor(appliance())
    assert text.startswith('<?xml version="1.0" encoding="UTF-8"?>\n<Envelope ')
    envelope = ET.fromstring(text.encode())
    assert envelope.tag == f"{OVF}Envelope" and envelope.get(f"{OVF}version") == "1.0"
    children = [child.tag.removeprefix(OVF) for child in envelope]
    assert children == ["References", "DiskSection", "NetworkSection", "VirtualSystem"]


def test_references_and_disk_name_the_file_with_capacity_and_populated_size():
    envelope = parsed(appliance())
    (file,) = envelope.iterfind("ovf:References/ovf:File", NS)
    assert (file.get(f"{OVF}href"), file.get(f"{OVF}size")) == (
        "hctest-web-disk1.vmdk", str(400 << 20))
    (disk,) = envelope.iterfind("ovf:DiskSection/ovf:Disk", NS)
    assert disk.get(f"{OVF}fileRef") == file.get(f"{OVF}id")
    assert disk.get(f"{OVF}capacity") == str(8 * GIB)
    assert disk.get(f"{OVF}capacityAllocationUnits") == "byte"
    assert disk.get(f"{OVF}populatedSize") == str(GIB)
    assert disk.get(f"{OVF}format").endswith("vmdk.html#streamOptimized")
    (network,) = envelope.iterfind("ovf:NetworkSection/ovf:Network", NS)
    assert network.get(f"{OVF}name") == ovf.NETWORK


@pytest.mark.parametrize("distribution,cim,vmware", [("debian", "96", "debian10_64Guest"),
                                                     ("ubuntu", "94", "ubuntu64Guest")])
def test_the_operating_system_is_named_for_both_importers(distribution, cim, vmware):
    envelope = parsed(appliance(distribution=distribution))
    (system,) = envelope.iterfind("ovf:VirtualSystem", NS)
    assert system.get(f"{OVF}id") == "hctest-web"
    assert system.findtext("ovf:Name", namespaces=NS) == "hctest-web"
    (os_section,) = system.iterfind("ovf:OperatingSystemSection", NS)
    assert os_section.get(f"{OVF}id") == cim
    assert os_section.get(f"{VMW}osType") == vmware
    assert "64-bit" in os_section.findtext("ovf:Description", namespaces=NS)


def test_the_hardware_cpus_memory_controller_disk_and_nic():
    envelope = parsed(appliance(vcpus=3, memory_mib=1536))
    found = items(envelope)
    assert sorted(found) == [3, 4, 6, 10, 17]
    assert found[3].findtext("rasd:VirtualQuantity", namespaces=NS) == "3"
    assert found[4].findtext("rasd:VirtualQuantity", namespaces=NS) == "1536"
    assert found[4].findtext("rasd:AllocationUnits", namespaces=NS) == "byte * 2^20"
    assert found[6].findtext("rasd:ResourceSubType", namespaces=NS) == "lsilogic"
    controller = found[6].findtext("rasd:InstanceID", namespaces=NS)
    assert found[17].findtext("rasd:Parent", namespaces=NS) == controller
    assert found[17].findtext("rasd:HostResource", namespaces=NS) == "ovf:/disk/vmdisk1"
    assert found[10].findtext("rasd:ResourceSubType", namespaces=NS) == "E1000"
    assert found[10].findtext("rasd:Connection", namespaces=NS) == ovf.NETWORK
    ids = [item.findtext("rasd:InstanceID", namespaces=NS) for item in found.values()]
    assert len(set(ids)) == len(ids)
    system = envelope.find(".//ovf:VirtualHardwareSection/ovf:System", NS)
    assert system.findtext("vssd:VirtualSystemType", namespaces=NS) == ovf.SYSTEM_TYPE


def test_rasd_and_vssd_elements_stand_in_their_schema_order():
    envelope = parsed(appliance())
    hardware = envelope.find(".//ovf:VirtualHardwareSection", NS)
    for element in [*hardware.iterfind("ovf:Item", NS), hardware.find("ovf:System", NS)]:
        names = [child.tag.split("}")[1] for child in element]
        assert names == sorted(names), names


def test_the_product_section_comes_from_the_settings():
    envelope = parsed(appliance())
    product = envelope.find(".//ovf:VirtualSystem/ovf:ProductSection", NS)
    assert [child.tag.removeprefix(OVF) for child in product] == [
        "Info", "Product", "Vendor", "Version"]
    assert product.findtext("ovf:Vendor", namespaces=NS) == "hctest vendor"
    assert product.findtext("ovf:Version", namespaces=NS) == "2.5"


@pytest.mark.parametrize("efi", [False, True])
def test_the_firmware_is_efi_only_for_a_uefi_disk(efi):
    envelope = parsed(appliance(efi=efi))
    configs = envelope.findall(".//ovf:VirtualHardwareSection/vmw:Config", NS)
    found = {(c.get(f"{VMW}key"), c.get(f"{VMW}value")) for c in configs}
    assert found == ({("firmware", "efi")} if efi else set())


def test_text_is_escaped_in_the_descriptor():
    envelope = parsed(appliance(vendor="A & B <c>"))
    assert envelope.find(".//ovf:ProductSection/ovf:Vendor", NS).text == "A & B <c>"


def test_the_manifest_has_the_form_ovf_gives():
    text = ovf.manifest([("a.ovf", "ab" * 32), ("a-disk1.vmdk", "cd" * 32)])
    assert text == f"SHA256(a.ovf)= {'ab' * 32}\nSHA256(a-disk1.vmdk)= {'cd' * 32}\n"
    assert all(re.fullmatch(r"SHA256\([^)]+\)= [0-9a-f]{64}", line)
               for line in text.splitlines())
    assert ovf.sha256_bytes(b"") == (
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")


def test_the_package_is_ustar_in_the_order_given(tmp_path):
    disk = tmp_path / "d.vmdk"
    disk.write_bytes(b"\x01" * 3000)
    target = tmp_path / "x.ova"
    ovf.package(target, [("x.ovf", b"<Envelope/>"), ("x.mf", b"SHA256(x.ovf)= 00\n"),
                         ("x-disk1.vmdk", disk)])
    data = target.read_bytes()
    # Every header a ustar one (magic "ustar\0", version "00"), no GNU or pax extras.
    with tarfile.open(target) as tar:
        members = tar.getmembers()
        assert [m.name for m in members] == ["x.ovf", "x.mf", "x-disk1.vmdk"]
        assert [m.size for m in members] == [11, 18, 3000]
        assert all(m.isfile() and m.mode == 0o644 for m in members)
        assert tar.extractfile(members[2]).read() == b"\x01" * 3000
        offsets = [m.offset for m in members]
    assert all(data[o + 257:o + 265] == b"ustar\x0000" for o in offsets)


def test_a_member_ustar_cannot_hold_is_refused_before_writing(tmp_path, monkeypatch):
    monkeypatch.setattr(ovf, "USTAR_MAX", 10)
    target = tmp_path / "x.ova"
    with pytest.raises(HostCreatorError, match="more than a ustar archive"):
        ovf.package(target, [("x.ovf", b"<Envelope/>")])
    assert not target.exists()


@pytest.mark.parametrize("fmt,expected", [
    (Format.QCOW2, ["-O", "qcow2", "-c", "-o", "compression_type=zlib"]),
    (Format.VMDK, ["-O", "vmdk", "-o", "subformat=streamOptimized,adapter_type=lsilogic"]),
    (Format.OVA, ["-O", "vmdk", "-o", "subformat=streamOptimized,adapter_type=lsilogic"]),
    (Format.RAW, ["-O", "raw"]),
])
def test_the_conversion_command_lines(fmt, expected):
    assert image.argv(Path("/i/s.img"), Path("/o/t"), fmt) == [
        "qemu-img", "convert", "-p", "-f", "raw", *expected, "/i/s.img", "/o/t"]


def test_qemu_img_progress_is_read_piece_by_piece():
    assert image.percent_of("    (12.50/100%)") == 12.5
    assert image.percent_of("    (100.00/100%)") == 100.0
    assert image.percent_of("some other line") is None
    seen: list[str] = []
    # A meter as qemu-img writes one: carriage returns, no newline until the end.
    script = "import sys\nfor i in range(3):\n    sys.stdout.write(f'  ({i}.00/100%)\\r')\n" \
             "    sys.stdout.flush()\nprint('done')\n"
    result = run_module.run([sys.executable, "-c", script], progress=seen.append)
    assert result.returncode == 0
    assert seen == ["  (0.00/100%)", "  (1.00/100%)", "  (2.00/100%)", "done"]


def test_the_meter_shows_every_tenth(caplog):
    meter = export.Meter()
    with caplog.at_level("INFO", logger="hostcreator"):
        for done in (0.0, 5.0, 10.0, 10.5, 34.0, 100.0):
            meter(done)
    assert [r.getMessage().strip() for r in caplog.records] == ["10%", "30%", "100%"]


# --- the seal of a root tree -------------------------------------------------------------

def root_tree(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    files = {
        "etc/machine-id": "0123456789abcdef0123456789abcdef\n",
        "var/lib/dbus/machine-id": "0123456789abcdef0123456789abcdef\n",
        "etc/ssh/ssh_host_ed25519_key": "key", "etc/ssh/sshd_config": "config",
        "var/lib/systemd/random-seed": "seed", "var/lib/dhcp/dhclient.enp1s0.leases": "lease",
        "var/log/journal/0123/system.journal": "journal", "var/log/wtmp": "logins",
        "var/log/syslog.1": "log", "var/log/apt/history.log": "apt",
        "root/.bash_history": "ls", "root/.ssh/known_hosts": "hosts",
        "root/.ssh/authorized_keys": "ssh-ed25519 AAAA me",
        "etc/shadow": "root:$6$salt$hash:20000:0:99999:7:::\nme:$6$x$y:20000::::::\n",
    }
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    (root / "etc/shadow").chmod(0o640)
    return root


def test_seal_inside_removes_the_identity_and_keeps_the_rest(tmp_path):
    root = root_tree(tmp_path)
    assert identity.seal_inside(root) is True
    assert (root / "etc/machine-id").read_text() == ""
    gone = ("var/lib/dbus/machine-id", "etc/ssh/ssh_host_ed25519_key",
            "var/lib/systemd/random-seed", "var/lib/dhcp/dhclient.enp1s0.leases",
            "var/log/journal/0123", "var/log/wtmp", "var/log/syslog.1", "root/.bash_history",
            "root/.ssh/known_hosts")
    assert [rel for rel in gone if (root / rel).exists()] == []
    kept = ("etc/ssh/sshd_config", "var/log/apt/history.log", "root/.ssh/authorized_keys")
    assert all((root / rel).exists() for rel in kept)
    # Root's password only: another user's stays, and the file keeps its mode.
    assert (root / "etc/shadow").read_text() == (
        "root:*:20000:0:99999:7:::\nme:$6$x$y:20000::::::\n")
    assert (root / "etc/shadow").stat().st_mode & 0o777 == 0o640
    assert identity.seal_inside(root) is False  # twice: nothing more to remove


def test_seal_inside_never_writes_through_a_link_out_of_the_root(tmp_path):
    root = root_tree(tmp_path)
    host = tmp_path / "host-shadow"
    host.write_text("root:$6$host$hash:::::::\n")
    (root / "etc/shadow").unlink()
    (root / "etc/shadow").symlink_to(host)
    with pytest.raises(HostCreatorError, match="symbolic link"):
        identity.seal_inside(root)
    assert host.read_text() == "root:$6$host$hash:::::::\n"


# --- the refusals ------------------------------------------------------------------------

def test_an_unknown_format_is_refused():
    assert export.parse_format("ova") is Format.OVA
    with pytest.raises(InvalidInput, match=r"--format 'vdi' is not one of qcow2 \| vmdk"):
        export.parse_format("vdi")


def test_the_output_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert export.output_path("web", Format.QCOW2, None) == tmp_path / "web.qcow2"
    assert export.output_path("web", Format.RAW, tmp_path) == tmp_path / "web.raw"
    assert export.output_path("web", Format.OVA, Path("x.ova")) == tmp_path / "x.ova"


def job(testenv, output: Path, fmt: Format = Format.QCOW2, force: bool = False
        ) -> export.Export:
    disk = testenv.image("web1")
    if not disk.exists():
        disk.parent.mkdir(exist_ok=True)
        disk.write_bytes(b"\x01" * (1 << 20))
    record = Journal("web1", "debian", "trixie", disk, done=list(Stage),
                     status=Status.FINISHED)
    return export.Export(testenv.load(), "web1", fmt, output, force, record)


def test_an_existing_output_is_refused_without_force(testenv, tmp_path):
    target = tmp_path / "web1.qcow2"
    target.write_text("mine")
    with pytest.raises(InvalidInput, match="exists") as exc:
        export.check_output(job(testenv, target))
    assert exc.value.hint == "--force replaces it"
    export.check_output(job(testenv, target, force=True))
    (tmp_path / "dir.qcow2").mkdir()
    with pytest.raises(InvalidInput, match="is not a regular file"):
        export.check_output(job(testenv, tmp_path / "dir.qcow2", force=True))


def test_a_vms_disk_is_never_an_output(testenv):
    for force in (False, True):
        with pytest.raises(InvalidInput, match="where a VM's disk lives"):
            export.check_output(job(testenv, testenv.image("other"), force=force))


def test_an_output_in_a_missing_directory_is_refused(testenv, tmp_path):
    with pytest.raises(InvalidInput, match="does not exist"):
        export.check_output(job(testenv, tmp_path / "nope" / "x.qcow2"))


def test_the_room_needed_is_estimated_from_the_space_used(testenv, tmp_path, monkeypatch):
    used = 3 * GIB
    same = job(testenv, tmp_path / "x.ova", Format.OVA)
    # tmp_path and IMAGE_DIR (below it) share a file system: the copy and the output add up.
    assert export.needed_bytes(same, used) == {testenv.image_dir: used * 3}
    assert export.needed_bytes(job(testenv, tmp_path / "x.raw", Format.RAW), used) == {
        testenv.image_dir: used}
    assert export.needed_bytes(job(testenv, tmp_path / "x.qcow2"), used) == {
        testenv.image_dir: used * 2}
    monkeypatch.setattr(export.places, "free_bytes", lambda path: 1 << 20)
    with pytest.raises(InvalidInput, match=r"the export of web1 as qcow2 \(its disk uses "
                                           r"0\.0 GiB\) needs 0\.0 GiB, 0\.0 GiB are free"):
        export.check_room(job(testenv, tmp_path / "x.qcow2"))
    monkeypatch.setattr(export.places, "free_bytes", lambda path: 4 << 20)
    export.check_room(job(testenv, tmp_path / "x.qcow2"))


def test_the_firmware_follows_the_build(testenv, tmp_path):
    exported = job(testenv, tmp_path / "x.ova", Format.OVA)
    assert exported.efi is False
    exported.record.settings["FIRMWARE"] = "uefi"
    assert exported.efi is True
    exported.record.settings["FIRMWARE"] = "hybrid"  # BIOS boots it too: the wider choice
    assert exported.efi is False


def test_an_ova_has_one_stage_more():
    assert (export.stages(Format.OVA), export.stages(Format.QCOW2)) == (5, 4)


def test_an_output_larger_than_its_file_system_allows_is_refused(testenv, tmp_path,
                                                                 monkeypatch):
    # vfat, say, holds no file of 4 GiB or more: the file system's own answer is faked.
    monkeypatch.setattr(export.places, "probe", lambda directory, size=0: OSError(
        errno.EFBIG, "File too large") if size else None)
    with pytest.raises(InvalidInput, match="more than a file on the file system") as exc:
        export.check_output(job(testenv, tmp_path / "x.raw", Format.RAW))
    assert exc.value.hint.startswith("--output on another file system")
