"""create-debian and create-ubuntu."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from hostcreator.build import pipeline
from hostcreator.cli.common import Common, command
from hostcreator.disk.partition import GIB, MIB


def create_command(distribution: str) -> Callable[..., None]:
    def create(
        common: Common,
        name: Annotated[str, typer.Argument(metavar="NAME",
                                           help="name of the VM: host name and disk name")],
        distr: Annotated[
            str | None, typer.Argument(metavar="DISTR", help="suite, e.g. trixie or resolute "
                                       "(default: DISTR or the current release)")
        ] = None,
        size: Annotated[int | None, typer.Option("--size", help="disk size in GiB (SIZE)")]
        = None,
        storage_kind: Annotated[
            str | None, typer.Option("--storage", help="lvm or file (STORAGE)")] = None,
        vg: Annotated[str | None, typer.Option("--vg", help="LVM volume group (VG_NAME)")]
        = None,
        image_dir: Annotated[
            Path | None, typer.Option("--image-dir", help="directory of image files (IMAGE_DIR)")
        ] = None,
        mirror: Annotated[str | None, typer.Option("--mirror", help="archive mirror (MIRROR)")]
        = None,
        force: Annotated[
            bool, typer.Option("--force", help="overwrite an existing disk that holds data")
        ] = False,
        insecure: Annotated[
            bool, typer.Option("--insecure-no-signature-check",
                               help="DANGEROUS: do not verify the archive signatures "
                               "(debootstrap --no-check-gpg; INSECURE_NO_SIGNATURE_CHECK)")
        ] = False,
        no_cache: Annotated[
            bool, typer.Option("--no-cache", help="bootstrap afresh; neither use nor fill the "
                               "rootfs cache")
        ] = False,
        refresh_cache: Annotated[
            bool, typer.Option("--refresh-cache", help="bootstrap afresh and replace the rootfs "
                               "cache entry")
        ] = False,
        resume: Annotated[
            bool, typer.Option("--resume", help="go on with NAME's unfinished build after its "
                               "last finished stage (what the earlier run left is cleaned up "
                               "first)")
        ] = False,
        restart: Annotated[
            bool, typer.Option("--restart", help="start NAME's unfinished build over, on its "
                               "disk")
        ] = False,
        ip: Annotated[
            str | None, typer.Option("--ip", help="static address with its prefix length, "
                                     "e.g. 192.0.2.10/24 (IP_ADDRESS; default: DHCP)")
        ] = None,
        gateway: Annotated[
            str | None, typer.Option("--gateway", help="default gateway (GATEWAY)")] = None,
        dns: Annotated[
            str | None, typer.Option("--dns", help="name servers, space or comma separated "
                                     "(DNS)")
        ] = None,
        dry_run: Annotated[
            bool, typer.Option("--dry-run", help="make every check, then show the plan; "
                               "create, lock and write nothing")
        ] = False,
    ) -> None:
        cfg = common.config(SIZE=size, STORAGE=storage_kind, VG_NAME=vg, IMAGE_DIR=image_dir,
                            MIRROR=mirror, IP_ADDRESS=ip, GATEWAY=gateway, DNS=dns,
                            INSECURE_NO_SIGNATURE_CHECK="yes" if insecure else None)
        build = pipeline.plan_build(cfg, distribution, name, distr, force=force, resume=resume,
                                    restart=restart, no_cache=no_cache,
                                    refresh_cache=refresh_cache)
        if dry_run:
            plan = pipeline.dry_run(build)
            common.emit(plan, lambda: print_plan(plan))
        else:
            common.emit(pipeline.create(build))

    article = "an" if distribution[0] in "aeiou" else "a"
    create.__doc__ = (
        f"Build {article} {distribution.capitalize()} VM disk for NAME: partitions, debootstrap, "
        "skeleton, hooks, chroot install, GRUB."
    )
    return command(f"create-{distribution}", reports=True)(create)


def print_plan(plan: dict[str, Any]) -> None:
    disk = plan["disk"]
    rows = [
        ("would build", f"{plan['name']} ({plan['distribution']} {plan['suite']}, "
                        f"{plan['mode']})"),
        ("disk", f"{disk['describe']} ({disk['size_bytes'] / GIB:.1f} GiB, "
                 + ("exists" if disk["exists"] else "to be created") + ")"),
        ("layout", ", ".join(f"{p['name']} {p['size'] / MIB:.0f} MiB" for p in plan["layout"])),
        ("mirror", plan["mirror"]),
        ("bootstrap", plan["cache"]["note"]),
        ("packages", " ".join(plan["packages"])),
        ("network", plan["network"]),
        ("skeleton", plan["skeleton"]),
        ("scripts", "\n".join(plan["scripts"]) or "none"),
        ("skipped", "\n".join(f"{s['path']} ({s['note']})" for scripts in
                              plan["hooks"].values() for s in scripts if not s["runs"])),
        ("login", "\n".join(plan["login"]["how"])),
    ]
    for title, text in rows:
        for number, line in enumerate(text.splitlines() if text else []):
            typer.echo(f"{title if number == 0 else '':<12} {line}")



create_debian = create_command("debian")
create_ubuntu = create_command("ubuntu")
