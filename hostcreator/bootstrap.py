"""debootstrap of the distribution's suite into the mounted root."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

from hostcreator.config import Config
from hostcreator.distro import Distribution
from hostcreator.errors import CommandError, HostCreatorError, InvalidInput
from hostcreator.run import run

ARCH = "amd64"


@dataclass(frozen=True)
class BootstrapPlan:
    distribution: Distribution
    suite: str
    keyring: Path
    mirror: str | None
    script: Path | None
    packages: tuple[str, ...]
    variant: str | None
    cache_dir: Path | None


def default_mirror(script: Path) -> str:
    """The `default_mirror` a debootstrap suite script declares."""
    with contextlib.suppress(OSError):
        for line in script.read_text().splitlines():
            words = line.split()
            if len(words) == 2 and words[0] == "default_mirror":
                return words[1]
    raise HostCreatorError(
        f"{script} declares no default_mirror", hint="set MIRROR in the configuration"
    )


def plan(config: Config, distribution: Distribution, suite: str) -> BootstrapPlan:
    """Check the inputs of the bootstrap, before anything is touched."""
    distribution.check_suite(suite)
    keyring = config.keyring or distribution.keyring
    if not keyring.is_file():
        raise InvalidInput(
            f"the {distribution.name} archive keyring {keyring} is missing; "
            "signatures cannot be verified",
            hint=f"apt-get install {distribution.keyring_package}, "
            "or set KEYRING to a keyring file",
        )
    packages = tuple(dict.fromkeys((*distribution.packages, *config.packages)))
    return BootstrapPlan(
        distribution=distribution,
        suite=suite,
        keyring=keyring,
        mirror=config.mirror,
        script=distribution.debootstrap_script(suite),
        packages=packages,
        variant=config.variant,
        cache_dir=config.cache_dir / "debs" / f"{distribution.name}-{suite}-{ARCH}",
    )


def debootstrap_argv(p: BootstrapPlan, target: Path) -> list[str]:
    argv = [
        "debootstrap",
        f"--arch={ARCH}",
        f"--keyring={p.keyring}",
        f"--components={','.join(p.distribution.components)}",
    ]
    if p.variant:
        argv.append(f"--variant={p.variant}")
    if p.packages:
        argv.append(f"--include={','.join(p.packages)}")
    if p.cache_dir:
        argv.append(f"--cache-dir={p.cache_dir}")
    argv += [p.suite, str(target)]
    if p.script is not None:
        # debootstrap's positional arguments are SUITE TARGET [MIRROR [SCRIPT]].
        argv += [p.mirror or default_mirror(p.script), str(p.script)]
    elif p.mirror:
        argv.append(p.mirror)
    return argv


def bootstrap(p: BootstrapPlan, target: Path, apt_proxy: str | None) -> None:
    if p.cache_dir:
        p.cache_dir.mkdir(parents=True, exist_ok=True)
    env = {"http_proxy": apt_proxy} if apt_proxy else None
    try:
        run(debootstrap_argv(p, target), env=env)
    except CommandError as exc:
        log = target / "debootstrap" / "debootstrap.log"
        with contextlib.suppress(OSError):
            exc.tail += log.read_text(errors="replace").splitlines()[-10:]
        raise


