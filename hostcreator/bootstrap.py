"""Bootstrap of the distribution's suite into the mounted root: debootstrap or mmdebstrap.

Both tools get the same inputs (suite, architecture, keyring, components,
mirror, variant, packages) and install the same packages (but for lsb-base,
which debootstrap's own resolver adds where apt takes sysvinit-utils'
Provides); mmdebstrap is faster (apt downloads in parallel, one dependency
resolution, dpkg under eatmydata). Either way the archive signatures are
checked against the keyring, and dpkg skips its fsyncs (force-unsafe-io): the
pipeline flushes the whole disk once at the end.
"""

from __future__ import annotations

import contextlib
import shlex
from dataclasses import dataclass
from pathlib import Path

from hostcreator import chroot, distro
from hostcreator.config import BootstrapTool, Config
from hostcreator.distro import Distribution
from hostcreator.errors import CommandError, HostCreatorError, InvalidInput
from hostcreator.run import missing_commands, require_commands, run

ARCH = "amd64"
DEBOOTSTRAP_PROGRAM = Path("/usr/sbin/debootstrap")
# debootstrap variants mmdebstrap builds the same way; others stay with debootstrap.
MMDEBSTRAP_SAME_VARIANTS = (None, "-", "minbase", "buildd")
# mmdebstrap's hooks that run dpkg under eatmydata (the target's own build of it,
# removed again at the end): no fsync or sync at all, not even in maintainer
# scripts. Measured here: a quarter off the bootstrap on top of force-unsafe-io.
EATMYDATA_HOOKS = Path("/usr/share/mmdebstrap/hooks/eatmydata")
# The hooks fetch eatmydata from the archive being bootstrapped: Debian has it in
# main, Ubuntu only in universe (without it there, every dpkg call would fail).
EATMYDATA_DISTRIBUTIONS = ("debian",)


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
    tool: BootstrapTool = BootstrapTool.DEBOOTSTRAP


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


def debootstrap_default_mirror() -> str:
    """The mirror debootstrap itself uses when a suite script declares none (Debian's)."""
    with contextlib.suppress(OSError):
        for line in DEBOOTSTRAP_PROGRAM.read_text().splitlines():
            if line.startswith("DEF_MIRROR="):
                return line.split("=", 1)[1].strip().strip("\"'")
    raise HostCreatorError(
        f"cannot find debootstrap's default mirror in {DEBOOTSTRAP_PROGRAM}",
        hint="set MIRROR in the configuration",
    )


def archive_mirror(p: BootstrapPlan) -> str:
    """The mirror the bootstrap uses: MIRROR, else the one debootstrap would pick."""
    if p.mirror:
        return p.mirror
    script = p.script or distro.DEBOOTSTRAP_SCRIPTS / p.suite
    try:
        return default_mirror(script)
    except HostCreatorError:
        return debootstrap_default_mirror()


def choose_tool(choice: BootstrapTool, variant: str | None) -> BootstrapTool:
    """BOOTSTRAP=auto: mmdebstrap when it is installed and knows the variant."""
    if choice is BootstrapTool.AUTO:
        if variant in MMDEBSTRAP_SAME_VARIANTS and not missing_commands(["mmdebstrap"]):
            return BootstrapTool.MMDEBSTRAP
        return BootstrapTool.DEBOOTSTRAP
    require_commands([choice.value])
    return choice


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
        tool=choose_tool(config.bootstrap_tool, config.variant),
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


def deb_cache_hooks(cache: Path) -> tuple[str, str]:
    """Shell commands for mmdebstrap sharing debootstrap's package cache (same names).

    The first (a setup hook, $1 the target) copies the cached packages in before
    apt downloads; the second (a customize hook) copies the packages of this
    build out, under a temporary name renamed into place so that a concurrent
    build never sees half a file, and drops other versions of those packages so
    the cache holds one version of each.
    """
    c = shlex.quote(str(cache))
    copy_in = ('mkdir -p "$1/var/cache/apt/archives" && '
               f"find {c} -maxdepth 1 -name '*.deb' -exec cp -t \"$1/var/cache/apt/archives\" "
               "{} +")
    copy_out = ('cd "$1/var/cache/apt/archives" && for f in *.deb; do [ -e "$f" ] || continue; '
                f'for o in {c}/"${{f%%_*}}"_*_"${{f##*_}}"; do '
                f'[ "$o" = {c}/"$f" ] || rm -f "$o"; done; '
                f'[ -e {c}/"$f" ] || {{ cp "$f" {c}/".$f.$$" && mv {c}/".$f.$$" {c}/"$f"; }}; '
                "done")
    return copy_in, copy_out


def mmdebstrap_argv(p: BootstrapPlan, target: Path) -> list[str]:
    argv = [
        "mmdebstrap",
        "--mode=root",
        "--format=directory",
        f"--arch={ARCH}",
        f"--keyring={p.keyring}",
        f"--components={','.join(p.distribution.components)}",
        f"--variant={p.variant or 'debootstrap'}",
        # Permanent in the tree as 99mmdebstrap; bootstrap() removes it afterwards.
        "--dpkgopt=force-unsafe-io",
        # Keep the package lists as debootstrap does: apt-get update then only
        # fetches what changed.
        "--skip=cleanup/apt/lists",
    ]
    if p.packages:
        argv.append(f"--include={','.join(p.packages)}")
    if p.cache_dir:
        # Keep downloaded essential packages until the hook has copied them out.
        copy_in, copy_out = deb_cache_hooks(p.cache_dir)
        argv += ["--skip=essential/unlink", f"--setup-hook={copy_in}",
                 f"--customize-hook={copy_out}"]
    if (p.distribution.name in EATMYDATA_DISTRIBUTIONS and EATMYDATA_HOOKS.is_dir()
            and not missing_commands(["dpkg-architecture"])):
        argv.append(f"--hook-dir={EATMYDATA_HOOKS}")
    argv += [p.suite, str(target), archive_mirror(p)]
    return argv


def bootstrap(p: BootstrapPlan, target: Path, apt_proxy: str | None) -> None:
    if p.cache_dir:
        p.cache_dir.mkdir(parents=True, exist_ok=True)
    env = {"http_proxy": apt_proxy} if apt_proxy else None
    if p.tool is BootstrapTool.MMDEBSTRAP:
        run(mmdebstrap_argv(p, target), env=env)
        (target / "etc" / "dpkg" / "dpkg.cfg.d" / "99mmdebstrap").unlink(missing_ok=True)
        return
    # debootstrap has no option for it, but its dpkg reads this file from the
    # target once the dpkg package is unpacked there.
    chroot.dpkg_unsafe_io(target, True)
    try:
        run(debootstrap_argv(p, target), env=env)
    except CommandError as exc:
        log = target / "debootstrap" / "debootstrap.log"
        with contextlib.suppress(OSError):
            exc.tail += log.read_text(errors="replace").splitlines()[-10:]
        raise
    chroot.dpkg_unsafe_io(target, False)


