"""Where the shipped defaults (skel/, hooks/, etc/) are found."""

from __future__ import annotations

import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def shipped(name: str) -> Path:
    """The shipped directory NAME: an installed share/hostcreator/NAME, else the checkout's."""
    for base in (Path(sys.prefix) / "share" / "hostcreator", REPO_ROOT):
        if (base / name).is_dir():
            return base / name
    raise FileNotFoundError(f"shipped directory {name!r} not found")
