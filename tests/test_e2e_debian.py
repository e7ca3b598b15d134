"""The real create-debian, then the disk booted under QEMU (TCG) and checked from inside."""

from __future__ import annotations

import re

import pytest
from conftest import DEBIAN_SUITE
from guest import check_report

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
    check_report(report, debian_vm.name, DEBIAN_SUITE)
    assert report["ssh"] == "active"


def test_root_password_is_in_no_log_and_no_command_line(debian_vm):
    password = (debian_vm.env.base / "root-password").read_text().strip()
    log = (debian_vm.env.log_dir / f"{debian_vm.name}.log").read_text()
    assert "+ chroot" in log and "chpasswd" in log  # the log does show the commands...
    assert password not in log  # ...but never the password (it goes to chpasswd's stdin)
    assert password not in debian_vm.result.stdout + debian_vm.result.stderr
