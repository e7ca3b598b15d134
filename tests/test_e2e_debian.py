"""The real create-debian, then the disk booted under QEMU (TCG) and checked from inside."""

from __future__ import annotations

import re

import pytest
from conftest import DEBIAN_SUITE, TEST_SSH_KEY
from guest import check_report

from hostcreator.disk import partition, storage

pytestmark = pytest.mark.e2e


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
    # The one GRUB script, given the distribution's kernel.
    assert re.search(r"/root/bin/grub\.sh /dev/loop\d+ linux-image-amd64 grub-pc\n", text)


def test_disk_is_a_sparse_image_with_the_gpt_layout(debian_vm):
    image = debian_vm.image
    assert image.stat().st_size == 4 * partition.GIB
    assert image.stat().st_blocks * 512 < image.stat().st_size  # sparse
    assert storage.signatures(image) == ["PMBR", "gpt"]


def test_guest_boots_and_is_configured(debian_vm, debian_vm_report):
    report = debian_vm_report
    check_report(report, debian_vm.name, DEBIAN_SUITE)
    assert report["ssh"] == "active"


def test_secrets_are_in_no_log_command_line_hook_or_journal(debian_vm):
    password = (debian_vm.env.base / "root-password").read_text().strip()
    key = TEST_SSH_KEY.split()[1]  # the key material, not its comment
    log = (debian_vm.env.log_dir / f"{debian_vm.name}.log").read_text()
    # The log shows every command line: the commands are there...
    assert "+ chroot" in log and "chpasswd" in log
    hook_seen = (debian_vm.env.base / f"hook-seen-{debian_vm.name}").read_text()
    assert f"HOSTCREATOR_NAME={debian_vm.name}" in hook_seen
    journal = (debian_vm.env.journal_dir / f"{debian_vm.name}.json").read_text()
    assert "ROOT_PASSWORD_FILE" in journal  # the file's name, not what it holds
    places = {"log (and every command line)": log, "hook arguments and environment": hook_seen,
              "journal": journal, "output": debian_vm.result.stdout + debian_vm.result.stderr}
    for where, text in places.items():
        # ...but never the password (chpasswd reads it on stdin) nor the key.
        assert password not in text, where
        assert key not in text, where
