from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from hostcreator import config
from hostcreator.config import NetworkType, StorageKind, VirtType
from hostcreator.errors import InvalidInput

pytestmark = pytest.mark.unit


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "hostcreator"
    path.write_text(text)
    return path


def test_defaults_without_a_file(monkeypatch):
    monkeypatch.setattr(config, "DEFAULT_FILE", Path("/nonexistent/a"))
    monkeypatch.setattr(config, "LEGACY_FILE", Path("/nonexistent/b"))
    cfg = config.load(environ={})
    assert cfg.source is None
    assert cfg.storage_kind is StorageKind.FILE
    assert cfg.size == 8
    assert cfg.hook_dir == Path("/etc/hostcreator")
    assert cfg.virt_type is VirtType.AUTO
    assert cfg.timezone == config.host_timezone()


def test_shell_syntax_quotes_comments_and_export(tmp_path):
    path = write(tmp_path, """
# comment
VG_NAME=vg0   # trailing comment
export SIZE="16"
NETWORK='br 1'
PACKAGES="vim, less tmux"
""")
    cfg = config.load(path, environ={})
    assert cfg.vg_name == "vg0"
    assert cfg.storage_kind is StorageKind.LVM
    assert cfg.size == 16
    assert cfg.network == "br 1"
    assert cfg.packages == ("vim", "less", "tmux")
    assert cfg.source == path


def test_bad_value_names_the_key_and_the_file(tmp_path):
    path = write(tmp_path, "SIZE=big\n")
    with pytest.raises(InvalidInput) as exc:
        config.load(path, environ={})
    assert str(path) in str(exc.value)
    assert "SIZE" in str(exc.value)
    assert "'big' is not a whole number" in str(exc.value)


@pytest.mark.parametrize("text,fragment", [
    ("SIZE=0\n", "SIZE: 0 is not a positive number"),
    ("STORAGE=nfs\n", "STORAGE: 'nfs' is not one of lvm | file"),
    ("VIRT_TYPE=xen\n", "VIRT_TYPE: 'xen' is not one of auto | kvm | qemu"),
    ("NETWORK_TYPE=tap\n", "NETWORK_TYPE"),
    ("NETWORK=br 0\n", "expected KEY=VALUE"),
    ("STORAGE=lvm\n", "STORAGE=lvm needs VG_NAME"),
    ('SIZE="8\n', "cannot parse line"),
])
def test_bad_lines(tmp_path, text, fragment):
    with pytest.raises(InvalidInput) as exc:
        config.load(write(tmp_path, text), environ={})
    assert fragment in str(exc.value)


def test_unknown_key_is_warned_about_with_file_and_suggestion(tmp_path, caplog):
    path = write(tmp_path, "VGNAME=vg0\n")
    cfg = config.load(path, environ={})
    assert cfg.vg_name is None
    assert f"{path}:1: unknown setting VGNAME (did you mean VG_NAME?)" in caplog.text


def test_legacy_file_is_read_when_the_new_one_is_absent(tmp_path, monkeypatch):
    legacy = write(tmp_path, "VG_NAME=oldvg\nSIZE=20\n")
    monkeypatch.setattr(config, "DEFAULT_FILE", tmp_path / "absent")
    monkeypatch.setattr(config, "LEGACY_FILE", legacy)
    monkeypatch.delenv(config.ENV_FILE, raising=False)
    cfg = config.load(environ={})
    assert cfg.source == legacy and cfg.vg_name == "oldvg" and cfg.size == 20


def test_new_file_wins_over_legacy(tmp_path, monkeypatch):
    new = tmp_path / "new"
    new.write_text("SIZE=30\n")
    monkeypatch.setattr(config, "DEFAULT_FILE", new)
    monkeypatch.setattr(config, "LEGACY_FILE", write(tmp_path, "SIZE=20\n"))
    monkeypatch.delenv(config.ENV_FILE, raising=False)
    assert config.load(environ={}).size == 30


def test_hostcreator_config_variable_names_the_file(tmp_path, monkeypatch):
    path = write(tmp_path, "SIZE=12\n")
    monkeypatch.setenv(config.ENV_FILE, str(path))
    assert config.load(environ={}).size == 12
    monkeypatch.setenv(config.ENV_FILE, str(tmp_path / "missing"))
    with pytest.raises(InvalidInput, match="config file not found"):
        config.load(environ={})


def test_precedence_file_environment_command_line(tmp_path):
    path = write(tmp_path, "SIZE=10\nMEMORY=1024\nVCPUS=3\n")
    cfg = config.load(path, overrides={"SIZE": "30"},
                      environ={"HOSTCREATOR_SIZE": "20", "HOSTCREATOR_MEMORY": "4096"})
    assert (cfg.size, cfg.memory, cfg.vcpus) == (30, 4096, 3)


def test_command_line_unknown_key_is_an_error():
    with pytest.raises(InvalidInput, match="--set: unknown setting SIZ"):
        config.load(Path("/dev/null"), overrides={"SIZ": "3"}, environ={})


def test_parse_assignments():
    assert config.parse_assignments(["size=3", "NETWORK=br0"]) == {"SIZE": "3",
                                                                   "NETWORK": "br0"}
    with pytest.raises(InvalidInput):
        config.parse_assignments(["SIZE"])


def test_enums_and_paths(tmp_path):
    cfg = config.load(write(tmp_path, "NETWORK_TYPE=USER\nIMAGE_DIR=/srv/vm\n"), environ={})
    assert cfg.network_type is NetworkType.USER
    assert cfg.image_dir == Path("/srv/vm")


def test_every_setting_has_help_and_a_field():
    fields = {f.name for f in config.Config.__dataclass_fields__.values()}
    for setting in config.SETTINGS:
        assert setting.help and setting.field in fields


def test_sample_config_in_etc_names_only_known_settings():
    sample = Path(__file__).parent.parent / "etc" / "default" / "hostcreator"
    keys = set()
    for line in sample.read_text().splitlines():
        stripped = line.lstrip("# ")
        if "=" in stripped and stripped.split("=")[0].isupper():
            keys.add(stripped.split("=")[0])
    assert keys == set(config.BY_KEY)


@pytest.mark.parametrize("origin,overrides,says", [
    ("file", [], "{path}:2: STORAGE=lvm needs VG_NAME"),
    ("--set", ["STORAGE=lvm"], "--set: STORAGE=lvm needs VG_NAME"),
    ("option", [], "--storage: STORAGE=lvm needs VG_NAME"),
])
def test_errors_name_the_true_origin(tmp_path, origin, overrides, says):
    path = write(tmp_path, "SIZE=9\n" + ("STORAGE=lvm\n" if origin == "file" else ""))
    items = config.set_options(overrides)
    if origin == "option":
        items.append(config.option("STORAGE", "lvm"))
    with pytest.raises(InvalidInput) as exc:
        config.load(path, items, environ={})
    assert exc.value.message == says.format(path=path)


def test_every_value_keeps_its_origin(tmp_path):
    path = write(tmp_path, "SIZE=9\nexport MEMORY=1024\n")
    cfg = config.load(path, [config.option("VG_NAME", "vg0"), *config.set_options(["VCPUS=3"])],
                      environ={"HOSTCREATOR_NETWORK": "br7"})
    assert str(cfg.origin("SIZE")) == f"{path}:1"
    assert str(cfg.origin("MEMORY")) == f"{path}:2"
    assert str(cfg.origin("NETWORK")) == "$HOSTCREATOR_NETWORK"
    assert str(cfg.origin("VG_NAME")) == "--vg"
    assert str(cfg.origin("VCPUS")) == "--set"
    assert str(cfg.origin("GRAPHICS")) == "built-in default"


@pytest.mark.parametrize("value", ["a\nSIZE=1", "a\rb", "a\x00b", "a\u2028b", "a\x1bb"])
def test_a_value_is_one_line_of_text(value):
    with pytest.raises(InvalidInput, match="NETWORK: the value holds the control character"):
        config.load(Path("/dev/null"), {"NETWORK": value}, environ={})


def test_a_file_that_is_not_utf8_names_the_line_and_the_byte(tmp_path):
    path = tmp_path / "latin1"
    path.write_bytes("SIZE=9\n# Gr\u00fc\u00dfe\n".encode("latin-1"))
    with pytest.raises(InvalidInput) as exc:
        config.load(path, environ={})
    assert exc.value.message == f"config file: {path}:2: not UTF-8 (byte 11: 0xfc)"


def test_a_path_longer_than_the_system_allows_is_an_input_error():
    with pytest.raises(InvalidInput, match=r"--set: LOG_DIR: the path '/xxx.* has 5001 bytes, "
                       r"more than the 4095 a path may have"):
        config.load(Path("/dev/null"), {"LOG_DIR": "/" + "x" * 5000}, environ={})


def test_adding_a_setting_is_one_declaration():
    # The table comes from the dataclass: every setting field is in it, in order.
    settings = [f.name for f in dataclasses.fields(config.Config) if config.METADATA in f.metadata]
    assert [s.field for s in config.SETTINGS] == settings
    assert "JOURNAL_DIR" in config.DIRECTORIES
