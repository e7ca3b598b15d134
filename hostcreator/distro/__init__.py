"""What hostcreator knows about each distribution, one module per distribution."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from hostcreator.errors import InvalidInput

DEBOOTSTRAP_SCRIPTS = Path("/usr/share/debootstrap/scripts")
# What a suite name can look like; it becomes part of a path and of a URL.
SUITE_NAME = re.compile(r"[a-z][a-z0-9.+-]*")


@dataclass(frozen=True)
class Distribution:
    """The facts the pipeline needs about one distribution; no logic of its own."""

    name: str
    # The Origin field of the archive's Release files: tells its suites from others'.
    origin: str
    default_suite: str
    # Suites hostcreator can build even when the host's debootstrap has no script
    # for them, mapped to the debootstrap script that bootstraps them.
    suites: dict[str, str]
    components: tuple[str, ...]
    keyring: Path
    keyring_package: str
    kernel_package: str
    # Installed by debootstrap: what the later stages and a usable VM need.
    packages: tuple[str, ...]
    # What the kernel needs beside it that its package does not pull in.
    kernel_companions: tuple[str, ...] = ()
    # Pockets added to the VM's apt sources: (suite suffix, suffix of the mirror
    # URL); Debian's security pocket lives beside the mirror, at <mirror>-security.
    pockets: tuple[tuple[str, str], ...] = ()
    # Suites without such pockets (development suites).
    rolling: frozenset[str] = frozenset()

    @property
    def boot_packages(self) -> tuple[str, ...]:
        """What the boot loader stage makes sure of: the kernel and GRUB for BIOS."""
        return (self.kernel_package, *self.kernel_companions, "grub-pc")

    def knows(self, suite: str) -> bool:
        """SUITE is ours, or the host's debootstrap bootstraps it with one of our scripts."""
        if suite in self.suites:
            return True
        script = DEBOOTSTRAP_SCRIPTS / suite
        ours = {(DEBOOTSTRAP_SCRIPTS / s).resolve().name for s in self.suites.values()}
        return script.is_file() and script.resolve().name in ours

    def check_suite(self, suite: str) -> None:
        """SUITE is one we know, or our script's on the host; the archive is asked later."""
        known = ", ".join(self.suites)
        if SUITE_NAME.fullmatch(suite):
            if self.knows(suite):
                return
            for other in distributions():
                if other.knows(suite):
                    raise InvalidInput(
                        f"{suite!r} is a suite of {other.origin}, not of {self.origin}",
                        hint=f"create-{other.name} NAME {suite}; {self.name} suites: {known}")
        raise InvalidInput(f"unknown {self.name} suite {suite!r}", hint=f"known suites: {known}")

    def debootstrap_script(self, suite: str) -> Path | None:
        """The script to pass when the host's debootstrap has none for SUITE."""
        if (DEBOOTSTRAP_SCRIPTS / suite).is_file():
            return None
        return DEBOOTSTRAP_SCRIPTS / self.suites[suite]

    def suite_script(self, suite: str) -> Path:
        """The script debootstrap follows for SUITE: the host's own, else ours."""
        return self.debootstrap_script(suite) or DEBOOTSTRAP_SCRIPTS / suite


def distributions() -> tuple[Distribution, ...]:
    from hostcreator.distro import debian, ubuntu

    return debian.DEBIAN, ubuntu.UBUNTU


def get(name: str) -> Distribution:
    found = next((d for d in distributions() if d.name == name), None)
    if found is None:
        raise InvalidInput(f"unknown distribution {name!r}")
    return found
