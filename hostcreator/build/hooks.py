"""The site hooks: postunpack.sh and postconfig.sh, then the scripts of postunpack.d/
and postconfig.d/.

Contract: HOOK_DIR/<hook> runs on the host (not in the chroot) when it exists
and is executable, as `<hook> NAME MOUNTPOINT DISTR`, with stdin closed, the
working directory MOUNTPOINT and this environment: PATH, LANG,
HOSTCREATOR_NAME, HOSTCREATOR_ROOT, HOSTCREATOR_DISTR,
HOSTCREATOR_DISTRIBUTION (debian or ubuntu) and HOSTCREATOR_HOOK. Then every
file of HOOK_DIR/<hook without .sh>.d/ runs the same way, in lexical order of
the names; one that is not executable is skipped with a note, a directory there
is bad input (refused before anything is touched). Their output goes to the
VM's log. A non-zero exit stops the build, naming the script; the error carries
its exit code and the last lines of its output. The postunpack hooks run after
the skeleton is in place, the postconfig ones after the chroot install and
before the boot loader; in both, /proc, /sys and /dev are mounted in MOUNTPOINT
so a hook may chroot into it, and service starts are blocked. The hooks run in
the build's private mount namespace. The hooks of a stage that failed (or was
cut off) run again, all of them, when the build is resumed; those of a stage
that finished do not.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from hostcreator.errors import InvalidInput
from hostcreator.log import logger
from hostcreator.run import run

POSTUNPACK = "postunpack.sh"
POSTCONFIG = "postconfig.sh"
HOOKS = (POSTUNPACK, POSTCONFIG)


@dataclass(frozen=True)
class Script:
    """One hook script and whether it will run."""

    path: Path
    runs: bool
    note: str = ""  # why it does not run


def parts_dir(hook_dir: Path, hook: str) -> Path:
    """HOOK's directory of further scripts: postunpack.sh -> HOOK_DIR/postunpack.d."""
    return hook_dir / f"{hook.removesuffix('.sh')}.d"


def _script(path: Path) -> Script:
    if not os.access(path, os.X_OK):
        return Script(path, False, "not executable")
    return Script(path, True)


def scripts(hook_dir: Path, hook: str) -> list[Script]:
    """What HOOK runs, in order: the single script, then its directory's files by name."""
    found = []
    single = hook_dir / hook
    if single.is_file():
        found.append(_script(single))
    parts = parts_dir(hook_dir, hook)
    if parts.is_dir():
        found += [_script(parts / entry) for entry in sorted(os.listdir(parts))]
    return found


def check(hook_dir: Path) -> None:
    """Bad input: a hook, a hook directory or an entry of one that is not what it must be."""
    for hook in HOOKS:
        single = hook_dir / hook
        parts = parts_dir(hook_dir, hook)
        if single.is_dir():
            raise InvalidInput(f"HOOK_DIR: {single} is a directory, not a hook script",
                               hint=f"the scripts of a directory go into {parts}")
        if parts.exists() and not parts.is_dir():
            raise InvalidInput(f"HOOK_DIR: {parts} is not a directory",
                               hint=f"a single script is {single}")
        for script in scripts(hook_dir, hook):
            if script.path.is_dir():
                raise InvalidInput(f"HOOK_DIR: {script.path} is a directory, not a hook script",
                                   hint=f"only files go into {parts} (they run in name order)")


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
) -> list[Path]:
    """Run HOOK's scripts that are executable; return those that ran."""
    found = scripts(hook_dir, hook)
    if not found:
        logger.info("    no %s, no %s/", hook_dir / hook, parts_dir(hook_dir, hook))
    ran = []
    for script in found:
        if not script.runs:
            logger.info("    %s is %s, skipped", script.path, script.note)
            continue
        logger.info("    running %s", script.path)
        run(
            [script.path, name, root, distr],
            env=hook_env(hook, name, root, distr, distribution),
            cwd=root,
            what=f"hook {script.path}",
        )
        ran.append(script.path)
    return ran
