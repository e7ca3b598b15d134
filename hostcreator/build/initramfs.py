"""The initramfs built once: update-initramfs deferred while packages are installed.

A kernel's postinst builds the initramfs of its version (update-initramfs -c),
and initramfs-tools' trigger, which the packages that put something in the
initramfs activate (udev, kmod, zstd...), builds it again (-u) at the end of
the same dpkg run: measured here, the two builds took half of mmdebstrap's
time. While packages are installed, update-initramfs is diverted (dpkg-divert)
to a stand-in that only writes down what it was asked; afterwards the real one
runs once: the deletions asked for, the creations, and an update only when
nothing was created (the kernel just created is the newest one).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from hostcreator.build import chroot
from hostcreator.log import logger
from hostcreator.run import run

PROGRAM = "/usr/sbin/update-initramfs"
DIVERTED = f"{PROGRAM}.hostcreator"
REQUESTS = "/var/lib/hostcreator/initramfs-requests"
# The kernel's hook only calls a program that says it is initramfs-tools.
STAND_IN = f"""#!/bin/sh
# Written by hostcreator while it installs packages: it runs the real
# update-initramfs ({DIVERTED}) once afterwards, as asked here.
if [ "${{1:-}}" = --version ]; then echo "initramfs-tools (deferred by hostcreator)"; exit 0; fi
mkdir -p {Path(REQUESTS).parent}
echo "$*" >> {REQUESTS}
"""
DIVERT = ("dpkg-divert", "--local", "--rename", "--divert", DIVERTED, "--add", PROGRAM)
UNDIVERT = ("dpkg-divert", "--local", "--rename", "--remove", PROGRAM)


def shell_hook() -> str:
    """The same, as a shell command for mmdebstrap's --essential-hook ($1 the target)."""
    return (f'chroot "$1" {" ".join(DIVERT)} >/dev/null && '
            f"cat > \"$1{PROGRAM}\" <<'HOSTCREATOR'\n{STAND_IN}HOSTCREATOR\n"
            f'chmod 755 "$1{PROGRAM}"')


def diverted(root: Path) -> bool:
    result = run(["chroot", root, "dpkg-divert", "--listpackage", PROGRAM], capture=True,
                 check=False)
    return result.returncode == 0 and result.stdout.strip() == "LOCAL"


def defer(root: Path) -> None:
    if not diverted(root):
        run(["chroot", root, *DIVERT])
        stand_in = root / PROGRAM.lstrip("/")
        stand_in.write_text(STAND_IN)
        stand_in.chmod(0o755)


def replay(requests: list[list[str]]) -> list[list[str]]:
    """The update-initramfs runs that do what REQUESTS asked, each once."""
    def of(flag: str) -> list[list[str]]:
        return list({tuple(r): r for r in requests if flag in r}.values())

    created = of("-c")
    return [*of("-d"), *created, *([] if created else of("-u")[:1])]


def build_once(root: Path) -> None:
    """Put the real update-initramfs back and run it as asked meanwhile, once."""
    (root / PROGRAM.lstrip("/")).unlink(missing_ok=True)
    run(["chroot", root, *UNDIVERT])
    path = root / REQUESTS.lstrip("/")
    try:
        requests = [line.split() for line in path.read_text().splitlines() if line.strip()]
    except FileNotFoundError:
        return
    for argv in replay(requests):
        logger.info("    initramfs: update-initramfs %s (once, for %d requests)",
                    " ".join(argv), len(requests))
        chroot.run_in(root, ["update-initramfs", *argv], what="update-initramfs")
    path.unlink()


@contextlib.contextmanager
def built_once(root: Path) -> Iterator[None]:
    """update-initramfs deferred in ROOT while the block installs packages (chroot mounted)."""
    defer(root)
    try:
        yield
    except BaseException:
        with contextlib.suppress(Exception):
            (root / PROGRAM.lstrip("/")).unlink(missing_ok=True)
            run(["chroot", root, *UNDIVERT])
        raise
    build_once(root)
