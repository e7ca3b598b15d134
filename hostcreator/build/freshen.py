"""A root tree brought up to date with its archive: apt-get update and full-upgrade in it.

Every build runs this on the tree it gets, fresh from the bootstrap or unpacked
from the rootfs cache, before the later stages see it; so a VM is as current
as the archive at the moment it is built. On a cached tree it is near a no-op
(the bootstrap took the release and its update pockets, and a cache entry that
fell behind is stored again once upgraded, see cache.py).

The chroot gets /proc, /sys, a small /dev and blocked service starts
(chroot.enter), the host's resolv.conf, APT_PROXY, dpkg without fsyncs, and the
package cache CACHE_DIR/debs/<distribution>-<suite>-<arch> bind-mounted as
apt's archive directory: what the bootstrap downloaded is not downloaded again,
and what apt downloads here is there for the next build. A flock beside it
keeps two builds' apt runs apart (apt would refuse the second one). Everything
is undone before it returns: the tree is left as it was but for the upgrade.

The initramfs is built once whatever apt installs (initramfs.py). After an
upgrade only one kernel is left: the one the distribution's kernel
package depends on (an upgraded kernel package installs the new kernel beside
the old one, and apt's autoremove keeps the previous kernel on purpose).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
from collections.abc import Iterator, Sequence
from contextlib import ExitStack
from pathlib import Path

from hostcreator.build import bootstrap, chroot, initramfs, skeleton, sources
from hostcreator.build.bootstrap import BootstrapPlan
from hostcreator.host.mounts import mount
from hostcreator.log import logger
from hostcreator.run import run

ARCHIVES = Path("var/cache/apt/archives")
TRUSTED = Path("etc/apt/trusted.gpg.d")
# Keep the configuration files the tree has (the skeleton's, the bootstrap's).
APT_GET = ("apt-get", "-y", "-o", "Dpkg::Options::=--force-confdef",
           "-o", "Dpkg::Options::=--force-confold")
KERNEL_IMAGES = "linux-image-[0-9]*"
DPKG_STATUS = Path("var/lib/dpkg/status")


@contextlib.contextmanager
def package_cache_lock(debs: Path) -> Iterator[None]:
    """Only one build's apt writes DEBS at a time."""
    fd = os.open(debs.with_name(f"{debs.name}.lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC,
                 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            logger.info("    waiting: another build's apt uses the package cache %s", debs)
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def session(stack: ExitStack, root: Path, debs: Path, apt_proxy: str | None) -> None:
    """Make ROOT ready for apt; every change is undone by STACK."""
    chroot.enter(stack, root, [], {})
    skeleton.copy_resolv_conf(root)
    stack.callback((root / "etc" / "resolv.conf").unlink, missing_ok=True)
    chroot.apt_proxy_conf(root, apt_proxy)
    stack.callback(chroot.apt_proxy_conf, root, None)
    chroot.dpkg_unsafe_io(root, True)
    stack.callback(chroot.dpkg_unsafe_io, root, False)
    debs.mkdir(parents=True, exist_ok=True)
    mount(stack, debs, root / ARCHIVES, bind=True)


def trust_keyring(root: Path, keyring: Path | None, default: Path) -> None:
    """A KEYRING other than the distribution's signs the archive: apt in the VM trusts it too."""
    if keyring is None or keyring.resolve() == default.resolve():
        return
    suffix = ".asc" if keyring.suffix == ".asc" else ".gpg"
    target = root / TRUSTED / f"hostcreator-keyring{suffix}"
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(keyring, target)
    target.chmod(0o644)


def apt(root: Path, *args: str, capture: bool = False) -> str:
    if capture:
        return run(["chroot", root, *APT_GET, *args], env=chroot.chroot_env(),
                   capture=True).stdout
    chroot.run_in(root, [*APT_GET, *args], what=f"apt-get {args[0]}")
    return ""


def versions(root: Path) -> dict[str, str]:
    """Package -> version of what dpkg has installed in ROOT (read from its status file)."""
    found: dict[str, str] = {}
    with contextlib.suppress(FileNotFoundError):
        for stanza in (root / DPKG_STATUS).read_text(errors="replace").split("\n\n"):
            fields = dict(line.split(": ", 1) for line in stanza.splitlines()
                          if ": " in line and not line[0].isspace())
            if fields.get("Status", "").endswith(" installed") and "Package" in fields:
                found[fields["Package"]] = fields.get("Version", "")
    return found


def changed(before: dict[str, str], after: dict[str, str]) -> list[str]:
    """Packages installed, upgraded or removed between BEFORE and AFTER."""
    return sorted(name for name in before.keys() | after.keys()
                  if before.get(name) != after.get(name))


def installed(root: Path, pattern: str) -> list[str]:
    result = run(["chroot", root, "dpkg-query", "-W", "-f",
                         "${db:Status-Abbrev} ${Package}\n", pattern],
                        capture=True, check=False)
    return [words[1] for words in map(str.split, result.stdout.splitlines())
            if len(words) == 2 and words[0] == "ii"]


def depends(root: Path, package: str) -> set[str]:
    result = run(["chroot", root, "dpkg-query", "-W", "-f", "${Depends}", package],
                        capture=True, check=False)
    return {alt.split()[0] for dep in result.stdout.split(",") for alt in dep.split("|")
            if alt.strip()}


def old_kernels(root: Path, kernel_package: str) -> list[str]:
    """The packages of every kernel but the one KERNEL_PACKAGE depends on."""
    images = installed(root, KERNEL_IMAGES)
    wanted = depends(root, kernel_package) & set(images)
    if not wanted:  # no kernel package, or it names no installed kernel: leave them
        return []
    doomed = []
    for image in sorted(set(images) - wanted):
        version = image.removeprefix("linux-image-")
        doomed += installed(root, f"linux-*-{version}")
    return doomed


def upgrade(root: Path, debs: Path, install: Sequence[str], kernel_package: str) -> list[str]:
    """apt-get update and full-upgrade (and install INSTALL); the packages that changed.

    One apt run each, whether or not there is anything to do (a simulated run
    first would cost as much as the real one that finds nothing).
    """
    before = versions(root)
    apt(root, "update")
    with initramfs.built_once(root):
        with package_cache_lock(debs):
            if install:
                apt(root, "install", *install)
            apt(root, "full-upgrade")
        changes = changed(before, versions(root))
        if changes and (doomed := old_kernels(root, kernel_package)):
            logger.info("    apt: one kernel is enough, purging %s", " ".join(doomed))
            apt(root, "purge", *doomed)
            changes = changed(before, versions(root))
    if changes:
        logger.info("    apt: %d packages installed, upgraded or removed: %s", len(changes),
                    " ".join(changes[:12]) + (" ..." if len(changes) > 12 else ""))
    return changes


def freshen(p: BootstrapPlan, root: Path, apt_proxy: str | None) -> list[str]:
    """Bring ROOT, bootstrapped by P, up to date; the packages installed or upgraded."""
    assert p.cache_dir is not None, "a plan without its package cache"
    with ExitStack() as stack:
        (root / sources.SOURCES_LIST).write_text(sources.text(bootstrap.source_lines(p)))
        trust_keyring(root, p.keyring, p.distribution.keyring)
        session(stack, root, p.cache_dir, apt_proxy)
        return upgrade(root, p.cache_dir, bootstrap.installed_later(p),
                       p.distribution.kernel_package)
