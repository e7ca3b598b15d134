"""hostcreator list without libvirtd (LIBVIRT_URI points nowhere): VMs known by their
journals and disks, whatever state those are in."""

from __future__ import annotations

import json

import pytest
from conftest import NOWHERE, run_cli, unique_name

from hostcreator import paths
from hostcreator.vm import inventory

pytestmark = pytest.mark.unit


def test_an_unreadable_journal_is_warned_about_and_the_rest_is_listed(testenv, caplog):
    cfg = testenv.load(LIBVIRT_URI=NOWHERE)
    broken, other = sorted([unique_name(), unique_name()])
    testenv.journal_dir.mkdir()
    paths.state_file(testenv.journal_dir, broken).write_text("{not json")
    image = testenv.image(other)
    image.parent.mkdir()
    image.write_bytes(b"\0" * 4096)
    vms = inventory.list_vms(cfg)
    assert [(vm.name, vm.build, vm.domain) for vm in vms] == [
        (broken, "unknown", "unknown"), (other, "unknown", "unknown")]
    assert vms[1].disk is not None and vms[1].disk.path == str(image)
    assert f"the build journal {testenv.journal_dir / broken}.json cannot be read" in caplog.text


def test_only_files_named_as_a_vms_disk_are_disks(testenv):
    name = unique_name()
    testenv.image_dir.mkdir()
    for stem in (paths.disk_name(name), "Bad_Name-disk01", "notes", paths.disk_name("x")[:-1]):
        (testenv.image_dir / f"{stem}.img").write_bytes(b"")
    (testenv.image_dir / f"{paths.disk_name(name)}.img.bak").write_bytes(b"")
    assert list(inventory.image_disks(testenv.image_dir)) == [name]
    assert paths.name_of_image(paths.image_file(testenv.image_dir, name)) == name


def test_list_without_libvirt_says_so_and_lists_the_disks(testenv):
    conf = testenv.write(LIBVIRT_URI=NOWHERE)
    nothing = run_cli("hostcreator", "list", "-c", str(conf), timeout=60)
    assert nothing.returncode == 0, nothing.stderr
    assert f"no VM is known (IMAGE_DIR={testenv.image_dir}, JOURNAL_DIR={testenv.journal_dir})" \
        in nothing.stderr
    name = unique_name()
    image = testenv.image(name)
    image.parent.mkdir()
    image.write_bytes(b"\0" * 4096)
    result = run_cli("hostcreator", "list", "-c", str(conf), "--json", timeout=60)
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if "warning:" in line]
    assert len(warnings) == 1 and NOWHERE in warnings[0], result.stderr
    assert warnings[0].endswith(": the domains are not listed"), result.stderr
    [vm] = json.loads(result.stdout)["vms"]
    assert (vm["name"], vm["domain"], vm["build"], vm["addresses"]) == (
        name, "unknown", "unknown", [])
    assert vm["disk"] == {"path": str(image), "size": 4096, "used": image.stat().st_blocks * 512}
