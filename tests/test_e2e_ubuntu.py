"""The real create-ubuntu for the current LTS, then the disk booted under QEMU (TCG).

On this host's debootstrap the LTS is a suite it has no script for: the build
passes debootstrap the Ubuntu script, and verifies the archive signatures.
"""

from __future__ import annotations

import re

import pytest
from conftest import UBUNTU_SUITE, run_cli
from guest import boot_and_report, check_report

from hostcreator import distro
from hostcreator.build import bootstrap
from hostcreator.disk import partition, storage

pytestmark = pytest.mark.e2e
UBUNTU = distro.get("ubuntu")
SUITE = UBUNTU_SUITE or UBUNTU.default_suite


def test_create_ubuntu_bootstraps_the_lts_with_signatures_checked(ubuntu_vm):
    err = ubuntu_vm.result.stderr
    assert f"(ubuntu {SUITE})" in err
    for stage in ("disk", "partitions and file systems", f"bootstrap {SUITE}", "skeleton",
                  "postunpack hook", "chroot install", "postconfig hook", "boot loader",
                  "finish"):
        assert re.search(rf"    {stage}.*: done in \d+\.\d s", err), stage
    assert "NOT verified" not in err
    log = (ubuntu_vm.env.log_dir / f"{ubuntu_vm.name}.log").read_text()
    command = next(line for line in log.splitlines() if "+ debootstrap " in line)
    assert f"--keyring={UBUNTU.keyring}" in command
    assert "--no-check-gpg" not in command
    assert "--components=main,restricted,universe,multiverse" in command
    # debootstrap takes the release only: the kernel comes from the update pockets
    # afterwards, installed once (freshen.py).
    assert "linux-image-virtual" not in command
    assert re.search(r"\+ chroot \S+ apt-get .* install linux-image-virtual$", log, re.MULTILINE)
    script = UBUNTU.debootstrap_script(SUITE)
    if script is not None:  # the host's debootstrap does not know the suite
        mirror = bootstrap.default_mirror(script, SUITE)
        assert command.endswith(f" {SUITE} {ubuntu_vm.env.state_dir}/build/{ubuntu_vm.name}"
                                f" {mirror} {script}"), command
    assert re.search(r"/root/bin/grub\.sh /dev/loop\d+ linux-image-virtual initramfs-tools "
                     r"grub-pc\n", log)


def test_disk_is_a_sparse_image_with_the_gpt_layout(ubuntu_vm):
    image = ubuntu_vm.image
    assert image.stat().st_size == 4 * partition.GIB
    assert image.stat().st_blocks * 512 < image.stat().st_size
    assert storage.signatures(image) == ["PMBR", "gpt"]


def test_guest_boots_and_is_configured(ubuntu_vm):
    console = ubuntu_vm.env.log_dir / f"{ubuntu_vm.name}.report.log"
    report = boot_and_report(ubuntu_vm.image, console)
    check_report(report, ubuntu_vm.name, SUITE)


# The real archive is asked before anything is touched (quick: no build).


@pytest.mark.parametrize("program,suite,message", [
    # The host's debootstrap has a script for it, but the archive dropped it.
    ("create-ubuntu", "kinetic", "unknown ubuntu suite 'kinetic': the archive "),
    ("create-ubuntu", "bookworm", "'bookworm' is a suite of Debian, not of Ubuntu"),
    ("create-debian", "jammy", "'jammy' is a suite of Ubuntu, not of Debian"),
])
def test_the_archive_refuses_what_it_does_not_offer(testenv, program, suite, message):
    result = run_cli(program, "web1", suite, "--config", str(testenv.config), timeout=120)
    assert result.returncode == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and message in errors[0], result.stderr
    assert not testenv.image_dir.exists() and not testenv.log_dir.exists()
