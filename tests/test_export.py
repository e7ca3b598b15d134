"""hostcreator export of a small hand-made gold disk (tests/gold.py) to every format: what
qemu-img reads in the result, the OVA's layout, the image converted back to raw and
mounted (sealed: nothing of the VM's own identity), the source's image unchanged, and
nothing left behind after success, a refusal, a fault or SIGTERM. No VM is booted here
(test_export_e2e.py boots the exports of a real build)."""

from __future__ import annotations

import json
import os
import re
import subprocess
from contextlib import ExitStack
from pathlib import Path

import pytest
from appliance import check_ova, create_type, extent_file, read_vmdk
from conftest import (
    NOWHERE,
    TEST_SSH_KEY,
    command,
    hermetic_environ,
    run_cli,
    sha256,
    terminate_when,
    unique_name,
)
from gold import MACHINE_ID, TRACES, attached, make_gold, uuid_of

from hostcreator.host import loopdev, mounts

pytestmark = pytest.mark.root

ROOT_HASH = "$y$j9T$hctestsalt$hctesthashhctesthashhctesthashhctesthash"
# Beside gold.TRACES, what an appliance must not tell: logins, system logs, root's password.
SEALED = ("var/log/wtmp", "var/log/btmp", "var/log/lastlog", "var/log/syslog",
          "var/log/auth.log.1", "root/.ssh/known_hosts")
KEPT = {"etc/hostname", "root/.ssh/authorized_keys", "srv/data.txt"}


@pytest.fixture
def gold(testenv):
    testenv.write(LIBVIRT_URI=NOWHERE)
    name = unique_name()
    tree = {**{rel: "of the gold\n" for rel in SEALED},
            "etc/shadow": f"root:{ROOT_HASH}:20000:0:99999:7:::\ndaemon:*:20000:0:99999:7:::\n",
            "root/.ssh/authorized_keys": TEST_SSH_KEY + "\n", "srv/data.txt": "kept\n" * 1000}
    image = make_gold(testenv, name, tree)
    out = testenv.base / "out"
    out.mkdir()
    return name, image, out


def export(testenv, name: str, *args: str, **kwargs) -> subprocess.CompletedProcess[str]:
    return run_cli("hostcreator", "export", name, "--config", str(testenv.config), "--json",
                   *args, timeout=300, **kwargs)


def qemu_info(path: Path) -> dict:
    return json.loads(subprocess.run(["qemu-img", "info", "--output=json", str(path)],
                                     capture_output=True, text=True, check=True).stdout)


def back_to_raw(path: Path, fmt: str, raw: Path) -> None:
    subprocess.run(["qemu-img", "convert", "-f", fmt, "-O", "raw", str(path), str(raw)],
                   check=True, capture_output=True)


def read_sealed(env, raw: Path) -> tuple[dict[str, str], dict[str, bool]]:
    """Some files of RAW's root ("" when missing), and which traces exist."""
    with ExitStack() as stack:
        root = mounts.mount(stack, attached(stack, raw, read_only=True).root,
                            env.base / "look", fstype="ext4", options=("ro", "noload"))
        texts = {rel: (root / rel).read_text() if (root / rel).exists() else ""
                 for rel in (*KEPT, "etc/machine-id", "etc/shadow")}
        present = {rel: (root / rel).exists()
                   for rel in (*TRACES, *SEALED, "var/lib/dbus/machine-id")}
    (env.base / "look").rmdir()
    return texts, present


def first_mib(path: Path) -> bytes:
    with open(path, "rb") as f:
        return f.read(1 << 20)


def assert_nothing_left(env, image: Path, out: Path, kept: set[str]) -> None:
    assert [p.name for p in env.image_dir.iterdir()] == [image.name]
    assert {p.name for p in out.iterdir()} == kept
    assert loopdev.loop_devices_of(image) == []
    assert mounts.mounts_below(env.state_dir) == []
    assert not (env.state_dir / "build").exists() or not any(
        (env.state_dir / "build").iterdir())


@pytest.mark.parametrize("fmt", ["qcow2", "vmdk", "ova", "raw"])
def test_export_is_sealed_and_the_source_unchanged(testenv, gold, fmt):
    name, image, out = gold
    before = sha256(image)
    result = export(testenv, name, "--format", fmt, "--output", str(out))
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    path = out / f"{name}.{fmt}"
    assert summary["path"] == str(path) and summary["format"] == fmt
    assert (summary["size"], summary["sha256"]) == (path.stat().st_size, sha256(path))
    assert summary["root_password_removed"] is True
    stages = [title.split(" (")[0] for title, _seconds in summary["timings"]]
    assert stages[:2] == [f"copy {name}'s disk", "seal the copy"] and stages[-1] == "finish"
    assert summary["allocated"] == path.stat().st_blocks * 512 > 0
    warnings = [line for line in result.stderr.splitlines() if "warning" in line]
    assert all("libvirt" in line for line in warnings), result.stderr
    assert "    100%" in result.stderr or fmt == "raw", result.stderr
    assert sha256(image) == before
    assert_nothing_left(testenv, image, out, {path.name})
    assert f"export {name} as {fmt}" in testenv.log_dir.joinpath(f"{name}.log").read_text()

    disk, disk_format = path, {"ova": "vmdk"}.get(fmt, fmt)
    if fmt == "ova":
        _envelope, disk = check_ova(path, name, testenv.base / "ova")
    info = qemu_info(disk)
    assert (info["format"], info["virtual-size"]) == (disk_format, image.stat().st_size)
    if disk_format == "vmdk":
        assert info["format-specific"]["data"]["create-type"] == "streamOptimized"
        vmdk = read_vmdk(disk)
        assert (create_type(vmdk), extent_file(vmdk)) == ("streamOptimized", disk.name)
        assert vmdk.capacity == image.stat().st_size and vmdk.compressed
    if fmt == "qcow2":
        assert info["format-specific"]["data"]["compression-type"] == "zlib"
    if fmt == "raw":  # sparse: not every block of the image is there
        assert path.stat().st_blocks * 512 < path.stat().st_size

    raw = testenv.base / "back.raw"
    back_to_raw(disk, disk_format, raw)
    assert first_mib(raw) == first_mib(image)  # the same GPT
    texts, present = read_sealed(testenv, raw)
    assert not any(present.values()), present
    assert texts["etc/machine-id"] == ""
    assert texts["etc/hostname"] == f"{name}\n" and texts["srv/data.txt"] == "kept\n" * 1000
    assert texts["root/.ssh/authorized_keys"] == TEST_SSH_KEY + "\n"
    assert texts["etc/shadow"].splitlines() == ["root:*:20000:0:99999:7:::",
                                                "daemon:*:20000:0:99999:7:::"]
    assert MACHINE_ID not in texts["etc/machine-id"]
    assert sha256(image) == before


def test_refusals_and_force(testenv, gold):
    name, image, out = gold
    target = out / "web.qcow2"
    target.write_text("someone's file\n")
    result = export(testenv, name, "--format", "qcow2", "--output", str(target))
    assert result.returncode == 2, result.stderr
    assert f"{target} exists" in result.stderr
    assert json.loads(result.stdout)["error"]["exit_code"] == 2
    assert target.read_text() == "someone's file\n"

    mounted = run_cli("mount-vm", name, "--config", str(testenv.config), timeout=60)
    assert mounted.returncode == 0, mounted.stderr
    try:
        result = export(testenv, name, "--format", "qcow2", "--output", str(out))
        assert result.returncode == 3, result.stderr
        assert f"{name} is mounted at" in result.stderr
    finally:
        run_cli("umount-vm", name, "--config", str(testenv.config), timeout=60)
    assert_nothing_left(testenv, image, out, {target.name})

    with ExitStack() as stack:  # on a loop device (as a build or a user left it)
        loop = loopdev.attach(stack, image, read_only=True)
        result = export(testenv, name, "--format", "qcow2", "--output", str(out))
        assert result.returncode == 3, result.stderr
        assert f"is in use by {loop}" in result.stderr
    assert_nothing_left(testenv, image, out, {target.name})

    result = export(testenv, name, "--format", "qcow2", "--output", str(target), "--force")
    assert result.returncode == 0, result.stderr
    assert qemu_info(target)["format"] == "qcow2"
    assert_nothing_left(testenv, image, out, {target.name})


def test_a_fault_before_the_output_is_named_leaves_nothing(testenv, gold):
    name, image, out = gold
    before = sha256(image)
    env = {**hermetic_environ(), "HOSTCREATOR_FAULT": "export:before:publish"}
    result = export(testenv, name, "--format", "ova", "--output", str(out), env=env)
    assert result.returncode == 1, result.stderr
    assert "fault injected at export:before:publish" in result.stderr
    assert_nothing_left(testenv, image, out, set())
    assert sha256(image) == before


def children(pid: int) -> list[tuple[int, str]]:
    """(PID, command name) of PID's child processes."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            comm, fields = stat[stat.index("(") + 1:stat.rindex(")")], stat.split(")")[-1].split()
            if int(fields[1]) == pid:
                found.append((int(entry.name), comm))
    return found


def test_sigterm_while_converting_leaves_nothing(testenv, gold):
    """Random data (which compresses slowly) in the gold's root keeps qemu-img busy long
    enough to be seen; the export is stopped while it runs."""
    name, image, out = gold
    with ExitStack() as stack:
        root = mounts.mount(stack, attached(stack, image).root, testenv.base / "r",
                            fstype="ext4")
        with open(root / "srv" / "random", "wb") as f:
            f.write(os.urandom(36 << 20))
    (testenv.base / "r").rmdir()
    before = sha256(image)
    listed: list[set[str]] = []

    def converting(pid: int) -> bool:
        if not any(comm == "qemu-img" for _pid, comm in children(pid)):
            return False
        listed.append({p.name for p in out.iterdir()})
        return True

    code, err = terminate_when([command("hostcreator"), "export", name, "--format", "qcow2",
                                "--output", str(out), "--config", str(testenv.config)],
                               converting)
    assert code == 143, err
    assert "interrupted by SIGTERM" in err, err
    # Only the output's hidden name was there, while qemu-img wrote it.
    assert all(re.fullmatch(rf"\.{name}\.qcow2\.export-\d+", n) for n in listed[0]), listed
    assert_nothing_left(testenv, image, out, set())
    assert sha256(image) == before


def test_what_a_killed_export_left_is_removed_by_the_next(testenv, gold):
    name, image, out = gold
    # PID 4194304 is above any pid_max: that process is gone.
    copy_left = image.with_name(f".{image.name}.export-4194304")
    copy_left.write_bytes(b"half a copy")
    work_left = out / f".{name}.qcow2.export-4194304"
    work_left.mkdir()
    (work_left / f"{name}.qcow2").write_bytes(b"half an image")
    with ExitStack() as stack:
        loopdev.attach(stack, copy_left)
        stack.pop_all()  # as SIGKILL leaves it: still attached
    result = export(testenv, name, "--format", "qcow2", "--output", str(out))
    assert result.returncode == 0, result.stderr
    assert f"removed {copy_left}, left by an export that was killed" in result.stderr
    assert f"removed {work_left}, left by an export that was killed" in result.stderr
    assert loopdev.loop_devices_of(copy_left) == []
    assert_nothing_left(testenv, image, out, {f"{name}.qcow2"})


MARKER = b"hctest-what-the-vm-once-held-"


def test_the_swap_and_the_freed_blocks_are_discarded(testenv, gold):
    """Pages in the swap and a file NAME deleted stay on its disk; not in its export."""
    name, image, out = gold
    with ExitStack() as stack:
        nodes = attached(stack, image)
        with open(nodes.swap, "r+b") as swap:
            swap.seek(64 << 10)
            swap.write(MARKER * 1000)
        root = mounts.mount(stack, nodes.root, testenv.base / "r", fstype="ext4")
        secret = root / "root" / "deleted"
        secret.parent.mkdir(exist_ok=True)
        secret.write_bytes(MARKER * 100_000)
        os.sync()
        secret.unlink()
    (testenv.base / "r").rmdir()
    assert MARKER in image.read_bytes()
    result = export(testenv, name, "--format", "raw", "--output", str(out))
    assert result.returncode == 0, result.stderr
    raw = out / f"{name}.raw"
    assert MARKER not in raw.read_bytes()
    with ExitStack() as stack:
        nodes = attached(stack, raw, read_only=True)
        original = attached(stack, image, read_only=True)
        assert uuid_of(nodes.swap) == uuid_of(original.swap)  # fstab still finds it
