"""The command line as a person uses it: exit codes and one-line errors."""

from __future__ import annotations

import json

import pytest
from conftest import NOWHERE, hermetic_environ, run_cli

import hostcreator
from hostcreator import config

pytestmark = pytest.mark.unit


def test_version_and_help():
    result = run_cli("create-debian", "--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"hostcreator {hostcreator.__version__}"
    result = run_cli("create-debian", "-h")
    assert result.returncode == 0 and "--config" in result.stdout
    result = run_cli("hostcreator", "--help")
    assert result.returncode == 0 and "create-debian" in result.stdout


def test_config_command_shows_effective_settings_and_their_origins(testenv):
    conf = testenv.write(SIZE="12")
    line = list(testenv.settings()).index("SIZE") + 1
    env = {**hermetic_environ(), "HOSTCREATOR_MEMORY": "4096"}
    result = run_cli("hostcreator", "config", "--config", str(conf), "--set", "VCPUS=4",
                     env=env)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert f"SIZE=12  # from {conf}:{line}" in lines
    assert "VCPUS=4  # from --set" in lines
    assert "MEMORY=4096  # from $HOSTCREATOR_MEMORY" in lines
    assert "GRAPHICS=vnc  # built-in default" in lines
    result = run_cli("hostcreator", "config", "--config", str(conf), "--set", "VCPUS=4",
                     "--json", env=env)
    assert result.returncode == 0, result.stderr
    shown = json.loads(result.stdout)
    assert set(shown) == set(config.BY_KEY)
    assert shown["SIZE"] == {"value": 12, "origin": f"{conf}:{line}"}
    assert shown["VCPUS"] == {"value": 4, "origin": "--set"}
    assert shown["MEMORY"] == {"value": 4096, "origin": "$HOSTCREATOR_MEMORY"}
    assert shown["STORAGE"] == {"value": None, "origin": "built-in default"}
    assert shown["INSECURE_NO_SIGNATURE_CHECK"]["value"] is False


def test_config_command_output_read_back_is_the_same_configuration(testenv, tmp_path):
    testenv.write(NETWORK="br 'one' \"two\"", PACKAGES="vim, less", VARIANT="minbase")
    result = run_cli("hostcreator", "config", "--config", str(testenv.config),
                     "--set", "INSECURE_NO_SIGNATURE_CHECK=yes", "--set", "SKEL_DIR=/s k")
    assert result.returncode == 0, result.stderr
    again = tmp_path / "again.conf"
    again.write_text(result.stdout)
    original = config.load(testenv.config, {"INSECURE_NO_SIGNATURE_CHECK": "yes",
                                            "SKEL_DIR": "/s k"}, environ={})
    assert config.load(again, environ={}) == original
    assert original.network == "br 'one' \"two\"" and original.insecure_no_signature_check


def test_config_command_masks_url_passwords_unless_asked(testenv, tmp_path):
    testenv.write(APT_PROXY="http://me:s3cret@proxy:3128", MIRROR="http://h/debian")
    shown = run_cli("hostcreator", "config", "--config", str(testenv.config))
    assert shown.returncode == 0, shown.stderr
    assert "APT_PROXY='http://me:***@proxy:3128'  # from" in shown.stdout
    assert "s3cret" not in shown.stdout
    as_json = run_cli("hostcreator", "config", "--config", str(testenv.config), "--json")
    assert json.loads(as_json.stdout)["APT_PROXY"]["value"] == "http://me:***@proxy:3128"
    clear = run_cli("hostcreator", "config", "--config", str(testenv.config), "--show-secrets")
    assert "APT_PROXY=http://me:s3cret@proxy:3128  # from" in clear.stdout
    again = tmp_path / "again.conf"
    again.write_text(clear.stdout)
    assert config.load(again, environ={}) == config.load(testenv.config, environ={})


def test_relative_paths_are_made_absolute_and_said_so(testenv, tmp_path):
    testenv.write()
    result = run_cli("hostcreator", "config", "--config", str(testenv.config),
                     "--set", "IMAGE_DIR=im/../g", "--set", "LIVE_ISO=a.iso", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert f"IMAGE_DIR={tmp_path}/im/../g  # from --set" in result.stdout.splitlines()
    assert f"LIVE_ISO={tmp_path}/a.iso  # from --set" in result.stdout.splitlines()
    assert (f"note: --set: IMAGE_DIR: the relative path im/../g is taken as "
            f"{tmp_path}/im/../g") in result.stderr


def test_cli_options_are_named_as_the_origin_of_their_values(testenv):
    result = run_cli("create-debian", "web1", "--config", str(testenv.config),
                     "--storage", "lvm")
    assert result.returncode == 2
    assert "create-debian: error: --storage: STORAGE=lvm needs VG_NAME" in result.stderr
    result = run_cli("create-kvm", "web1", "--config", str(testenv.config), "--vcpus", "0")
    assert result.returncode == 2
    assert "create-kvm: error: --vcpus: VCPUS: 0 is not a positive number" in result.stderr


# Every command, as a user types it: the short names and `hostcreator <command>`.
INVOCATIONS = [
    ("create-debian",), ("create-ubuntu",), ("create-kvm",), ("mount-vm",), ("umount-vm",),
    *(("hostcreator", c) for c in ("create-debian", "create-ubuntu", "create-kvm", "boot-test",
                                   "config", "mount-vm", "umount-vm", "status", "cleanup",
                                   "list", "remove", "clone", "export", "doctor")),
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
                                        ("hostcreator", "cache", "list"),
                                        ("hostcreator", "list")], ids=" ".join)
def test_the_common_options_are_taken_by_reports(invocation, testenv):
    # libvirt points nowhere: `list` asks it, and this host's domains are not the test's.
    conf = testenv.write(LIBVIRT_URI=NOWHERE)
    result = run_cli(*invocation, "-v", "--debug", "-c", str(conf), "-s", "SIZE=9", "--json")
    assert result.returncode == 0, result.stderr
    assert isinstance(json.loads(result.stdout), dict)


def test_an_unexpected_exception_is_one_line_and_exit_code_1():
    env = {**hermetic_environ(), "HOSTCREATOR_FAULT": "crash:config"}
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


def test_errors_as_json_carry_message_hint_and_exit_code(testenv):
    result = run_cli("hostcreator", "config", "--json", "-c", str(testenv.config), "--set",
                     "SIZE=many")
    assert result.returncode == 2
    error = json.loads(result.stdout)["error"]
    assert error["exit_code"] == 2 and "SIZE" in error["message"]
    assert result.stderr.splitlines()[0].startswith("config: error: ")
