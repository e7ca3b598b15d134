"""Where a VM's files are: the one place that names them.

`VmPaths.of(config, name)` gives every file hostcreator keeps for VM NAME, and
can only be made for a valid name. The functions below it name a file inside
a directory; the state modules use them too when they list a directory without
a configuration at hand (`hostcreator status`, the tests' leak check), so the
rule is written once either way.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from hostcreator.config import Config, StorageKind
from hostcreator.errors import InvalidInput

LABEL = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")
STATE_SUFFIX = ".json"
ROOT_PASSWORD_FILE = "root-password"


def is_valid_name(name: str) -> bool:
    return LABEL.fullmatch(name) is not None


def validate_name(name: str) -> None:
    """NAME must be an RFC 1123 host label: it becomes the hostname and the disk's name."""
    if not is_valid_name(name):
        raise InvalidInput(
            f"{name!r} is not a valid host name",
            hint="use 1-63 lower-case letters, digits and '-', not starting or ending with '-'",
        )


DISK_SUFFIX = "-disk01"
IMAGE_SUFFIX = ".img"


def disk_name(name: str) -> str:
    """Both storage backends name NAME's disk alike: the image file's stem, the LV's name."""
    return f"{name}{DISK_SUFFIX}"


def name_of_disk(disk: str) -> str | None:
    """The VM whose disk (image file stem or LV) is called DISK, or None."""
    name = disk.removesuffix(DISK_SUFFIX)
    return name if name != disk and is_valid_name(name) else None


def image_file(image_dir: Path, name: str) -> Path:
    return image_dir / f"{disk_name(name)}{IMAGE_SUFFIX}"


def name_of_image(path: Path) -> str | None:
    """The VM whose image file PATH is, or None."""
    return name_of_disk(path.stem) if path.suffix == IMAGE_SUFFIX else None


def lv_path(vg: str, lv: str) -> Path:
    return Path("/dev") / vg / lv


def qemu_log_of(console_log: Path) -> Path:
    """Where boot-test's QEMU writes its own output: beside the console log it writes."""
    return console_log.with_suffix(".qemu.log")


def state_file(directory: Path, name: str) -> Path:
    """NAME's JSON state file in DIRECTORY (the build journal, mount-vm's state)."""
    return directory / f"{name}{STATE_SUFFIX}"


def mount_state_dir(state_dir: Path) -> Path:
    return state_dir / "mounts"


def lock_dir(state_dir: Path) -> Path:
    return state_dir / "locks"


def lock_file(state_dir: Path, name: str) -> Path:
    return lock_dir(state_dir) / f"{name}.lock"


@dataclass(frozen=True)
class VmPaths:
    name: str
    image: Path  # the disk with STORAGE=file
    disk: Path  # the disk of the configured storage: the image file or the LV
    log: Path
    serial_log: Path  # the domain's serial console (create-kvm)
    console_log: Path  # boot-test's console
    qemu_log: Path  # boot-test's QEMU's own output, beside its console
    journal: Path
    lock: Path
    mount_state: Path
    build_root: Path  # where create-* mounts the root file system while it builds
    mountpoint: Path  # where mount-vm mounts it
    secrets: Path  # SECRETS_DIR/NAME, only root may enter it
    root_password: Path  # the root password create-* generated

    @classmethod
    def of(cls, config: Config, name: str) -> VmPaths:
        validate_name(name)
        image = image_file(config.image_dir, name)
        lvm = config.vg_name if config.storage_kind is StorageKind.LVM else None
        return cls(
            name=name,
            image=image,
            disk=lv_path(lvm, disk_name(name)) if lvm else image,
            log=config.log_dir / f"{name}.log",
            serial_log=config.log_dir / f"{name}.serial.log",
            console_log=config.log_dir / f"{name}.console.log",
            qemu_log=qemu_log_of(config.log_dir / f"{name}.console.log"),
            journal=state_file(config.journal_dir, name),
            lock=lock_file(config.state_dir, name),
            mount_state=state_file(mount_state_dir(config.state_dir), name),
            build_root=config.state_dir / "build" / name,
            mountpoint=config.mount_dir / name,
            secrets=config.secrets_dir / name,
            root_password=config.secrets_dir / name / ROOT_PASSWORD_FILE,
        )
