"""Where a VM's disk lives: an LVM logical volume or a raw image file.

Both backends name the same disk <NAME>-disk01 and hand the pipeline a path
(the LV's block device or the image file) that is then attached to a loop
device with partition scanning (loopdev.py), so partitions look the same for
both and no kpartx or device-mapper partition mapping is needed.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from hostcreator.config import Config, StorageKind
from hostcreator.disk.partition import GIB
from hostcreator.errors import DiskInUse, HostCreatorError, InvalidInput
from hostcreator.host import places
from hostcreator.log import logger
from hostcreator.paths import VmPaths, disk_name, lv_path
from hostcreator.run import run


class Storage(Protocol):
    @property
    def path(self) -> Path: ...

    def describe(self) -> str: ...

    def check(self) -> None: ...

    def exists(self) -> bool: ...

    def size_bytes(self) -> int: ...

    def create(self, size_gib: int) -> None: ...

    def check_room(self, size: int, what: str) -> None: ...

    def delete(self) -> None: ...


@dataclass
class FileStorage:
    """A sparse raw image file."""

    path: Path

    def describe(self) -> str:
        return f"image file {self.path}"

    def check(self) -> None:
        if not self.path.parent.is_dir():
            # Created on demand, but its parent must be a directory if it exists.
            for parent in self.path.parents:
                if parent.exists() and not parent.is_dir():
                    raise InvalidInput(f"IMAGE_DIR: {parent} is not a directory")
        if self.path.is_symlink() and not self.path.exists():
            raise InvalidInput(f"{self.describe()} is a dangling symbolic link (to "
                               f"{os.readlink(self.path)})",
                               hint="remove the link, or make it point to the disk image")

    def check_room(self, size: int, what: str) -> None:
        """A new image of SIZE bytes can be made; a warning when, filled, it would not fit."""
        if self.path.exists():
            return
        places.check_file_size(self.path, size, what)
        free = places.free_bytes(self.path.parent)
        if size > free:
            logger.warning("warning: %s: the sparse image of %.0f GiB is larger than the "
                           "%.1f GiB free on its file system: the VM fails once it fills "
                           "them", what, size / GIB, free / GIB)

    def exists(self) -> bool:
        if self.path.exists() and not self.path.is_file():
            raise InvalidInput(f"{self.path} exists and is not a regular file")
        return self.path.exists()

    def size_bytes(self) -> int:
        return self.path.stat().st_size

    def create(self, size_gib: int) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        logger.debug("creating sparse image %s of %d GiB", self.path, size_gib)
        with open(self.path, "xb") as f:
            f.truncate(size_gib * GIB)

    def delete(self) -> None:
        self.path.unlink(missing_ok=True)


@dataclass(frozen=True)
class LogicalVolume:
    name: str
    vg: str
    size: int
    path: Path


def lvs_command(vg: str) -> list[str]:
    return [
        "lvs", "--noheadings", "--nosuffix", "--units", "b", "--separator", "|",
        "-o", "lv_name,vg_name,lv_size,lv_path", vg,
    ]


def parse_lvs(output: str) -> list[LogicalVolume]:
    """Parse the output of lvs_command()."""
    volumes = []
    for line in output.splitlines():
        if not line.strip():
            continue
        fields = [f.strip() for f in line.split("|")]
        if len(fields) != 4:
            raise HostCreatorError(f"cannot parse lvs output line: {line!r}")
        name, vg, size, path = fields
        volumes.append(LogicalVolume(name, vg, int(size),
                                     Path(path) if path else lv_path(vg, name)))
    return volumes


def vgs_command(vg: str) -> list[str]:
    return ["vgs", "--noheadings", "--nosuffix", "--units", "b", "-o", "vg_free", vg]


def parse_vg_free(output: str) -> int:
    """The free bytes of the volume group vgs_command() printed."""
    try:
        return int(output.strip())
    except ValueError:
        raise HostCreatorError(f"cannot parse vgs output: {output.strip()!r}") from None


def lv_attr_command(vg: str, lv: str) -> list[str]:
    return ["lvs", "--noheadings", "-o", "lv_attr", f"{vg}/{lv}"]


def is_thin_pool(lv_attr: str) -> bool:
    """lv_attr's first letter (lvs(8)): t for a thin pool."""
    return lv_attr.strip().startswith("t")


def lvcreate_command(vg: str, lv: str, size_gib: int, thin_pool: str | None = None) -> list[str]:
    argv = ["lvcreate", "--yes", "--wipesignatures", "y", "-n", lv]
    if thin_pool:
        return [*argv, "-V", f"{size_gib}g", "--thin", f"{vg}/{thin_pool}"]
    return [*argv, "-L", f"{size_gib}g", vg]


def lvremove_command(vg: str, lv: str) -> list[str]:
    return ["lvremove", "--yes", f"{vg}/{lv}"]


def vg_free(vg: str) -> int:
    """The free bytes of the volume group VG, which must exist."""
    result = run(vgs_command(vg), check=False, capture=True)
    if result.returncode != 0:
        raise InvalidInput(
            f"volume group {vg!r} not found",
            hint="check VG_NAME, or use STORAGE=file for image files",
        )
    return parse_vg_free(result.stdout)


def check_thin_pool(vg: str, pool: str) -> None:
    """POOL (THIN_POOL) is a thin pool of the volume group VG."""
    result = run(lv_attr_command(vg, pool), check=False, capture=True)
    if result.returncode != 0 or not is_thin_pool(result.stdout):
        raise InvalidInput(
            f"THIN_POOL: volume group {vg} has no thin pool {pool!r}",
            hint=f"check THIN_POOL, or make the pool: lvcreate --type thin-pool "
                 f"-L SIZE -n {pool} {vg}",
        )


@dataclass
class LvmStorage:
    """A logical volume <NAME>-disk01 in VG_NAME, a thin volume when THIN_POOL is set."""

    vg: str
    lv: str
    thin_pool: str | None = None

    @property
    def path(self) -> Path:
        return lv_path(self.vg, self.lv)

    def describe(self) -> str:
        return f"logical volume {self.vg}/{self.lv}"

    def check(self) -> None:
        self.free()

    def free(self) -> int:
        """The free bytes of the volume group, which must exist."""
        return vg_free(self.vg)

    def check_thin_pool(self) -> None:
        """THIN_POOL names a thin pool of the volume group."""
        assert self.thin_pool is not None
        check_thin_pool(self.vg, self.thin_pool)

    def check_room(self, size: int, what: str) -> None:
        """A new logical volume of SIZE bytes fits in the free extents of the volume group;
        a new thin volume needs its pool, and may be bigger than the pool's free space
        (that is what thin pools are for: they fill as the VMs write). An existing LV is
        used where it is."""
        if self.exists():
            return
        if self.thin_pool:
            self.check_thin_pool()
            return
        free = self.free()
        if size > free:
            raise InvalidInput(f"{what}: {size / GIB:.0f} GiB do not fit in volume group "
                               f"{self.vg}: {free / GIB:.1f} GiB are free",
                               hint="choose a smaller SIZE, extend the volume group, "
                                    "or set THIN_POOL")

    def _volume(self) -> LogicalVolume | None:
        result = run(lvs_command(self.vg), capture=True)
        return next((v for v in parse_lvs(result.stdout) if v.name == self.lv), None)

    def exists(self) -> bool:
        return self._volume() is not None

    def size_bytes(self) -> int:
        volume = self._volume()
        if volume is None:
            raise HostCreatorError(f"{self.describe()} does not exist")
        return volume.size

    def create(self, size_gib: int) -> None:
        run(lvcreate_command(self.vg, self.lv, size_gib, self.thin_pool))

    def delete(self) -> None:
        run(lvremove_command(self.vg, self.lv))


def for_vm(config: Config, name: str) -> Storage:
    vm = VmPaths.of(config, name)
    if config.storage_kind is StorageKind.LVM:
        assert config.vg_name is not None
        return LvmStorage(config.vg_name, disk_name(name), config.thin_pool)
    return FileStorage(vm.image)


def signatures(path: Path) -> list[str]:
    """Partition-table and file-system signatures found on PATH (wipefs, read only)."""
    result = run(["wipefs", "--no-act", "--json", path], capture=True)
    if not result.stdout.strip():
        return []
    found = json.loads(result.stdout).get("signatures", [])
    return sorted({f"{s.get('type')}" for s in found})


def check_existing_disk(storage: Storage, force: bool, minimum_bytes: int) -> list[str]:
    """An existing disk may be built on; returns the signatures FORCE lets it overwrite.

    It must hold no partition table or file system unless FORCE is given, and it must
    be large enough. (That nothing uses it is asked before: inuse.refuse.)
    """
    found = signatures(storage.path)
    if found and not force:
        raise DiskInUse(
            f"{storage.describe()} already holds data ({', '.join(found)})",
            hint="remove it, or pass --force to overwrite it",
        )
    check_size(storage, minimum_bytes)
    return found


def check_size(storage: Storage, minimum_bytes: int, size: int | None = None) -> None:
    """An existing disk must hold the partitions; checked before anything is touched too."""
    if size is None:
        if not storage.exists():
            return
        size = storage.size_bytes()
    if size < minimum_bytes:
        raise InvalidInput(
            f"{storage.describe()} has {size / GIB:.1f} GiB, "
            f"at least {minimum_bytes / GIB:.1f} GiB are needed",
            hint="remove it (it is made anew with SIZE GiB), or make it bigger",
        )


def ensure_blank_disk(storage: Storage, size_gib: int, force: bool, minimum_bytes: int) -> int:
    """Create the disk, or check that an existing one may be used (check_existing_disk);
    return its size."""
    if not storage.exists():
        storage.create(size_gib)
        return storage.size_bytes()
    found = check_existing_disk(storage, force, minimum_bytes)
    if found:
        logger.warning("overwriting %s (%s) as --force was given", storage.describe(),
                       ", ".join(found))
    size = storage.size_bytes()
    logger.info("    reusing %s (%.1f GiB)", storage.describe(), size / GIB)
    return size
