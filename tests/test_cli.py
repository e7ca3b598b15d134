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


def test_config_command_shows_effective_settings(tmp_path):
    conf = tmp_path / "conf"
    conf.write_text("SIZE=12\n")
    result = run_cli("hostcreator", "config", "--config", str(conf), "--set", "VCPUS=4")
    assert result.returncode == 0
    assert "SIZE=12" in result.stdout.splitlines()
    assert "VCPUS=4" in result.stdout.splitlines()
