"""Shared fixtures: unique names, a test configuration, leak checks, a built VM."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from hostcreator.disk import storage
from hostcreator.host import mounts
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


def unique_name(prefix: str = "hctest") -> str:
    return f"{prefix}-{secrets.token_hex(3)}"


def command(name: str) -> str:
    """A console script of this installation (create-debian, hostcreator...)."""
    path = BIN / name
    return str(path) if path.exists() else name


@dataclass
class TestEnv:
    """A private configuration: images, logs, hooks and state under one directory."""

    __test__ = False  # not a test class, whatever its name
    base: Path

    @property
    def config(self) -> Path:
        return self.base / "hostcreator.conf"

    @property
    def image_dir(self) -> Path:
        return self.base / "images"

    @property
    def log_dir(self) -> Path:
        return self.base / "log"

    @property
    def hook_dir(self) -> Path:
        return self.base / "hooks"

    @property
    def state_dir(self) -> Path:
        return self.base / "state"

    @property
    def mount_dir(self) -> Path:
        return self.base / "mnt"

    @property
    def journal_dir(self) -> Path:
        return self.base / "journal"

    def journal(self, name: str) -> dict:
        """NAME's build journal as JSON."""
        return json.loads((self.journal_dir / f"{name}.json").read_text())

    @property
    def cache_dir(self) -> Path:
        """A private CACHE_DIR whose debs/ is the shared package cache."""
        path = self.base / "cache"
        if not (path / "debs").is_symlink():
            path.mkdir(parents=True, exist_ok=True)
            (path / "debs").symlink_to(CACHE_DIR / "debs")
            if _is_root():
                (CACHE_DIR / "debs").mkdir(parents=True, exist_ok=True)
        return path

    def write(self, **extra: str) -> Path:
        values = {
            "SIZE": "4",
            "IMAGE_DIR": str(self.image_dir),
            "LOG_DIR": str(self.log_dir),
            "HOOK_DIR": str(self.hook_dir),
            "STATE_DIR": str(self.state_dir),
            "MOUNT_DIR": str(self.mount_dir),
            "JOURNAL_DIR": str(self.journal_dir),
            "CACHE_DIR": str(self.cache_dir),
            "TIMEZONE": "Etc/UTC",
            "LOCALE": "C.UTF-8",
            # Test domains run under TCG, where a Linux guest with two vCPUs at times
            # panics at boot (see qemu.qemu_argv).
            "VCPUS": "1",
        }
        values.update(extra)
        self.hook_dir.mkdir(parents=True, exist_ok=True)
        self.config.write_text("".join(f'{k}="{v}"\n' for k, v in values.items()))
        return self.config

    def image(self, name: str) -> Path:
        return self.image_dir / f"{storage.disk_name(name)}.img"

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
                found += [f"loop {d} -> {image}" for d in storage.loop_devices_of(image)]
        for top in (self.state_dir, self.mount_dir):
            if top.exists():
                found += [f"mount {m}" for m in mounts.mounts_below(top)]
        found += [f"mount {m} in the namespace of {pid}"
                  for pid, m in mounts_in_other_namespaces(self.base)]
        locks = self.state_dir / "locks"
        if locks.is_dir():
            found += [f"lock {p.stem} held: {holder}" for p in locks.glob("*.lock")
                      if (holder := lock.held_by(self.state_dir, p.stem))]
        return found

    def cleanup(self) -> None:
        for pid, _point in mounts_in_other_namespaces(self.base):
            subprocess.run(["kill", "-KILL", str(pid)], check=False)
        for leak in self.leaks():
            if leak.startswith("mount "):
                mounts.unmount_tree(Path(leak.split()[1]))
        if self.image_dir.is_dir():
            for image in self.image_dir.glob("*.img"):
                for dev in storage.loop_devices_of(image):
                    subprocess.run(["losetup", "-d", dev], check=False)


def mounts_in_other_namespaces(top: Path) -> list[tuple[int, str]]:
    """(PID, mount point) of mounts at or below TOP in mount namespaces other than ours."""
    ours = mounts.current_namespace()
    prefix = Path(os.path.realpath(top))
    return [(pid, str(entry.point)) for pid, namespace in mounts.namespaces() if namespace != ours
            for entry in mounts.mountinfo_of(pid)
            if entry.point == prefix or prefix in entry.point.parents]


def run_cli(*argv: str, timeout: float = 1800, **kwargs) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [command(argv[0]), *argv[1:]], capture_output=True, text=True, timeout=timeout,
        stdin=subprocess.DEVNULL, **kwargs,
    )


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


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if _is_root():
        return
    skip = pytest.mark.skip(reason="needs root (loop devices, mounts)")
    for item in items:
        if "root" in item.keywords or "e2e" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def testenv(tmp_path_factory: pytest.TempPathFactory):
    env = TestEnv(tmp_path_factory.mktemp("hc"))
    env.write()
    yield env
    leaks = env.leaks()
    env.cleanup()
    assert not leaks, f"left behind: {leaks}"


@pytest.fixture(scope="session")
def shared_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CACHE_DIR (rootfs cache) shared by the tests that build many VMs: the first fills it."""
    path = tmp_path_factory.mktemp("shared-cache")
    (CACHE_DIR / "debs").mkdir(parents=True, exist_ok=True)
    (path / "debs").symlink_to(CACHE_DIR / "debs")
    return path


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
              suite: str | None, **settings: str):
    """A VM built by the real create-<distribution>, with the report hook installed."""
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
    program = f"create-{distribution}"
    result = run_cli(program, name, *([suite] if suite else []), "--config", str(env.config))
    if result.returncode != 0:
        env.cleanup()
        pytest.fail(f"{program} failed:\n{result.stdout}\n{result.stderr}")
    yield BuiltVM(name, env, result)
    leaks = env.leaks()
    env.cleanup()
    assert not leaks, f"left behind: {leaks}"


# --- libvirt: a running libvirtd, domains that are always removed, a reachable disk ---

LIBVIRT_URI = "qemu:///system"

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


@pytest.fixture
def vm_env(tmp_path_factory: pytest.TempPathFactory):
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
