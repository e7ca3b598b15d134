"""The command line as a person uses it: exit codes and one-line errors."""

from __future__ import annotations

import json
import os

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


# Every command, as a user types it: the short names and `hostcreator <command>`.
INVOCATIONS = [
    ("create-debian",), ("create-ubuntu",), ("create-kvm",), ("mount-vm",), ("umount-vm",),
    *(("hostcreator", c) for c in ("create-debian", "create-ubuntu", "create-kvm", "boot-test",
                                   "config", "mount-vm", "umount-vm", "status", "cleanup")),
    ("hostcreator", "cache", "list"), ("hostcreator", "cache", "prune"),
]
COMMON = ("--config", "--set", "--verbose", "-v", "--debug", "--version", "--help", "-h")


def test_every_command_is_in_the_table():
    from hostcreator import cli

    named = {i[1] for i in INVOCATIONS if i[0] == "hostcreator" and i[1] != "cache"}
    assert named == set(cli.COMMANDS)


@pytest.mark.parametrize("invocation", INVOCATIONS, ids=" ".join)
def test_every_command_has_the_common_options(invocation):
    result = run_cli(*invocation, "-h")
    assert result.returncode == 0, result.stderr
    words = result.stdout.replace("│", " ").split()
    missing = [o for o in COMMON if o not in words]
    assert not missing, f"{' '.join(invocation)} lacks {missing}"
    result = run_cli(*invocation, "--version")
    version = f"hostcreator {hostcreator.__version__}"
    assert (result.returncode, result.stdout.strip()) == (0, version)


@pytest.mark.parametrize("invocation", [("hostcreator", "config"), ("hostcreator", "status"),
                                        ("hostcreator", "cache", "list")], ids=" ".join)
def test_the_common_options_are_taken_by_reports(invocation, tmp_path):
    conf = tmp_path / "conf"
    conf.write_text("".join(f"{key}={tmp_path / key.lower()}\n" for key in (
        "IMAGE_DIR", "LOG_DIR", "CACHE_DIR", "STATE_DIR", "JOURNAL_DIR", "MOUNT_DIR")))
    result = run_cli(*invocation, "-v", "--debug", "-c", str(conf), "-s", "SIZE=9", "--json")
    assert result.returncode == 0, result.stderr
    assert isinstance(json.loads(result.stdout), dict)


def test_an_unexpected_exception_is_one_line_and_exit_code_1(tmp_path):
    env = {**os.environ, "HOSTCREATOR_FAULT": "crash:config"}
    result = run_cli("hostcreator", "config", env=env)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "config: internal error: InjectedCrash: crash injected in config (HOSTCREATOR_FAULT); "
        "rerun with --debug for the traceback"]
    debug = run_cli("hostcreator", "config", "--debug", env=env)
    assert debug.returncode == 1 and "Traceback" in debug.stderr
    assert debug.stderr.splitlines()[-1].startswith("config: internal error: InjectedCrash")
    as_json = run_cli("hostcreator", "config", "--json", env=env)
    assert json.loads(as_json.stdout)["error"]["exit_code"] == 1


def test_errors_as_json_carry_message_hint_and_exit_code(tmp_path):
    result = run_cli("hostcreator", "config", "--json", "--set", "SIZE=many")
    assert result.returncode == 2
    error = json.loads(result.stdout)["error"]
    assert error["exit_code"] == 2 and "SIZE" in error["message"]
    assert result.stderr.splitlines()[0].startswith("config: error: ")
