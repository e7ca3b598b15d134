"""The site hooks postunpack.sh and postconfig.sh.

Contract: HOOK_DIR/<hook> runs on the host (not in the chroot) when it exists
and is executable, as `<hook> NAME MOUNTPOINT DISTR`, with stdin closed, the
working directory MOUNTPOINT and this environment: PATH, LANG,
HOSTCREATOR_NAME, HOSTCREATOR_ROOT, HOSTCREATOR_DISTR,
HOSTCREATOR_DISTRIBUTION (debian or ubuntu) and HOSTCREATOR_HOOK. Its output
goes to the VM's log. A non-zero exit stops the build; the error carries the
hook's exit code and the last lines of its output. postunpack.sh runs after
the skeleton is in place, postconfig.sh after the chroot install and before
the boot loader; in both, /proc, /sys and /dev are mounted in MOUNTPOINT so the
hook may chroot into it, and service starts are blocked. The hook runs in the
build's private mount namespace. A hook that failed (or was cut off) runs again
when the build is resumed; one that finished does not.
"""

from __future__ import annotations

import os
from pathlib import Path

from hostcreator.log import logger
from hostcreator.run import run

POSTUNPACK = "postunpack.sh"
POSTCONFIG = "postconfig.sh"


def hook_env(hook: str, name: str, root: Path, distr: str, distribution: str) -> dict[str, str]:
    return {
        "HOSTCREATOR_NAME": name,
        "HOSTCREATOR_ROOT": str(root),
        "HOSTCREATOR_DISTR": distr,
        "HOSTCREATOR_DISTRIBUTION": distribution,
        "HOSTCREATOR_HOOK": hook,
    }


def run_hook(
    hook_dir: Path, hook: str, name: str, root: Path, distr: str, distribution: str
) -> bool:
    """Run HOOK if present and executable; return whether it ran."""
    path = hook_dir / hook
    if not path.is_file():
        logger.info("    no %s", path)
        return False
    if not os.access(path, os.X_OK):
        logger.info("    %s is not executable, skipped", path)
        return False
    logger.info("    running %s", path)
    run(
        [path, name, root, distr],
        env=hook_env(hook, name, root, distr, distribution),
        cwd=root,
        what=f"hook {path}",
    )
    return True
