"""One run per VM name at a time, any number of names at once, and builds nobody else sees."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest
from conftest import DEBIAN_SUITE, command, run_cli, unique_name

from hostcreator.host import loopdev, mounts

pytestmark = pytest.mark.e2e


def create(env, name: str) -> subprocess.Popen:
    return subprocess.Popen([command("create-debian"), name, DEBIAN_SUITE, "--config",
                             str(env.config)], stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def pausing_hook(env, gate: Path, reached: Path) -> None:
    """A postunpack hook that waits (at most 10 minutes) until GATE exists."""
    env.install_hook("postunpack.sh", f"""#!/bin/sh
touch {reached}
i=0
while [ ! -e {gate} ] && [ $i -lt 3000 ]; do sleep 0.2; i=$((i+1)); done
""")


def wait_until(path: Path, proc: subprocess.Popen, timeout: float = 900) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, f"{path} did not appear"
        time.sleep(0.2)


def namespace_clone() -> subprocess.Popen:
    """A process in a mount namespace cloned from ours now, as libvirt makes for a VM."""
    proc = subprocess.Popen(["unshare", "--mount", "--propagation=slave", "sleep", "600"])
    deadline = time.monotonic() + 10
    while Path(f"/proc/{proc.pid}/comm").read_text().strip() != "sleep":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    return proc


def mounts_seen_by(pid: int, top: Path) -> list[str]:
    lines = Path(f"/proc/{pid}/mountinfo").read_text().splitlines()
    return [line.split()[4] for line in lines if line.split()[4].startswith(str(top))]


def test_a_second_run_for_the_same_name_fails_at_once_and_nobody_sees_the_build(
        testenv, shared_cache):
    testenv.write(CACHE_DIR=str(shared_cache))
    gate, reached = testenv.base / "gate", testenv.base / "reached"
    pausing_hook(testenv, gate, reached)
    name = unique_name()
    first = create(testenv, name)
    clone = None
    try:
        wait_until(reached, first)
        root = testenv.state_dir / "build" / name
        # The build's mounts are its own: not in our namespace, not in one cloned now.
        assert str(root) in mounts_seen_by(first.pid, root)
        assert f"{root}/proc" in mounts_seen_by(first.pid, root)
        assert mounts.mounts_below(root) == []
        clone = namespace_clone()
        assert mounts_seen_by(clone.pid, root) == []
        # Every other command for NAME stops at once and names the build's PID.
        for argv in (["create-debian", name, DEBIAN_SUITE], ["create-ubuntu", name],
                     ["create-debian", name, "--resume"], ["mount-vm", name],
                     ["umount-vm", name], ["hostcreator", "cleanup", name]):
            started = time.monotonic()
            result = run_cli(*argv, "--config", str(testenv.config), timeout=120)
            assert result.returncode == 4, (argv, result.stderr)
            assert f"{name} is busy: create-debian by PID {first.pid}" in result.stderr
            assert time.monotonic() - started < 30, argv
        kvm = run_cli("create-kvm", name, "--config", str(testenv.config), "--dry-run",
                      "--network-type", "user", "--virt-type", "qemu")
        assert kvm.returncode in (4, 6), kvm.stderr
        assert f"PID {first.pid}" in kvm.stderr
        status = run_cli("hostcreator", "status", "--config", str(testenv.config))
        assert f"build of {name} (debian {DEBIAN_SUITE}) is running (create-debian by PID " \
               f"{first.pid}), in stage postunpack" in status.stdout, status.stdout
        gate.touch()
        _out, err = first.communicate(timeout=1800)
        assert first.returncode == 0, err
    finally:
        gate.touch()
        if first.poll() is None:
            first.kill()
        if clone is not None:
            clone.kill()
            clone.wait()
    record = testenv.journal(name)
    assert record["status"] == "finished"
    assert len(record["runs"]) == 2  # exactly one run: started, finished
    assert loopdev.loop_devices_of(testenv.image(name)) == []


def test_four_names_build_in_parallel(testenv, shared_cache):
    testenv.write(CACHE_DIR=str(shared_cache))
    names = [unique_name() for _ in range(4)]
    procs = [create(testenv, name) for name in names]
    results = [(proc.communicate(timeout=2400), proc.returncode) for proc in procs]
    for name, ((_out, err), code) in zip(names, results, strict=True):
        assert code == 0, f"{name}: {err}"
        assert testenv.journal(name)["status"] == "finished"
        assert f"{name} is ready" in err
    uuids = {testenv.journal(name)["root_uuid"] for name in names}
    assert len(uuids) == 4
