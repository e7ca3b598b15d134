from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from hostcreator import config, distro
from hostcreator.build import bootstrap
from hostcreator.config import BootstrapTool
from hostcreator.errors import HostCreatorError, InvalidInput

pytestmark = pytest.mark.unit
DEBIAN = distro.get("debian")


def cfg(**changes):
    return config.load(Path("/dev/null"), environ={}).replace(**changes)


def test_argv_for_a_suite_the_host_knows(tmp_path):
    p = bootstrap.plan(cfg(cache_dir=tmp_path, packages=("vim", "grub-pc"),
                           bootstrap_tool=BootstrapTool.DEBOOTSTRAP), DEBIAN, "bookworm")
    argv = bootstrap.debootstrap_argv(p, Path("/mnt/x"))
    assert argv[0] == "debootstrap"
    assert "--arch=amd64" in argv
    assert f"--keyring={DEBIAN.keyring}" in argv
    assert "--components=main" in argv
    include = next(a for a in argv if a.startswith("--include="))
    packages = include.split("=", 1)[1].split(",")
    assert packages.count("grub-pc") == 1 and "vim" in packages
    # The kernel comes from the update pockets, after the bootstrap (one kernel).
    assert "linux-image-amd64" not in packages
    assert bootstrap.installed_later(p) == ("linux-image-amd64",)
    assert f"--cache-dir={tmp_path}/debs/debian-bookworm-amd64" in argv
    assert argv[-2:] == ["bookworm", "/mnt/x"]  # no mirror: debootstrap's default


def test_mirror_from_config_is_passed():
    p = bootstrap.plan(cfg(mirror="http://mirror.example/debian", variant="minbase"), DEBIAN,
                       "bookworm")
    argv = bootstrap.debootstrap_argv(p, Path("/t"))
    assert argv[-3:] == ["bookworm", "/t", "http://mirror.example/debian"]
    assert "--variant=minbase" in argv


def test_unknown_suite_to_the_host_names_script_and_its_default_mirror(tmp_path, monkeypatch):
    scripts = tmp_path / "scripts"
    scripts.mkdir()
    (scripts / "sid").write_text("mirror_style release\ndefault_mirror http://archive.test/d\n")
    monkeypatch.setattr(distro, "DEBOOTSTRAP_SCRIPTS", scripts)
    p = bootstrap.plan(cfg(), DEBIAN, "forky")
    argv = bootstrap.debootstrap_argv(p, Path("/t"))
    assert argv[-4:] == ["forky", "/t", "http://archive.test/d", str(scripts / "sid")]


def test_unknown_suite_is_refused():
    with pytest.raises(InvalidInput, match="unknown debian suite 'trixy'"):
        bootstrap.plan(cfg(), DEBIAN, "trixy")


def test_missing_keyring_is_refused_with_the_package_to_install(tmp_path):
    with pytest.raises(InvalidInput) as exc:
        bootstrap.plan(cfg(keyring=tmp_path / "none.gpg"), DEBIAN, "bookworm")
    assert "signatures cannot be verified" in exc.value.message
    assert "debian-archive-keyring" in exc.value.hint and "KEYRING" in exc.value.hint


def test_sources_add_update_and_security_pockets(tmp_path):
    from hostcreator.build import sources

    (tmp_path / "etc/apt").mkdir(parents=True)
    (tmp_path / "etc/apt/sources.list").write_text("deb http://archive.test/debian trixie main\n")
    assert sources.write(tmp_path, DEBIAN, "trixie")
    lines = (tmp_path / "etc/apt/sources.list").read_text().splitlines()[1:]
    assert lines == [
        "deb http://archive.test/debian trixie main",
        "deb http://archive.test/debian trixie-updates main",
        "deb http://archive.test/debian-security trixie-security main",
    ]
    sources.write(tmp_path, DEBIAN, "trixie", security_mirror="http://sec.test/ds")
    assert (tmp_path / "etc/apt/sources.list").read_text().splitlines()[-1] == \
        "deb http://sec.test/ds trixie-security main"


def test_the_bootstrap_takes_the_pockets_of_the_vms_sources():
    p = bootstrap.plan(cfg(mirror="http://archive.test/debian",
                           security_mirror="http://sec.test/ds"), DEBIAN, "trixie")
    assert bootstrap.source_lines(p) == [
        "deb http://archive.test/debian trixie main",
        "deb http://archive.test/debian trixie-updates main",
        "deb http://sec.test/ds trixie-security main",
    ]
    assert bootstrap.source_lines(bootstrap.plan(cfg(mirror="http://archive.test/debian"),
                                                 DEBIAN, "sid")) == \
        ["deb http://archive.test/debian sid main"]


def test_sources_of_a_rolling_suite_have_no_pockets(tmp_path):
    from hostcreator.build import sources

    assert sources.render(DEBIAN, "sid", "http://archive.test/debian") == \
        "# Written by hostcreator.\ndeb http://archive.test/debian sid main\n"
    assert not sources.write(tmp_path, DEBIAN, "sid")  # no sources.list to start from


def test_mmdebstrap_argv_has_the_same_inputs_as_debootstrap(tmp_path, monkeypatch):
    monkeypatch.setattr(bootstrap, "require_commands", lambda commands: None)
    p = bootstrap.plan(cfg(cache_dir=tmp_path, packages=("vim",), mirror="http://mirror.example/d",
                           bootstrap_tool=BootstrapTool.MMDEBSTRAP), DEBIAN, "trixie")
    argv = bootstrap.mmdebstrap_argv(p, Path("/mnt/x"))
    assert argv[0] == "mmdebstrap" and "--mode=root" in argv
    assert f"--keyring={DEBIAN.keyring}" in argv
    assert "--components=main" in argv and "--arch=amd64" in argv
    assert "--variant=debootstrap" in argv  # debootstrap's default package set
    include = next(a for a in argv if a.startswith("--include=")).split("=", 1)[1].split(",")
    assert include == list(p.packages) and "vim" in include
    # The release and its update pockets at once: apt takes the newest of each package.
    assert argv[-5:] == ["trixie", "/mnt/x", "deb http://mirror.example/d trixie main",
                         "deb http://mirror.example/d trixie-updates main",
                         "deb http://mirror.example/d-security trixie-security main"]
    assert bootstrap.installed_later(p) == ()
    assert "--dpkgopt=force-unsafe-io" in argv
    if bootstrap.EATMYDATA_HOOKS.is_dir():
        assert f"--hook-dir={bootstrap.EATMYDATA_HOOKS}" in argv
    # Nothing that weakens the signature check.
    assert not [a for a in argv if "trusted" in a.lower() or "insecure" in a.lower()
                or "check-valid" in a.lower() or "allowunauthenticated" in a.lower()]
    hooks = [a for a in argv if a.startswith(("--setup-hook=", "--customize-hook="))]
    assert len(hooks) == 2 and all(str(p.cache_dir) in h for h in hooks)


def test_mmdebstrap_without_mirror_uses_debootstraps_default(tmp_path, monkeypatch):
    monkeypatch.setattr(bootstrap, "require_commands", lambda commands: None)
    program = tmp_path / "debootstrap"
    program.write_text('DEF_MIRROR="http://default.test/debian"\n')
    monkeypatch.setattr(bootstrap, "DEBOOTSTRAP_PROGRAM", program)
    p = bootstrap.plan(cfg(variant="minbase", bootstrap_tool=BootstrapTool.MMDEBSTRAP), DEBIAN,
                       "trixie")
    argv = bootstrap.mmdebstrap_argv(p, Path("/t"))
    assert argv[-3] == "deb http://default.test/debian trixie main"
    assert "--variant=minbase" in argv
    program.write_text("# no default\n")
    with pytest.raises(HostCreatorError, match="default mirror"):
        bootstrap.mmdebstrap_argv(p, Path("/t"))


def test_auto_picks_mmdebstrap_when_installed(monkeypatch):
    monkeypatch.setattr(bootstrap, "missing_commands", lambda cmds: [])
    assert bootstrap.choose_tool(BootstrapTool.AUTO, None) is BootstrapTool.MMDEBSTRAP
    assert bootstrap.choose_tool(BootstrapTool.AUTO, "minbase") is BootstrapTool.MMDEBSTRAP
    # A variant only debootstrap knows stays with debootstrap.
    assert bootstrap.choose_tool(BootstrapTool.AUTO, "fakechroot") is \
        BootstrapTool.DEBOOTSTRAP
    monkeypatch.setattr(bootstrap, "missing_commands", lambda cmds: list(cmds))
    assert bootstrap.choose_tool(BootstrapTool.AUTO, None) is BootstrapTool.DEBOOTSTRAP


def test_explicit_mmdebstrap_must_be_installed(monkeypatch):
    monkeypatch.setattr("hostcreator.run.shutil.which", lambda *a, **k: None)
    with pytest.raises(HostCreatorError, match=r"missing host command.*mmdebstrap") as exc:
        bootstrap.plan(cfg(bootstrap_tool=BootstrapTool.MMDEBSTRAP), DEBIAN, "trixie")
    assert "apt-get install mmdebstrap" in exc.value.hint


def test_package_cache_hooks_copy_in_and_out_keeping_one_version(tmp_path):
    import subprocess

    cache, target = tmp_path / "debs dir", tmp_path / "target"
    cache.mkdir()
    for name in ("bash_5.1-1_amd64.deb", "bash-completion_1_all.deb", "zlib1g_1%3a1_amd64.deb"):
        (cache / name).write_text(name)
    copy_in, copy_out = bootstrap.deb_cache_hooks(cache)
    subprocess.run(["sh", "-c", copy_in, "exec", target], check=True)
    archives = target / "var/cache/apt/archives"
    assert sorted(p.name for p in archives.iterdir()) == sorted(p.name for p in cache.iterdir())
    # This build used a newer bash and a new package, and not bash-completion.
    (archives / "bash_5.1-1_amd64.deb").unlink()
    (archives / "bash_5.2-1_amd64.deb").write_text("new bash")
    (archives / "less_1_amd64.deb").write_text("less")
    subprocess.run(["sh", "-c", copy_out, "exec", target], check=True)
    assert sorted(p.name for p in cache.iterdir()) == [
        "bash-completion_1_all.deb", "bash_5.2-1_amd64.deb", "less_1_amd64.deb",
        "zlib1g_1%3a1_amd64.deb"]
    assert (cache / "bash_5.2-1_amd64.deb").read_text() == "new bash"


def test_versions_and_changes_are_read_from_dpkgs_status(tmp_path):
    from hostcreator.build import freshen

    status = tmp_path / "var/lib/dpkg/status"
    status.parent.mkdir(parents=True)
    status.write_text(
        "Package: netbase\nStatus: install ok installed\nVersion: 6.5\n\n"
        "Package: gone\nStatus: deinstall ok config-files\nVersion: 1\n\n"
        "Package: linux-image-amd64\nStatus: install ok installed\nDescription: x\n"
        " Version: not a field\nVersion: 6.12.1-1\n")
    before = freshen.versions(tmp_path)
    assert before == {"netbase": "6.5", "linux-image-amd64": "6.12.1-1"}
    after = {**before, "netbase": "6.5+1", "zstd": "1.5"}
    del after["linux-image-amd64"]
    assert freshen.changed(before, after) == ["linux-image-amd64", "netbase", "zstd"]
    assert freshen.changed(before, before) == []
    assert freshen.versions(tmp_path / "none") == {}


def test_the_initramfs_is_built_once_for_what_was_asked_meanwhile(tmp_path):
    from hostcreator.build import initramfs

    kernel = ["-c", "-k", "6.12.1-amd64", "-b", "/boot"]
    # The kernel's hook, then initramfs-tools' trigger: one build, the creation.
    assert initramfs.replay([kernel, ["-u"], kernel, ["-u"]]) == [kernel]
    # An upgrade that brought no kernel: one update.
    assert initramfs.replay([["-u"], ["-u"]]) == [["-u"]]
    # A purged kernel's initramfs goes first.
    old = ["-d", "-k", "6.12.0-amd64"]
    assert initramfs.replay([kernel, old, ["-u"]]) == [old, kernel]
    assert initramfs.replay([]) == []
    hook = tmp_path / "hook.sh"
    hook.write_text(initramfs.shell_hook())
    subprocess.run(["sh", "-n", hook], check=True)
    assert initramfs.STAND_IN.startswith("#!/bin/sh\n")
