"""State written down as JSON, one file per VM in a directory: the build journal, mount state.

A file is replaced atomically and durably, never seen half-written; one that
cannot be read is warned about and taken as absent, so that a corrupt file
never stops the command that would clear it.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

from hostcreator.log import logger
from hostcreator.paths import STATE_SUFFIX, is_valid_name, state_file


class Record(Protocol):
    @property
    def name(self) -> str: ...

    def to_json(self) -> dict[str, Any]: ...


R = TypeVar("R", bound=Record)


def tmp_of(path: Path) -> Path:
    return path.with_suffix(path.suffix + ".tmp")


def write(path: Path, data: dict[str, Any]) -> None:
    """Replace PATH with DATA: a reader, or a crash, leaves the old or the new, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_of(path)
    with open(tmp, "w") as f:
        json.dump(data, f, indent=2)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    # The rename itself reaches the disk too (the journal must outlive a power cut).
    with contextlib.suppress(OSError):
        fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@dataclass(frozen=True)
class StateFiles(Generic[R]):
    """The state files of one kind: DIRECTORY/NAME.json, WHAT in messages."""

    directory: Path
    what: str
    from_json: Callable[[dict[str, Any]], R]

    def path(self, name: str) -> Path:
        return state_file(self.directory, name)

    def exists(self, name: str) -> bool:
        return self.path(name).exists()

    def save(self, record: R) -> None:
        write(self.path(record.name), record.to_json())

    def load(self, name: str) -> R | None:
        """NAME's record, or None when there is none (an unreadable one is warned about)."""
        path = self.path(name)
        try:
            return self.from_json(json.loads(path.read_text()))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            logger.warning("warning: ignoring the unreadable %s %s (%s)", self.what, path, exc)
            return None

    def remove(self, name: str) -> None:
        path = self.path(name)
        path.unlink(missing_ok=True)
        tmp_of(path).unlink(missing_ok=True)

    def names(self) -> list[str]:
        """Every VM that has a file here, readable or not.

        A file not named after a valid VM name was not written by hostcreator: it is
        not one of these.
        """
        with contextlib.suppress(FileNotFoundError):
            return sorted(p.stem for p in self.directory.glob(f"*{STATE_SUFFIX}")
                          if is_valid_name(p.stem))
        return []
