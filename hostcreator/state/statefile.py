"""State written down as JSON: replaced atomically and durably, never seen half-written."""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any


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
