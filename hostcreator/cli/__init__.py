"""Command-line front ends: parse, load the configuration, call the library.

`hostcreator <command>` and the short names users of the old scripts type
(`create-debian`, ...) run the same functions. Every command is made with
`common.command`, which gives it the options all commands share; the modules
here only parse and call the library.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import NoReturn

import typer
from typer.completion import completion_init

try:  # newer typer carries its own copy of click
    from typer._click.exceptions import NoArgsIsHelpError, UsageError
except ImportError:  # pragma: no cover
    from click.exceptions import UsageError  # type: ignore[assignment,no-redef]

    try:
        from click.exceptions import NoArgsIsHelpError  # type: ignore[no-redef]
    except ImportError:  # click before 8.2 (Debian 13) prints the help and exits 0 itself
        class NoArgsIsHelpError(UsageError):  # type: ignore[no-redef]
            """Never raised by this click."""

from hostcreator.cli import admin, build, vm
from hostcreator.cli.common import CONTEXT, VersionOption
from hostcreator.cli.vm import optional_wait

__all__ = ["app", "optional_wait"]

app = typer.Typer(context_settings=CONTEXT, no_args_is_help=True, add_completion=False,
                  help="Turn a name into an installed, bootable Debian or Ubuntu KVM VM.")


@app.callback()
def _hostcreator(version: VersionOption = False) -> None:
    """Turn a name into an installed, bootable Debian or Ubuntu KVM VM."""


cache_app = typer.Typer(context_settings=CONTEXT, no_args_is_help=True,
                        help="The rootfs cache: list and prune its entries.")
cache_app.command("list")(admin.cache_list)
cache_app.command("prune")(admin.cache_prune)
# Every command of `hostcreator`, by name: the short front ends and the tests use it.
COMMANDS: dict[str, Callable[..., None]] = {
    "create-debian": build.create_debian,
    "create-ubuntu": build.create_ubuntu,
    "create-kvm": vm.create_kvm,
    "boot-test": vm.boot_test,
    "config": admin.show_config,
    "mount-vm": vm.mount_vm,
    "umount-vm": vm.umount_vm,
    "status": admin.status,
    "cleanup": admin.cleanup,
    "list": vm.list_vms,
    "remove": vm.remove_vm,
    "clone": vm.clone_vm,
    "export": vm.export_vm,
    "doctor": admin.doctor,
}
for _name, _function in COMMANDS.items():
    app.command(_name)(_function)
app.add_typer(cache_app, name="cache")


def _single(function: Callable[..., None]) -> typer.Typer:
    one = typer.Typer(context_settings=CONTEXT, add_completion=False)
    one.command()(function)
    return one


def launch(command: typer.Typer, prog: str, args: list[str] | None = None) -> NoReturn:
    """Run COMMAND; a usage error is one line and a hint, as every other error, exit code 2."""
    # Tab completion (the scripts in completion/) asks the command: typer answers it
    # once its shells are registered (add_completion=False leaves them out).
    completion_init()
    try:
        code = command(args=sys.argv[1:] if args is None else args, prog_name=prog,
                       standalone_mode=False)
    except NoArgsIsHelpError as exc:
        exc.show()
        sys.exit(2)
    except UsageError as exc:
        path = exc.ctx.command_path if exc.ctx is not None else prog
        # Named as the command's own errors name it: `cache prune`, not `hostcreator cache prune`.
        program = path.removeprefix("hostcreator ")
        typer.echo(f"{program}: error: {exc.format_message()}", err=True)
        typer.echo(f"{program}: hint: `{path} -h` shows how to call it", err=True)
        sys.exit(exc.exit_code)
    sys.exit(code if isinstance(code, int) else 0)


def main() -> None:
    launch(app, "hostcreator", optional_wait(sys.argv[1:]))


def create_debian_main() -> None:
    launch(_single(build.create_debian), "create-debian")


def create_ubuntu_main() -> None:
    launch(_single(build.create_ubuntu), "create-ubuntu")


def mount_vm_main() -> None:
    launch(_single(vm.mount_vm), "mount-vm")


def umount_vm_main() -> None:
    launch(_single(vm.umount_vm), "umount-vm")


def create_kvm_main() -> None:
    launch(_single(vm.create_kvm), "create-kvm", optional_wait(sys.argv[1:]))
