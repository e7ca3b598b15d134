"""Waiting for a started guest to be up: its guest agent answers, or its login prompt shows.

The login prompt is looked for in the serial console's log file (written by
virtlogd, appended to at every start), in what was written after the start; a
kernel panic there ends the waiting at once.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import libvirt

from hostcreator.domain import virt
from hostcreator.domain.console import LOGIN_PROMPT, last_lines, panic, read_since
from hostcreator.errors import HostCreatorError

POLL_SECONDS = 1.0


@dataclass
class Up:
    how: str
    seconds: float


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
        why = panic(console)
        if why is not None:
            raise HostCreatorError(
                f"{name} will not come up: its {why}",
                hint=f"it is hung, not stopped: `virsh destroy {name}` stops it{where}",
            )
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
