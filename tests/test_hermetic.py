"""The tests read nothing of the host's hostcreator state: the test configuration
(conftest.TestEnv, the testenv fixture) points every directory setting below the
test's own directory, and no test reads the host's configuration file."""

from __future__ import annotations

import dataclasses
import signal
from pathlib import Path

import pytest
from conftest import DIRECTORIES
from typer.testing import CliRunner

from hostcreator import cli, config
from hostcreator.state import journal, mountstate
from hostcreator.state.journal import Journal, Status
from hostcreator.state.mountstate import MountState

pytestmark = pytest.mark.unit
OTHER = "hctest-other"


def test_every_directory_setting_is_set_by_the_test_configuration():
    # SKEL_DIR's default is HOOK_DIR/skel: below the test's directory too.
    assert set(DIRECTORIES) | {"SKEL_DIR"} == set(config.DIRECTORIES)


def test_no_path_of_the_test_configuration_is_a_default(testenv):
    cfg = testenv.load()
    for setting in config.SETTINGS:
        value = getattr(cfg, setting.field)
        if isinstance(value, Path):
            assert testenv.base in value.parents, setting.key
            assert cfg.origin(setting.key).kind is config.OriginKind.FILE, setting.key


def test_no_host_configuration_file_is_read():
    assert not config.DEFAULT_FILE.exists() and not config.LEGACY_FILE.exists()
    assert config.config_file(None) is None


@pytest.fixture
def fake_host(tmp_path, monkeypatch) -> Path:
    """The built-in directory defaults moved below HOST, which holds another VM's
    unfinished build and mount state, as a busy host's /var/lib/hostcreator would."""
    host = tmp_path / "host"

    def moved_default(setting: config.Setting) -> config.Setting:
        path = host / str(setting.default()).lstrip("/")
        return dataclasses.replace(setting, default=lambda: path)

    moved = tuple(moved_default(s) if s.directory and s.default() is not None else s
                  for s in config.SETTINGS)
    monkeypatch.setattr(config, "SETTINGS", moved)
    monkeypatch.setattr(config, "BY_KEY", {s.key: s for s in moved})
    cfg = config.load(Path("/dev/null"), environ={})
    assert host in cfg.journal_dir.parents
    journal.save(cfg.journal_dir, Journal(OTHER, "debian", "trixie", cfg.image_dir / "x.img",
                                          status=Status.FAILED, stage="install",
                                          done=["disk"]))
    mountstate.save(cfg.state_dir, MountState(
        OTHER, cfg.image_dir / "x.img", cfg.mount_dir / OTHER, read_only=False,
        loop=Path("/dev/loop99"), mounts=[cfg.mount_dir / OTHER], complete=True, pid=42,
        since="2024-01-01 00:00:00"))
    return host


@pytest.fixture
def signal_handlers():
    """The commands run here, in the test's process, set their own SIGINT and SIGTERM
    handlers: the other tests get back pytest's."""
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    yield
    for sig, handler in saved.items():
        signal.signal(sig, handler)


@pytest.mark.parametrize("argv", [["status"], ["mount-vm", "--list"]])
def test_another_vms_state_on_the_host_is_not_seen(fake_host, testenv, tmp_path, argv,
                                                   signal_handlers):
    empty = tmp_path / "empty.conf"
    empty.write_text("")
    # Without the test configuration, the fake host's state is seen: the fake works...
    seen = CliRunner().invoke(cli.app, [*argv, "--config", str(empty)])
    assert seen.exit_code == 0 and OTHER in seen.stdout, seen.output
    # ...and with it, nothing of the host is.
    result = CliRunner().invoke(cli.app, [*argv, "--config", str(testenv.config)])
    assert result.exit_code == 0, result.output
    assert OTHER not in result.output
