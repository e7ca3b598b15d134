"""The one exception type the library raises for people to read."""

from __future__ import annotations

import signal
from collections.abc import Sequence


class HostCreatorError(Exception):
    """An error with a one-line message and an optional hint on what to do."""

    exit_code = 1

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message


class InvalidInput(HostCreatorError):
    """Bad input found before anything was touched."""

    exit_code = 2


class DiskInUse(HostCreatorError):
    """The disk holds data or is used by something else."""

    exit_code = 3


class CommandError(HostCreatorError):
    """An external command failed; carries its argv, exit code and the tail of its output."""

    def __init__(
        self, argv: Sequence[str], returncode: int, tail: Sequence[str], what: str | None = None,
        last: str | None = None,
    ) -> None:
        self.argv = list(argv)
        self.returncode = returncode
        self.tail = list(tail)
        if returncode < 0:
            try:
                how = f"was killed by {signal.Signals(-returncode).name}"
            except ValueError:
                how = f"was killed by signal {-returncode}"
        else:
            how = f"failed with exit code {returncode}"
        if last is None:
            last = next((line for line in reversed(self.tail) if line.strip()), "")
        name = what or self.argv[0]
        message = f"{name} {how}" + (f": {last.strip()}" if last else "")
        super().__init__(message, hint="the full output is in the log file")


class Interrupted(BaseException):
    """SIGINT or SIGTERM arrived; unwinds like KeyboardInterrupt so every undo runs."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class DomainExists(HostCreatorError):
    """A libvirt domain of that name exists already; nothing was changed."""

    exit_code = 5


class UnfinishedBuild(HostCreatorError):
    """An earlier build of the VM did not finish; it is resumed or restarted only when asked."""

    exit_code = 6


class BrokenJournal(HostCreatorError):
    """A build journal that cannot be read: how that build ended is not known."""

    exit_code = 6
