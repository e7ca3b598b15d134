"""Bootstrap of the distribution's suite into the mounted root: debootstrap or mmdebstrap.

Both tools get the same inputs (suite, architecture, keyring, components,
mirror, variant, packages) and install the same packages (but for lsb-base,
which debootstrap's own resolver adds where apt takes sysvinit-utils'
Provides), the newest of the suite and its update pockets (mmdebstrap takes
them all at once; debootstrap knows one suite, so freshen.py upgrades its tree
and installs the kernel from them). mmdebstrap is faster (apt downloads in
parallel, one dependency resolution, dpkg under eatmydata). Either way the archive signatures are
checked against the keyring, and dpkg skips its fsyncs (force-unsafe-io): the
pipeline flushes the whole disk once at the end.
"""

from __future__ import annotations

import contextlib
import re
import shlex
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path

from hostcreator.build import chroot, initramfs, sources
from hostcreator.config import BootstrapTool, Config
from hostcreator.distro import Distribution
from hostcreator.errors import CommandError, HostCreatorError, InvalidInput
from hostcreator.log import logger
from hostcreator.run import missing_commands, require_commands, run

ARCH = "amd64"
DEBOOTSTRAP_PROGRAM = Path("/usr/sbin/debootstrap")
INSECURE_WARNING = (
    "WARNING: the signatures of the {name} archive are NOT verified "
    "(INSECURE_NO_SIGNATURE_CHECK, debootstrap --no-check-gpg): "
    "what is installed in {vm} may have been tampered with"
)
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
    # None only when the user asked to skip the signature check.
    keyring: Path | None
    mirror: str | None
    script: Path | None
    packages: tuple[str, ...]
    variant: str | None
    cache_dir: Path | None
    tool: BootstrapTool = BootstrapTool.DEBOOTSTRAP
    security_mirror: str | None = None


CASE = re.compile(r'case\s+"?\$\{?(\w+)\}?"?\s+in')


@dataclass
class _Case:
    """One `case` of a debootstrap script while it is being read."""

    value: str
    taken: bool = False  # a branch matched already: later ones cannot
    in_branch: bool = False
    branch_matches: bool = False


def default_mirror(script: Path, suite: str, arch: str = ARCH) -> str:
    """The mirror debootstrap uses for SUITE on ARCH with SCRIPT when it is given none.

    That is the `default_mirror` the script declares, else debootstrap's own
    DEF_MIRROR (Debian's scripts declare none).
    """
    mirror = declared_mirror(script, suite, arch)
    with contextlib.suppress(OSError):
        for line in DEBOOTSTRAP_PROGRAM.read_text(errors="replace").splitlines():
            if mirror is None and line.startswith("DEF_MIRROR="):
                mirror = line.partition("=")[2].strip().strip("\"'")
    if not mirror:
        raise HostCreatorError(
            f"neither {script} nor {DEBOOTSTRAP_PROGRAM} names a default mirror for "
            f"{suite} on {arch}",
            hint="set MIRROR in the configuration",
        )
    return mirror


def declared_mirror(script: Path, suite: str, arch: str = ARCH) -> str | None:
    """The `default_mirror` SCRIPT declares for SUITE on ARCH, if any.

    Scripts may choose it in `case $ARCH in` / `case $SUITE in` blocks (the
    Ubuntu script sends old suites to another archive), which are followed here
    as the shell would.
    """
    values = {"ARCH": arch, "SUITE": suite}
    cases: list[_Case] = []
    with contextlib.suppress(OSError):
        for raw in script.read_text().splitlines():
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            if match := CASE.fullmatch(line):
                cases.append(_Case(values.get(match[1], "")))
                continue
            if line == "esac" and cases:
                cases.pop()
                continue
            top = cases[-1] if cases else None
            if top is not None and not top.in_branch and ")" in line:
                patterns, _, line = line.lstrip("(").partition(")")
                top.in_branch = True
                top.branch_matches = not top.taken and any(
                    fnmatchcase(top.value, p.strip()) for p in patterns.split("|"))
                top.taken = top.taken or top.branch_matches
                line = line.strip()
            active = all(c.in_branch and c.branch_matches for c in cases)
            words = line.removesuffix(";;").split()
            if active and len(words) == 2 and words[0] == "default_mirror":
                return words[1]
            if top is not None and line.endswith(";;"):
                top.in_branch = False
    return None


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
    keyring: Path | None = config.keyring or distribution.keyring
    if config.insecure_no_signature_check:
        logger.warning(INSECURE_WARNING.format(name=distribution.name, vm="the VM"))
        keyring = None
    elif keyring is None or not keyring.is_file():
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
        # Without a keyring only debootstrap can go on (--no-check-gpg).
        tool=(BootstrapTool.DEBOOTSTRAP if keyring is None
              else choose_tool(config.bootstrap_tool, config.variant)),
        security_mirror=config.security_mirror,
    )


def mirror_of(distribution: Distribution, suite: str, mirror: str | None) -> str:
    """The mirror debootstrap downloads SUITE from: MIRROR, else the suite script's default."""
    return mirror or default_mirror(distribution.suite_script(suite), suite)


def archive_mirror(p: BootstrapPlan) -> str:
    """The mirror the bootstrap of P downloads from (mirror_of)."""
    return mirror_of(p.distribution, p.suite, p.mirror)


def source_lines(p: BootstrapPlan) -> list[str]:
    """The suite and its update pockets: where the bootstrap and the VM take packages from."""
    return sources.lines(p.distribution, p.suite, archive_mirror(p), p.security_mirror)


def installed_later(p: BootstrapPlan) -> tuple[str, ...]:
    """Packages of P that apt installs after the bootstrap, from the update pockets.

    debootstrap takes packages from one suite only: it would install the kernel
    of the release, and the upgrade would install a second one (and build a
    second initramfs) from the security pocket.
    """
    kernel = p.distribution.kernel_package
    if p.tool is BootstrapTool.DEBOOTSTRAP and kernel in p.packages:
        return (kernel,)
    return ()


def debootstrap_argv(p: BootstrapPlan, target: Path) -> list[str]:
    argv = [
        "debootstrap",
        f"--arch={ARCH}",
        f"--keyring={p.keyring}" if p.keyring else "--no-check-gpg",
        f"--components={','.join(p.distribution.components)}",
    ]
    if p.variant:
        argv.append(f"--variant={p.variant}")
    later = installed_later(p)
    if packages := [name for name in p.packages if name not in later]:
        argv.append(f"--include={','.join(packages)}")
    if p.cache_dir:
        argv.append(f"--cache-dir={p.cache_dir}")
    argv += [p.suite, str(target)]
    if p.script is not None:
        # debootstrap's positional arguments are SUITE TARGET [MIRROR [SCRIPT]].
        argv += [archive_mirror(p), str(p.script)]
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
    # The initramfs is built once, after the bootstrap (freshen.py), not by the
    # kernel and again by initramfs-tools' trigger.
    argv.append(f"--essential-hook={initramfs.shell_hook()}")
    if (p.distribution.name in EATMYDATA_DISTRIBUTIONS and EATMYDATA_HOOKS.is_dir()
            and not missing_commands(["dpkg-architecture"])):
        argv.append(f"--hook-dir={EATMYDATA_HOOKS}")
    # Every pocket at once: apt takes the newest version of each package.
    argv += [p.suite, str(target), *source_lines(p)]
    return argv


def bootstrap(p: BootstrapPlan, target: Path, apt_proxy: str | None) -> None:
    if p.cache_dir:
        p.cache_dir.mkdir(parents=True, exist_ok=True)
    env = {"http_proxy": apt_proxy} if apt_proxy else None
    if p.keyring is None:
        logger.warning(INSECURE_WARNING.format(name=p.distribution.name, vm=target))
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


