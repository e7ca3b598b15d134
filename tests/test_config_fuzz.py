"""Fuzzing the configuration: any bytes as the file, any text as --set KEY=VALUE give a
configuration or one error line with exit code 2 (never a traceback, never a hang), and
`hostcreator config`'s output, read back, gives the same configuration."""

from __future__ import annotations

import string
from pathlib import Path

import pytest
from conftest import run_cli
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from hostcreator import config
from hostcreator.errors import InvalidInput

pytestmark = pytest.mark.unit

# Examples per run; each must end within the deadline (a hang or a quadratic parse fails;
# generous, for a machine shared by many).
EXAMPLES = 150
CLI_EXAMPLES = 15
FUZZ = settings(max_examples=EXAMPLES, deadline=10_000, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow])

KEYS = st.sampled_from([*config.BY_KEY, "NOPE", "size", "1BAD", "export", ""])
VALUES = st.one_of(
    st.text(max_size=40),
    st.text(alphabet=string.printable + "'\"\\#$ \t\u00e9\u2028\x85\x00", max_size=40),
    st.sampled_from(["yes", "no", "8", "0", "-1", "lvm", "file", "user", "/tmp/x", "x//y/",
                     "http://u:p@h:80a/d", "http://h/d", "Etc/UTC", "C.UTF-8", "vim, less",
                     "minbase", "qemu:///system", "'", '"a b"', "a\\", "${HOME}"]),
)


def quoted(value: str) -> st.SearchStrategy[str]:
    return st.sampled_from([value, f"'{value}'", f'"{value}"', f"{value} # c"])


LINES = st.tuples(st.sampled_from(["", "export ", " ", "#"]), KEYS,
                  st.sampled_from(["=", " = ", ""]), VALUES.flatmap(quoted)).map("".join)
FILES = st.one_of(
    st.binary(max_size=600),
    st.lists(LINES, max_size=12).map(lambda lines: "\n".join(lines).encode()),
    st.lists(LINES, max_size=12).map(lambda lines: "\r\n".join(lines).encode("latin-1",
                                                                                 "replace")),
)


def load_or_error(path: Path, sets: list[str]) -> config.Config | None:
    """The configuration, or None after checking that the error is one line, exit code 2."""
    try:
        return config.load(path, config.set_options(sets), environ={})
    except InvalidInput as exc:
        assert exc.exit_code == 2
        assert "\n" not in exc.message and "\n" not in (exc.hint or "")
        return None


def assert_round_trip(cfg: config.Config, path: Path) -> None:
    path.write_text("\n".join(config.as_lines(cfg, secrets=True)) + "\n")
    assert config.load(path, environ={}) == cfg


@FUZZ
@given(data=FILES)
def test_any_file_is_a_configuration_or_one_error(tmp_path, data):
    path = tmp_path / "fuzz.conf"
    path.write_bytes(data)
    cfg = load_or_error(path, [])
    if cfg is not None:
        assert_round_trip(cfg, tmp_path / "again.conf")


@FUZZ
@given(sets=st.lists(st.one_of(st.text(max_size=30), st.tuples(KEYS, VALUES).map("=".join)),
                     max_size=6))
def test_any_set_option_is_a_configuration_or_one_error(tmp_path, sets):
    cfg = load_or_error(Path("/dev/null"), sets)
    if cfg is not None:
        assert_round_trip(cfg, tmp_path / "again.conf")


@settings(FUZZ, max_examples=CLI_EXAMPLES, deadline=None)
@given(data=FILES)
@example(data=b"STORAGE=$")  # a warning, then the error
def test_the_config_command_on_any_file(tmp_path, data):
    path = tmp_path / "fuzz.conf"
    path.write_bytes(data)
    result = run_cli("hostcreator", "config", "--show-secrets", "-c", str(path), timeout=30)
    assert result.returncode in (0, 2), result.stderr
    assert "Traceback" not in result.stderr and "internal error" not in result.stderr
    if result.returncode == 2:
        # One error line; warnings of the lines read before it may come first
        # (b"STORAGE=$": "variables are not expanded", then STORAGE's error).
        errors = [line for line in result.stderr.splitlines() if "error:" in line]
        assert len(errors) == 1 and errors[0].startswith("config: error: "), result.stderr
    else:
        again = tmp_path / "again.conf"
        again.write_text(result.stdout)
        assert config.load(again, environ={}) == config.load(path, environ={})
