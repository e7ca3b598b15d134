"""Shared fixtures: unique names, a test configuration, leak checks, a built VM."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from hostcreator import mounts, storage

DATA = Path(__file__).parent / "data"
BIN = Path(sys.executable).parent
# The downloaded packages (CACHE_DIR/debs) are shared between test runs; each
# test configuration has its own, empty, rootfs cache (TestEnv.cache_dir).
CACHE_DIR = Path(os.environ.get("HOSTCREATOR_TEST_CACHE", "/var/cache/hostcreator"))
DEBIAN_SUITE = os.environ.get("HOSTCREATOR_TEST_DEBIAN", "trixie")


def unique_name(prefix: str = "hctest") -> str:
    return f"{prefix}-{secrets.token_hex(3)}"


def command(name: str) -> str:
    """A console script of this installation (create-debian, hostcreator...)."""
    path = BIN / name
    return str(path) if path.exists() else name


@dataclass
class TestEnv:
    """A private configuration: images, logs, hooks and state under one directory."""

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
            "CACHE_DIR": str(self.cache_dir),
            "TIMEZONE": "Etc/UTC",
            "LOCALE": "C.UTF-8",
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
        """Loop devices on our images and mounts below our state directory."""
        found = []
        if self.image_dir.is_dir():
            for image in self.image_dir.glob("*.img"):
                found += [f"loop {d} -> {image}" for d in storage.loop_devices_of(image)]
        if self.state_dir.exists():
            found += [f"mount {m}" for m in mounts.mounts_below(self.state_dir)]
        return found

    def cleanup(self) -> None:
        for leak in self.leaks():
            if leak.startswith("mount "):
                mounts.unmount_tree(Path(leak.split()[1]))
        if self.image_dir.is_dir():
            for image in self.image_dir.glob("*.img"):
                for dev in storage.loop_devices_of(image):
                    subprocess.run(["losetup", "-d", dev], check=False)


def run_cli(*argv: str, timeout: float = 1800, **kwargs) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [command(argv[0]), *argv[1:]], capture_output=True, text=True, timeout=timeout,
        stdin=subprocess.DEVNULL, **kwargs,
    )


def _is_root() -> bool:
    return os.geteuid() == 0


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


@dataclass
class BuiltVM:
    name: str
    env: TestEnv
    result: subprocess.CompletedProcess[str]

    @property
    def image(self) -> Path:
        return self.env.image(self.name)

    def copy(self, new_name: str) -> Path:
        """A copy of the built disk under another VM's name (sparse, so it is quick)."""
        target = self.env.image(new_name)
        subprocess.run(["cp", "--sparse=always", self.image, target], check=True)
        return target


@pytest.fixture(scope="session")
def debian_vm(tmp_path_factory: pytest.TempPathFactory):
    """One Debian VM built by the real create-debian, with the report hook installed."""
    if not _is_root():
        pytest.skip("needs root")
    env = TestEnv(tmp_path_factory.mktemp("debian-vm"))
    env.write()
    shutil.copy(DATA / "report-postconfig.sh", env.hook_dir / "postconfig.sh")
    (env.hook_dir / "postconfig.sh").chmod(0o755)
    name = unique_name()
    result = run_cli("create-debian", name, DEBIAN_SUITE, "--config", str(env.config))
    if result.returncode != 0:
        env.cleanup()
        pytest.fail(f"create-debian failed:\n{result.stdout}\n{result.stderr}")
    yield BuiltVM(name, env, result)
    leaks = env.leaks()
    env.cleanup()
    assert not leaks, f"left behind: {leaks}"


@pytest.fixture(scope="session")
def debian_vm_report(debian_vm) -> dict[str, str]:
    """debian_vm booted once under QEMU: what its report unit printed."""
    from guest import boot_and_report

    console = debian_vm.env.log_dir / f"{debian_vm.name}.report.log"
    return boot_and_report(debian_vm.image, console)
