"""Shared fixtures: unique names, a test configuration, leak checks, a built VM."""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from hostcreator import config, paths
from hostcreator.disk import partition
from hostcreator.host import loopdev, mounts
from hostcreator.state import lock

DATA = Path(__file__).parent / "data"
BIN = Path(sys.executable).parent
# The downloaded packages (CACHE_DIR/debs) are shared between test runs; each
# test configuration has its own, empty, rootfs cache (TestEnv.cache_dir).
CACHE_DIR = Path(os.environ.get("HOSTCREATOR_TEST_CACHE", "/var/cache/hostcreator"))
DEBIAN_SUITE = os.environ.get("HOSTCREATOR_TEST_DEBIAN", "trixie")
# Unset: create-ubuntu builds its default suite, the current LTS.
UBUNTU_SUITE = os.environ.get("HOSTCREATOR_TEST_UBUNTU")


ROOT_PASSWORD_PREFIX = "hcpw-"
TEST_SSH_KEY = ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHc3oF2N0m4x8ZzK1v2wQw8m2b6m6Yh0eGxJ1hcTeStK"
                " hctest@hostcreator")


def with_shared_debs(path: Path) -> Path:
    """PATH as a CACHE_DIR whose debs/ is the shared package cache."""
    if not (path / "debs").is_symlink():
        path.mkdir(parents=True, exist_ok=True)
        (path / "debs").symlink_to(CACHE_DIR / "debs")
        if _is_root():
            (CACHE_DIR / "debs").mkdir(parents=True, exist_ok=True)
    return path


def unique_name(prefix: str = "hctest") -> str:
    return f"{prefix}-{secrets.token_hex(3)}"


def command(name: str) -> str:
    """A console script of this installation (create-debian, hostcreator...)."""
    path = BIN / name
    return str(path) if path.exists() else name


# Where the test configuration points each directory setting, below the test's own
# directory. SKEL_DIR stays unset: its default is HOOK_DIR/skel (else the packaged
# skel/), below the test's directory as well. test_hermetic.py checks that no
# directory setting is left to its default.
DIRECTORIES = {"IMAGE_DIR": "images", "LOG_DIR": "log", "HOOK_DIR": "hooks",
               "STATE_DIR": "state", "MOUNT_DIR": "mnt", "JOURNAL_DIR": "journal",
               "CACHE_DIR": "cache", "SECRETS_DIR": "secrets"}


@dataclass
class TestEnv:
    """A private configuration: images, logs, hooks and state under one directory."""

    __test__ = False  # not a test class, whatever its name
    base: Path
    # Builds share the downloaded packages (CACHE_DIR/debs -> the host's package cache);
    # the unit tier builds nothing and keeps clear of the host's directories.
    shared_debs: bool = True

    def directory(self, key: str) -> Path:
        return self.base / DIRECTORIES[key]

    @property
    def config(self) -> Path:
        return self.base / "hostcreator.conf"

    @property
    def image_dir(self) -> Path:
        return self.directory("IMAGE_DIR")

    @property
    def log_dir(self) -> Path:
        return self.directory("LOG_DIR")

    @property
    def hook_dir(self) -> Path:
        return self.directory("HOOK_DIR")

    @property
    def state_dir(self) -> Path:
        return self.directory("STATE_DIR")

    @property
    def mount_dir(self) -> Path:
        return self.directory("MOUNT_DIR")

    @property
    def secrets_dir(self) -> Path:
        return self.directory("SECRETS_DIR")

    @property
    def journal_dir(self) -> Path:
        return self.directory("JOURNAL_DIR")

    @property
    def cache_dir(self) -> Path:
        """A private CACHE_DIR; for builds, its debs/ is the shared package cache."""
        return self.directory("CACHE_DIR")

    def journal(self, name: str) -> dict:
        """NAME's build journal as JSON."""
        return json.loads((self.journal_dir / f"{name}.json").read_text())

    def settings(self, **extra: str) -> dict[str, str]:
        """The test configuration: every directory in BASE, settings that keep tests
        quick and independent of the host's time zone and locale, then EXTRA."""
        values = {key: str(self.directory(key)) for key in DIRECTORIES}
        values.update({
            "SIZE": "4",
            # The keys of whoever runs the tests are the host's: the first-login test
            # gives a user's home of its own instead.
            "USER_SSH_KEYS": "no",
            "TIMEZONE": "Etc/UTC",
            "LOCALE": "C.UTF-8",
            # Test domains run under TCG, where a Linux guest with two vCPUs at times
            # panics at boot (see qemu.qemu_argv).
            "VCPUS": "1",
        })
        values.update(extra)
        return values

    def write(self, **extra: str) -> Path:
        """Write the configuration file (settings() with EXTRA); the hooks directory is
        made, and for builds the shared package cache linked."""
        self.hook_dir.mkdir(parents=True, exist_ok=True)
        if self.shared_debs:
            with_shared_debs(self.cache_dir)
        self.config.write_text("".join(f"{k}={shlex.quote(v)}\n"
                                       for k, v in self.settings(**extra).items()))
        return self.config

    def load(self, **extra: str) -> config.Config:
        """The configuration, as the commands read it (written first, with EXTRA)."""
        return config.load(self.write(**extra), environ={})

    def image(self, name: str) -> Path:
        return paths.image_file(self.image_dir, name)

    def install_hook(self, hook: str, text: str) -> Path:
        path = self.hook_dir / hook
        path.write_text(text)
        path.chmod(0o755)
        return path

    def leaks(self) -> list[str]:
        """Loop devices on our images, mounts below our directories in any mount namespace,
        and locks still held."""
        found = []
        if self.image_dir.is_dir():
            for image in self.image_dir.glob("*.img"):
                found += [f"loop {d} -> {image}" for d in loopdev.loop_devices_of(image)]
        for top in (self.state_dir, self.mount_dir):
            if top.exists():
                found += [f"mount {m}" for m in mounts.mounts_below(top)]
        found += [f"mount {m} in the namespace of {pid}"
                  for pid, m in mounts_in_other_namespaces(self.base)]
        locks = paths.lock_dir(self.state_dir)
        if locks.is_dir():
            found += [f"lock {p.stem} held: {holder}" for p in locks.glob("*.lock")
                      if (holder := lock.held_by(p))]
        return found

    def cleanup(self) -> None:
        for pid, _point in mounts_in_other_namespaces(self.base):
            subprocess.run(["kill", "-KILL", str(pid)], check=False)
        for leak in self.leaks():
            if leak.startswith("mount "):
                mounts.unmount_tree(Path(leak.split()[1]))
        if self.image_dir.is_dir():
            for image in self.image_dir.glob("*.img"):
                for dev in loopdev.loop_devices_of(image):
                    subprocess.run(["losetup", "-d", dev], check=False)


def mounts_in_other_namespaces(top: Path) -> list[tuple[int, str]]:
    """(PID, mount point) of mounts at or below TOP in mount namespaces other than ours."""
    ours = mounts.current_namespace()
    prefix = Path(os.path.realpath(top))
    return [(pid, str(entry.point)) for pid, namespace in mounts.namespaces() if namespace != ours
            for entry in mounts.mountinfo_of(pid)
            if entry.point == prefix or prefix in entry.point.parents]


def run_cli(*argv: str, timeout: float = 1800, **kwargs) -> subprocess.CompletedProcess[str]:
    kwargs.setdefault("env", hermetic_environ())
    return subprocess.run(
        [command(argv[0]), *argv[1:]], capture_output=True, text=True, timeout=timeout,
        stdin=subprocess.DEVNULL, **kwargs,
    )


def terminate_when(argv: list[str], ready, timeout: float = 120) -> tuple[int, str]:
    """Run the command ARGV (hermetic), send it SIGTERM once READY(pid) is true; its exit
    code and stderr."""
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=hermetic_environ())
    try:
        deadline = time.monotonic() + timeout
        while not ready(proc.pid):
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.01)
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode, err


def hand_made_disk(path: Path, root_fs: bool = True, only_root: bool = False) -> None:
    """A small disk as made by hand (no build journal): a GPT written by parted, with an
    ext4 root if ROOT_FS; hostcreator's partitions (bios, swap, root), or ONLY_ROOT (the
    one partition an old script may have made). It boots nothing (no boot loader)."""
    path.parent.mkdir(exist_ok=True)
    with open(path, "wb") as f:
        f.truncate(64 << 20)
    mib = 1 << 20
    if only_root:
        subprocess.run(["parted", "--script", str(path), "mklabel", "gpt", "mkpart", "root",
                        "ext4", "1MiB", "63MiB"], check=True, capture_output=True)
        root = partition.Part("root", mib, 62 * mib)
    else:
        plan = partition.Layout(partition.Part("bios_grub", mib, 4 * mib),
                                partition.Part("swap", 5 * mib, 8 * mib),
                                partition.Part("root", 13 * mib, 48 * mib))
        partition.write_table(path, plan)
        root = plan.root
    if root_fs:
        subprocess.run(["mkfs.ext4", "-q", "-F", "-E", f"offset={root.start}", str(path),
                        f"{root.size // 1024}k"], check=True, capture_output=True)


def sha256(path: Path) -> str:
    """The checksum of a disk image, read in pieces (images are GiBs)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _is_root() -> bool:
    return os.geteuid() == 0


def pytest_configure(config: pytest.Config) -> None:
    # pytest's numbered temp dirs are pruned by any other pytest run on the host,
    # even while a session-long build or boot still uses them: use our own.
    if not config.option.basetemp:
        config.option.basetemp = tempfile.mkdtemp(prefix="hostcreator-tests-")


def pytest_unconfigure(config: pytest.Config) -> None:
    # Keep logs and consoles for a look after a failure, not the disk images.
    base = Path(config.option.basetemp)
    if base.name.startswith("hostcreator-tests-"):
        for image in base.rglob("*.img"):
            if image.is_file():
                image.unlink()


# The tiers, lightest first; every test is in exactly one (the heaviest it needs: a
# libvirt or e2e test runs as root too). pyproject.toml registers them.
TIERS = ("unit", "root", "libvirt", "package", "e2e", "lab")


def tiers_of(item: pytest.Item) -> list[str]:
    return sorted({m.name for m in item.iter_markers() if m.name in TIERS}, key=TIERS.index)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    wrong = [f"{item.nodeid} ({', '.join(tiers) or 'none'})" for item in items
             if len(tiers := tiers_of(item)) != 1]
    if wrong:
        raise pytest.UsageError(f"each test needs exactly one tier marker of {', '.join(TIERS)}"
                                f"; these have not: {'; '.join(wrong)}")
    if _is_root():
        return
    skip = pytest.mark.skip(reason="needs root (loop devices, mounts)")
    for item in items:
        if "unit" not in item.keywords:
            item.add_marker(skip)


# HOSTCREATOR_* variables the tests themselves use; any other (HOSTCREATOR_CONFIG, a
# setting) is the developer's and must not reach the tests.
TEST_VARIABLES = ("HOSTCREATOR_TEST_", "HOSTCREATOR_REGENERATE", "HOSTCREATOR_FAULT")


def hermetic_environ() -> dict[str, str]:
    """os.environ without the developer's HOSTCREATOR_CONFIG and HOSTCREATOR_<KEY>."""
    return {k: v for k, v in os.environ.items()
            if not k.startswith("HOSTCREATOR_") or k.startswith(TEST_VARIABLES)}


@pytest.fixture(autouse=True)
def _no_host_configuration(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test reads the host's configuration file or the developer's variables."""
    for name in set(os.environ) - set(hermetic_environ()):
        monkeypatch.delenv(name)
    monkeypatch.setattr(config, "DEFAULT_FILE", NO_HOST / "default" / "hostcreator")
    monkeypatch.setattr(config, "LEGACY_FILE", NO_HOST / "default" / "kvm-hostcreator")


# Where the tests put the host's configuration files: nowhere.
NO_HOST = Path("/nonexistent/hostcreator-tests")


@pytest.fixture
def testenv(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    """The test's configuration (TestEnv.config), written; every directory setting points
    below the test's own directory. Checked for leaks afterwards."""
    unit = request.node.get_closest_marker("unit") is not None
    env = TestEnv(tmp_path_factory.mktemp("hc"), shared_debs=not unit)
    env.write()
    yield env
    leaks = env.leaks()
    env.cleanup()
    assert not leaks, f"left behind: {leaks}"


@pytest.fixture(scope="session")
def shared_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CACHE_DIR (rootfs cache) shared by the tests that build many VMs: the first fills it."""
    return with_shared_debs(tmp_path_factory.mktemp("shared-cache"))


@dataclass
class BuiltVM:
    name: str
    env: TestEnv
    result: subprocess.CompletedProcess[str]

    @property
    def image(self) -> Path:
        return self.env.image(self.name)

    def copy(self, new_name: str, into: TestEnv | None = None) -> Path:
        """A copy of the built disk under another VM's name (sparse, so it is quick)."""
        target = (into or self.env).image(new_name)
        subprocess.run(["cp", "--sparse=always", self.image, target], check=True)
        return target


def access_settings(env: TestEnv) -> dict[str, str]:
    """Root's password and key for ENV's VMs: the tests check that they work from inside,
    and that neither shows up in a log, a command line, a hook or a journal."""
    secret = env.base / "root-password"
    secret.write_text(f"{ROOT_PASSWORD_PREFIX}{secrets.token_hex(8)}\n")
    secret.chmod(0o600)
    keys = env.base / "authorized_keys"
    keys.write_text(TEST_SSH_KEY + "\n")
    return {"ROOT_PASSWORD_FILE": str(secret), "SSH_AUTHORIZED_KEYS": str(keys)}


def _built_vm(tmp_path_factory: pytest.TempPathFactory, distribution: str,
              suite: str | None, program: str | None = None, **settings: str):
    """A VM built by the real create-<distribution> (PROGRAM: another installation's),
    with the report hook installed."""
    if not _is_root():
        pytest.skip("needs root")
    env = TestEnv(tmp_path_factory.mktemp(f"{distribution}-vm"))
    env.write(**access_settings(env), **settings)
    shutil.copy(DATA / "report-postconfig.sh", env.hook_dir / "postconfig.sh")
    (env.hook_dir / "postconfig.sh").chmod(0o755)
    # What a hook is given, for the secrets test: its arguments and its environment.
    env.install_hook("postunpack.sh", f'#!/bin/sh\necho "$@" > {env.base}/hook-seen-$1\n'
                     f'env >> {env.base}/hook-seen-$1\n')
    name = unique_name()
    program = program or f"create-{distribution}"
    result = run_cli(program, name, *([suite] if suite else []), "--config", str(env.config),
                     cwd=env.base)
    if result.returncode != 0:
        env.cleanup()
        pytest.fail(f"{program} failed:\n{result.stdout}\n{result.stderr}")
    yield BuiltVM(name, env, result)
    leaks = env.leaks()
    env.cleanup()
    assert not leaks, f"left behind: {leaks}"


# --- libvirt: a running libvirtd, domains that are always removed, a reachable disk ---

LIBVIRT_URI = "qemu:///system"
# A libvirt that is never reached: tests without libvirtd point LIBVIRT_URI here, so that
# they neither ask nor see this host's domains.
NOWHERE = "qemu+unix:///system?socket=/nonexistent/libvirt-sock"

# A domain of type qemu (TCG works here, KVM does not) on a raw image, console to a file.
DOMAIN_XML = """\
<domain type='qemu'>
  <name>{name}</name>
  <memory unit='MiB'>512</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64'>hvm</type><boot dev='hd'/></os>
  <!-- QEMU runs as root: the test's image sits below a directory only root may enter. -->
  <seclabel type='static' model='dac' relabel='no'><label>+0:+0</label></seclabel>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='raw'/>
      <source file='{image}'/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <serial type='file'><source path='{console}'/></serial>
  </devices>
</domain>
"""


def _libvirt_answers() -> bool:
    result = subprocess.run(["virsh", "-c", LIBVIRT_URI, "version"], capture_output=True,
                            stdin=subprocess.DEVNULL, check=False)
    return result.returncode == 0


@pytest.fixture(scope="session")
def libvirtd() -> str:
    """The URI of a running libvirtd; started (with virtlogd) like setup.sh does if needed."""
    if not _is_root():
        pytest.skip("needs root")
    if not _libvirt_answers():
        for daemon in ("virtlogd", "libvirtd"):
            if subprocess.run(["pgrep", "-x", daemon], capture_output=True).returncode != 0:
                subprocess.run([daemon, "-d"], check=True)
        deadline = time.monotonic() + 60
        while not _libvirt_answers():
            assert time.monotonic() < deadline, "libvirtd did not answer within 60 s"
            time.sleep(0.5)
    return LIBVIRT_URI


@pytest.fixture
def domains(libvirtd: str):
    """Names of the domains a test makes (append them first); destroyed and undefined after."""
    yield from removed_domains(libvirtd)


def removed_domains(libvirtd: str) -> Iterator[list[str]]:
    """A list for the names of the domains a fixture makes; they are destroyed and
    undefined when the generator resumes."""
    import libvirt

    from hostcreator.domain import virt  # noqa: F401  libvirt's errors become exceptions only

    names: list[str] = []
    yield names
    conn = libvirt.open(libvirtd)
    try:
        for name in names:
            try:
                dom = conn.lookupByName(name)
            except libvirt.libvirtError:
                continue
            if dom.isActive():
                dom.destroy()
            if dom.isPersistent():
                dom.undefine()
    finally:
        conn.close()


def reachable_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestEnv]:
    """A TestEnv that QEMU, running as libvirt's unprivileged user, can reach: the
    directories above it are searchable (o+x), not only root's (0700)."""
    base = tmp_path_factory.getbasetemp()
    base.chmod(base.stat().st_mode | 0o011)
    env = TestEnv(tmp_path_factory.mktemp("vm"))
    env.base.chmod(0o711)
    env.write()
    env.image_dir.mkdir(parents=True)
    yield env
    leaks = env.leaks()
    env.cleanup()
    for image in env.image_dir.glob("*.img"):  # big; the logs stay for a look
        image.unlink()
    assert not leaks, f"left behind: {leaks}"


@pytest.fixture
def vm_env(tmp_path_factory: pytest.TempPathFactory):
    """A TestEnv that QEMU, running as libvirt's unprivileged user, can reach."""
    yield from reachable_env(tmp_path_factory)


@pytest.fixture(scope="session")
def debian_vm(tmp_path_factory: pytest.TempPathFactory):
    """One Debian VM built by the real create-debian, with the report hook installed."""
    yield from _built_vm(tmp_path_factory, "debian", DEBIAN_SUITE)


@pytest.fixture(scope="session")
def ubuntu_vm(tmp_path_factory: pytest.TempPathFactory):
    """One Ubuntu VM built by the real create-ubuntu (its default suite, the current LTS)."""
    # debootstrap, not the faster mmdebstrap the Debian VM gets: this proves that a
    # suite the host's debootstrap has no script for is built with the named script.
    yield from _built_vm(tmp_path_factory, "ubuntu", UBUNTU_SUITE, BOOTSTRAP="debootstrap")


@pytest.fixture(scope="session")
def debian_vm_report(debian_vm) -> dict[str, str]:
    """debian_vm booted once under QEMU: what its report unit printed."""
    from guest import boot_and_report

    console = debian_vm.env.log_dir / f"{debian_vm.name}.report.log"
    return boot_and_report(debian_vm.image, console)


def build_dist(out: Path) -> Path:
    """The sdist and the wheel of this checkout in OUT, built as `python -m build` builds
    them (the wheel from the sdist); returns the wheel."""
    result = subprocess.run([sys.executable, "-m", "build", "--outdir", str(out),
                             str(Path(__file__).parent.parent)],
                            capture_output=True, text=True, stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stdout + result.stderr
    (wheel,) = out.glob("hostcreator-*.whl")
    return wheel


@pytest.fixture(scope="session")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The directory of the sdist and the wheel (build_dist), built once per session."""
    out = tmp_path_factory.mktemp("dist")
    build_dist(out)
    return out


@pytest.fixture(scope="session")
def lab(dist: Path, shared_cache: Path, tmp_path_factory: pytest.TempPathFactory):
    """The lab host (tests/lab.py), running, with the volume group hclab and its thin pool:
    hostcreator installed from the session's wheel, its builds handed the session's
    rootfs cache entry (shared_cache) and the package cache. Stopped and its images
    removed after the session, however it ends."""
    if not _is_root():
        pytest.skip("needs root")
    from lab import Lab

    host = Lab(tmp_path_factory.mktemp("lab"))
    try:
        (wheel,) = dist.glob("hostcreator-*.whl")
        host.build(wheel, shared_cache)
        host.start()
        host.make_vg()
        yield host
    finally:
        host.destroy()
