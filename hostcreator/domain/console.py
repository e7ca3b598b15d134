"""What a guest's serial console says: its login prompt, a kernel panic, its last lines.

Both ways of booting a guest read the console from a log file: boot-test's
plain QEMU writes it itself, a libvirt domain's is written by virtlogd and
appended to at every start. Both wait the same way (`watch`); each says how
its guest can stop and how to reach a hung one (a `Guest`).
"""

from __future__ import annotations

import re
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

from hostcreator.errors import HostCreatorError

# getty's prompt at the start of a line; the kernel (or a unit) may write after it.
LOGIN_PROMPT = re.compile(rb"^\r?[A-Za-z0-9][A-Za-z0-9.-]* login: ", re.MULTILINE)
LAST_LINES = 5
# Terminal control sequences GRUB and the kernel send to the serial console.
ESCAPES = re.compile(r"\x1b(\[[0-9;?]*[ -/]*[@-~]|\][^\x07\x1b]*(\x07|\x1b\\)?|[()][0-9A-Za-z]"
                     r"|[=>c78])|[\x00-\x08\x0b-\x1f\x7f]")
PANIC = re.compile(rb"Kernel panic - not syncing: *([^\r\n]*)")
# The first report of what went wrong before the panic, and where.
OOPS = re.compile(rb"(Oops: [^\r\n]*|BUG: [^\r\n]*|general protection fault[^\r\n]*)")
RIP = re.compile(rb"RIP: [0-9a-f]{4}:([^\s]+)")


def log_size(path: Path | None) -> int:
    """Where the output of the next start will begin in the console log."""
    try:
        return path.stat().st_size if path is not None else 0
    except OSError:
        return 0


def read_since(path: Path | None, offset: int) -> bytes:
    """The console log from OFFSET on (all of it if it was rotated or truncated meanwhile)."""
    if path is None:
        return b""
    try:
        with open(path, "rb") as f:
            f.seek(0, 2)
            f.seek(offset if f.tell() >= offset else 0)
            return f.read()
    except OSError:
        return b""


def last_lines(console: bytes, count: int = LAST_LINES) -> list[str]:
    text = ESCAPES.sub("", console.decode("utf-8", "replace"))
    lines = [line.strip() for line in re.split(r"[\r\n]+", text)]
    return [line for line in lines if line][-count:]


def panic(console: bytes) -> str | None:
    """'kernel panic: REASON (after: OOPS in FUNCTION)' once the guest's kernel panicked.

    A panicked kernel never comes up, whatever the time allowed: the waiting
    can stop at once, and say why.
    """
    found = PANIC.search(console)
    if found is None:
        return None
    what = "kernel panic: " + (found[1].decode("utf-8", "replace").strip() or "no reason given")
    oops = OOPS.search(console, 0, found.start())
    if oops is not None:
        what += f" (after: {oops[1].decode('utf-8', 'replace').strip()}"
        rip = RIP.search(console, oops.end(), found.start())
        what += f" in {rip[1].decode('utf-8', 'replace')})" if rip else ")"
    return what


@dataclass
class Seen:
    """The guest is up: the console so far, after how long, and by which sign."""

    console: bytes
    seconds: float
    how: str


class Guest(ABC):
    """A booting guest as `watch` needs it; each way of booting says the rest."""

    who = "the guest"
    timeout_detail = ""

    def other_sign(self) -> str | None:
        """Another sign that the guest is up than its console (the guest agent)."""
        return None

    @abstractmethod
    def stopped(self, console: bytes) -> HostCreatorError | None:
        """The error to raise when the guest stopped before it was up, else None."""

    @abstractmethod
    def panic_hint(self) -> str: ...

    @abstractmethod
    def timeout_hint(self) -> str: ...


def watch(guest: Guest, log: Path | None, *, timeout: float, poll: float, since: int = 0,
          until: re.Pattern[bytes] = LOGIN_PROMPT) -> Seen:
    """Wait until the console LOG shows UNTIL (after offset SINCE), or GUEST is up otherwise.

    A kernel panic ends the waiting at once, and so does the guest stopping;
    after TIMEOUT seconds the last console lines are told.
    """
    start = time.monotonic()
    while True:
        console = read_since(log, since)
        elapsed = time.monotonic() - start
        if until.search(console):
            return Seen(console, elapsed, "its login prompt is on the serial console")
        why = panic(console)
        if why is not None:
            raise HostCreatorError(f"{guest.who} will not come up: its {why}",
                                   hint=guest.panic_hint())
        sign = guest.other_sign()
        if sign is not None:
            return Seen(console, elapsed, sign)
        error = guest.stopped(console)
        if error is not None:
            raise error
        if elapsed > timeout:
            raise HostCreatorError(
                f"{guest.who} was not up after {timeout:.0f} s{guest.timeout_detail}; "
                "last console lines: " + (" | ".join(last_lines(console)) or "none"),
                hint=guest.timeout_hint(),
            )
        time.sleep(poll)
