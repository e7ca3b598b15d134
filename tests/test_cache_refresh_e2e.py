"""The archive moves on: a cached tree is upgraded once, in the cache, not once per VM.

Three builds from a local archive (tests/archive_mirror.py: the package cache's
.debs, signed with a throw-away key given as KEYRING, served on 127.0.0.1): the
first bootstraps and stores the entry; then a newer netbase is published in the
security pocket; the second build upgrades its copy of the entry and stores it
again; the third finds the entry current and upgrades nothing. The builds have
a package cache of their own, and no .deb is fetched from the archive twice.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
from archive_mirror import LocalArchive, newer_version
from conftest import CACHE_DIR, DEBIAN_SUITE, BuiltVM, TestEnv, run_cli, unique_name

from hostcreator.build import bootstrap, cache

pytestmark = pytest.mark.e2e
PACKAGE = "netbase"
SUFFIX = "+hctest1"
# mmdebstrap's eatmydata hook installs these from the archive, fetched apart from
# the package cache: the local archive needs them too.
EATMYDATA = ("eatmydata", "libeatmydata1")


@dataclass
class Moved:
    cold: BuiltVM
    upgrading: BuiltVM
    current: BuiltVM
    entries: list[cache.Entry]  # the entry after each build
    versions: list[str]  # PACKAGE's version in the entry after each build (one path for all)
    served: list[str]
    newer: str  # file name of the package published after the first build


def build(env: TestEnv) -> BuiltVM:
    name = unique_name()
    result = run_cli("create-debian", name, DEBIAN_SUITE, "--config", str(env.config))
    if result.returncode != 0:
        pytest.fail(f"create-debian failed:\n{result.stdout}\n{result.stderr}")
    return BuiltVM(name, env, result)


def eatmydata_debs(out_dir: Path) -> list[Path]:
    """The eatmydata packages, downloaded with the host's apt, if the bootstrap uses them."""
    if not bootstrap.EATMYDATA_HOOKS.is_dir():
        return []
    out_dir.mkdir()
    subprocess.run(["apt-get", "download", *EATMYDATA], cwd=out_dir, check=True,
                   capture_output=True)
    return sorted(out_dir.glob("*.deb"))


def the_entry(env: TestEnv) -> cache.Entry:
    (entry,) = cache.RootfsCache.under(env.cache_dir).entries()
    return entry


def installed_version(entry: cache.Entry, package: str) -> str:
    status = subprocess.run(["tar", "--extract", "--to-stdout", "--zstd", "--file",
                             entry.tarball, "./var/lib/dpkg/status"], check=True,
                            capture_output=True, text=True).stdout
    stanza = next(s for s in status.split("\n\n") if f"Package: {package}\n" in s + "\n")
    return re.search(r"^Version: (.*)$", stanza, re.MULTILINE).group(1)


@pytest.fixture(scope="module")
def moved(debian_vm, tmp_path_factory):
    # debian_vm's build filled the shared package cache with what the suite needs now.
    debs = sorted((CACHE_DIR / "debs" / f"debian-{DEBIAN_SUITE}-amd64").glob("*.deb"))
    base = tmp_path_factory.mktemp("archive-moved")
    # A package cache of its own: what it fetches is what the archive served.
    env = TestEnv(base / "env", shared_debs=False)
    env.base.mkdir()
    try:
        with LocalArchive(base / "archive", DEBIAN_SUITE) as archive:
            archive.add(DEBIAN_SUITE, [*debs, *eatmydata_debs(base / "eatmydata")])
            env.write(MIRROR=archive.mirror, KEYRING=str(archive.keyring))
            cold = build(env)
            entries = [the_entry(env)]
            versions = [installed_version(entries[0], PACKAGE)]
            old = sorted(d for d in debs if d.name.startswith(f"{PACKAGE}_"))[-1]
            newer = newer_version(old, SUFFIX, base)
            archive.add(f"{DEBIAN_SUITE}-security", [newer])
            upgrading = build(env)
            entries.append(the_entry(env))
            versions.append(installed_version(entries[1], PACKAGE))
            current = build(env)
            entries.append(the_entry(env))
            served = list(archive.served)
        yield Moved(cold, upgrading, current, entries, versions, served, newer.name)
    finally:
        leaks = env.leaks()
        env.cleanup()
        assert not leaks, f"left behind: {leaks}"


def log_of(vm: BuiltVM) -> str:
    return (vm.env.log_dir / f"{vm.name}.log").read_text()


def test_an_entry_behind_the_archive_is_upgraded_and_stored_once(moved):
    key = moved.entries[0].key
    assert {e.key for e in moved.entries} == {key}
    assert f"rootfs cache miss {key[:12]}" in moved.cold.result.stderr
    # The second build: its copy of the entry upgraded, and stored as the entry.
    stderr = moved.upgrading.result.stderr
    assert (f"bootstrap {DEBIAN_SUITE} (rootfs cache hit {key[:12]}, 1 packages upgraded "
            "and stored again)") in stderr, stderr
    assert f"apt: 1 packages installed, upgraded or removed: {PACKAGE}" in stderr
    assert moved.entries[1].created > moved.entries[0].created
    assert moved.entries[1].bootstrapped == moved.entries[0].bootstrapped
    assert moved.versions[0] + SUFFIX == moved.versions[1]


def test_the_next_vm_upgrades_nothing(moved):
    key = moved.entries[0].key
    stderr = moved.current.result.stderr
    assert f"bootstrap {DEBIAN_SUITE} (rootfs cache hit {key[:12]})" in stderr, stderr
    assert "packages installed, upgraded or removed" not in stderr
    log = log_of(moved.current)
    # It did ask the archive (update and full-upgrade run for every VM)...
    assert "apt-get -y -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold " \
        "full-upgrade" in log
    # ...and found nothing to do: the entry stays as the second build stored it.
    assert "+ tar --create" not in log
    assert moved.entries[2].created == moved.entries[1].created


def test_no_package_is_fetched_twice(moved):
    debs = [p for p in moved.served if p.endswith(".deb")]
    assert [p for p in debs if p.endswith(moved.newer)] != []
    twice = sorted({p for p in debs if debs.count(p) > 1})
    assert twice == []
