"""create-debian refuses an existing disk that holds data or is in use, before touching it.

Each test drives the real CLI against an existing image; none gets as far as the
network or debootstrap. --force overrides only the refusal of a disk that holds data.
"""

from __future__ import annotations

import hashlib
import subprocess
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from conftest import DOMAIN_XML, run_cli, unique_name

from hostcreator.disk import partition
from hostcreator.host import loopdev, mounts

if TYPE_CHECKING:
    from conftest import TestEnv

MIB = 1024 * 1024


def blank_image(env: TestEnv, name: str) -> Path:
    image = env.image(name)
    image.parent.mkdir(parents=True, exist_ok=True)
    with open(image, "wb") as f:
        f.truncate(4 * partition.GIB)
    return image


def fingerprint(image: Path) -> tuple[int, str, str]:
    """The size and the hashes of the first and the last MiB (the GPT backup)."""
    with open(image, "rb") as f:
        head = hashlib.sha256(f.read(MIB)).hexdigest()
        f.seek(-MIB, 2)
        tail = hashlib.sha256(f.read(MIB)).hexdigest()
    return image.stat().st_size, head, tail


def refused(env: TestEnv, name: str, *options: str) -> str:
    """Run create-debian NAME; it must refuse with exit code 3 and leave the image as it
    was. Returns the one error line."""
    image = env.image(name)
    before, loops = fingerprint(image), loopdev.loop_devices_of(image)
    result = run_cli("create-debian", name, "--config", str(env.config), *options, timeout=120)
    assert result.returncode == 3, result.stdout + result.stderr
    errors = [line for line in result.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1, result.stderr
    assert fingerprint(image) == before
    assert loopdev.loop_devices_of(image) == loops
    assert "debootstrap" not in result.stdout + result.stderr
    return errors[0]


def attach(image: Path) -> str:
    return subprocess.run(["losetup", "--show", "-f", image], capture_output=True, text=True,
                          check=True).stdout.strip()


@contextmanager
def sleeper(*prefix: str, reading: Path | None = None) -> Iterator[subprocess.Popen]:
    """A sleep (run by PREFIX, if given; with READING open as its stdin), killed at the end."""
    with open(reading or "/dev/null", "rb") as stdin:  # open in the sleep only, not in pytest
        proc = subprocess.Popen([*prefix, "sleep", "300"], stdin=stdin)
    try:
        deadline = time.monotonic() + 10
        while Path(f"/proc/{proc.pid}/comm").read_text().strip() != "sleep":
            assert time.monotonic() < deadline
            time.sleep(0.05)
        yield proc
    finally:
        proc.kill()
        proc.wait()


@contextmanager
def loop_mounted(image: Path, target: Path) -> Iterator[Path]:
    subprocess.run(["mkfs.ext4", "-q", "-F", image], check=True)
    target.mkdir()
    subprocess.run(["mount", "-o", "loop", image, target], check=True)
    try:
        yield target
    finally:
        subprocess.run(["umount", target], check=False)


@pytest.mark.root
@pytest.mark.parametrize("signature,command", [
    ("gpt", ["parted", "--script", "{}", "mklabel", "gpt"]),
    ("ext4", ["mkfs.ext4", "-q", "-F", "{}"]),
])
def test_a_disk_that_holds_data_is_refused_without_force(testenv, signature, command):
    name = unique_name()
    image = blank_image(testenv, name)
    subprocess.run([arg.format(image) for arg in command], check=True)
    error = refused(testenv, name)
    assert f"image file {image} already holds data (" in error
    assert signature in error


@pytest.mark.root
def test_a_disk_open_in_a_process_is_refused_even_with_force(testenv):
    name = unique_name()
    image = blank_image(testenv, name)
    with sleeper(reading=image) as proc:
        error = refused(testenv, name, "--force")
    assert f"{image} is open in process(es) {proc.pid} (sleep)" in error


@pytest.mark.root
def test_a_disk_on_a_loop_device_is_refused_even_with_force(testenv):
    name = unique_name()
    image = blank_image(testenv, name)
    loop = attach(image)
    try:
        error = refused(testenv, name, "--force")
    finally:
        subprocess.run(["losetup", "-d", loop], check=True)
    assert f"{image} is in use by {loop}" in error


@pytest.mark.root
def test_a_mounted_disk_is_refused_even_with_force(testenv, tmp_path):
    name = unique_name()
    image = blank_image(testenv, name)
    with loop_mounted(image, tmp_path / "mnt") as target:
        (loop,) = loopdev.loop_devices_of(image)
        error = refused(testenv, name, "--force")
    assert f"{image} is mounted: {loop} at {target}" in error
    assert "another mount namespace" not in error


@pytest.mark.root
def test_a_disk_with_a_partition_mounted_is_refused_even_with_force(testenv, tmp_path):
    name = unique_name()
    image = blank_image(testenv, name)
    subprocess.run(["parted", "--script", image, "mklabel", "gpt", "mkpart", "root", "ext4",
                    "1MiB", "100%"], check=True)
    target = tmp_path / "mnt"
    target.mkdir()
    with ExitStack() as stack:
        (part,) = loopdev.wait_for_partitions(loopdev.attach(stack, image), 1)
        subprocess.run(["mkfs.ext4", "-q", part], check=True)
        mounts.mount(stack, part, target, fstype="ext4")
        error = refused(testenv, name, "--force")
    assert f"{image} is mounted: {part} at {target}" in error


@pytest.mark.root
def test_a_disk_mounted_only_in_another_namespace_is_refused_even_with_force(testenv, tmp_path):
    name = unique_name()
    image = blank_image(testenv, name)
    with ExitStack() as stack:
        with loop_mounted(image, tmp_path / "mnt") as target:
            (loop,) = loopdev.loop_devices_of(image)
            proc = stack.enter_context(sleeper("unshare", "--mount", "--propagation", "private"))
        # Unmounted here, the file system and its loop device live on in proc's namespace.
        assert loopdev.loop_devices_of(image) == [loop]
        error = refused(testenv, name, "--force")
    assert (f"{image} is mounted in another mount namespace: {loop} at {target} in the "
            f"mount namespace of process {proc.pid} (sleep)") in error
    deadline = time.monotonic() + 10
    while loopdev.loop_devices_of(image):  # the namespace went with proc, autoclear follows
        assert time.monotonic() < deadline
        time.sleep(0.1)


@pytest.mark.libvirt
def test_the_disk_of_a_libvirt_domain_is_refused_even_with_force(testenv, domains, libvirtd):
    import libvirt

    name, other = unique_name(), unique_name("hcdomain")
    image = blank_image(testenv, name)
    testenv.log_dir.mkdir(parents=True, exist_ok=True)
    domains.append(other)
    conn = libvirt.open(libvirtd)
    try:
        dom = conn.defineXML(DOMAIN_XML.format(name=other, image=image,
                                               console=testenv.log_dir / f"{other}.log"))
        error = refused(testenv, name, "--force")
        assert f"{image} is the disk of libvirt domain {other} (shut off)" in error
        dom.create()
        error = refused(testenv, name, "--force")
        assert f"{image} is the disk of libvirt domain {other} (running)" in error
    finally:
        conn.close()


@pytest.mark.root
def test_when_libvirt_is_out_of_reach_a_warning_says_so_and_the_rest_applies(testenv):
    testenv.write(LIBVIRT_URI="qemu:///system?socket=/nonexistent/libvirt-sock")
    name = unique_name()
    image = blank_image(testenv, name)
    with sleeper(reading=image) as proc:
        result = run_cli("create-debian", name, "--config", str(testenv.config), "--force",
                         timeout=120)
    assert result.returncode == 3, result.stderr
    assert f"cannot tell whether a libvirt domain uses {image}" in result.stderr
    assert f"is open in process(es) {proc.pid} (sleep)" in result.stderr
