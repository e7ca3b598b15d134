"""The rootfs cache: a bootstrapped tree stored once, unpacked by the later builds.

An entry is CACHE_DIR/rootfs/<key>/ holding rootfs.tar.zst and manifest.json.
The key is the sha256 of the bootstrap's inputs (distribution, suite,
architecture, packages, components, mirror, bootstrap tool, variant), so a
change of any of them is a miss. An entry appears by one rename of a complete,
fsynced directory: a build killed while it writes leaves a .tmp-<key>-<pid>
directory that no build reads and that the next build of that key (or
`hostcreator cache prune`) removes. A flock on <key>.lock keeps builds apart:
readers share it, the one build that fills an entry holds it alone.

The stored tree holds nothing that belongs to one VM or to the build host:
machine-id, SSH host keys, random seed, host name and resolv.conf are removed
from every freshly bootstrapped tree before anything else sees it, so a cache
hit and a miss hand the same tree to the later stages.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import time
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from hostcreator import __version__
from hostcreator.build import bootstrap, freshen, identity
from hostcreator.build.bootstrap import ARCH, BootstrapPlan
from hostcreator.config import BootstrapTool
from hostcreator.errors import CommandError, HostCreatorError, InvalidInput
from hostcreator.log import logger
from hostcreator.run import run

# 2: the tree holds the update pockets too (1 held the release pocket only).
FORMAT = 2
TARBALL = "rootfs.tar.zst"
MANIFEST = "manifest.json"
COMMANDS = ("tar", "zstd")
KEY = re.compile(r"[0-9a-f]{64}")
LEFTOVER = re.compile(r"\.(tmp|old)-([0-9a-f]{64})-\d+")
# Owners by number (the host's names do not matter), and the attributes some
# packages set (file capabilities, ACLs).
TAR_OPTIONS = ("--numeric-owner", "--xattrs", "--xattrs-include=*", "--acls")
COMPRESS = "zstd -T0 -3 -q"
# Files of the build host that the bootstrap tools copy into the tree.
HOST_FILES = ("etc/hostname", "etc/resolv.conf")
DAY = 86400.0
# What store() adds to the inputs in a manifest.
MANIFEST_OWN = ("key", "created", "size", "hostcreator")


class Mode(StrEnum):
    USE = "use"
    REFRESH = "refresh"
    OFF = "off"


def inputs(p: BootstrapPlan) -> dict[str, Any]:
    """Everything that decides what the bootstrap puts in the tree."""
    return {
        "format": FORMAT,
        "distribution": p.distribution.name,
        "suite": p.suite,
        "arch": ARCH,
        "packages": sorted(p.packages),
        "components": list(p.distribution.components),
        "mirror": bootstrap.archive_mirror(p),
        "sources": bootstrap.source_lines(p),
        "tool": p.tool.value,
        "variant": p.variant or "-",
    }


def key_of(values: dict[str, Any]) -> str:
    text = json.dumps(values, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def short(key: str) -> str:
    return key[:12]


def scrub(root: Path) -> None:
    """Remove from a freshly bootstrapped tree what belongs to one VM or to the host."""
    identity.reset(root)
    for rel in HOST_FILES:
        path = root / rel
        if path.is_symlink() or path.exists():
            path.unlink()


def fresh_bootstrap(p: BootstrapPlan, root: Path, apt_proxy: str | None) -> None:
    bootstrap.bootstrap(p, root, apt_proxy)
    freshen.freshen(p, root, apt_proxy)
    scrub(root)


@dataclass(frozen=True)
class Entry:
    key: str
    path: Path
    manifest: dict[str, Any]

    @property
    def tarball(self) -> Path:
        return self.path / TARBALL

    @property
    def created(self) -> float:
        return float(self.manifest["created"])

    @property
    def bootstrapped(self) -> float:
        """When the tree was bootstrapped (an upgrade stores it again, created is then)."""
        return float(self.manifest.get("bootstrapped", self.created))

    @property
    def size(self) -> int:
        return int(self.manifest["size"])

    def age_days(self, now: float | None = None) -> float:
        return ((now or time.time()) - self.bootstrapped) / DAY

    def describe(self) -> str:
        m = self.manifest
        return (f"{m['distribution']} {m['suite']} {m['arch']} by {m['tool']}, "
                f"variant {m['variant']}, {len(m['packages'])} packages")


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class KeyLock:
    """flock on one key's lock file, shared for readers, exclusive for the writer.

    prune removes lock files it holds exclusively, so after every acquisition
    the lock is checked to still be the file at that path (else it starts over).
    """

    def __init__(self, path: Path, label: str) -> None:
        self.path = path
        self.label = label
        self.fd: int | None = None

    def acquire(self, exclusive: bool, wait: bool = True) -> bool:
        op = fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH
        while True:
            if self.fd is None:
                self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            try:
                fcntl.flock(self.fd, op | fcntl.LOCK_NB)
            except BlockingIOError:
                if not wait:
                    return False
                logger.info("    waiting: another build uses rootfs cache entry %s", self.label)
                fcntl.flock(self.fd, op)
            if self._current():
                return True
            self.release()

    def _current(self) -> bool:
        assert self.fd is not None
        try:
            return os.stat(self.path).st_ino == os.fstat(self.fd).st_ino
        except FileNotFoundError:
            return False

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


@dataclass(frozen=True)
class RootfsCache:
    base: Path

    @classmethod
    def under(cls, cache_dir: Path) -> RootfsCache:
        return cls(cache_dir / "rootfs")

    def entry_dir(self, key: str) -> Path:
        return self.base / key

    def lock(self, key: str) -> KeyLock:
        self.base.mkdir(parents=True, exist_ok=True)
        return KeyLock(self.base / f"{key}.lock", short(key))

    def read(self, key: str) -> Entry | None:
        """The complete entry KEY, or None (absent, or not what this code wrote)."""
        path = self.entry_dir(key)
        try:
            manifest = json.loads((path / MANIFEST).read_text())
            entry = Entry(key, path, manifest)
            if (manifest.get("key") != key or manifest.get("format") != FORMAT
                    or entry.tarball.stat().st_size != entry.size):
                raise ValueError("does not match its manifest")
            entry.age_days()
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            logger.warning("warning: rootfs cache entry %s is unusable (%s)", path, exc)
            return None
        return entry

    def entries(self) -> list[Entry]:
        if not self.base.is_dir():
            return []
        found = (self.read(p.name) for p in sorted(self.base.iterdir())
                 if KEY.fullmatch(p.name) and p.is_dir())
        return sorted((e for e in found if e is not None), key=lambda e: e.created)

    def leftovers(self, key: str | None = None) -> list[Path]:
        """Directories of builds that died while writing (or replacing) an entry."""
        if not self.base.is_dir():
            return []
        return sorted(p for p in self.base.iterdir()
                      if (m := LEFTOVER.fullmatch(p.name)) and key in (None, m.group(2)))

    def remove_leftovers(self, key: str) -> None:
        """Only with KEY's lock held exclusively: nobody else writes KEY then."""
        for path in self.leftovers(key):
            logger.info("    removing unfinished rootfs cache entry %s", path)
            shutil.rmtree(path, ignore_errors=True)

    def usable(self, key: str, max_age_days: float, quiet: bool = False) -> Entry | None:
        entry = self.read(key)
        if entry is None:
            return None
        if entry.age_days() > max_age_days:
            if not quiet:
                logger.info("    rootfs cache entry %s is %.1f days old (CACHE_MAX_AGE=%g): "
                            "bootstrapping afresh", short(key), entry.age_days(), max_age_days)
            return None
        return entry

    def unpack(self, entry: Entry, root: Path) -> None:
        run(["tar", "--extract", "--file", entry.tarball, "--zstd", *TAR_OPTIONS,
             "--directory", root])

    def store(self, key: str, values: dict[str, Any], root: Path) -> Entry:
        """Pack ROOT as entry KEY: written aside, fsynced, then renamed into place."""
        start = time.monotonic()
        tmp = self.base / f".tmp-{key}-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        old = None
        try:
            run(["tar", "--create", "--file", tmp / TARBALL,
                 f"--use-compress-program={COMPRESS}", *TAR_OPTIONS, "--one-file-system",
                 "--exclude=./lost+found", "--directory", root, "."])
            now = time.time()
            manifest = {"bootstrapped": now, **values, "key": key, "created": now,
                        "size": (tmp / TARBALL).stat().st_size, "hostcreator": __version__}
            assert set(MANIFEST_OWN) <= set(manifest)
            (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
            for path in (tmp / TARBALL, tmp / MANIFEST, tmp):
                _fsync(path)
            final = self.entry_dir(key)
            if final.exists():
                old = self.base / f".old-{key}-{os.getpid()}"
                final.rename(old)
            tmp.rename(final)
            _fsync(self.base)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        entry = Entry(key, final, manifest)
        logger.info("    rootfs cache: stored %s (%d MB in %.1f s)", short(key),
                    entry.size // 2**20, time.monotonic() - start)
        return entry

    def remove(self, entry: Entry) -> None:
        """Only with the entry's lock held exclusively."""
        doomed = self.base / f".old-{entry.key}-{os.getpid()}"
        entry.path.rename(doomed)
        shutil.rmtree(doomed, ignore_errors=True)

    def prune(self, older_than_days: float) -> list[str]:
        """Remove entries older than OLDER_THAN_DAYS and unfinished ones; skip busy keys."""
        if older_than_days < 0:
            raise InvalidInput("--older-than must not be negative")
        removed = []
        now = time.time()
        keys = {e.key: e for e in self.entries()}
        stale = {m.group(2) for p in self.leftovers() if (m := LEFTOVER.fullmatch(p.name))}
        for key in sorted(set(keys) | stale):
            lock = self.lock(key)
            if not lock.acquire(exclusive=True, wait=False):
                logger.info("%s is in use, left alone", short(key))
                continue
            try:
                for path in self.leftovers(key):
                    shutil.rmtree(path, ignore_errors=True)
                    removed.append(path.name)
                entry = self.read(key)
                if entry is not None and entry.age_days(now) > older_than_days:
                    self.remove(entry)
                    removed.append(key)
                if self.read(key) is None:
                    with contextlib.suppress(FileNotFoundError):
                        lock.path.unlink()
            finally:
                lock.release()
        return removed


@dataclass(frozen=True)
class Outcome:
    """How the root tree of a build came to be, for the log and the summary."""

    status: str  # hit, miss or off
    tool: BootstrapTool
    key: str | None = None
    # A hit: how many packages the archive had published since the entry was made
    # (the entry was upgraded and stored again).
    upgraded: int = 0

    @property
    def note(self) -> str:
        if self.status == "hit" and self.upgraded:
            return (f"rootfs cache hit {short(self.key or '')}, {self.upgraded} packages "
                    "upgraded and stored again")
        if self.status == "hit":
            return f"rootfs cache hit {short(self.key or '')}"
        if self.status == "miss":
            return f"{self.tool}, rootfs cache miss {short(self.key or '')}"
        return f"{self.tool}, no rootfs cache"


def lookup(p: BootstrapPlan, *, cache_dir: Path, max_age_days: float, mode: Mode) -> Outcome:
    """What provide_root() would find, with no lock taken and nothing written (--dry-run)."""
    if mode is Mode.OFF:
        return Outcome("off", p.tool)
    key = key_of(inputs(p))
    cache = RootfsCache.under(cache_dir)
    if mode is Mode.USE and cache.usable(key, max_age_days, quiet=True) is not None:
        return Outcome("hit", p.tool, key)
    return Outcome("miss", p.tool, key)


def use_entry(cache: RootfsCache, entry: Entry, lock: KeyLock, p: BootstrapPlan, root: Path,
              apt_proxy: str | None) -> Outcome:
    """Unpack ENTRY (its lock held shared) into ROOT and bring it up to date.

    ROOT is a copy of the entry: when the archive published anything since the
    entry was made, the upgraded ROOT is stored as the entry again, once (a
    build that finds it replaced meanwhile by another's upgrade leaves it), so
    the next build finds it current.
    """
    logger.info("    rootfs cache hit %s: %s, %.1f days old", short(entry.key),
                entry.describe(), entry.age_days())
    try:
        cache.unpack(entry, root)
    except CommandError as exc:
        raise HostCreatorError(
            f"unpacking rootfs cache entry {entry.path} failed: {exc}",
            hint="build it afresh with --refresh-cache",
        ) from None
    lock.release()  # ROOT is ours now: others may use or replace the entry meanwhile
    changes = freshen.freshen(p, root, apt_proxy)
    if changes:
        lock.acquire(exclusive=True)
        current = cache.read(entry.key)
        if current is not None and current.created != entry.created:
            logger.info("    rootfs cache entry %s was brought up to date by another build",
                        short(entry.key))
        else:
            logger.info("    rootfs cache entry %s is behind the archive by %d packages: "
                        "storing the upgraded tree", short(entry.key), len(changes))
            scrub(root)
            values = {k: v for k, v in entry.manifest.items() if k not in MANIFEST_OWN}
            try:
                cache.store(entry.key, values, root)
            except (HostCreatorError, OSError) as exc:
                logger.warning("warning: the upgraded tree was not stored in the rootfs "
                               "cache: %s", exc)
    return Outcome("hit", p.tool, entry.key, upgraded=len(changes))


def provide_root(p: BootstrapPlan, root: Path, *, cache_dir: Path, max_age_days: float,
                 mode: Mode, apt_proxy: str | None) -> Outcome:
    """Fill the mounted ROOT: unpack the cached tree of P's inputs, or bootstrap (and store)."""
    if mode is Mode.OFF:
        logger.info("    rootfs cache not used: %s %s", p.tool, p.suite)
        fresh_bootstrap(p, root, apt_proxy)
        return Outcome("off", p.tool)
    cache = RootfsCache.under(cache_dir)
    values = inputs(p)
    key = key_of(values)
    lock = cache.lock(key)
    try:
        if mode is Mode.USE:
            lock.acquire(exclusive=False)
            entry = cache.usable(key, max_age_days)
            if entry is None:
                lock.acquire(exclusive=True)
                entry = cache.usable(key, max_age_days, quiet=True)
            if entry is not None:
                return use_entry(cache, entry, lock, p, root, apt_proxy)
        else:
            lock.acquire(exclusive=True)
        cache.remove_leftovers(key)
        logger.info("    rootfs cache %s %s: bootstrapping %s with %s",
                    "miss" if mode is Mode.USE else "refresh of", short(key), p.suite, p.tool)
        fresh_bootstrap(p, root, apt_proxy)
        try:
            cache.store(key, values, root)
        except (HostCreatorError, OSError) as exc:
            logger.warning("warning: the root tree was not stored in the rootfs cache: %s", exc)
        return Outcome("miss", p.tool, key)
    finally:
        lock.release()
