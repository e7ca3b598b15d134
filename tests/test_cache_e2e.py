"""The rootfs cache with real builds: hit, miss, a killed writer, unique VMs, APT_PROXY.

debian_vm (conftest) is the cold build of its configuration (its rootfs cache
starts empty); the builds here reuse its configuration and cache.
"""

from __future__ import annotations

import re
import signal
import subprocess
import time
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pytest
from conftest import DEBIAN_SUITE, BuiltVM, command, run_cli, unique_name
from guest import boot_and_report, check_current
from proxy import RecordingProxy

from hostcreator.build import cache

pytestmark = pytest.mark.e2e
# The line the bootstrap stage logs (the stage title and the summary repeat it).
EVENT = re.compile(r"^    rootfs cache (hit|miss) ([0-9a-f]{12}): ", re.MULTILINE)
EXTRA_PACKAGE = "less"


def cache_events(stderr: str) -> list[tuple[str, str]]:
    return [(m.group(1), m.group(2)) for m in EVENT.finditer(stderr)]


def build_log(vm: BuiltVM) -> str:
    return (vm.env.log_dir / f"{vm.name}.log").read_text()


@pytest.fixture(scope="session")
def warm_vm(debian_vm):
    """A second VM of the same suite and configuration: its root comes from the cache."""
    name = unique_name()
    result = run_cli("create-debian", name, DEBIAN_SUITE, "--config", str(debian_vm.env.config))
    if result.returncode != 0:
        pytest.fail(f"create-debian failed:\n{result.stdout}\n{result.stderr}")
    return BuiltVM(name, debian_vm.env, result)


def test_second_build_of_the_suite_hits_the_cache(debian_vm, warm_vm):
    first, second = cache_events(debian_vm.result.stderr), cache_events(warm_vm.result.stderr)
    assert len(first) == 1 and first[0][0] == "miss", debian_vm.result.stderr
    assert second == [("hit", first[0][1])], warm_vm.result.stderr
    assert f"bootstrap {DEBIAN_SUITE} (rootfs cache hit {first[0][1]})" in warm_vm.result.stderr
    log = build_log(warm_vm)
    assert "+ tar --extract" in log
    assert "+ mmdebstrap " not in log and "+ debootstrap " not in log
    assert "rootfs cache: stored" in debian_vm.result.stderr


def test_cached_tree_holds_nothing_that_belongs_to_one_vm_or_the_host(debian_vm):
    (entry,) = cache.RootfsCache.under(debian_vm.env.cache_dir).entries()
    names = subprocess.run(["tar", "--list", "--zstd", "--file", entry.tarball], check=True,
                           capture_output=True, text=True).stdout.splitlines()
    assert "./usr/bin/dpkg" in names and "./etc/machine-id" in names
    machine_id = subprocess.run(["tar", "--extract", "--to-stdout", "--zstd", "--file",
                                 entry.tarball, "./etc/machine-id"], check=True,
                                capture_output=True).stdout
    assert machine_id == b""
    forbidden = [n for n in names if n.startswith("./etc/ssh/ssh_host_")
                 or n in ("./etc/hostname", "./etc/resolv.conf", "./var/lib/dbus/machine-id",
                          "./var/lib/systemd/random-seed", "./var/lib/systemd/credential.secret",
                          "./etc/dpkg/dpkg.cfg.d/99mmdebstrap",
                          "./etc/dpkg/dpkg.cfg.d/hostcreator-unsafe-io")
                 or (n.startswith("./var/cache/apt/archives/") and n.endswith(".deb"))]
    assert forbidden == []


def test_vms_from_the_same_cache_differ_when_booted(debian_vm, debian_vm_report, warm_vm):
    first = debian_vm_report
    second = boot_and_report(warm_vm.image, warm_vm.env.log_dir / f"{warm_vm.name}.report.log")
    assert (first.get("hostname"), second.get("hostname")) == (debian_vm.name, warm_vm.name)
    for report in (first, second):
        check_current(report)
        assert re.fullmatch(r"[0-9a-f]{32}", report["machine_id"]), report
        assert report["keygen"] == "yes" and report["ssh"] == "active", report
        assert report["fstab_root"] == f"UUID={report['root_uuid']}"
    assert first["machine_id"] != second["machine_id"]
    assert first["ssh_key"] != second["ssh_key"]
    assert first["root_uuid"] != second["root_uuid"]


@dataclass
class OtherPackages:
    """Builds with one more package than debian_vm, in debian_vm's cache."""

    killed_stderr: str
    leftovers_at_kill: list[Path]
    entries_at_kill: list[str]
    rebuilt: BuiltVM
    proxy_requests: list[tuple[float, str]]


def stage_start(log: str, number: int) -> float:
    line = next(line for line in log.splitlines() if f" ==> [{number}/9] " in line)
    stamp = " ".join(line.split()[:2])
    return datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f").timestamp()


def kill_while_storing(config: Path, rootfs: cache.RootfsCache, log_dir: Path) -> tuple[
        str, list[Path], list[str]]:
    """Start a build and SIGKILL it while it writes its rootfs cache entry."""
    name = unique_name()
    stderr = log_dir / f"{name}.stderr"
    log_dir.mkdir(parents=True, exist_ok=True)
    with open(stderr, "w") as err:
        proc = subprocess.Popen([command("create-debian"), name, DEBIAN_SUITE, "--config",
                                 str(config)], stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=err)
    log = log_dir / f"{name}.log"
    deadline = time.monotonic() + 1500
    try:
        while True:
            assert proc.poll() is None, f"the build ended first:\n{stderr.read_text()}"
            assert time.monotonic() < deadline, "the build never stored its entry"
            partial = [p / cache.TARBALL for p in rootfs.leftovers()
                       if (p / cache.TARBALL).exists() and (p / cache.TARBALL).stat().st_size]
            if partial and log.exists() and "+ tar --create" in log.read_text():
                break
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
        return stderr.read_text(), rootfs.leftovers(), [e.key for e in rootfs.entries()]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def other_packages(debian_vm):
    env = debian_vm.env
    rootfs = cache.RootfsCache.under(env.cache_dir)
    config = env.base / "other-packages.conf"
    # Later lines win: debian_vm's configuration plus one package.
    config.write_text(env.config.read_text() + f'PACKAGES="{EXTRA_PACKAGE}"\n')
    stderr, leftovers, entries = kill_while_storing(config, rootfs, env.log_dir)
    # What an administrator does after a kill -9: the build's mounts and loop
    # device (and the tar it left running) go; its half entry stays for the next build.
    env.cleanup()
    with RecordingProxy() as proxy:
        proxied = env.base / "other-packages-proxy.conf"
        proxied.write_text(config.read_text() + f'APT_PROXY="{proxy.url}"\n')
        name = unique_name()
        result = run_cli("create-debian", name, DEBIAN_SUITE, "--config", str(proxied))
        requests = list(proxy.requests)
    if result.returncode != 0:
        pytest.fail(f"create-debian failed:\n{result.stdout}\n{result.stderr}")
    return OtherPackages(stderr, leftovers, entries, BuiltVM(name, env, result), requests)


def test_changed_package_set_misses_the_cache(debian_vm, other_packages):
    (old_event,) = cache_events(debian_vm.result.stderr)
    (new_event,) = cache_events(other_packages.rebuilt.result.stderr)
    assert new_event[0] == "miss" and new_event[1] != old_event[1]
    entries = {e.key[:12]: e for e in cache.RootfsCache.under(debian_vm.env.cache_dir).entries()}
    assert {old_event[1], new_event[1]} <= set(entries)
    old, new = entries[old_event[1]].manifest, entries[new_event[1]].manifest
    assert set(new["packages"]) - set(old["packages"]) == {EXTRA_PACKAGE}
    same = ("distribution", "suite", "arch", "components", "mirror", "tool", "variant")
    assert {k: old[k] for k in same} == {k: new[k] for k in same}


def test_entry_written_by_a_killed_build_is_never_used(other_packages):
    (event,) = cache_events(other_packages.killed_stderr)
    key = event[1]
    assert event[0] == "miss"
    # At the kill: half an entry under its temporary name, no entry of that key.
    assert [p.name[len(".tmp-"):][:12] for p in other_packages.leftovers_at_kill] == [key]
    assert not [k for k in other_packages.entries_at_kill if k.startswith(key)]
    # The next build of the same inputs removed it and bootstrapped afresh.
    stderr = other_packages.rebuilt.result.stderr
    assert "removing unfinished rootfs cache entry" in stderr
    assert cache_events(stderr) == [("miss", key)]
    rootfs = cache.RootfsCache.under(other_packages.rebuilt.env.cache_dir)
    assert not rootfs.leftovers()
    (entry,) = [e for e in rootfs.entries() if e.key.startswith(key)]
    subprocess.run(["zstd", "--test", "-q", entry.tarball], check=True)


def test_apt_proxy_is_used_by_the_bootstrap_and_in_the_chroot(other_packages):
    """Both the bootstrap tool and the tree's own apt (its apt-get update and full-upgrade,
    in the bootstrap stage since the tree is brought up to date there) ask the proxy."""
    log = build_log(other_packages.rebuilt)
    bootstrap = (stage_start(log, 3), stage_start(log, 4))
    asked = Counter(url for t, url in other_packages.proxy_requests
                    if bootstrap[0] <= t <= bootstrap[1] and url.endswith("/InRelease"))
    assert asked, other_packages.proxy_requests
    # Each pocket's InRelease twice: by the bootstrap, then by apt-get update in the tree.
    assert all(count >= 2 for count in asked.values()), asked
