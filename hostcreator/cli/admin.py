"""Commands about hostcreator's own state and its host: config, status, cleanup, cache,
doctor."""

from __future__ import annotations

import time
from typing import Annotated

import typer

from hostcreator import config
from hostcreator.build import cache, recover
from hostcreator.cli.common import Common, command, fail
from hostcreator.cli.vm import VmName, print_mounted
from hostcreator.log import logger
from hostcreator.vm import doctor as hostdoctor
from hostcreator.vm import mount as vmmount


@command("config", reports=True)
def show_config(
    common: Common,
    show_secrets: Annotated[bool, typer.Option(
        "--show-secrets", help="print the passwords in URLs (masked as *** otherwise)")] = False,
) -> None:
    """Print the effective configuration as shell-quoted KEY=VALUE lines, each with its
    origin (read back as a configuration file, they give the same configuration; with
    --show-secrets when a URL holds a password)."""
    cfg = common.config()
    common.emit(config.as_json(cfg, show_secrets),
                lambda: typer.echo("\n".join(config.as_lines(cfg, show_secrets))))


@command("status", reports=True)
def status(common: Common) -> None:
    """List the VMs mounted by mount-vm (and half-mounted ones: umount-vm clears them) and
    the builds that are running or did not finish."""
    cfg = common.config()
    mounted = vmmount.list_mounted(cfg)
    unfinished = recover.unfinished(cfg)

    def human() -> None:
        print_mounted(cfg, mounted)
        for name, record, how in unfinished:
            typer.echo(f"build of {name} ({record.distribution} {record.suite}) {how}")
        if not unfinished:
            logger.info("no build is running or unfinished (JOURNAL_DIR=%s)", cfg.journal_dir)

    common.emit({
        "mounted": [{"name": i.name, "mode": i.mode, "loop": i.loop, "since": i.since,
                     "mountpoint": str(i.mountpoint)} for i in mounted],
        "builds": [{"name": name, "distribution": record.distribution, "suite": record.suite,
                    "status": str(record.status), "stage": record.stage, "state": how}
                   for name, record, how in unfinished],
    }, human)


@command("cleanup")
def cleanup(common: Common, name: VmName) -> None:
    """Undo what a killed create-debian/create-ubuntu of NAME left: processes, mounts, loop
    devices; its journal then says where the build stopped (--resume goes on from there)."""
    cleared, record = recover.cleanup(common.config(), name)
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


@command("cache list", reports=True)
def cache_list(common: Common) -> None:
    """List the rootfs cache entries (and unfinished ones) in CACHE_DIR/rootfs."""
    cfg = common.config()
    rootfs = cache.RootfsCache.under(cfg.cache_dir)
    entries = rootfs.entries()
    leftovers = rootfs.leftovers()

    def human() -> None:
        typer.echo(f"# {rootfs.base}: {len(entries)} entries, CACHE_MAX_AGE={cfg.cache_max_age}")
        for entry in entries:
            m = entry.manifest
            created = time.strftime("%Y-%m-%d %H:%M", time.localtime(entry.created))
            typer.echo(f"{cache.short(entry.key)}  {created}  {entry.age_days():5.1f} d  "
                       f"{entry.size / 2**20:6.0f} MB  {m['distribution']} {m['suite']} "
                       f"{m['arch']} {m['tool']} variant={m['variant']} "
                       f"packages={','.join(m['packages'])}")
        for path in leftovers:
            typer.echo(f"unfinished  {path}")

    common.emit({"entries": [{"key": e.key, "created": e.created, "size": e.size,
                              "manifest": e.manifest} for e in entries],
                 "unfinished": [str(p) for p in leftovers]}, human)


@command("cache prune")
def cache_prune(
    common: Common,
    older_than: Annotated[
        float | None, typer.Option("--older-than", metavar="DAYS",
                                   help="remove entries older than DAYS (default: "
                                   "CACHE_MAX_AGE; 0 removes all)")
    ] = None,
) -> None:
    """Remove old and unfinished rootfs cache entries; entries in use are left alone."""
    cfg = common.config()
    days = cfg.cache_max_age if older_than is None else older_than
    removed = cache.RootfsCache.under(cfg.cache_dir).prune(days)
    for name in removed:
        typer.echo(f"removed {name}")
    typer.echo(f"{len(removed)} removed")


def print_check(check: hostdoctor.Check) -> None:
    """One line of the doctor's report, and under it the hint of one that is not ok."""
    indent = " " * (hostdoctor.NAME_WIDTH + 2 + len("warning") + 2)
    typer.echo(f"{check.name:<{hostdoctor.NAME_WIDTH}}  {check.status:<7}  {check.detail}")
    if check.hint:
        typer.echo(f"{indent}hint: {check.hint}")


@command("doctor", reports=True)
def doctor(common: Common) -> None:
    """Check what this host can do for hostcreator, one line per check (ok, warning or
    failed; with a hint unless ok): root, the host tools, the debootstrap script and
    archive keyring of the Debian and the Ubuntu suite, the archive, libvirt at
    LIBVIRT_URI, KVM (the probe create-kvm makes), the network, the storage (VG_NAME or
    IMAGE_DIR, reflinks), loop devices, OVMF and swtpm, the rootfs cache, unfinished
    builds and mounted VMs.

    Exit code 1 when a required check (root, tools, libvirt, storage, loop devices) fails.

    Warnings, and failures of the checks that are not required, keep exit code 0."""
    cfg = common.config()
    report = hostdoctor.examine(cfg, None if common.json else print_check, common.debug)
    counts = report.counts()
    common.emit(report.as_json(), lambda: typer.echo(
        f"{counts[hostdoctor.Status.OK]} ok, {counts[hostdoctor.Status.WARNING]} warnings, "
        f"{counts[hostdoctor.Status.FAILED]} failed"))
    failed = report.failed_required
    if not failed:
        return
    if common.json:  # the report says it (exit_code, failed_required): one JSON document
        raise typer.Exit(report.exit_code)
    fail(common, f"required checks failed: {', '.join(c.name for c in failed)}",
         "the hint under each failed line says what to do", report.exit_code)
