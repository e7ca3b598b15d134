"""A new logical volume from a VM's logical volume, for clone, as fast as LVM allows.

A thin volume is cloned by a thin snapshot (`lvcreate --snapshot`): it shares
every block with its source and takes a moment whatever the size; it is made
with its activation-skip flag off (`-kn`) and activated, so it is a disk like
any other. Any other LV is copied whole into a new LV of its size: a thin volume
in THIN_POOL when that is set (the zero blocks left unwritten, so the new volume
stays thin), else a linear one (every block written: a new linear LV may hold
what an earlier LV left in its extents).

The new LV is made under a temporary name, NAME-disk01.clone-PID (no VM's disk
is named so), and renamed NAME-disk01 when complete (publish(): lvrename, which
never replaces an LV); until then the undo registered on the stack removes it.
The source is only ever opened read-only.
"""

from __future__ import annotations

import os
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from hostcreator.disk import copy
from hostcreator.disk.copy import Copied, Method
from hostcreator.errors import HostCreatorError
from hostcreator.log import logger
from hostcreator.paths import lv_path
from hostcreator.run import Result, run


@dataclass(frozen=True)
class Volume:
    """What lvs says of an LV: its attributes, its thin pool (thin volumes) and size."""

    vg: str
    name: str
    attr: str
    pool: str
    size: int

    @property
    def thin(self) -> bool:
        # lv_attr's first letter (lvs(8)): V for a thin volume (a thin snapshot too).
        return self.attr.startswith("V")


def volume_command(vg: str, lv: str | None = None) -> list[str]:
    return ["lvs", "--noheadings", "--nosuffix", "--units", "b", "--separator", "|",
            "-o", "lv_name,lv_attr,pool_lv,lv_size", f"{vg}/{lv}" if lv else vg]


def parse_volumes(vg: str, output: str) -> list[Volume]:
    volumes = []
    for line in output.splitlines():
        if not line.strip():
            continue
        fields = [f.strip() for f in line.split("|")]
        if len(fields) != 4 or not fields[3].isdigit():
            raise HostCreatorError(f"cannot parse lvs output line: {line!r}")
        name, attr, pool, size = fields
        volumes.append(Volume(vg, name, attr, pool, int(size)))
    return volumes


def volume(vg: str, lv: str) -> Volume:
    (found,) = parse_volumes(vg, run(volume_command(vg, lv), capture=True).stdout)
    return found


def temporary_name(lv: str, kind: str = "clone", pid: int | None = None) -> str:
    return f"{lv}.{kind}-{os.getpid() if pid is None else pid}"


def stale(vg: str, lv: str, kind: str = "clone") -> list[str]:
    """The temporary LVs for LV whose process is gone (a clone killed by SIGKILL)."""
    prefix = f"{lv}.{kind}-"
    found = []
    for v in parse_volumes(vg, run(volume_command(vg), capture=True).stdout):
        pid = v.name.removeprefix(prefix)
        if v.name.startswith(prefix) and pid.isdigit() and not Path(f"/proc/{pid}").exists():
            found.append(v.name)
    return sorted(found)


def snapshot_command(vg: str, source: str, target: str) -> list[str]:
    return ["lvcreate", "--yes", "--snapshot", "--setactivationskip", "n", "--name", target,
            f"{vg}/{source}"]


def create_command(vg: str, lv: str, size: int, thin_pool: str | None) -> list[str]:
    argv = ["lvcreate", "--yes", "--wipesignatures", "y", "--name", lv]
    if thin_pool:
        return [*argv, "--virtualsize", f"{size}b", "--thin", f"{vg}/{thin_pool}"]
    return [*argv, "--size", f"{size}b", vg]


def _said(result: Result) -> str:
    """The last line a failed LVM command printed."""
    return result.tail[-1].strip() if result.tail else f"exit code {result.returncode}"


def remove(vg: str, lv: str) -> None:
    """A teardown step: logs and goes on."""
    result = run(["lvremove", "--yes", f"{vg}/{lv}"], check=False, capture=True)
    if result.returncode != 0:
        logger.warning("warning: could not remove logical volume %s/%s: %s", vg, lv,
                       _said(result))


def clone(stack: ExitStack, vg: str, source: str, target: str,
          thin_pool: str | None) -> Copied:
    """A new LV under TARGET's temporary name with SOURCE's blocks; its removal is
    registered on STACK until publish() names it TARGET."""
    src = volume(vg, source)
    temporary = temporary_name(target)
    if src.thin:
        run(snapshot_command(vg, source, temporary))
        stack.callback(remove, vg, temporary)
        run(["lvchange", "--yes", "--activate", "y", f"{vg}/{temporary}"])
        method = Method.THIN_SNAPSHOT
    else:
        run(create_command(vg, temporary, src.size, thin_pool))
        stack.callback(remove, vg, temporary)
        method = Method.LV_COPY
        fd_in = os.open(lv_path(vg, source), os.O_RDONLY | os.O_CLOEXEC)
        try:
            fd_out = os.open(lv_path(vg, temporary), os.O_WRONLY | os.O_CLOEXEC)
            try:
                copy.copy_blocks(fd_in, fd_out, src.size, holes=bool(thin_pool))
                os.fsync(fd_out)
            finally:
                os.close(fd_out)
        finally:
            os.close(fd_in)
    logger.debug("cloned %s/%s to %s/%s (%s)", vg, source, vg, temporary, method)
    return Copied(lv_path(vg, temporary), method, src.size, src.size)


def publish(copied: Copied, vg: str, target: str) -> None:
    """Give the complete LV TARGET's name; an existing TARGET is never replaced (lvrename
    refuses)."""
    result = run(["lvrename", vg, copied.temporary.name, target], check=False, capture=True)
    if result.returncode != 0:
        raise HostCreatorError(f"logical volume {vg}/{copied.temporary.name} could not be "
                               f"named {target}: {_said(result)}",
                               hint=f"{target} appeared meanwhile? it was left as it is")
