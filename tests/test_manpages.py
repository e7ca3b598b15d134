"""The man pages (man/) and shell completion scripts (completion/) are what the CLI says now:
hostcreator.manpage makes them from the CLI's click commands, and a change of an option,
a help text or an exit code without `HOSTCREATOR_REGENERATE=1 pytest tests/test_manpages.py`
fails here. The completion scripts work: bash completes by asking the command."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from conftest import BIN, hermetic_environ

from hostcreator import manpage

pytestmark = pytest.mark.unit
ROOT = Path(__file__).parent.parent
REGENERATE = os.environ.get("HOSTCREATOR_REGENERATE") == "1"


def test_there_is_a_page_and_completion_for_every_console_script():
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert set(manpage.PROGRAMS) == set(scripts)


def generated(top: Path) -> dict[str, str]:
    return {str(p.relative_to(top)): p.read_text() for sub in ("man", "completion")
            for p in (top / sub).rglob("*") if p.is_file()}


def test_shipped_pages_and_scripts_are_what_the_cli_says(tmp_path):
    # Made in a process of their own: the tests' fixtures move the configuration files.
    out = ROOT if REGENERATE else tmp_path
    subprocess.run([sys.executable, "-m", "hostcreator.manpage", str(out)], check=True,
                   capture_output=True, env=hermetic_environ(), cwd=tmp_path)
    made, shipped = generated(out), generated(ROOT)
    hint = f"regenerate: HOSTCREATOR_REGENERATE=1 pytest {__file__}"
    assert set(shipped) == set(made), hint
    drifted = [rel for rel, text in made.items() if shipped[rel] != text]
    assert not drifted, f"{drifted} differ from the CLI; {hint}"
    assert "/etc/default/hostcreator" in made["man/create-debian.1"]
    assert "\\-\\-show\\-secrets" in made["man/hostcreator.1"]  # config's option


def test_each_page_names_every_option_and_argument_of_its_commands():
    for program in manpage.PROGRAMS:
        text = manpage.page(program)
        command = manpage.command_of(program)
        commands = [command] if program in manpage.STANDALONE else \
            [c for c, _ctx in manpage.subcommands(command, manpage.context(command, program))
             if c.name not in manpage.STANDALONE] + [command]
        for cmd in commands:
            for param in cmd.params:
                argument = param.param_type_name == "argument"
                names = [param.metavar or param.name.upper()] if argument else \
                    [*param.opts, *param.secondary_opts]
                for name in names:
                    assert manpage.escape(name) in text, (program, name)


def test_every_exit_code_has_a_meaning():
    codes = manpage.exit_codes()
    assert {0, 1, 2, 3, 4, 5, 6, 130, 143} <= set(codes)
    assert all(codes.values()), codes
    # Two errors share 6: the page tells both.
    assert "did not finish" in codes[6] and "cannot be read" in codes[6], codes[6]


@pytest.mark.parametrize("program", manpage.PROGRAMS)
def test_page_renders_without_warnings(program):
    page = ROOT / "man" / f"{program}.1"
    result = subprocess.run(["man", "--warnings", "-E", "UTF-8", "-l", str(page)],
                            capture_output=True, text=True,
                            env={**os.environ, "MANWIDTH": "80", "MANPAGER": "cat"})
    assert result.returncode == 0 and not result.stderr, result.stderr
    assert f"{program.upper()}(1)" in result.stdout
    assert "EXIT STATUS" in result.stdout


def bash_complete(program: str, *words: str) -> list[str]:
    """What Tab after WORDS offers in bash with the shipped completion of PROGRAM."""
    function = f"_{program.replace('-', '_')}_completion"
    script = (f'source {ROOT}/completion/bash/{program}; COMP_WORDS=({program} {" ".join(words)});'
              f' COMP_CWORD={len(words)}; {function} {program}; printf "%s\\n" "${{COMPREPLY[@]}}"')
    result = subprocess.run(["bash", "--norc", "-c", script], capture_output=True, text=True,
                            env={**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}"})
    assert result.returncode == 0, result.stderr
    return result.stdout.split()


def test_bash_completes_options_and_commands():
    assert bash_complete("create-debian", "--re") == ["--refresh-cache", "--resume",
                                                      "--restart"]
    assert bash_complete("hostcreator", "cache", "p") == ["prune"]
    assert bash_complete("hostcreator", "config", "--show") == ["--show-secrets"]


def test_zsh_completion_asks_the_command():
    script = (ROOT / "completion" / "zsh" / "_create-kvm").read_text()
    assert script.startswith("#compdef create-kvm\n")  # zsh's autoload needs it first
    assert "_CREATE_KVM_COMPLETE=complete_zsh create-kvm" in script
    result = subprocess.run([str(BIN / "create-kvm")], capture_output=True, text=True,
                            env={**os.environ, "_TYPER_COMPLETE_ARGS": "create-kvm --net",
                                 "_CREATE_KVM_COMPLETE": "complete_zsh"})
    assert result.returncode == 0, result.stderr
    assert '"--network":' in result.stdout and '"--network-type":' in result.stdout
