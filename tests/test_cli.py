"""The command line as a person uses it: exit codes and one-line errors."""

from __future__ import annotations

import pytest
from conftest import run_cli

import hostcreator

pytestmark = pytest.mark.unit


def test_version_and_help():
    result = run_cli("create-debian", "--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"hostcreator {hostcreator.__version__}"
    result = run_cli("create-debian", "-h")
    assert result.returncode == 0 and "--config" in result.stdout
    result = run_cli("hostcreator", "--help")
    assert result.returncode == 0 and "create-debian" in result.stdout


@pytest.mark.parametrize("args,message", [
    (["Bad_Name"], "'Bad_Name' is not a valid host name"),
    (["web1", "trixy"], "unknown debian suite 'trixy'"),
    (["web1", "--size", "2"], "SIZE=2 GiB is too small"),
    (["web1", "--set", "SIZE=x"], "command line: SIZE: 'x' is not a whole number"),
    (["web1", "--set", "NOPE=1"], "command line: unknown setting NOPE"),
    (["web1", "--set", "KEYRING=/nonexistent.gpg"], "archive keyring /nonexistent.gpg is missing"),
    (["web1", "--set", "ROOT_PASSWORD_FILE=/nonexistent"], "ROOT_PASSWORD_FILE: cannot read"),
    (["web1", "--set", "SSH_AUTHORIZED_KEYS=/nonexistent"], "SSH_AUTHORIZED_KEYS: cannot read"),
    (["web1", "--storage", "lvm"], "STORAGE=lvm needs VG_NAME"),
])
def test_bad_input_is_one_line_exit_2_and_touches_nothing(tmp_path, args, message):
    conf = tmp_path / "conf"
    images = tmp_path / "images"
    conf.write_text(f"IMAGE_DIR={images}\nLOG_DIR={tmp_path}/log\nSTATE_DIR={tmp_path}/st\n")
    result = run_cli("create-debian", *args, "--config", str(conf))
    assert result.returncode == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and message in errors[0], result.stderr
    assert errors[0].startswith("create-debian: error: ")
    assert "Traceback" not in result.stderr
    assert not images.exists() and not (tmp_path / "log").exists()


def test_missing_config_file(tmp_path):
    result = run_cli("create-debian", "web1", "--config", str(tmp_path / "nope"))
    assert result.returncode != 0
    assert "nope" in result.stderr


def test_config_command_shows_effective_settings(tmp_path):
    conf = tmp_path / "conf"
    conf.write_text("SIZE=12\n")
    result = run_cli("hostcreator", "config", "--config", str(conf), "--set", "VCPUS=4")
    assert result.returncode == 0
    assert "SIZE=12" in result.stdout.splitlines()
    assert "VCPUS=4" in result.stdout.splitlines()
