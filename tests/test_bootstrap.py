from __future__ import annotations

from pathlib import Path

import pytest

from hostcreator import bootstrap, config, distro
from hostcreator.errors import InvalidInput

pytestmark = pytest.mark.unit
DEBIAN = distro.get("debian")


def cfg(**changes):
    return config.load(Path("/dev/null"), environ={}).replace(**changes)


def test_argv_for_a_suite_the_host_knows(tmp_path):
    p = bootstrap.plan(cfg(cache_dir=tmp_path, packages=("vim", "grub-pc")), DEBIAN, "bookworm")
    argv = bootstrap.debootstrap_argv(p, Path("/mnt/x"))
    assert argv[0] == "debootstrap"
    assert "--arch=amd64" in argv
    assert f"--keyring={DEBIAN.keyring}" in argv
    assert "--components=main" in argv
    include = next(a for a in argv if a.startswith("--include="))
    packages = include.split("=", 1)[1].split(",")
    assert packages.count("grub-pc") == 1 and "vim" in packages
    assert "linux-image-amd64" in packages
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
    from hostcreator import sources

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


def test_sources_of_a_rolling_suite_have_no_pockets(tmp_path):
    from hostcreator import sources

    assert sources.render(DEBIAN, "sid", "http://archive.test/debian") == \
        "# Written by hostcreator.\ndeb http://archive.test/debian sid main\n"
    assert not sources.write(tmp_path, DEBIAN, "sid")  # no sources.list to start from
