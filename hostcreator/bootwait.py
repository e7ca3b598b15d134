"""Waiting for a started guest to be up: its guest agent answers, or its login prompt shows.

The login prompt is looked for in the serial console's log file (written by
virtlogd, appended to at every start), in what was written after the start.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path

import libvirt

from hostcreator import virt
from hostcreator.errors import HostCreatorError

# getty's prompt at the start of a line; the kernel (or a unit) may write after it.
LOGIN_PROMPT = re.compile(rb"^\r?[A-Za-z0-9][A-Za-z0-9.-]* login: ", re.MULTILINE)
POLL_SECONDS = 1.0
LAST_LINES = 5
# Terminal control sequences GRUB and the kernel send to the serial console.
ESCAPES = re.compile(r"\x1b(\[[0-9;?]*[ -/]*[@-~]|\][^\x07\x1b]*(\x07|\x1b\\)?|[()][0-9A-Za-z]"
                     r"|[=>c78])|[\x00-\x08\x0b-\x1f\x7f]")


@dataclass
class Up:
    how: str
    seconds: float


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


def wait_for_guest(dom: libvirt.virDomain, console_log: Path | None, *, since: int,
                   timeout: float) -> Up:
    """Return once the guest of the running DOM is up; fail after TIMEOUT seconds."""
    name = dom.name()
    start = time.monotonic()
    where = f"; the whole console is in {console_log}" if console_log else ""
    while True:
        console = read_since(console_log, since)
        elapsed = time.monotonic() - start
        if LOGIN_PROMPT.search(console):
            return Up("its login prompt is on the serial console", elapsed)
        hostname = virt.agent_hostname(dom)
        if hostname is not None:
            return Up(f"its guest agent answers (host name {hostname!r})", elapsed)
        if not dom.isActive():
            raise HostCreatorError(
                f"{name} stopped before its guest was up; last console lines: "
                + " | ".join(last_lines(console)),
                hint=f"see the domain's log in /var/log/libvirt/qemu/{name}.log{where}",
            )
        if elapsed > timeout:
            raise HostCreatorError(
                f"{name} was not up after {timeout:.0f} s (no login prompt, no guest agent); "
                "last console lines: " + (" | ".join(last_lines(console)) or "none"),
                hint=f"it is still running: `virsh console {name}` shows its console{where}",
            )
        time.sleep(POLL_SECONDS)
