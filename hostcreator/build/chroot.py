"""A chroot session in the new root: /proc, /sys, a private /dev, blocked services.

The chroot does not get the host's /dev: it gets a small tmpfs with the usual
character devices, its own devpts, the VM's disk and partitions, and the
/dev/disk/by-uuid links of the VM's file systems. So nothing a package script
does can touch another disk of the host, and grub-mkconfig finds the root by
UUID even on hosts without udev (it falls back to the device name otherwise,
and a VM that names /dev/loop0p3 as its root boots nowhere).
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Mapping, Sequence
from contextlib import ExitStack
from pathlib import Path

from hostcreator.host.mounts import mount
from hostcreator.log import logger
from hostcreator.run import Result, run

CHAR_DEVICES = {
    "null": (1, 3, 0o666),
    "zero": (1, 5, 0o666),
    "full": (1, 7, 0o666),
    "random": (1, 8, 0o666),
    "urandom": (1, 9, 0o666),
    "tty": (5, 0, 0o666),
}
POLICY_RC_D = Path("usr/sbin/policy-rc.d")
# invoke-rc.d and deb-systemd-invoke ask policy-rc.d; 101 means "action forbidden".
POLICY_BLOCK = "#!/bin/sh\n# Written by hostcreator while it builds this VM.\nexit 101\n"


def _block_node(path: Path, device: Path) -> None:
    st = os.stat(device)
    os.mknod(path, 0o660 | stat.S_IFBLK, st.st_rdev)


def populate_dev(dev: Path, block_devices: Sequence[Path], uuids: Mapping[str, Path]) -> None:
    """Fill the empty tmpfs DEV with what a package script or GRUB needs."""
    for name, (major, minor, mode) in CHAR_DEVICES.items():
        os.mknod(dev / name, mode | stat.S_IFCHR, os.makedev(major, minor))
        os.chmod(dev / name, mode)
    for name, target in {"fd": "/proc/self/fd", "stdin": "/proc/self/fd/0",
                         "stdout": "/proc/self/fd/1", "stderr": "/proc/self/fd/2",
                         "ptmx": "pts/ptmx"}.items():
        os.symlink(target, dev / name)
    (dev / "pts").mkdir()
    (dev / "shm").mkdir(mode=0o1777)
    os.chmod(dev / "shm", 0o1777)
    for device in block_devices:
        _block_node(dev / device.name, device)
    by_uuid = dev / "disk" / "by-uuid"
    by_uuid.mkdir(parents=True)
    for uuid, device in uuids.items():
        os.symlink(f"../../{device.name}", by_uuid / uuid)


def block_services(stack: ExitStack, root: Path) -> None:
    """policy-rc.d forbids service starts until the undo on STACK removes it."""
    path = root / POLICY_RC_D
    backup = path.with_name("policy-rc.d.hostcreator-saved")
    if path.exists():
        path.rename(backup)
    path.write_text(POLICY_BLOCK)
    path.chmod(0o755)

    def unblock() -> None:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        if backup.exists():
            backup.rename(path)
        logger.debug("service starts unblocked in %s", root)

    stack.callback(unblock)


def enter(
    stack: ExitStack, root: Path, block_devices: Sequence[Path], uuids: Mapping[str, Path]
) -> None:
    """Prepare ROOT for chroot work; every mount and the block are undone by STACK."""
    mount(stack, "proc", root / "proc", fstype="proc")
    mount(stack, "sysfs", root / "sys", fstype="sysfs")
    mount(stack, "hostcreator-dev", root / "dev", fstype="tmpfs",
          options=("mode=0755", "size=16m", "nosuid"))
    populate_dev(root / "dev", block_devices, uuids)
    mount(stack, "devpts", root / "dev" / "pts", fstype="devpts",
          options=("newinstance", "ptmxmode=0666", "mode=0620", "gid=5"))
    mount(stack, "hostcreator-run", root / "run", fstype="tmpfs", options=("mode=0755",))
    block_services(stack, root)


def chroot_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = {"DEBIAN_FRONTEND": "noninteractive", "DEBCONF_NONINTERACTIVE_SEEN": "true"}
    env.update(extra or {})
    return env


def run_in(
    root: Path,
    argv: Sequence[str],
    env: Mapping[str, str] | None = None,
    *,
    input: bytes | str | None = None,
    secret_input: bool = False,
    what: str | None = None,
) -> Result:
    return run(["chroot", root, *argv], env=chroot_env(env), input=input,
               secret_input=secret_input, what=what or argv[0])


def apt_proxy_conf(root: Path, proxy: str | None) -> None:
    """Point apt inside the VM at PROXY (or remove hostcreator's setting)."""
    path = root / "etc" / "apt" / "apt.conf.d" / "01hostcreator-proxy"
    if proxy:
        path.write_text(f'Acquire::http::Proxy "{proxy}";\n')
    else:
        path.unlink(missing_ok=True)



UNSAFE_IO = Path("etc/dpkg/dpkg.cfg.d/hostcreator-unsafe-io")


def dpkg_unsafe_io(root: Path, enabled: bool) -> None:
    """dpkg in ROOT skips its fsyncs while the VM is built (the disk is flushed at the end)."""
    path = root / UNSAFE_IO
    if enabled:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("# Written by hostcreator while it builds this VM.\nforce-unsafe-io\n")
    else:
        path.unlink(missing_ok=True)
