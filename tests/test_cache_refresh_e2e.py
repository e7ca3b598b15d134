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

import pytest
from archive_mirror import LocalArchive, newer_version
from conftest import CACHE_DIR, DEBIAN_SUITE, BuiltVM, TestEnv, run_cli, unique_name

from hostcreator.build import cache

pytestmark = pytest.mark.e2e
PACKAGE = "netbase"
SUFFIX = "+hctest1"


@dataclass
class Moved:
    cold: BuiltVM
    upgrading: BuiltVM
    current: BuiltVM
    entries: list[cache.Entry]  # the entry after each build
    served: list[str]
    newer: str  # file name of the package published after the first build


def build(env: TestEnv) -> BuiltVM:
    name = unique_name()
    result = run_cli("create-debian", name, DEBIAN_SUITE, "--config", str(env.config))
    if result.returncode != 0:
        pytest.fail(f"create-debian failed:\n{result.stdout}\n{result.stderr}")
    return BuiltVM(name, env, result)


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
            archive.add(DEBIAN_SUITE, debs)
            env.write(MIRROR=archive.mirror, KEYRING=str(archive.keyring))
            cold = build(env)
            entries = [the_entry(env)]
            old = sorted(d for d in debs if d.name.startswith(f"{PACKAGE}_"))[-1]
            newer = newer_version(old, SUFFIX, base)
            archive.add(f"{DEBIAN_SUITE}-security", [newer])
            upgrading = build(env)
            entries.append(the_entry(env))
            current = build(env)
            entries.append(the_entry(env))
            served = list(archive.served)
        yield Moved(cold, upgrading, current, entries, served, newer.name)
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
    assert installed_version(moved.entries[0], PACKAGE) + SUFFIX == \
        installed_version(moved.entries[1], PACKAGE)


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
