"""The real create-debian, then the disk booted under QEMU (TCG) and checked from inside."""

from __future__ import annotations

import re

import pytest

from hostcreator import partition, storage

pytestmark = [pytest.mark.e2e, pytest.mark.root]


def test_create_debian_reports_each_stage_with_its_duration(debian_vm):
    err = debian_vm.result.stderr
    for stage in ("disk", "partitions and file systems", "bootstrap", "skeleton",
                  "postunpack hook", "chroot install", "postconfig hook", "boot loader",
                  "finish"):
        assert re.search(rf"==> \[\d/9\] {stage}", err), stage
        assert re.search(rf"    {stage}.*: done in \d+\.\d s", err), stage
    log = debian_vm.env.log_dir / f"{debian_vm.name}.log"
    text = log.read_text()
    assert "+ mmdebstrap " in text or "+ debootstrap " in text
    assert "+ chroot " in text and "/root/bin/install.sh" in text


def test_disk_is_a_sparse_image_with_the_gpt_layout(debian_vm):
    image = debian_vm.image
    assert image.stat().st_size == 4 * partition.GIB
    assert image.stat().st_blocks * 512 < image.stat().st_size  # sparse
    assert storage.signatures(image) == ["PMBR", "gpt"]


def test_guest_boots_and_is_configured(debian_vm, debian_vm_report):
    report = debian_vm_report
    assert report.get("hostname") == debian_vm.name, report
    root_uuid = report["root_uuid"]
    assert re.fullmatch(r"[0-9a-f-]{36}", root_uuid)
    assert report["fstab_root"] == f"UUID={root_uuid}"
    assert f"root=UUID={root_uuid}" in report["cmdline"]
    assert "console=ttyS0" in report["cmdline"]
    assert report["swap"].startswith("/dev/vda2")
    assert re.fullmatch(r"[0-9a-f-]{36}", report["swap_uuid"])
    # QEMU user networking hands out 10.0.2.15 by DHCP.
    assert re.fullmatch(r"e\w+=10\.0\.2\.\d+/24", report["ipv4"]), report["ipv4"]
    assert report["policy_rc_d"] == "absent"
    assert re.fullmatch(r"[0-9a-f]{32}", report["machine_id"])
    # The keys were made at this boot: none were left on the disk by the build.
    assert report["keygen"] == "yes"
    assert report["ssh_key"].startswith("SHA256:")
    assert report["ssh"] == "active"
    assert report["timezone"] == "Etc/UTC"
