"""Ubuntu: the debootstrap command line, the keyring, the skip option, the suite checks."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import pytest
from conftest import run_cli

from hostcreator import config, distro
from hostcreator.build import bootloader, bootstrap
from hostcreator.errors import InvalidInput
from hostcreator.log import logger

pytestmark = pytest.mark.unit
UBUNTU = distro.get("ubuntu")
HOST_SCRIPTS = Path("/usr/share/debootstrap/scripts")


def cfg(**changes):
    return config.load(Path("/dev/null"), environ={}).replace(**changes)


@pytest.fixture
def keyring(tmp_path):
    path = tmp_path / "ubuntu-archive-keyring.gpg"
    path.write_bytes(b"a keyring")
    return path


@pytest.fixture
def host_without_noble(tmp_path, monkeypatch):
    """A debootstrap like Debian 12's: the Ubuntu script, but no name for newer suites."""
    scripts = tmp_path / "scripts"
    scripts.mkdir()
    shutil.copy(HOST_SCRIPTS / "gutsy", scripts / "gutsy")
    (scripts / "jammy").symlink_to("gutsy")
    monkeypatch.setattr(distro, "DEBOOTSTRAP_SCRIPTS", scripts)
    return scripts


@pytest.fixture
def warnings():
    """The hostcreator logger's warnings (its console handler does not propagate)."""
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = records.append  # type: ignore[method-assign]
    logger.addHandler(handler)
    yield records
    logger.removeHandler(handler)


def test_ubuntu_knows_its_archive():
    assert UBUNTU.default_suite == "resolute"  # 26.04 LTS
    assert UBUNTU.components == ("main", "restricted", "universe", "multiverse")
    assert UBUNTU.keyring == Path("/usr/share/keyrings/ubuntu-archive-keyring.gpg")
    assert UBUNTU.keyring_package == "ubuntu-keyring"
    assert UBUNTU.kernel_package in UBUNTU.packages
    assert UBUNTU.boot_packages == ("linux-image-virtual", "initramfs-tools", "grub-pc")
    assert set(UBUNTU.boot_packages) <= set(UBUNTU.packages)
    skel = Path(__file__).parent.parent / "skel" / bootloader.COMMON_SCRIPT.lstrip("/")
    assert skel.is_file() and skel.stat().st_mode & 0o111
    assert set(UBUNTU.suites.values()) == {"gutsy"}
    assert distro.get("ubuntu") is UBUNTU


def test_argv_for_a_suite_the_host_does_not_know(host_without_noble, keyring, tmp_path):
    p = bootstrap.plan(cfg(keyring=keyring, cache_dir=tmp_path), UBUNTU, "resolute")
    argv = bootstrap.debootstrap_argv(p, Path("/mnt/x"))
    script = host_without_noble / "gutsy"
    mirror = bootstrap.default_mirror(script, "resolute")
    assert argv[-4:] == ["resolute", "/mnt/x", mirror, str(script)]
    assert f"--keyring={keyring}" in argv and "--no-check-gpg" not in argv
    assert "--components=main,restricted,universe,multiverse" in argv
    include = next(a for a in argv if a.startswith("--include=")).split("=", 1)[1]
    assert {"linux-image-virtual", "initramfs-tools", "grub-pc", "openssh-server"} <= set(
        include.split(","))
    assert f"--cache-dir={tmp_path}/debs/ubuntu-resolute-amd64" in argv


def test_the_mirror_is_the_one_the_script_chooses_for_the_suite(host_without_noble):
    # The Ubuntu script sends the oldest suites to another archive: its `case`
    # blocks are followed, not its first default_mirror line taken.
    script = host_without_noble / "gutsy"
    current = bootstrap.default_mirror(script, "resolute")
    assert current == bootstrap.default_mirror(script, "jammy")
    assert current != bootstrap.default_mirror(script, "gutsy")
    assert current != bootstrap.default_mirror(script, "resolute", arch="arm64")
    assert current.startswith("http")


def test_a_suite_the_host_knows_gets_no_script(host_without_noble, keyring):
    p = bootstrap.plan(cfg(keyring=keyring), UBUNTU, "jammy")
    assert p.script is None
    assert bootstrap.debootstrap_argv(p, Path("/t"))[-2:] == ["jammy", "/t"]
    assert bootstrap.archive_mirror(p) == bootstrap.default_mirror(
        host_without_noble / "gutsy", "jammy")


def test_a_configured_mirror_goes_with_the_script(host_without_noble, keyring):
    p = bootstrap.plan(cfg(keyring=keyring, mirror="http://mirror.test/ubuntu"), UBUNTU,
                       "noble")
    argv = bootstrap.debootstrap_argv(p, Path("/t"))
    assert argv[-4:] == ["noble", "/t", "http://mirror.test/ubuntu",
                         str(host_without_noble / "gutsy")]


def test_declared_mirror_follows_nested_cases(tmp_path):
    script = tmp_path / "script"
    script.write_text(
        "case $ARCH in\n"
        "  amd64|i386)\n"
        "\tcase $SUITE in\n"
        "\t  old1|old2) default_mirror http://old.test/u ;;\n"
        "\t  *)\n"
        "\tdefault_mirror http://new.test/u\n"
        "\t;;\n"
        "\tesac\n"
        "\t;;\n"
        "  *)\n"
        "\tdefault_mirror http://ports.test/u\n"
        "\t;;\n"
        "esac\n"
        "mirror_style release\n"
    )
    assert bootstrap.declared_mirror(script, "old2") == "http://old.test/u"
    assert bootstrap.declared_mirror(script, "new") == "http://new.test/u"
    assert bootstrap.declared_mirror(script, "new", arch="arm64") == "http://ports.test/u"


def test_debootstraps_own_default_when_the_script_declares_none(tmp_path, monkeypatch):
    script = tmp_path / "sid"
    script.write_text("mirror_style release\nkeyring /k.gpg\n")
    program = tmp_path / "debootstrap"
    program.write_text('#!/bin/sh\nDEF_MIRROR="http://deb.test/debian"\n')
    monkeypatch.setattr(bootstrap, "DEBOOTSTRAP_PROGRAM", program)
    assert bootstrap.declared_mirror(script, "forky") is None
    assert bootstrap.default_mirror(script, "forky") == "http://deb.test/debian"


def test_apt_sources_list_the_update_pockets():
    from hostcreator.build import sources

    components = "main restricted universe multiverse"
    assert sources.render(UBUNTU, "resolute", "http://mirror.test/ubuntu").splitlines()[1:] == [
        f"deb http://mirror.test/ubuntu resolute {components}",
        f"deb http://mirror.test/ubuntu resolute-updates {components}",
        f"deb http://mirror.test/ubuntu resolute-security {components}",
    ]


def test_missing_keyring_names_the_package_and_the_setting(tmp_path):
    with pytest.raises(InvalidInput) as exc:
        bootstrap.plan(cfg(keyring=tmp_path / "none.gpg"), UBUNTU, "resolute")
    assert exc.value.message == (f"the ubuntu archive keyring {tmp_path}/none.gpg is missing; "
                                 "signatures cannot be verified")
    assert "apt-get install ubuntu-keyring" in exc.value.hint
    assert "KEYRING" in exc.value.hint


@pytest.mark.parametrize("name", ["debian", "ubuntu"])
def test_skipping_the_signature_check_is_explicit_and_loud(name, tmp_path, warnings):
    dist = distro.get(name)
    missing = tmp_path / "none.gpg"
    p = bootstrap.plan(cfg(keyring=missing, insecure_no_signature_check=True), dist,
                       dist.default_suite)
    argv = bootstrap.debootstrap_argv(p, Path("/t"))
    assert "--no-check-gpg" in argv
    assert not any(a.startswith("--keyring") for a in argv)
    assert [r.getMessage() for r in warnings] == [
        f"WARNING: the signatures of the {name} archive are NOT verified "
        "(INSECURE_NO_SIGNATURE_CHECK, debootstrap --no-check-gpg): what is installed in "
        "the VM may have been tampered with"
    ]


def test_the_skip_setting_is_off_unless_asked():
    assert cfg().insecure_no_signature_check is False
    on = config.load(Path("/dev/null"), {"INSECURE_NO_SIGNATURE_CHECK": "yes"}, environ={})
    assert on.insecure_no_signature_check is True
    with pytest.raises(InvalidInput, match="INSECURE_NO_SIGNATURE_CHECK: 'maybe'"):
        config.load(Path("/dev/null"), {"INSECURE_NO_SIGNATURE_CHECK": "maybe"}, environ={})


@pytest.mark.parametrize("suite", ["nobel", "bookworm-x", "../scripts/gutsy", "Noble"])
def test_unknown_suite_is_refused_offline(suite):
    with pytest.raises(InvalidInput) as exc:
        bootstrap.plan(cfg(), UBUNTU, suite)
    assert exc.value.message == f"unknown ubuntu suite {suite!r}"
    assert "resolute" in exc.value.hint


# The command line: one error line, exit code 2, nothing touched.


def assert_refused(result, env, message: str, program: str = "create-ubuntu"):
    assert result.returncode == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and message in errors[0], result.stderr
    assert errors[0].startswith(f"{program}: error: ")
    assert "Traceback" not in result.stderr
    for touched in (env.image_dir, env.log_dir, env.state_dir, env.journal_dir):
        assert not touched.exists(), touched


def fake_mirror(tmp_path: Path, origin: str = "Ubuntu") -> str:
    release = tmp_path / "mirror" / "dists" / "resolute" / "Release"
    release.parent.mkdir(parents=True)
    release.write_text(f"Origin: {origin}\nSuite: resolute\nCodename: resolute\n")
    return (tmp_path / "mirror").as_uri()


def test_cli_suite_the_archive_does_not_offer(testenv, tmp_path, keyring):
    mirror = fake_mirror(tmp_path)
    result = run_cli("create-ubuntu", "web1", "noble", "--config", str(testenv.config),
                     "--mirror", mirror, "--set", f"KEYRING={keyring}")
    assert_refused(result, testenv,
                   f"unknown ubuntu suite 'noble': the archive {mirror} has no "
                   "dists/noble/Release")


def test_cli_suite_of_another_distribution(testenv, tmp_path, keyring):
    mirror = fake_mirror(tmp_path, origin="Debian")
    result = run_cli("create-ubuntu", "web1", "resolute", "--config", str(testenv.config),
                     "--mirror", mirror, "--set", f"KEYRING={keyring}")
    assert_refused(result, testenv, "'resolute' is a suite of Debian, not of Ubuntu")


@pytest.mark.parametrize("program", ["create-ubuntu", "create-debian"])
def test_cli_insecure_option_is_loud(testenv, tmp_path, program):
    # The check is skipped, so the missing keyring does not stop it; the size does.
    result = run_cli(program, "web1", "--insecure-no-signature-check", "--size", "2",
                     "--config", str(testenv.config), "--set",
                     f"KEYRING={tmp_path}/none.gpg")
    assert "WARNING: the signatures of the" in result.stderr
    assert "archive are NOT verified" in result.stderr
    assert_refused(result, testenv, "SIZE=2 GiB is too small", program)


def test_cli_help_and_hostcreator_subcommand():
    # Wide enough that the help does not shorten the long option's name.
    result = run_cli("create-ubuntu", "-h", env={**os.environ, "COLUMNS": "200"})
    assert result.returncode == 0
    assert "--insecure-no-signature-check" in result.stdout
    assert "Ubuntu VM disk" in result.stdout
    result = run_cli("hostcreator", "--help")
    assert result.returncode == 0 and "create-ubuntu" in result.stdout
