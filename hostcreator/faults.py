"""Fault injection: make a build fail at a named point, to prove that nothing is left.

`HOSTCREATOR_FAULT=after:bootstrap create-debian NAME` fails right after the
bootstrap stage, as if it had failed there by itself: the tests use it to check,
for every stage boundary, that every mount and loop device is undone, that the
journal tells the truth and that `--resume` then finishes a VM that boots.
Points: `before:STAGE` and `after:STAGE` for every stage of journal.Stage, and
`crash:PROGRAM` (e.g. `crash:config`), an unexpected exception in that command.
"""

from __future__ import annotations

import os

from hostcreator.errors import HostCreatorError

ENV = "HOSTCREATOR_FAULT"


class InjectedFault(HostCreatorError):
    """The failure asked for by HOSTCREATOR_FAULT."""


def point(where: str) -> None:
    """Fail here when HOSTCREATOR_FAULT names WHERE."""
    if os.environ.get(ENV) == where:
        raise InjectedFault(f"fault injected at {where} ({ENV})")


class InjectedCrash(RuntimeError):
    """An unexpected exception, as a defect would raise: not a HostCreatorError."""


def crash(program: str) -> None:
    """Raise an unexpected exception when HOSTCREATOR_FAULT is `crash:PROGRAM`."""
    if os.environ.get(ENV) == f"crash:{program}":
        raise InjectedCrash(f"crash injected in {program} ({ENV})")
