"""boot-test: boot a VM's disk once under QEMU, from a throw-away snapshot, to its login."""

from __future__ import annotations

from pathlib import Path

from hostcreator.config import Config
from hostcreator.disk import storage
from hostcreator.domain import qemu
from hostcreator.errors import InvalidInput
from hostcreator.log import logger
from hostcreator.paths import VmPaths, validate_name

ACCELERATORS = ("tcg", "kvm")


def boot_test(config: Config, name: str, *, timeout: float, accel: str) -> Path:
    """Boot NAME's disk until its login prompt; returns the console log."""
    validate_name(name)
    if accel not in ACCELERATORS:
        raise InvalidInput(f"--accel {accel!r} is not {' or '.join(ACCELERATORS)}")
    disk = storage.for_vm(config, name)
    if not disk.exists():
        raise InvalidInput(f"{name} has no disk: {disk.describe()} does not exist")
    console = VmPaths.of(config, name).console_log
    logger.info("booting %s under QEMU (%s); console: %s", disk.describe(), accel, console)
    qemu.boot(disk.path, console, timeout=timeout, accel=accel)
    logger.info("%s booted to its login prompt", name)
    return console
