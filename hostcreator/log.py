"""Progress on the terminal, every detail in the per-VM log file.

The console shows one line when a stage starts and its duration when it ends;
the log file gets those lines with time stamps plus every command and its
output (see run.py).
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

logger = logging.getLogger("hostcreator")


def setup_console(verbose: bool = False) -> None:
    """Send INFO (or with verbose, DEBUG) messages to stderr, once per process."""
    logger.setLevel(logging.DEBUG)
    if any(getattr(h, "_hc_console", False) for h in logger.handlers):
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setLevel(logging.DEBUG if verbose else logging.INFO)
    handler.setFormatter(logging.Formatter("%(message)s"))
    handler._hc_console = True  # type: ignore[attr-defined]
    logger.addHandler(handler)
    logger.propagate = False


@contextmanager
def log_file(path: Path) -> Iterator[Path]:
    """Append everything, commands and their output included, to PATH while active."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setLevel(logging.DEBUG)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname).1s %(message)s"))
    logger.setLevel(logging.DEBUG)
    logger.addHandler(handler)
    try:
        yield path
    finally:
        logger.removeHandler(handler)
        handler.close()


@dataclass
class Progress:
    """Numbered, timed stages; the durations are kept for the final summary."""

    total: int
    timings: list[tuple[str, float]] = field(default_factory=list)
    _note: str | None = field(default=None, init=False, repr=False)

    def note(self, text: str) -> None:
        """Add TEXT to the running stage's title when it ends and in the summary."""
        self._note = text

    @contextmanager
    def stage(self, title: str) -> Iterator[None]:
        number = len(self.timings) + 1
        logger.info("==> [%d/%d] %s", number, self.total, title)
        start = time.monotonic()
        ok = False
        self._note = None
        try:
            yield
            ok = True
        finally:
            elapsed = time.monotonic() - start
            if self._note:
                title = f"{title} ({self._note})"
            self.timings.append((title, elapsed))
            if ok:
                logger.info("    %s: done in %.1f s", title, elapsed)
            else:
                logger.info("    %s: stopped after %.1f s", title, elapsed)

    def summary(self) -> str:
        width = max((len(t) for t, _ in self.timings), default=0)
        lines = [f"  {title:<{width}}  {secs:7.1f} s" for title, secs in self.timings]
        total = sum(s for _, s in self.timings)
        lines.append(f"  {'total':<{width}}  {total:7.1f} s")
        return "\n".join(lines)
