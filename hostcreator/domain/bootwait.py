"""Waiting for a started guest to be up: its guest agent answers, or its login prompt shows.

The login prompt is looked for in the serial console's log file (written by
virtlogd, appended to at every start), in what was written after the start; a
kernel panic there ends the waiting at once (console.watch).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import libvirt

from hostcreator.domain import virt
from hostcreator.domain.console import Guest, last_lines, watch
from hostcreator.errors import HostCreatorError

POLL_SECONDS = 1.0


@dataclass
class Up:
    how: str
    seconds: float


class Domain(Guest):
    """A libvirt domain: up when its guest agent answers too; hung ones are left running."""

    timeout_detail = " (no login prompt, no guest agent)"

    def __init__(self, dom: libvirt.virDomain, console_log: Path | None) -> None:
        self.dom = dom
        self.who = dom.name()
        self.where = f"; the whole console is in {console_log}" if console_log else ""

    def other_sign(self) -> str | None:
        hostname = virt.agent_hostname(self.dom)
        return None if hostname is None else f"its guest agent answers (host name {hostname!r})"

    def stopped(self, console: bytes) -> HostCreatorError | None:
        if self.dom.isActive():
            return None
        return HostCreatorError(
            f"{self.who} stopped before its guest was up; last console lines: "
            + " | ".join(last_lines(console)),
            hint=f"see the domain's log in /var/log/libvirt/qemu/{self.who}.log{self.where}",
        )

    def panic_hint(self) -> str:
        return f"it is hung, not stopped: `virsh destroy {self.who}` stops it{self.where}"

    def timeout_hint(self) -> str:
        return f"it is still running: `virsh console {self.who}` shows its console{self.where}"


def wait_for_guest(dom: libvirt.virDomain, console_log: Path | None, *, since: int,
                   timeout: float) -> Up:
    """Return once the guest of the running DOM is up; fail after TIMEOUT seconds."""
    seen = watch(Domain(dom, console_log), console_log, since=since, timeout=timeout,
                 poll=POLL_SECONDS)
    return Up(seen.how, seen.seconds)
