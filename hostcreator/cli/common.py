"""What every command has, declared once: the common options and the error wrapper.

`@command("mount-vm")` gives a function `f(common, *own options)` the options
every command takes (`-h`, `--version`, `-v`, `--debug`, `--config`, `--set`,
and `--json` where it reports), sets up the console, and turns what the library
raises into one line (and a hint) and an exit code. An exception that is not
the library's own is a defect: one line too, the traceback only with --debug.
"""

from __future__ import annotations

import inspect
import json
import signal
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Annotated, Any, NoReturn

import typer

from hostcreator import __version__, config, faults
from hostcreator.errors import HostCreatorError, Interrupted
from hostcreator.log import logger, setup_console

CONTEXT = {"help_option_names": ["-h", "--help"]}
INTERNAL_HINT = "rerun with --debug for the traceback"


def _version(value: bool) -> None:
    if value:
        typer.echo(f"hostcreator {__version__}")
        raise typer.Exit()


VERSION_OPTION = typer.Option("--version", callback=_version, is_eager=True,
                              help="show the version")
VersionOption = Annotated[bool, VERSION_OPTION]


@dataclass(frozen=True)
class Common:
    """The common options of one invocation."""

    program: str
    config_path: Path | None = None
    sets: tuple[str, ...] = ()
    verbose: bool = False
    debug: bool = False
    json: bool = False

    def config(self, **options: Any) -> config.Config:
        """The configuration: the file, the environment, --set and OPTIONS (KEY=value;
        None where the option was not given)."""
        overrides = config.set_options(self.sets)
        overrides += [config.option(key, value) for key, value in options.items()
                      if value is not None]
        return config.load(self.config_path, overrides)

    def emit(self, data: Any, human: Callable[[], None] | None = None) -> None:
        """The result: DATA as JSON on stdout with --json, else what HUMAN prints."""
        if self.json:
            typer.echo(json.dumps(data, indent=2, sort_keys=True, default=str))
        elif human is not None:
            human()


# The common options: (parameter, type, default, typer option). Every command gets them.
COMMON_OPTIONS: tuple[tuple[str, Any, Any, Any], ...] = (
    ("config_path", Path | None, None,
     typer.Option("--config", "-c", dir_okay=False, help="configuration file (default: "
                  "/etc/default/hostcreator, or $HOSTCREATOR_CONFIG)")),
    ("sets", list[str] | None, None,
     typer.Option("--set", "-s", metavar="KEY=VALUE",
                  help="override one setting of the configuration (repeatable)")),
    ("verbose", bool, False,
     typer.Option("--verbose", "-v", help="show every command and its output")),
    ("debug", bool, False, typer.Option("--debug", help="show tracebacks of errors")),
    ("version", bool, False, VERSION_OPTION),
)
JSON_OPTION = ("json_output", bool, False,
               typer.Option("--json", help="print the result (or the error) as JSON on stdout"))


def _interrupt(signum: int, _frame: FrameType | None) -> NoReturn:
    # One interruption is enough: later ones must not break the cleanup it starts.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _cleaning_up)
    raise Interrupted(signum)


def _cleaning_up(_signum: int, _frame: FrameType | None) -> None:
    logger.warning("cleaning up, please wait")


def fail(common: Common, message: str, hint: str | None, exit_code: int) -> NoReturn:
    """One error line (and a hint) on stderr, the error as JSON on stdout with --json."""
    typer.echo(f"{common.program}: error: {message}", err=True)
    if hint:
        typer.echo(f"{common.program}: hint: {hint}", err=True)
    common.emit({"error": {"message": message, "hint": hint, "exit_code": exit_code}})
    raise typer.Exit(exit_code)


def guarded(common: Common, action: Callable[[], Any], undone: str) -> None:
    """Run ACTION; what it raises becomes one line each and an exit code.

    SIGINT and SIGTERM raise Interrupted while it runs; the handlers before it are
    restored afterwards (a caller in the same process, such as a test, keeps its own).
    """
    before = {sig: signal.signal(sig, _interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        faults.crash(common.program)
        action()
    except HostCreatorError as exc:
        if common.debug:
            logger.exception("traceback")
        fail(common, exc.message, exc.hint, exc.exit_code)
    except Interrupted as exc:
        fail(common, f"interrupted by {exc}; {undone}", None, 128 + exc.signum)
    except (typer.Exit, typer.Abort):
        raise
    except Exception as exc:
        if common.debug:
            logger.exception("traceback")
        detail = f"{type(exc).__name__}: {exc}".replace("\n", " ")
        typer.echo(f"{common.program}: internal error: {detail}; {INTERNAL_HINT}", err=True)
        common.emit({"error": {"message": f"internal error: {detail}", "hint": INTERNAL_HINT,
                               "exit_code": 1}})
        raise typer.Exit(1) from None
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)


def _parameter(name: str, kind: Any, default: Any, option: Any) -> inspect.Parameter:
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default,
                             annotation=Annotated[kind, option])


def command(
    program: str, *, reports: bool = False,
    undone: str | Callable[[Mapping[str, Any]], str] = "everything it set up was undone",
) -> Callable[[Callable[..., Any]], Callable[..., None]]:
    """Make FUNC(common, **own) a command named PROGRAM with the common options.

    UNDONE says what is left after an interruption (or computes it from the
    command's own arguments).
    """

    def decorate(func: Callable[..., Any]) -> Callable[..., None]:
        own = list(inspect.signature(func, eval_str=True).parameters.values())[1:]
        extra = [_parameter(*option) for option in (*COMMON_OPTIONS, *(
            (JSON_OPTION,) if reports else ()))]

        def wrapper(**kwargs: Any) -> None:
            kwargs.pop("version")
            common = Common(program, kwargs.pop("config_path"), tuple(kwargs.pop("sets") or ()),
                            kwargs.pop("verbose"), kwargs.pop("debug"),
                            kwargs.pop("json_output", False))
            setup_console(common.verbose)
            said = undone(kwargs) if callable(undone) else undone
            guarded(common, lambda: func(common, **kwargs), said)

        parameters = [*own, *extra]
        wrapper.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
        wrapper.__annotations__ = {p.name: p.annotation for p in parameters}
        wrapper.__doc__ = func.__doc__
        wrapper.__name__ = func.__name__
        wrapper.__qualname__ = func.__qualname__
        wrapper.program = program  # type: ignore[attr-defined]
        return wrapper

    return decorate


def print_table(rows: list[tuple[str, ...]]) -> None:
    """ROWS (the first is the header) in columns; the last column is not padded."""
    widths = [max(len(row[c]) for row in rows) for c in range(len(rows[0]) - 1)]
    for row in rows:
        typer.echo("  ".join(f"{v:<{w}}" for v, w in zip(row, widths, strict=False))
                   + "  " + row[-1])


