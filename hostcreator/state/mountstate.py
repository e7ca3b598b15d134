"""What mount-vm attached and mounted, written down the moment it happens.

One JSON file per VM, STATE_DIR/mounts/NAME.json, replaced atomically after
every step (loop device attached, each mount made), so that umount-vm - in
another process, maybe after mount-vm was killed - knows the disk, the loop
device and the mount point even when the configuration has changed since.
STATE_DIR is on /run by default: after a reboot nothing is mounted, and nothing
is written down either.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from hostcreator.paths import mount_state_dir
from hostcreator.state.statefile import StateFiles

VERSION = 1


@dataclass
class MountState:
    name: str
    disk: Path
    mountpoint: Path
    read_only: bool
    loop: Path | None = None
    mounts: list[Path] = field(default_factory=list)
    complete: bool = False
    pid: int = 0
    since: str = ""

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data.update(
            version=VERSION,
            disk=str(self.disk),
            mountpoint=str(self.mountpoint),
            loop=str(self.loop) if self.loop else None,
            mounts=[str(m) for m in self.mounts],
        )
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> MountState:
        return cls(
            name=str(data["name"]),
            disk=Path(data["disk"]),
            mountpoint=Path(data["mountpoint"]),
            read_only=bool(data["read_only"]),
            loop=Path(data["loop"]) if data.get("loop") else None,
            mounts=[Path(m) for m in data.get("mounts", [])],
            complete=bool(data.get("complete", False)),
            pid=int(data.get("pid", 0)),
            since=str(data.get("since", "")),
        )


def files(state_dir: Path) -> StateFiles[MountState]:
    return StateFiles(mount_state_dir(state_dir), "state file", MountState.from_json)


def path_of(state_dir: Path, name: str) -> Path:
    return files(state_dir).path(name)


def exists(state_dir: Path, name: str) -> bool:
    return files(state_dir).exists(name)


def save(state_dir: Path, state: MountState) -> None:
    """Replace the state file atomically: a reader sees the old or the new, never half."""
    files(state_dir).save(state)


def load(state_dir: Path, name: str) -> MountState | None:
    """The state of NAME, or None when there is none (or it cannot be read: warned about)."""
    return files(state_dir).load(name)


def remove(state_dir: Path, name: str) -> None:
    files(state_dir).remove(name)


def names(state_dir: Path) -> list[str]:
    """Every VM that has a state file, readable or not."""
    return files(state_dir).names()
