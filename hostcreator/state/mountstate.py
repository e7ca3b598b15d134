"""What mount-vm attached and mounted, written down the moment it happens.

One JSON file per VM, STATE_DIR/mounts/NAME.json, replaced atomically after
every step (loop device attached, each mount made), so that umount-vm - in
another process, maybe after mount-vm was killed - knows the disk, the loop
device and the mount point even when the configuration has changed since.
STATE_DIR is on /run by default: after a reboot nothing is mounted, and nothing
is written down either.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from hostcreator.log import logger
from hostcreator.state import statefile as jsonfile

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


def directory(state_dir: Path) -> Path:
    return state_dir / "mounts"


def path_of(state_dir: Path, name: str) -> Path:
    return directory(state_dir) / f"{name}.json"


def exists(state_dir: Path, name: str) -> bool:
    return path_of(state_dir, name).exists()


def save(state_dir: Path, state: MountState) -> None:
    """Replace the state file atomically: a reader sees the old or the new, never half."""
    jsonfile.write(path_of(state_dir, state.name), state.to_json())


def _read(path: Path) -> MountState | None:
    try:
        return MountState.from_json(json.loads(path.read_text()))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        logger.warning("warning: ignoring the unreadable state file %s (%s)", path, exc)
        return None


def load(state_dir: Path, name: str) -> MountState | None:
    """The state of NAME, or None when there is none (or it cannot be read: warned about)."""
    return _read(path_of(state_dir, name))


def remove(state_dir: Path, name: str) -> None:
    path = path_of(state_dir, name)
    path.unlink(missing_ok=True)
    jsonfile.tmp_of(path).unlink(missing_ok=True)


def names(state_dir: Path) -> list[str]:
    """Every VM that has a state file, readable or not."""
    with contextlib.suppress(FileNotFoundError):
        return sorted(p.stem for p in directory(state_dir).glob("*.json"))
    return []
