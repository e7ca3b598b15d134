"""Faults at every stage boundary and in every script, signals and SIGKILL.

After each fault: no mount (in any mount namespace), no loop device, no lock
held, no process of the build left; the journal says what happened; and
`--resume` goes on from there. Each chain of faults ends with a resumed build
that finishes, and the VM it made boots.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
from conftest import (
    DATA,
    DEBIAN_SUITE,
    TestEnv,
    access_settings,
    command,
    run_cli,
    unique_name,
)
from guest import boot_and_report, check_report

from hostcreator import paths
from hostcreator.domain import qemu
from hostcreator.host import mounts
from hostcreator.state import journal, lock

pytestmark = pytest.mark.e2e

STAGES = list(journal.Stage)


def done_before(stage: str | None, including: bool = False) -> list[str]:
    if stage is None:
        return []
    return STAGES[:STAGES.index(stage) + (1 if including else 0)]


class Chain:
    """One VM, built by create-debian and resumed again and again."""

    def __init__(self, env: TestEnv, name: str) -> None:
        self.env = env
        self.name = name
        self.faults = 0
        self.runs = 0

    def argv(self, resume: bool) -> list[str]:
        return [command("create-debian"), self.name, DEBIAN_SUITE,
                "--config", str(self.env.config), *(["--resume"] if resume else [])]

    def create(self, resume: bool, fault: str | None = None) -> subprocess.CompletedProcess:
        env = {**_environ(), **({"HOSTCREATOR_FAULT": fault} if fault else {})}
        self.runs += 1
        return subprocess.run(self.argv(resume), capture_output=True, text=True, env=env,
                              stdin=subprocess.DEVNULL, timeout=1800)

    def start(self, resume: bool) -> subprocess.Popen:
        self.runs += 1
        return subprocess.Popen(self.argv(resume), stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    @property
    def log(self) -> Path:
        return self.env.log_dir / f"{self.name}.log"

    def journal(self) -> dict:
        return self.env.journal(self.name)

    def assert_nothing_left(self) -> None:
        record = self.journal()
        leaks = self.env.leaks()
        assert leaks == [], leaks
        assert lock.held_by(paths.lock_file(self.env.state_dir, self.name)) is None
        if record.get("namespace"):
            assert mounts.processes_in_namespace(record["namespace"]) == []
        if "disk" in record["done"]:
            assert self.env.image(self.name).exists()  # the disk itself stays

    def assert_stopped(self, status: str, stage: str | None, done: list[str],
                       error: str | None = None) -> dict:
        record = self.journal()
        assert record["status"] == status, record
        assert record["stage"] == stage, record
        assert record["done"] == done, record
        if error is not None:
            assert error in (record["error"] or ""), record
        return record


def _environ() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "HOSTCREATOR_FAULT"}


def report_env(env: TestEnv, **settings: str) -> None:
    """The test configuration with root's password and key and the guest's report hook."""
    env.write(**access_settings(env), **settings)
    shutil.copy(DATA / "report-postconfig.sh", env.hook_dir / "report.sh")
    (env.hook_dir / "report.sh").chmod(0o755)


def fail_once_hooks(env: TestEnv, flags: Path) -> None:
    """Hooks that fail once each (while their flag file exists), and a postunpack hook
    that puts an install-custom.sh into the VM that fails once inside the chroot."""
    flags.mkdir()
    for flag in ("postunpack", "postconfig"):
        (flags / flag).touch()
    env.install_hook("postunpack.sh", f"""#!/bin/sh
set -e
if [ -e {flags}/postunpack ]; then
    rm {flags}/postunpack
    echo "site check failed for $1" >&2
    exit 7
fi
cat > "$2/root/bin/install-custom.sh" <<'EOF'
#!/bin/sh
if [ -e /root/fail-once ]; then
    rm /root/fail-once
    echo "custom install failed" >&2
    exit 5
fi
echo custom > /root/custom-done
EOF
chmod 755 "$2/root/bin/install-custom.sh"
touch "$2/root/fail-once"
""")
    env.install_hook("postconfig.sh", f"""#!/bin/sh
if [ -e {flags}/postconfig ]; then
    rm {flags}/postconfig
    echo "postconfig failed for $1" >&2
    exit 9
fi
exec {env.hook_dir}/report.sh "$@"
""")


# (fault injected, stage running when it hit, finished-stages afterwards, expected error)
CHAIN = [
    ("before:disk", None, [], "fault injected at before:disk"),
    ("after:disk", "disk", done_before("disk", True), "fault injected at after:disk"),
    ("after:partitions", "partitions", done_before("partitions", True), None),
    ("after:bootstrap", "bootstrap", done_before("bootstrap", True), None),
    ("after:skeleton", "skeleton", done_before("skeleton", True), None),
    (None, "postunpack", done_before("postunpack"),
     "postunpack.sh failed with exit code 7: site check failed"),
    ("after:postunpack", "postunpack", done_before("postunpack", True), None),
    (None, "install", done_before("install"),
     "install.sh failed with exit code 5: custom install failed"),
    ("after:install", "install", done_before("install", True), None),
    (None, "postconfig", done_before("postconfig"),
     "postconfig.sh failed with exit code 9: postconfig failed"),
    ("after:postconfig", "postconfig", done_before("postconfig", True), None),
    ("after:bootloader", "bootloader", done_before("bootloader", True), None),
    ("before:release", "finish", done_before("finish"), "fault injected at before:release"),
]


def test_a_fault_at_every_boundary_and_in_every_script_then_resume_boots(
        vm_env, shared_cache):
    env = vm_env
    report_env(env, CACHE_DIR=str(shared_cache))
    fail_once_hooks(env, env.base / "flags")
    chain = Chain(env, unique_name())
    for i, (fault, stage, done, error) in enumerate(CHAIN):
        result = chain.create(resume=i > 0, fault=fault)
        chain.faults += 1
        assert result.returncode == 1, (fault, result.stderr)
        errors = [line for line in result.stderr.splitlines() if ": error: " in line]
        assert len(errors) == 1, result.stderr
        if error:
            assert error in errors[0], result.stderr
        chain.assert_stopped("failed", stage, done, error)
        chain.assert_nothing_left()
        if i == 1:
            # Without --resume or --restart an unfinished build is only described.
            again = run_cli("create-debian", chain.name, DEBIAN_SUITE, "--config",
                            str(env.config))
            assert again.returncode == 6, again.stderr
            assert f"the build of {chain.name} did not finish" in again.stderr
            assert "--resume" in again.stderr and "--restart" in again.stderr
            kvm = run_cli("create-kvm", chain.name, "--config", str(env.config),
                          "--network-type", "user", "--virt-type", "qemu", "--dry-run")
            assert kvm.returncode == 6 and "did not finish" in kvm.stderr, kvm.stderr
            status = run_cli("hostcreator", "status", "--config", str(env.config))
            assert f"build of {chain.name} (debian {DEBIAN_SUITE}) failed right after " \
                   "stage disk" in status.stdout, status.stdout
            assert chain.journal()["settings"]["SIZE"] == "4"
    result = chain.create(resume=True)
    assert result.returncode == 0, result.stderr
    assert "(done in an earlier run)" in result.stderr
    record = chain.assert_stopped("finished", None, STAGES)
    assert sum("resumed at stage" in run for run in record["runs"]) == len(CHAIN)
    chain.assert_nothing_left()
    assert chain.faults == 13
    console = env.log_dir / f"{chain.name}.report.log"
    report = boot_and_report(env.image(chain.name), console)
    check_report(report, chain.name, DEBIAN_SUITE)


def wait_for(path: Path, text: str, proc: subprocess.Popen, count: int = 1,
             timeout: float = 900) -> None:
    """Until TEXT shows COUNT times in PATH (the log grows over several runs)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_text(errors="replace").count(text) >= count:
            return
        assert proc.poll() is None, f"the build ended before {text!r}: {proc.stderr.read()}"
        time.sleep(0.2)
    raise AssertionError(f"{text!r} did not show up {count} times in {path}")


# Far enough into the stage that the tool runs dpkg in the target with /proc mounted
# there (mmdebstrap), and that install.sh runs apt in the chroot.
IN_BOOTSTRAP = "I: installing remaining packages inside the chroot"
IN_INSTALL = "### time zone"


def build_mounts_of(pid: int, root: Path) -> list[str]:
    """Mount points below ROOT as the process PID sees them."""
    text = Path(f"/proc/{pid}/mountinfo").read_text()
    return [line.split()[4] for line in text.splitlines()
            if line.split()[4].startswith(str(root))]


def test_signals_and_sigkill_in_the_longest_stages_then_resume_boots(vm_env):
    env = vm_env
    # Its own, empty rootfs cache and mmdebstrap: the bootstrap is long and real.
    env.write(BOOTSTRAP="mmdebstrap")
    chain = Chain(env, unique_name())
    root = env.state_dir / "build" / chain.name

    # SIGINT in the bootstrap: undone by the build itself.
    proc = chain.start(resume=False)
    wait_for(chain.log, IN_BOOTSTRAP, proc)
    # Its mounts are its own: none shows in our mount namespace.
    assert str(root) in build_mounts_of(proc.pid, root)
    assert mounts.mounts_below(root) == []
    proc.send_signal(signal.SIGINT)
    _out, err = proc.communicate(timeout=300)
    assert proc.returncode == 130 and "interrupted by SIGINT" in err, err
    chain.assert_stopped("interrupted", "bootstrap", done_before("bootstrap"),
                         "interrupted by SIGINT")
    chain.assert_nothing_left()

    # SIGKILL in the bootstrap, resumed: mmdebstrap goes on alone in the build's namespace
    # until hostcreator cleanup stops it.
    proc = chain.start(resume=True)
    wait_for(chain.log, IN_BOOTSTRAP, proc, count=2)
    proc.kill()
    proc.communicate(timeout=60)
    record = chain.journal()
    assert record["status"] == "running" and record["stage"] == "bootstrap"
    orphans = mounts.processes_in_namespace(record["namespace"])
    status = run_cli("hostcreator", "status", "--config", str(env.config))
    assert f"was killed in stage bootstrap (PID {proc.pid}" in status.stdout, status.stdout
    assert mounts.mounts_below(root) == []  # not even a killed build's mounts show here
    cleanup = run_cli("hostcreator", "cleanup", chain.name, "--config", str(env.config))
    assert cleanup.returncode == 0, cleanup.stderr
    assert "detached /dev/loop" in cleanup.stderr, cleanup.stderr
    if orphans:  # what the killed build started and still ran was stopped
        assert "process(es) left running" in cleanup.stderr, cleanup.stderr
    assert "--resume" in cleanup.stderr
    chain.assert_stopped("interrupted", "bootstrap", done_before("bootstrap"), "killed")
    chain.assert_nothing_left()
    again = run_cli("hostcreator", "cleanup", chain.name, "--config", str(env.config))
    assert again.returncode == 0 and "nothing was left to clean up" in again.stderr

    # SIGTERM in the chroot install, resumed after the bootstrap finished this time.
    proc = chain.start(resume=True)
    wait_for(chain.log, IN_INSTALL, proc)
    proc.send_signal(signal.SIGTERM)
    _out, err = proc.communicate(timeout=300)
    assert proc.returncode == 143 and "interrupted by SIGTERM" in err, err
    chain.assert_stopped("interrupted", "install", done_before("install"))
    chain.assert_nothing_left()

    # SIGKILL in the chroot install; this time --resume itself cleans up first.
    proc = chain.start(resume=True)
    wait_for(chain.log, IN_INSTALL, proc, count=2)
    proc.kill()
    proc.communicate(timeout=60)
    assert chain.journal()["status"] == "running"
    result = chain.create(resume=True)
    assert result.returncode == 0, result.stderr
    assert "was killed in stage install" in result.stderr
    assert "process(es) left running" in result.stderr or "detached" in result.stderr
    record = chain.assert_stopped("finished", None, STAGES)
    assert len(record["runs"]) == 2 * chain.runs, record["runs"]  # how each began and ended
    chain.assert_nothing_left()
    boot = qemu.boot(env.image(chain.name), env.log_dir / f"{chain.name}.console.log",
                     timeout=600)
    assert "login:" in boot.console


def test_restart_starts_an_unfinished_build_over_on_its_own_disk(testenv, shared_cache):
    testenv.write(CACHE_DIR=str(shared_cache))
    name = unique_name()
    env = {**_environ(), "HOSTCREATOR_FAULT": "after:bootstrap"}
    first = run_cli("create-debian", name, DEBIAN_SUITE, "--config", str(testenv.config),
                    env=env)
    assert first.returncode == 1
    uuid = testenv.journal(name)["root_uuid"]
    env["HOSTCREATOR_FAULT"] = "after:partitions"
    second = run_cli("create-debian", name, DEBIAN_SUITE, "--config", str(testenv.config),
                     "--restart", env=env)
    assert second.returncode == 1, second.stderr
    record = testenv.journal(name)
    assert record["done"] == ["disk", "partitions"] and record["root_uuid"] != uuid
    assert len(record["runs"]) == 2  # a new journal: one run, started and failed
    done = run_cli("create-debian", name, DEBIAN_SUITE, "--config", str(testenv.config),
                   "--resume")
    assert done.returncode == 0, done.stderr
    # A finished VM is never started over: its disk holds data, and that takes --force.
    again = run_cli("create-debian", name, DEBIAN_SUITE, "--config", str(testenv.config),
                    "--restart")
    assert again.returncode == 3 and "already holds data" in again.stderr, again.stderr
    assert testenv.journal(name)["status"] == "finished"


def test_after_a_power_cut_cleanup_touches_nothing_that_is_not_the_builds(
        testenv, shared_cache):
    """A reboot leaves a journal that says `running`, naming a namespace and a PID whose
    numbers may belong to someone else now: cleanup must not stop them."""
    testenv.write(CACHE_DIR=str(shared_cache))
    name = unique_name()
    env = {**_environ(), "HOSTCREATOR_FAULT": "after:bootstrap"}
    result = run_cli("create-debian", name, DEBIAN_SUITE, "--config", str(testenv.config),
                     env=env)
    assert result.returncode == 1, result.stderr
    bystander = subprocess.Popen(["unshare", "--mount", "--propagation=private", "sleep", "600"])
    try:
        deadline = time.monotonic() + 10
        while Path(f"/proc/{bystander.pid}/comm").read_text().strip() != "sleep":
            assert time.monotonic() < deadline
            time.sleep(0.05)
        record = journal.load(testenv.journal_dir, name)
        assert record is not None
        record.status = journal.Status.RUNNING  # as the power cut left it
        record.namespace = os.readlink(f"/proc/{bystander.pid}/ns/mnt")
        record.pid = bystander.pid
        journal.save(testenv.journal_dir, record)
        status = run_cli("hostcreator", "status", "--config", str(testenv.config))
        assert f"was killed right after stage bootstrap (PID {bystander.pid}" in status.stdout
        cleanup = run_cli("hostcreator", "cleanup", name, "--config", str(testenv.config))
        assert cleanup.returncode == 0, cleanup.stderr
        assert "nothing was left to clean up" in cleanup.stderr
        assert bystander.poll() is None, "cleanup stopped a process that was not the build's"
        record = testenv.journal(name)
        assert record["status"] == "interrupted" and "killed" in record["error"]
        assert "--resume" in cleanup.stderr
    finally:
        bystander.kill()
        bystander.wait()
