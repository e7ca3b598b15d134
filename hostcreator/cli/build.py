"""create-debian and create-ubuntu."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer

from hostcreator.build import pipeline
from hostcreator.cli.common import Common, command


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
    ) -> None:
        cfg = common.config(SIZE=size, STORAGE=storage_kind, VG_NAME=vg, IMAGE_DIR=image_dir,
                            MIRROR=mirror,
                            INSECURE_NO_SIGNATURE_CHECK="yes" if insecure else None)
        build = pipeline.plan_build(cfg, distribution, name, distr, force=force, resume=resume,
                                    restart=restart, no_cache=no_cache,
                                    refresh_cache=refresh_cache)
        pipeline.create(build)

    article = "an" if distribution[0] in "aeiou" else "a"
    create.__doc__ = (
        f"Build {article} {distribution.capitalize()} VM disk for NAME: partitions, debootstrap, "
        "skeleton, hooks, chroot install, GRUB."
    )
    return command(f"create-{distribution}")(create)


create_debian = create_command("debian")
create_ubuntu = create_command("ubuntu")
