"""Nothing left behind: an interrupted build and a failing hook undo everything."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from conftest import DEBIAN_SUITE, command, run_cli, unique_name

from hostcreator.host import loopdev, mounts

pytestmark = pytest.mark.root


def wait_for_text(path, text, proc, timeout=300):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and text in path.read_text(errors="replace"):
            return
        assert proc.poll() is None, "the build ended before it got there"
        time.sleep(0.2)
    raise AssertionError(f"{text!r} did not show up in {path}")


# Far enough that the tool runs dpkg in the target and has mounted /proc there.
IN_THE_CHROOT = {
    "debootstrap": "I: Installing core packages",
    "mmdebstrap": "I: installing remaining packages inside the chroot",
}


@pytest.mark.parametrize("sig,tool", [(signal.SIGINT, "debootstrap"),
                                      (signal.SIGTERM, "mmdebstrap")])
def test_signal_during_bootstrap_undoes_mounts_and_loop_device(testenv, sig, tool):
    testenv.write(BOOTSTRAP=tool)
    name = unique_name()
    proc = subprocess.Popen(
        [command("create-debian"), name, DEBIAN_SUITE, "--config", str(testenv.config)],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    log = testenv.log_dir / f"{name}.log"
    wait_for_text(log, IN_THE_CHROOT[tool], proc)
    root = testenv.state_dir / "build" / name
    # Mounted in the build's own mount namespace only.
    seen = Path(f"/proc/{proc.pid}/mountinfo").read_text()
    assert f" {root} " in seen and f" {root}/proc " in seen
    assert not mounts.is_mount_point(root)
    assert loopdev.loop_devices_of(testenv.image(name))
    proc.send_signal(sig)
    _out, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + sig, err
    assert f"interrupted by {signal.Signals(sig).name}" in err
    assert not mounts.mounts_below(testenv.state_dir)
    assert not loopdev.loop_devices_of(testenv.image(name))
    assert not mounts.processes_below(root)
    assert testenv.leaks() == []
    record = testenv.journal(name)
    assert record["status"] == "interrupted" and record["stage"] == "bootstrap"


def test_failing_hook_stops_the_build_with_its_exit_code_and_undoes_everything(testenv):
    testenv.write(VARIANT="minbase")
    testenv.install_hook(
        "postunpack.sh",
        "#!/bin/sh\necho 'hook: checking the site' \necho 'no site config for' \"$1\" >&2\n"
        "exit 7\n",
    )
    name = unique_name()
    result = run_cli("create-debian", name, DEBIAN_SUITE, "--config", str(testenv.config))
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    error = next(line for line in lines if "error:" in line)
    assert "postunpack.sh failed with exit code 7" in error
    assert f"no site config for {name}" in error
    assert "==> [6/9]" not in result.stderr  # nothing after the hook ran
    assert not mounts.mounts_below(testenv.state_dir)
    assert not loopdev.loop_devices_of(testenv.image(name))
    assert os.path.exists(testenv.image(name))


def test_a_killed_build_whose_namespace_holds_only_chrooted_processes_is_stopped(testenv):
    # A build killed in its chroot stage leaves only chrooted processes (dpkg, its
    # scripts) in its namespace, and these see the build root as /: the namespace
    # must still be known as the build's, or its dpkg holds the loop device forever.
    from hostcreator.build import recover
    from hostcreator.state.journal import Journal

    name = unique_name()
    root = testenv.state_dir / "build" / name
    root.mkdir(parents=True)
    chrooted = subprocess.Popen(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c",
         f"mount -t tmpfs hctest {root} && exec python3 -c "
         f"'import os, time; os.chroot(\"{root}\"); time.sleep(300)'"])
    try:
        deadline = time.monotonic() + 30
        while os.readlink(f"/proc/{chrooted.pid}/root") != str(root):
            assert time.monotonic() < deadline and chrooted.poll() is None
            time.sleep(0.05)
        namespace = os.readlink(f"/proc/{chrooted.pid}/ns/mnt")
        assert mounts.is_mount_point_of(chrooted.pid, root)
        record = Journal(name, "debian", DEBIAN_SUITE, testenv.image(name), stage="install",
                         pid=2**22 + 1, namespace=namespace, root=root)
        cleared = recover.stop_leftovers(testenv.load(), name, record)
        assert cleared.stopped == [chrooted.pid]
        assert chrooted.wait(timeout=30) != 0
    finally:
        chrooted.kill()
        chrooted.wait()
