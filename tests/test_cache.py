"""The rootfs cache without a bootstrap: keys, entries, locks, leftovers, prune.

The real bootstrap, hit and miss are in test_cache_e2e.py; here a small tree
stands in for a bootstrapped root, packed and unpacked by the real tar and zstd.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from conftest import run_cli

from hostcreator import config, distro
from hostcreator.build import bootstrap, cache, freshen
from hostcreator.config import BootstrapTool
from hostcreator.log import Progress, log_file

pytestmark = pytest.mark.unit
DEBIAN = distro.get("debian")


def plan(**changes):
    cfg = config.load(Path("/dev/null"), environ={}).replace(**changes)
    return bootstrap.plan(cfg, DEBIAN, "trixie")


def key(**changes):
    return cache.key_of(cache.inputs(plan(**changes)))


def test_key_follows_every_input_of_the_bootstrap(monkeypatch):
    monkeypatch.setattr(bootstrap, "require_commands", lambda commands: None)
    base = key()
    assert key() == base
    assert key(packages=("vim",)) != base
    assert key(packages=("vim", "less")) == key(packages=("less", "vim"))
    assert key(mirror="http://mirror.example/debian") != base
    assert key(variant="minbase") != base
    assert key(security_mirror="http://security.example/ds") != base
    assert key(bootstrap_tool=BootstrapTool.DEBOOTSTRAP) != \
        key(bootstrap_tool=BootstrapTool.MMDEBSTRAP)
    assert cache.key_of(cache.inputs(bootstrap.plan(
        config.load(Path("/dev/null"), environ={}), DEBIAN, "bookworm"))) != base
    # The proxy and the keyring file do not change what is installed.
    assert key(apt_proxy="http://127.0.0.1:3142") == base


def test_inputs_name_the_mirror_debootstrap_would_use(tmp_path, monkeypatch):
    program = tmp_path / "debootstrap"
    program.write_text('#!/bin/sh\nDEF_MIRROR="http://default.test/debian"\n')
    monkeypatch.setattr(bootstrap, "DEBOOTSTRAP_PROGRAM", program)
    values = cache.inputs(plan(bootstrap_tool=BootstrapTool.DEBOOTSTRAP))
    assert values["mirror"] == "http://default.test/debian"
    assert values["packages"] == sorted(DEBIAN.packages)
    assert (values["distribution"], values["suite"], values["arch"]) == \
        ("debian", "trixie", "amd64")
    assert values["components"] == ["main"] and values["variant"] == "-"


def make_tree(root: Path) -> None:
    for rel, text in {
        "etc/os-release": "ID=debian\n",
        "etc/hostname": "buildhost\n",
        "etc/resolv.conf": "nameserver 192.0.2.1\n",
        "etc/machine-id": "0123456789abcdef0123456789abcdef\n",
        "etc/ssh/ssh_host_ed25519_key": "secret\n",
        "etc/ssh/sshd_config": "# config\n",
        "var/lib/systemd/random-seed": "seed",
        "var/cache/apt/archives/bash_5_amd64.deb": "deb",
        "usr/bin/tool": "#!/bin/sh\n",
    }.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    (root / "usr/bin/tool").chmod(0o4755)
    (root / "lost+found").mkdir()


def test_scrub_removes_what_belongs_to_one_vm_or_the_host(tmp_path):
    make_tree(tmp_path)
    cache.scrub(tmp_path)
    assert not (tmp_path / "etc/hostname").exists()
    assert not (tmp_path / "etc/resolv.conf").exists()
    assert (tmp_path / "etc/machine-id").read_text() == ""
    assert not list((tmp_path / "etc/ssh").glob("ssh_host_*"))
    assert not (tmp_path / "var/lib/systemd/random-seed").exists()
    assert not list((tmp_path / "var/cache/apt/archives").glob("*.deb"))
    assert (tmp_path / "etc/os-release").exists()


def test_store_then_read_and_unpack(tmp_path):
    root, target = tmp_path / "root", tmp_path / "target"
    root.mkdir()
    target.mkdir()
    make_tree(root)
    rootfs = cache.RootfsCache(tmp_path / "cache")
    rootfs.base.mkdir()
    values = {"format": cache.FORMAT, "packages": ["a"], "suite": "trixie"}
    k = cache.key_of(values)
    rootfs.store(k, values, root)
    entry = rootfs.read(k)
    assert entry is not None and entry.manifest["suite"] == "trixie"
    assert entry.age_days() < 0.01
    assert json.loads((entry.path / cache.MANIFEST).read_text())["key"] == k
    assert [e.key for e in rootfs.entries()] == [k]
    assert not rootfs.leftovers()
    rootfs.unpack(entry, target)
    assert (target / "etc/os-release").read_text() == "ID=debian\n"
    assert (target / "usr/bin/tool").stat().st_mode & 0o7777 == 0o4755
    assert not (target / "lost+found").exists()


def fake_entry(rootfs: cache.RootfsCache, k: str, *, age_days: float = 0) -> Path:
    path = rootfs.entry_dir(k)
    path.mkdir(parents=True)
    (path / cache.TARBALL).write_bytes(b"x" * 10)
    (path / cache.MANIFEST).write_text(json.dumps({
        "format": cache.FORMAT, "key": k, "size": 10, "created": time.time() - age_days * 86400,
        "distribution": "debian", "suite": "trixie", "arch": "amd64", "tool": "mmdebstrap",
        "variant": "-", "packages": ["a"]}))
    return path


def test_half_written_and_broken_entries_are_never_used(tmp_path):
    rootfs = cache.RootfsCache(tmp_path)
    k1, k2, k3 = "1" * 64, "2" * 64, "3" * 64
    # A build killed while it wrote k1: only its temporary directory exists.
    tmp = tmp_path / f".tmp-{k1}-4242"
    tmp.mkdir()
    (tmp / cache.TARBALL).write_bytes(b"half")
    assert rootfs.read(k1) is None
    # A tarball shorter than its manifest says, and a manifest of another key.
    (fake_entry(rootfs, k2) / cache.TARBALL).write_bytes(b"short")
    fake_entry(rootfs, k3)
    manifest = json.loads((rootfs.entry_dir(k3) / cache.MANIFEST).read_text())
    (rootfs.entry_dir(k3) / cache.MANIFEST).write_text(json.dumps({**manifest, "key": k1}))
    assert rootfs.read(k2) is None and rootfs.read(k3) is None
    assert rootfs.entries() == []
    assert rootfs.leftovers() == [tmp] and rootfs.leftovers(k2) == []
    rootfs.remove_leftovers(k1)
    assert not tmp.exists()


def test_expired_entry_is_not_usable(tmp_path):
    rootfs = cache.RootfsCache(tmp_path)
    k = "a" * 64
    fake_entry(rootfs, k, age_days=8)
    assert rootfs.read(k) is not None
    assert rootfs.usable(k, max_age_days=7) is None
    assert rootfs.usable(k, max_age_days=9) is not None


def test_lock_is_shared_by_readers_and_exclusive_for_the_writer(tmp_path):
    rootfs = cache.RootfsCache(tmp_path)
    k = "b" * 64
    reader1, reader2, writer = rootfs.lock(k), rootfs.lock(k), rootfs.lock(k)
    assert reader1.acquire(exclusive=False, wait=False)
    assert reader2.acquire(exclusive=False, wait=False)
    assert not writer.acquire(exclusive=True, wait=False)
    reader1.release()
    reader2.release()
    assert writer.acquire(exclusive=True, wait=False)
    assert not reader1.acquire(exclusive=False, wait=False)
    writer.release()


def test_lock_file_removed_by_prune_is_not_trusted(tmp_path):
    rootfs = cache.RootfsCache(tmp_path)
    k = "c" * 64
    first = rootfs.lock(k)
    assert first.acquire(exclusive=True, wait=False)
    first.path.unlink()  # as prune does while it holds the lock
    second = rootfs.lock(k)
    assert second.acquire(exclusive=True, wait=False)  # a new file, a new lock
    assert os.path.samefile(second.path, rootfs.base / f"{k}.lock")
    first.release()
    second.release()


def test_prune_removes_old_and_unfinished_entries_but_not_busy_ones(tmp_path):
    rootfs = cache.RootfsCache(tmp_path)
    old, new, busy, dead = "d" * 64, "e" * 64, "f" * 64, "0" * 64
    fake_entry(rootfs, old, age_days=10)
    fake_entry(rootfs, new, age_days=1)
    fake_entry(rootfs, busy, age_days=10)
    (tmp_path / f".tmp-{dead}-99").mkdir()
    holder = rootfs.lock(busy)
    assert holder.acquire(exclusive=False, wait=False)
    removed = rootfs.prune(older_than_days=5)
    holder.release()
    assert sorted(removed) == sorted([old, f".tmp-{dead}-99"])
    assert sorted(e.key for e in rootfs.entries()) == sorted([new, busy])
    assert not rootfs.leftovers()
    assert sorted(rootfs.prune(older_than_days=0)) == sorted([new, busy])
    assert rootfs.entries() == []


def test_provide_root_stores_then_unpacks_and_refresh_replaces(tmp_path, monkeypatch):
    """The cache protocol around a stand-in bootstrap (the real one: test_cache_e2e.py)."""
    runs = []

    def stand_in(p, target, apt_proxy):
        runs.append(target)
        make_tree(target)

    # What the stand-in upgrade finds to do in each tree it is given (nothing, else).
    upgrades: list[list[str]] = []

    def stand_in_freshen(p, target, apt_proxy):
        changes = upgrades.pop(0) if upgrades else []
        if changes:  # as a package script might: scrubbed before the tree is stored
            (target / "etc/hostname").write_text("buildhost\n")
        return changes

    monkeypatch.setattr(bootstrap, "bootstrap", stand_in)
    monkeypatch.setattr(freshen, "freshen", stand_in_freshen)
    p = plan(bootstrap_tool=BootstrapTool.DEBOOTSTRAP)
    targets = [tmp_path / f"t{i}" for i in range(6)]
    for t in targets:
        t.mkdir()

    def provide(target, mode):
        return cache.provide_root(p, target, cache_dir=tmp_path / "c", max_age_days=7,
                                  mode=mode, apt_proxy=None)

    first = provide(targets[0], cache.Mode.USE)
    second = provide(targets[1], cache.Mode.USE)
    assert (first.status, second.status) == ("miss", "hit")
    assert first.key == second.key and len(runs) == 1
    assert second.note == f"rootfs cache hit {first.key[:12]}"
    assert (targets[1] / "etc/machine-id").read_text() == ""
    assert not (targets[1] / "etc/hostname").exists()
    rootfs = cache.RootfsCache.under(tmp_path / "c")
    created = rootfs.read(first.key).created
    # The archive moved on: the next hit upgrades its copy and stores it as the entry.
    upgrades.append(["netbase"])
    third = provide(targets[2], cache.Mode.USE)
    assert (third.status, third.upgraded, len(runs)) == ("hit", 1, 1)
    assert third.note == f"rootfs cache hit {first.key[:12]}, 1 packages upgraded and " \
        "stored again"
    upgraded = rootfs.read(first.key)
    assert upgraded.created > created and upgraded.bootstrapped == created
    assert not (targets[2] / "etc/hostname").exists()  # scrubbed before it was stored
    assert provide(targets[3], cache.Mode.USE).note == second.note
    assert rootfs.read(first.key).created == upgraded.created
    assert provide(targets[4], cache.Mode.REFRESH).status == "miss"
    assert rootfs.read(first.key).created > upgraded.created
    assert provide(targets[5], cache.Mode.OFF).status == "off"
    assert len(runs) == 3
    assert len(rootfs.entries()) == 1


def test_progress_note_is_in_the_stage_line_and_the_summary(tmp_path):
    progress = Progress(total=2)
    with log_file(tmp_path / "log"):
        with progress.stage("bootstrap trixie"):
            progress.note("rootfs cache hit 0123456789ab")
        with progress.stage("skeleton"):
            pass
    text = (tmp_path / "log").read_text()
    assert "bootstrap trixie (rootfs cache hit 0123456789ab): done in" in text
    assert "skeleton: done in" in text
    assert "bootstrap trixie (rootfs cache hit 0123456789ab)" in progress.summary()


def test_cache_list_and_prune_commands(testenv):
    conf = testenv.config
    rootfs = cache.RootfsCache.under(testenv.cache_dir)
    fake_entry(rootfs, "9" * 64, age_days=3)
    result = run_cli("hostcreator", "cache", "list", "--config", str(conf))
    assert result.returncode == 0, result.stderr
    line = next(line for line in result.stdout.splitlines() if line.startswith("9" * 12))
    assert "debian trixie amd64 mmdebstrap" in line and "3.0 d" in line
    result = run_cli("hostcreator", "cache", "prune", "--older-than", "5", "--config", str(conf))
    assert result.returncode == 0 and "0 removed" in result.stdout
    result = run_cli("hostcreator", "cache", "prune", "--older-than", "2", "--config", str(conf))
    assert result.returncode == 0 and f"removed {'9' * 64}" in result.stdout
    assert rootfs.entries() == []


def test_no_cache_and_refresh_cache_exclude_each_other(testenv):
    result = run_cli("create-debian", "web1", "--no-cache", "--refresh-cache", "--config",
                     str(testenv.config))
    assert result.returncode == 2
    assert "--no-cache and --refresh-cache exclude each other" in result.stderr
