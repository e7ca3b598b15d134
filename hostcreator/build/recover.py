"""What a build that did not end cleanly left behind, found from its journal and undone.

A build that fails or is interrupted undoes everything itself (pipeline.py). One
that is killed outright (SIGKILL, the OOM killer, a crash) cannot; it leaves:
- the commands it started, still running in its private mount namespace
  (debootstrap, dpkg, a hook): they are stopped, and the namespace's mounts go
  with the last of them;
- mounts below its build root in the host's namespace (only builds that had no
  namespace of their own made those);
- the loop device of its disk.
A reboot leaves only the journal. `hostcreator cleanup NAME`, `create-* --resume`
and `--restart` undo exactly that, holding NAME's lock, and write down in the
journal that the run was killed. Undoing twice is harmless: the second time
there is nothing left.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from hostcreator.config import Config
from hostcreator.disk import storage
from hostcreator.errors import BrokenJournal, InvalidInput
from hostcreator.host import inuse, loopdev, mounts, places
from hostcreator.log import log_file, logger
from hostcreator.paths import VmPaths
from hostcreator.state import journal, lock
from hostcreator.state.journal import Journal, Status
from hostcreator.state.lock import vm_lock


@dataclass
class Cleared:
    """What was undone; nothing at all when the build left nothing."""

    stopped: list[int] = field(default_factory=list)
    unmounted: list[Path] = field(default_factory=list)
    detached: list[str] = field(default_factory=list)

    @property
    def nothing(self) -> bool:
        return not (self.stopped or self.unmounted or self.detached)

    def describe(self) -> str:
        parts = []
        if self.stopped:
            parts.append(f"stopped {len(self.stopped)} process(es) left running "
                         f"({', '.join(map(str, self.stopped))})")
        if self.unmounted:
            parts.append(f"unmounted {', '.join(map(str, self.unmounted))}")
        if self.detached:
            parts.append(f"detached {', '.join(self.detached)}")
        return "; ".join(parts) or "nothing was left"


def stop_leftovers(config: Config, name: str, record: Journal | None) -> Cleared:
    """Stop what a killed build of NAME still runs and unmount what it mounted."""
    cleared = Cleared()
    if record is not None and _namespace_still_the_builds(record):
        assert record.namespace is not None
        cleared.stopped = mounts.stop_namespace(record.namespace)
    earlier = [record.root] if record and record.root else []
    for root in {VmPaths.of(config, name).build_root, *earlier}:
        leftovers = mounts.mounts_below(root)
        if leftovers:
            mounts.unmount_tree(root)
            cleared.unmounted += leftovers
    return cleared


def _namespace_still_the_builds(record: Journal) -> bool:
    """Is the namespace the journal names still that of the killed build?

    Namespace identities are reused once a namespace is gone (after a reboot, or
    when its last process ended): only a namespace in which the build's root is
    mounted is the build's, never one that merely has the same number now.
    """
    if record.status is not Status.RUNNING or not record.namespace or record.root is None:
        return False
    if record.namespace == mounts.current_namespace():
        return False
    pids = mounts.processes_in_namespace(record.namespace)
    return bool(pids) and mounts.is_mount_point_of(pids[0], record.root)


def clear_build(config: Config, name: str, disk: Path) -> Cleared:
    """Undo what an unfinished build of NAME left (the caller holds NAME's lock)."""
    inuse.refuse(inuse.users_of(disk, vm=inuse.Vm.of(config, name)), inuse.Command.CLEANUP,
                 str(disk))
    record = journal.load(config.journal_dir, name)
    cleared = stop_leftovers(config, name, record)
    if disk.exists():
        loops = loopdev.loop_devices_of(disk)
        for loop in loops:
            loopdev.detach(Path(loop))
        cleared.detached = loops
        inuse.wait_released(disk, hint="stop what uses it, then run hostcreator cleanup "
                              f"{name} again")
    if record is not None and record.status is Status.RUNNING:
        record.stop(Status.INTERRUPTED, f"killed (PID {record.pid} was gone); what it left "
                    f"was cleaned up: {cleared.describe()}")
        journal.save(config.journal_dir, record)
    if not cleared.nothing:
        logger.info("    %s: %s", name, cleared.describe())
    return cleared


def cleanup(config: Config, name: str) -> tuple[Cleared, Journal | None]:
    """`hostcreator cleanup NAME`: undo what a killed build of NAME left; its journal after.

    A journal that cannot be read is set aside first (renamed, kept for a look): what
    the build left is then found from the configuration's disk and build root.
    """
    vm = VmPaths.of(config, name)
    try:
        record = journal.load(config.journal_dir, name)
        broken = False
    except BrokenJournal as exc:
        logger.warning("warning: %s", exc.message)
        record, broken = None, True
    disk = storage.for_vm(config, name)
    if record is None and not broken:
        refuse_unknown(config, vm, disk)
    places.check_writable(config, ("STATE_DIR", "LOG_DIR"))
    with vm_lock(vm, "cleanup"), log_file(vm.log):
        if broken:
            journal.set_aside(config.journal_dir, name)
        record = journal.load(config.journal_dir, name)
        cleared = clear_build(config, name, record.disk if record else disk.path)
        return cleared, journal.load(config.journal_dir, name)


def refuse_unknown(config: Config, vm: VmPaths, disk: storage.Storage) -> None:
    """A name nothing is known of (no journal, no disk, no mount state, nothing mounted at
    its build root) is most likely a typo: no lock or log is made for it."""
    if disk.exists() or vm.mount_state.exists() or mounts.mounts_below(vm.build_root):
        return
    raise InvalidInput(f"{vm.name} is not known: it has no build journal ({vm.journal}) and "
                       f"no disk ({disk.describe()} does not exist)",
                       hint="hostcreator status lists the unfinished builds")


def describe(config: Config, name: str, record: Journal) -> str:
    """How NAME's build stands, the lock telling a running build from a killed one."""
    holder = lock.held_by(VmPaths.of(config, name).lock)
    if record.status is Status.RUNNING and holder:
        return f"is running ({holder}), in stage {record.stage}"
    return record.describe()


def unfinished(config: Config) -> list[tuple[str, Journal, str]]:
    """The builds that run or did not finish: name, journal and how each stands (a
    journal that cannot be read is warned about, with what to do)."""
    found = []
    for name in journal.names(config.journal_dir):
        record = journal.load_or_warn(config.journal_dir, name)
        if record is not None and not record.finished:
            found.append((name, record, describe(config, name, record)))
    return found
