"""Man pages and shell completion scripts, made from the CLI's own click commands.

The pages (man/) and scripts (completion/) are made here and kept in the repository:
the Debian package is built on hosts whose typer is too old to run the CLI, and pip
installs them from the wheel. tests/test_manpages.py fails when they differ from what
the CLI says now; `python -m hostcreator.manpage .` (or HOSTCREATOR_REGENERATE=1 on
that test) writes them anew.
"""

from __future__ import annotations

import functools
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import typer
from typer.completion import get_completion_script

from hostcreator import __version__, cli, config
from hostcreator.errors import HostCreatorError

# The console scripts besides `hostcreator`: each runs the command of that name.
STANDALONE = ("create-debian", "create-ubuntu", "create-kvm", "mount-vm", "umount-vm")
PROGRAMS = ("hostcreator", *STANDALONE)
INTERRUPTED = {130: "interrupted by SIGINT (Ctrl-C); everything was undone",
               143: "interrupted by SIGTERM; everything was undone"}

# A zsh completion function is autoloaded from its file, whose body runs at each Tab:
# it asks the command itself, by typer's protocol (the bash script is typer's own).
ZSH_SCRIPT = """\
#compdef {prog}
# zsh completion for {prog}: {prog} itself says what completes (typer's protocol).
eval $(env _TYPER_COMPLETE_ARGS="${{words[1,$CURRENT]}}" {var}=complete_zsh {prog})
"""


@functools.cache
def root() -> Any:
    """The click group of `hostcreator`."""
    return typer.main.get_command(cli.app)


def command_of(program: str) -> Any:
    group = root()
    return group if program == "hostcreator" else group.commands[program]


def context(command: Any, name: str, parent: Any = None) -> Any:
    # The standalone programs get the settings of `hostcreator` (-h as --help).
    settings = {**root().context_settings, **command.context_settings}
    return command.context_class(command, info_name=name, parent=parent, **settings)


def escape(text: str) -> str:
    """TEXT for roff: backslashes and hyphens literal, no line read as a request."""
    text = text.replace("\\", "\\e").replace("-", "\\-")
    return re.sub(r"^([.'])", r"\\&\1", text, flags=re.MULTILINE)


def paragraphs(text: str | None) -> list[str]:
    """A docstring as roff paragraphs."""
    parts = [" ".join(p.split()) for p in (text or "").split("\n\n") if p.strip()]
    lines: list[str] = []
    for part in parts:
        lines += [".PP", escape(part)] if lines else [escape(part)]
    return lines


def synopsis(command: Any, ctx: Any) -> list[str]:
    return [f".B {escape(ctx.command_path)}", escape(" ".join(command.collect_usage_pieces(ctx)))]


def parameters(command: Any, ctx: Any, argument: bool) -> list[str]:
    """Arguments or options as tagged paragraphs, in the words of --help."""
    lines = []
    for param in command.get_params(ctx):
        is_argument = param.param_type_name == "argument"
        record = param.get_help_record(ctx)
        if is_argument != argument or record is None:
            continue
        name, help_text = record
        lines += [".TP", f".B {escape(name)}", escape(help_text or "")]
    return lines


def describe(command: Any, ctx: Any, section: bool) -> list[str]:
    """Arguments and options of COMMAND: as sections of the page, or as a subsection's
    paragraphs (SECTION false)."""
    lines = []
    for title, argument in (("ARGUMENTS", True), ("OPTIONS", False)):
        found = parameters(command, ctx, argument)
        if found:
            lines += [f".SH {title}"] if section else [".PP", f"{title.capitalize()}:"]
            lines += found
    return lines


def subcommands(group: Any, ctx: Any) -> Iterator[tuple[Any, Any]]:
    """Every command below GROUP with its context, groups' own commands included."""
    for name in group.list_commands(ctx):
        sub = group.get_command(ctx, name)
        sub_ctx = context(sub, name, parent=ctx)
        if hasattr(sub, "list_commands"):
            yield from subcommands(sub, sub_ctx)
        else:
            yield sub, sub_ctx


def commands_section(group: Any, ctx: Any) -> list[str]:
    lines = [".SH COMMANDS"]
    for sub, sub_ctx in subcommands(group, ctx):
        name = sub_ctx.command_path.removeprefix("hostcreator ")
        lines += [f".SS {escape(name)}", *synopsis(sub, sub_ctx), ".PP", *paragraphs(sub.help)]
        if name in STANDALONE:  # its own page tells its arguments and options
            lines += [".PP", f"See \\fB{escape(name)}\\fR(1)."]
        else:
            lines += describe(sub, sub_ctx, section=False)
    return lines


def exit_codes() -> dict[int, str]:
    """Exit code -> what it means, from the error classes that set one (their docstrings);
    a code that several classes share (6: an unfinished build, an unreadable journal)
    tells every meaning."""
    meanings: dict[int, list[str]] = {}
    pending = HostCreatorError.__subclasses__()
    while pending:
        cls = pending.pop(0)
        pending += cls.__subclasses__()
        if "exit_code" not in vars(cls) or cls.exit_code == 1:
            continue
        summary = (cls.__doc__ or "").strip().split("\n")[0].rstrip(".")
        meanings.setdefault(cls.exit_code, []).append(summary[:1].lower() + summary[1:])
    codes = {0: "success", 1: "any other error (the message says what failed)"}
    codes |= {code: "; or: ".join(texts) for code, texts in sorted(meanings.items())}
    return {**codes, **INTERRUPTED}


def common_sections(program: str) -> list[str]:
    lines = [".SH EXIT STATUS"]
    for code, meaning in exit_codes().items():
        lines += [".TP", f".B {code}", escape(meaning)]
    lines += [".SH FILES", ".TP", f".I {escape(str(config.DEFAULT_FILE))}",
              escape(f"the configuration: shell KEY=VALUE lines (else "
                     f"{config.LEGACY_FILE}); a commented sample is in "
                     "/usr/share/doc/hostcreator/examples/ where the Debian package is "
                     "installed"),
              ".SH ENVIRONMENT", ".TP", f".B {config.ENV_FILE}",
              "the configuration file to read instead of the default", ".TP",
              ".BI HOSTCREATOR_ KEY",
              escape("overrides the setting KEY of the configuration file"),
              ".SH SEE ALSO",
              ",\n".join(f".BR {escape(p)} (1)" for p in PROGRAMS if p != program)]
    return lines


def page(program: str) -> str:
    """The man page of PROGRAM (roff, man macros)."""
    command = command_of(program)
    ctx = context(command, program)
    summary = command.get_short_help_str(limit=200).rstrip(".")
    # .nh and .ad l: no hyphens added to paths and option names, a ragged right edge.
    lines = [f'.TH {program.upper()} 1 "" "hostcreator {__version__}" "hostcreator"', ".nh",
             ".ad l",
             ".SH NAME", escape(f"{program} - {summary}"),
             ".SH SYNOPSIS", *synopsis(command, ctx),
             ".SH DESCRIPTION", *paragraphs(command.help), *describe(command, ctx, section=True)]
    if hasattr(command, "list_commands"):
        lines += commands_section(command, ctx)
    lines += common_sections(program)
    return "\n".join(lines) + "\n"


def completion(program: str, shell: str) -> str:
    """The completion script of PROGRAM for SHELL (bash or zsh)."""
    var = f"_{program.replace('-', '_').upper()}_COMPLETE"
    if shell == "zsh":
        return ZSH_SCRIPT.format(prog=program, var=var)
    return get_completion_script(prog_name=program, complete_var=var, shell=shell).strip() + "\n"


def files() -> dict[str, str]:
    """Every generated file, by its path in the repository."""
    made = {f"man/{p}.1": page(p) for p in PROGRAMS}
    made |= {f"completion/bash/{p}": completion(p, "bash") for p in PROGRAMS}
    made |= {f"completion/zsh/_{p}": completion(p, "zsh") for p in PROGRAMS}
    return made


def write(top: Path) -> list[Path]:
    written = []
    for rel, text in files().items():
        path = top / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        written.append(path)
    return written


if __name__ == "__main__":
    for path in write(Path(sys.argv[1] if len(sys.argv) > 1 else ".")):
        print(path)
