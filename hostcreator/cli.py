"""Command-line front ends: parse, load the configuration, call the library.

`hostcreator <command>` and the short names users of the old scripts type
(`create-debian`, ...) run the same functions.
"""

from __future__ import annotations

import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Annotated, Any, NoReturn

import typer

try:  # newer typer carries its own copy of click
    from typer._click.exceptions import NoArgsIsHelpError, UsageError
except ImportError:  # pragma: no cover
    from click.exceptions import NoArgsIsHelpError, UsageError  # type: ignore[no-redef]

from hostcreator import __version__, config, distro
from hostcreator.build import cache, identity, pipeline, recover
from hostcreator.disk import storage
from hostcreator.domain import qemu
from hostcreator.errors import HostCreatorError, Interrupted, InvalidInput
from hostcreator.log import logger, setup_console
from hostcreator.state import journal
from hostcreator.vm import kvm
from hostcreator.vm import mount as vmmount

CONTEXT = {"help_option_names": ["-h", "--help"]}

ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="configuration file (default: /etc/default/hostcreator, "
                 "or $HOSTCREATOR_CONFIG)", dir_okay=False),
]
SetOption = Annotated[
    list[str] | None,
    typer.Option("--set", "-s", metavar="KEY=VALUE",
                 help="override one setting of the configuration file (repeatable)"),
]
SizeOption = Annotated[int | None, typer.Option("--size", help="disk size in GiB (SIZE)")]
StorageOption = Annotated[
    str | None, typer.Option("--storage", help="lvm or file (STORAGE)")
]
VgOption = Annotated[str | None, typer.Option("--vg", help="LVM volume group (VG_NAME)")]
ImageDirOption = Annotated[
    Path | None, typer.Option("--image-dir", help="directory of image files (IMAGE_DIR)")
]
MirrorOption = Annotated[str | None, typer.Option("--mirror", help="archive mirror (MIRROR)")]
InsecureOption = Annotated[
    bool, typer.Option("--insecure-no-signature-check",
                       help="DANGEROUS: do not verify the archive signatures "
                       "(debootstrap --no-check-gpg; INSECURE_NO_SIGNATURE_CHECK)")
]
ForceOption = Annotated[
    bool, typer.Option("--force", help="overwrite an existing disk that holds data")
]
NoCacheOption = Annotated[
    bool, typer.Option("--no-cache", help="bootstrap afresh; neither use nor fill the rootfs "
                       "cache")
]
RefreshCacheOption = Annotated[
    bool, typer.Option("--refresh-cache", help="bootstrap afresh and replace the rootfs cache "
                       "entry")
]
ResumeOption = Annotated[
    bool, typer.Option("--resume", help="go on with NAME's unfinished build after its last "
                       "finished stage (what the earlier run left is cleaned up first)")
]
RestartOption = Annotated[
    bool, typer.Option("--restart", help="start NAME's unfinished build over, on its disk")
]
VerboseOption = Annotated[
    bool, typer.Option("--verbose", "-v", help="show every command and its output")
]
DebugOption = Annotated[bool, typer.Option("--debug", help="show tracebacks of errors")]
VmNameArgument = Annotated[str, typer.Argument(metavar="NAME", help="name of the VM")]


def _version(value: bool) -> None:
    if value:
        typer.echo(f"hostcreator {__version__}")
        raise typer.Exit()


VersionOption = Annotated[
    bool,
    typer.Option("--version", callback=_version, is_eager=True, help="show the version"),
]


def _interrupt(signum: int, _frame: FrameType | None) -> NoReturn:
    # One interruption is enough: later ones must not break the cleanup it starts.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _cleaning_up)
    raise Interrupted(signum)


def _cleaning_up(_signum: int, _frame: FrameType | None) -> None:
    logger.warning("cleaning up, please wait")


def guarded(program: str, debug: bool, action: Callable[[], Any],
            undone: str = "everything it set up was undone") -> None:
    """Run ACTION; errors become one line each and an exit code."""
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        action()
    except HostCreatorError as exc:
        if debug:
            logger.exception("traceback")
        typer.echo(f"{program}: error: {exc.message}", err=True)
        if exc.hint:
            typer.echo(f"{program}: hint: {exc.hint}", err=True)
        raise typer.Exit(exc.exit_code) from None
    except Interrupted as exc:
        typer.echo(f"{program}: interrupted by {exc}; {undone}", err=True)
        raise typer.Exit(128 + exc.signum) from None


def load_config(
    config_path: Path | None,
    sets: list[str] | None,
    **options: Any,
) -> config.Config:
    overrides = config.parse_assignments(sets or [])
    for key, value in options.items():
        if value is not None:
            overrides[key] = str(value)
    return config.load(config_path, overrides)


def cache_mode(no_cache: bool, refresh_cache: bool) -> cache.Mode:
    if no_cache and refresh_cache:
        raise InvalidInput("--no-cache and --refresh-cache exclude each other")
    if no_cache:
        return cache.Mode.OFF
    return cache.Mode.REFRESH if refresh_cache else cache.Mode.USE


def build_mode(resume: bool, restart: bool) -> pipeline.Mode:
    if resume and restart:
        raise InvalidInput("--resume and --restart exclude each other")
    if resume:
        return pipeline.Mode.RESUME
    return pipeline.Mode.RESTART if restart else pipeline.Mode.NEW


def create_command(distribution: str) -> Callable[..., None]:
    def command(
        name: Annotated[str, typer.Argument(metavar="NAME",
                                           help="name of the VM: host name and disk name")],
        distr: Annotated[
            str | None, typer.Argument(metavar="DISTR", help="suite, e.g. trixie or resolute "
                                       "(default: DISTR or the current release)")
        ] = None,
        config_path: ConfigOption = None,
        sets: SetOption = None,
        size: SizeOption = None,
        storage_kind: StorageOption = None,
        vg: VgOption = None,
        image_dir: ImageDirOption = None,
        mirror: MirrorOption = None,
        force: ForceOption = False,
        insecure: InsecureOption = False,
        no_cache: NoCacheOption = False,
        refresh_cache: RefreshCacheOption = False,
        resume: ResumeOption = False,
        restart: RestartOption = False,
        verbose: VerboseOption = False,
        debug: DebugOption = False,
        version: VersionOption = False,
    ) -> None:
        setup_console(verbose)

        def action() -> None:
            cfg = load_config(config_path, sets, SIZE=size, STORAGE=storage_kind,
                              VG_NAME=vg, IMAGE_DIR=image_dir, MIRROR=mirror,
                              INSECURE_NO_SIGNATURE_CHECK="yes" if insecure else None)
            dist = distro.get(distribution)
            mode = build_mode(resume, restart)
            suite = pipeline.suite_for(cfg, dist, name, distr, mode)
            build = pipeline.Build(cfg, dist, name, suite, force=force, mode=mode,
                                   cache_mode=cache_mode(no_cache, refresh_cache))
            pipeline.create(build)

        guarded(f"create-{distribution}", debug, action)

    article = "an" if distribution[0] in "aeiou" else "a"
    command.__doc__ = (
        f"Build {article} {distribution.capitalize()} VM disk for NAME: partitions, debootstrap, "
        "skeleton, hooks, chroot install, GRUB."
    )
    return command


def boot_test(
    name: Annotated[str, typer.Argument(metavar="NAME", help="name of a VM built by "
                                        "create-debian or create-ubuntu")],
    config_path: ConfigOption = None,
    sets: SetOption = None,
    timeout: Annotated[int, typer.Option(min=1, help="seconds to wait for the login prompt")]
    = 600,
    accel: Annotated[str, typer.Option(help="tcg (software) or kvm")] = "tcg",
    verbose: VerboseOption = False,
    debug: DebugOption = False,
) -> None:
    """Boot NAME's disk once under QEMU (a throw-away snapshot) until its login prompt."""
    setup_console(verbose)

    def action() -> None:
        identity.validate_name(name)
        if accel not in ("tcg", "kvm"):
            raise InvalidInput(f"--accel {accel!r} is not tcg or kvm")
        cfg = load_config(config_path, sets)
        disk = storage.for_vm(cfg, name)
        if not disk.exists():
            raise InvalidInput(f"{name} has no disk: {disk.describe()} does not exist")
        console = cfg.log_dir / f"{name}.console.log"
        logger.info("booting %s under QEMU (%s); console: %s", disk.describe(), accel, console)
        qemu.boot(disk.path, console, timeout=timeout, accel=accel)
        logger.info("%s booted to its login prompt", name)

    guarded("boot-test", debug, action)


def show_config(
    config_path: ConfigOption = None,
    sets: SetOption = None,
) -> None:
    """Print the effective configuration as KEY=VALUE lines."""
    setup_console(False)

    def action() -> None:
        cfg = load_config(config_path, sets)
        typer.echo(f"# from {cfg.source or 'built-in defaults'}")
        for setting in config.SETTINGS:
            value = getattr(cfg, setting.field)
            if isinstance(value, tuple):
                value = " ".join(value)
            typer.echo(f"{setting.key}={'' if value is None else value}")

    guarded("config", False, action)


def _print_listing(cfg: config.Config) -> None:
    found = vmmount.list_mounted(cfg)
    if not found:
        logger.info("no VM is mounted (MOUNT_DIR=%s)", cfg.mount_dir)
        return
    rows = [("NAME", "MODE", "LOOP", "SINCE", "MOUNTPOINT")]
    rows += [(i.name, i.mode, i.loop, i.since, str(i.mountpoint)) for i in found]
    widths = [max(len(row[c]) for row in rows) for c in range(4)]
    for row in rows:
        typer.echo("  ".join(f"{v:<{w}}" for v, w in zip(row, widths, strict=False))
                   + "  " + row[4])


def mount_vm(
    name: Annotated[str | None, typer.Argument(metavar="NAME", help="name of the VM")] = None,
    read_only: Annotated[bool, typer.Option(
        "--read-only", "-r", help="mount read-only without journal replay (allowed while "
        "the VM runs)")] = False,
    list_mounted: Annotated[bool, typer.Option(
        "--list", "-l", help="list the VMs that are mounted")] = False,
    config_path: ConfigOption = None,
    sets: SetOption = None,
    verbose: VerboseOption = False,
    debug: DebugOption = False,
    version: VersionOption = False,
) -> None:
    """Mount NAME's disk at MOUNT_DIR/NAME for chroot work; umount-vm NAME undoes it.

    /dev, /dev/pts, /proc and /sys are bound into it. The mount point is printed.
    """
    setup_console(verbose)

    def action() -> None:
        cfg = load_config(config_path, sets)
        if list_mounted:
            _print_listing(cfg)
            return
        if name is None:
            raise InvalidInput("the NAME of a VM is needed (or --list)")
        m = vmmount.mount_vm(cfg, name, read_only)
        how = f"{'read-only' if m.read_only else 'read-write'}, {m.loop}"
        if m.already:
            logger.info("%s is already mounted at %s (%s)", name, m.mountpoint, how)
        else:
            logger.info("%s is mounted at %s (%s)\n  work in it:  chroot %s\n"
                        "  when done:   umount-vm %s", name, m.mountpoint, how, m.mountpoint,
                        name)
        typer.echo(str(m.mountpoint))

    guarded("mount-vm", debug, action)


def umount_vm(
    name: VmNameArgument,
    config_path: ConfigOption = None,
    sets: SetOption = None,
    verbose: VerboseOption = False,
    debug: DebugOption = False,
    version: VersionOption = False,
) -> None:
    """Undo mount-vm NAME; also clears what an interrupted mount-vm or create left."""
    setup_console(verbose)

    def action() -> None:
        done = vmmount.umount_vm(load_config(config_path, sets), name)
        if done.nothing:
            logger.info("%s was not mounted; nothing to do", name)
            return
        if done.unmounted:
            logger.info("%s: unmounted %s", name, ", ".join(map(str, done.unmounted)))
        if done.detached:
            logger.info("%s: detached %s", name, ", ".join(done.detached))
        for stale in done.stale:
            logger.info("%s: forgot the stale %s", name, stale)

    guarded("umount-vm", debug, action)


def cleanup(
    name: VmNameArgument,
    config_path: ConfigOption = None,
    sets: SetOption = None,
    verbose: VerboseOption = False,
    debug: DebugOption = False,
) -> None:
    """Undo what a killed create-debian/create-ubuntu of NAME left: processes, mounts, loop
    devices; its journal then says where the build stopped (--resume goes on from there)."""
    setup_console(verbose)

    def action() -> None:
        cfg = load_config(config_path, sets)
        cleared, record = recover.cleanup(cfg, name)
        if cleared.nothing:
            logger.info("%s: nothing was left to clean up", name)
        else:
            logger.info("%s: %s", name, cleared.describe())
        if record is None:
            logger.info("%s has no build journal", name)
        elif record.finished:
            logger.info("%s: its build %s", name, record.describe())
        else:
            logger.info("%s: its build %s\n  go on:      create-%s %s --resume\n"
                        "  start over: create-%s %s --restart", name, record.describe(),
                        record.distribution, name, record.distribution, name)

    guarded("cleanup", debug, action)


def status(
    config_path: ConfigOption = None,
    sets: SetOption = None,
) -> None:
    """List the VMs mounted by mount-vm (and half-mounted ones: umount-vm clears them) and
    the builds that are running or did not finish."""
    setup_console(False)

    def action() -> None:
        cfg = load_config(config_path, sets)
        _print_listing(cfg)
        unfinished = [(name, record) for name in journal.names(cfg.journal_dir)
                      if (record := journal.load(cfg.journal_dir, name)) and not record.finished]
        for name, record in unfinished:
            typer.echo(f"build of {name} ({record.distribution} {record.suite}) "
                       f"{recover.describe(cfg, name, record)}")
        if not unfinished:
            logger.info("no build is running or unfinished (JOURNAL_DIR=%s)", cfg.journal_dir)

    guarded("status", False, action)


WAIT_DEFAULT = 600


def optional_wait(args: list[str]) -> list[str]:
    """`--wait` alone means `--wait 600`: typer options cannot have optional values."""
    result: list[str] = []
    for i, arg in enumerate(args):
        if arg == "--":
            return result + args[i:]
        result.append(arg)
        if arg == "--wait" and not (i + 1 < len(args) and args[i + 1].isdigit()):
            result.append(str(WAIT_DEFAULT))
    return result


def create_kvm(
    name: Annotated[str, typer.Argument(metavar="NAME",
                                        help="name of the VM whose disk create-debian built")],
    config_path: ConfigOption = None,
    sets: SetOption = None,
    memory: Annotated[int | None, typer.Option("--memory", help="memory in MiB (MEMORY)")]
    = None,
    vcpus: Annotated[int | None, typer.Option("--vcpus", help="virtual CPUs (VCPUS)")] = None,
    virt_type: Annotated[
        str | None, typer.Option("--virt-type", help="auto, kvm or qemu (VIRT_TYPE)")
    ] = None,
    network: Annotated[
        str | None, typer.Option("--network", help="bridge or libvirt network (NETWORK)")
    ] = None,
    network_type: Annotated[
        str | None, typer.Option("--network-type", help="bridge, network or user (NETWORK_TYPE)")
    ] = None,
    uri: Annotated[str | None, typer.Option("--uri", help="libvirt URI (LIBVIRT_URI)")] = None,
    live_iso: Annotated[
        Path | None, typer.Option("--live-iso", help="ISO the first boot starts from (LIVE_ISO)")
    ] = None,
    graphics: Annotated[
        str | None, typer.Option("--graphics", help="vnc, spice or none (GRAPHICS)")
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="print the domain XML; touch nothing")
    ] = False,
    wait: Annotated[
        int | None, typer.Option("--wait", metavar="[SECONDS]", min=1,
                                 help="wait until the guest is up (guest agent or login "
                                 f"prompt), at most SECONDS (default {WAIT_DEFAULT})")
    ] = None,
    start: Annotated[
        bool, typer.Option("--start", help="start the existing, stopped domain NAME")
    ] = False,
    verbose: VerboseOption = False,
    debug: DebugOption = False,
    version: VersionOption = False,
) -> None:
    """Define the libvirt domain for NAME's disk and start it; never overwrite a domain."""
    setup_console(verbose)

    def action() -> None:
        cfg = load_config(config_path, sets, MEMORY=memory, VCPUS=vcpus, VIRT_TYPE=virt_type,
                          NETWORK=network, NETWORK_TYPE=network_type, LIBVIRT_URI=uri,
                          LIVE_ISO=live_iso, GRAPHICS=graphics)
        if start:
            if dry_run or live_iso:
                raise InvalidInput("--start does not go with --dry-run or --live-iso",
                                   hint="--start starts the domain as it is defined")
            kvm.start_existing(cfg, name, wait_seconds=wait)
        elif dry_run:
            typer.echo(kvm.dry_run(cfg, name), nl=False)
        else:
            kvm.create(cfg, name, wait_seconds=wait)

    guarded("create-kvm", debug, action,
            undone=f"the domain {name} stays as far as it got (virsh list --all)")
def cache_list(
    config_path: ConfigOption = None,
    sets: SetOption = None,
) -> None:
    """List the rootfs cache entries (and unfinished ones) in CACHE_DIR/rootfs."""
    setup_console(False)

    def action() -> None:
        cfg = load_config(config_path, sets)
        rootfs = cache.RootfsCache.under(cfg.cache_dir)
        entries = rootfs.entries()
        typer.echo(f"# {rootfs.base}: {len(entries)} entries, CACHE_MAX_AGE={cfg.cache_max_age}")
        for entry in entries:
            m = entry.manifest
            created = time.strftime("%Y-%m-%d %H:%M", time.localtime(entry.created))
            typer.echo(f"{cache.short(entry.key)}  {created}  {entry.age_days():5.1f} d  "
                       f"{entry.size / 2**20:6.0f} MB  {m['distribution']} {m['suite']} "
                       f"{m['arch']} {m['tool']} variant={m['variant']} "
                       f"packages={','.join(m['packages'])}")
        for path in rootfs.leftovers():
            typer.echo(f"unfinished  {path}")

    guarded("cache list", False, action)


def cache_prune(
    older_than: Annotated[
        float | None, typer.Option("--older-than", metavar="DAYS",
                                   help="remove entries older than DAYS (default: "
                                   "CACHE_MAX_AGE; 0 removes all)")
    ] = None,
    config_path: ConfigOption = None,
    sets: SetOption = None,
) -> None:
    """Remove old and unfinished rootfs cache entries; entries in use are left alone."""
    setup_console(False)

    def action() -> None:
        cfg = load_config(config_path, sets)
        days = cfg.cache_max_age if older_than is None else older_than
        if days < 0:
            raise InvalidInput("--older-than must not be negative")
        removed = cache.RootfsCache.under(cfg.cache_dir).prune(days)
        for name in removed:
            typer.echo(f"removed {name}")
        typer.echo(f"{len(removed)} removed")

    guarded("cache prune", False, action)


app = typer.Typer(context_settings=CONTEXT, no_args_is_help=True, add_completion=False,
                  help="Turn a name into an installed, bootable Debian or Ubuntu KVM VM.")


@app.callback()
def _hostcreator(version: VersionOption = False) -> None:
    """Turn a name into an installed, bootable Debian or Ubuntu KVM VM."""


cache_app = typer.Typer(context_settings=CONTEXT, no_args_is_help=True,
                        help="The rootfs cache: list and prune its entries.")
cache_app.command("list")(cache_list)
cache_app.command("prune")(cache_prune)
app.command("create-debian")(create_command("debian"))
app.command("create-ubuntu")(create_command("ubuntu"))
app.command("create-kvm")(create_kvm)
app.command("boot-test")(boot_test)
app.command("config")(show_config)
app.command("mount-vm")(mount_vm)
app.command("umount-vm")(umount_vm)
app.command("status")(status)
app.command("cleanup")(cleanup)
app.add_typer(cache_app, name="cache")


def _single(command: Callable[..., None]) -> typer.Typer:
    one = typer.Typer(context_settings=CONTEXT, add_completion=False)
    one.command()(command)
    return one


def launch(command: typer.Typer, prog: str, args: list[str] | None = None) -> NoReturn:
    """Run COMMAND; a usage error is one line and a hint, as every other error, exit code 2."""
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
    launch(_single(create_command("debian")), "create-debian")


def create_ubuntu_main() -> None:
    launch(_single(create_command("ubuntu")), "create-ubuntu")


def mount_vm_main() -> None:
    launch(_single(mount_vm), "mount-vm")


def umount_vm_main() -> None:
    launch(_single(umount_vm), "umount-vm")


def create_kvm_main() -> None:
    launch(_single(create_kvm), "create-kvm", optional_wait(sys.argv[1:]))
