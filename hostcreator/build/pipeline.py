"""create-debian / create-ubuntu: the recipe, one verb-named step per stage.

Every input is checked before anything is touched (validate()); then NAME's
lock is taken, so that a second run for NAME stops at once naming the first,
and the state is checked (an unfinished earlier build, the disk, the archive).
The build runs in a mount namespace of its own: nobody else sees its mounts,
and they vanish with it whatever kills it. Every resource is acquired with its
undo registered on one ExitStack, so that the disk is unmounted and detached on
success, on error and on SIGINT/SIGTERM alike.

Each stage is written down in the build journal (journal.py) as it starts and
ends. A build that did not finish is resumed after its last finished stage
(Mode.RESUME): a stage finished earlier only re-establishes what the later ones
need of it (the loop device, the mounts, the chroot); the stage that was cut off
runs again from its start.
"""

from __future__ import annotations

import os
import resource
import shutil
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from hostcreator import distro, faults
from hostcreator.build import (
    access,
    archive,
    bootloader,
    bootstrap,
    cache,
    chroot,
    hooks,
    identity,
    network,
    recover,
    report,
    skeleton,
    sources,
)
from hostcreator.config import Config, StorageKind
from hostcreator.disk import fstab, partition, storage
from hostcreator.distro import Distribution
from hostcreator.domain import virt
from hostcreator.errors import Interrupted, InvalidInput, UnfinishedBuild
from hostcreator.host import inuse, loopdev, places
from hostcreator.host.mounts import mount, private_namespace, syncfs
from hostcreator.log import Progress, log_file, logger
from hostcreator.paths import VmPaths, validate_name
from hostcreator.run import require_commands
from hostcreator.state import journal
from hostcreator.state.journal import Journal, Stage, Status
from hostcreator.state.lock import vm_lock

HOST_COMMANDS = ("debootstrap", "rsync", "losetup", "partx", "wipefs", "mkswap",
                 "mkfs.ext4", "tune2fs", "mount", "umount", "chroot")


class Mode(StrEnum):
    NEW = "new"
    RESUME = "resume"  # go on after the last finished stage of an unfinished build
    RESTART = "restart"  # start an unfinished build over, on its own disk


@dataclass
class Build:
    """What one build knows; the steps below fill it in as they go."""

    config: Config
    distribution: Distribution
    name: str
    suite: str
    force: bool = False
    cache_mode: cache.Mode = cache.Mode.USE
    mode: Mode = Mode.NEW
    # The disk is the one an unfinished build of NAME claimed (resume, restart).
    own_disk: bool = False
    record: Journal = field(init=False)
    disk: storage.Storage = field(init=False)
    plan: bootstrap.BootstrapPlan = field(init=False)
    skel: Path = field(init=False)
    login: access.Login = field(init=False, default_factory=access.Login)
    disk_size: int = 0
    device: Path = field(init=False)
    partitions: partition.Nodes = field(init=False)
    filesystems: partition.FileSystems = field(init=False)
    rootfs: cache.Outcome = field(init=False)

    @property
    def paths(self) -> VmPaths:
        return VmPaths.of(self.config, self.name)

    @property
    def root(self) -> Path:
        return self.paths.build_root

    @property
    def log_path(self) -> Path:
        return self.paths.log

    @property
    def program(self) -> str:
        return f"create-{self.distribution.name}"

    def save(self) -> None:
        journal.save(self.config.journal_dir, self.record)


def suite_for(config: Config, distribution: Distribution, name: str, given: str | None,
              mode: Mode) -> str:
    """The suite named, else the one of the build being resumed, else DISTR or the default."""
    if given:
        return given
    if mode is Mode.RESUME:
        previous = journal.load(config.journal_dir, name)
        if previous is not None and previous.distribution == distribution.name:
            return previous.suite
    return config.distr or distribution.default_suite


def validate(build: Build) -> None:
    """Every check of the input, the archive's answer included; nothing is touched."""
    config = build.config
    validate_name(build.name)
    network.check(config)
    build.plan = bootstrap.plan(config, build.distribution, build.suite)
    if config.size * partition.GIB < partition.minimum_disk_size():
        raise InvalidInput(
            f"SIZE={config.size} GiB is too small",
            hint=f"at least {-(-partition.minimum_disk_size() // partition.GIB)} GiB",
        )
    build.skel = skeleton.find(config)
    build.login = access.plan(config, build.paths.root_password)
    if config.hook_dir.is_dir():
        hooks.check(config.hook_dir)
    else:
        logger.debug("hook directory %s does not exist: no hooks", config.hook_dir)
    require_commands(HOST_COMMANDS)
    if build.cache_mode is not cache.Mode.OFF:
        require_commands(cache.COMMANDS)
    if config.storage_kind is StorageKind.LVM:
        require_commands(("lvs", "vgs", "lvcreate"))
    check_directories(config, build.cache_mode)
    journal.load(config.journal_dir, build.name)  # one that cannot be read: said here
    build.disk = storage.for_vm(config, build.name)
    build.disk.check()
    storage.check_size(build.disk, partition.minimum_disk_size())
    build.disk.check_room(config.size * storage.GIB, f"{config.origin('SIZE')}: SIZE")
    # Last, as it asks the network: the archive must offer the suite.
    archive.check_suite(build.distribution, build.suite, bootstrap.archive_mirror(build.plan),
                        config.apt_proxy)


def check_directories(config: Config, mode: cache.Mode) -> None:
    """Where the build writes can be written: nothing is written before."""
    keys = ["LOG_DIR", "STATE_DIR", "JOURNAL_DIR"]
    if config.storage_kind is StorageKind.FILE:
        keys.append("IMAGE_DIR")
    if mode is not cache.Mode.OFF:
        keys.append("CACHE_DIR")
    places.check_writable(config, keys)


def check_previous(build: Build, previous: Journal | None) -> Journal | None:
    """May this run go ahead, given NAME's journal? Returns the unfinished build taken up."""
    resume = f"{build.program} {build.name} --resume"
    if previous is None or previous.finished:
        if build.mode is Mode.RESUME:
            where = build.paths.journal
            what = (f"its build finished at {previous.updated}" if previous
                    else f"it has no build journal ({where})")
            raise InvalidInput(f"nothing to resume for {build.name}: {what}")
        return None
    if previous.distribution != build.distribution.name:
        raise InvalidInput(
            f"{build.name} has an unfinished {previous.distribution} build",
            hint=f"create-{previous.distribution} {build.name} --resume or --restart",
        )
    if os.path.realpath(previous.disk) != os.path.realpath(build.disk.path):
        raise InvalidInput(f"the unfinished build of {build.name} was on {previous.disk}, "
                           f"the configuration now names {build.disk.path}",
                           hint="use the configuration the build began with")
    if build.mode is Mode.NEW:
        raise UnfinishedBuild(
            f"the build of {build.name} did not finish: it {previous.describe()}",
            hint=f"go on after its last finished stage: {resume}; start it over: "
                 f"{build.program} {build.name} --restart; only undo what it left: "
                 f"hostcreator cleanup {build.name}",
        )
    if build.mode is Mode.RESUME and previous.suite != build.suite:
        raise InvalidInput(f"the unfinished build of {build.name} is of {previous.suite}, "
                           f"not {build.suite}", hint=f"{resume} (or --restart for {build.suite})")
    return previous


def check_state(build: Build, taken_up: Journal | None) -> None:
    """What must hold of the host before the build starts (NAME's lock is held)."""
    if taken_up is not None and build.mode is Mode.RESUME and Stage.DISK in taken_up.done \
            and not build.disk.exists():
        raise InvalidInput(f"{build.disk.describe()} is gone: nothing to resume",
                           hint=f"{build.program} {build.name} --restart")
    check_disk_free(build)
    if build.disk.exists():
        # It holds no data unless --force (or it is the disk of the unfinished build
        # taken up): before the journal is written.
        storage.check_existing_disk(build.disk, build.force or build.own_disk,
                                    partition.minimum_disk_size())


def check_disk_free(build: Build) -> None:
    """Nothing uses NAME's disk, nor has mount-vm NAME mounted; --force never overrides it."""
    uri, path = build.config.libvirt_uri, build.disk.path
    users = inuse.users_of(path, vm=inuse.Vm.of(build.config, build.name),
                           domains=virt.domains_at(uri, f"whether a libvirt domain uses {path}"),
                           remote=virt.is_remote(uri))
    inuse.refuse(users, inuse.Command.CREATE, build.disk.describe())


def start_journal(build: Build, taken_up: Journal | None) -> None:
    if taken_up is not None and build.mode is Mode.RESUME:
        record = taken_up
        changed = sorted(k for k, v in journal.settings_of(build.config).items()
                         if record.settings.get(k, v) != v)
        if changed:
            logger.warning("warning: settings changed since the build began, the rest of it "
                           "uses the new ones: %s", ", ".join(changed))
    else:
        record = Journal(build.name, build.distribution.name, build.suite, build.disk.path)
    record.begin_run(os.getpid(), journal.settings_of(build.config),
                     resumed=build.mode is Mode.RESUME and taken_up is not None)
    build.record = record
    build.save()


# --- the steps: STEP(build, stack, done); with done, the stage finished in an earlier run
# and only what the later stages need of it is re-established. --------------------------

def provide_disk(build: Build, stack: ExitStack, done: bool) -> None:
    if done:
        build.disk_size = build.disk.size_bytes()
    else:
        # Checked again: the disk may have changed since check_state().
        check_disk_free(build)
        build.disk_size = storage.ensure_blank_disk(
            build.disk, build.config.size, build.force or build.own_disk,
            partition.minimum_disk_size(),
        )
        partition.wipe(build.disk.path, build.disk_size)
    build.device = loopdev.attach(stack, build.disk.path)
    build.record.loop = build.device
    build.save()


def partition_disk(build: Build, stack: ExitStack, done: bool) -> None:
    plan = partition.layout(build.disk_size)
    if done:
        build.partitions = partition.find(build.device)
        record = build.record
        assert record.root_uuid and record.swap_uuid, "partitions done without their UUIDs"
        build.filesystems = partition.FileSystems(record.root_uuid, record.swap_uuid)
        return
    with loopdev.locked(build.device):
        partition.write_table(build.device, plan)
        build.partitions = partition.find(build.device)
        build.filesystems = partition.make_filesystems(build.partitions, build.name)
    build.record.root_uuid = build.filesystems.root_uuid
    build.record.swap_uuid = build.filesystems.swap_uuid
    build.save()


def bootstrap_root(build: Build, stack: ExitStack, done: bool) -> None:
    build.root.mkdir(parents=True, exist_ok=True)
    # No cache flushes to the disk while building (every fsync would reach the
    # host's disk through the loop device): the disk is flushed once at the end.
    mount(stack, build.partitions.root, build.root, fstype="ext4", options=("nobarrier",))
    build.record.root = build.root
    build.save()
    if done:
        return
    empty_root(build.root)
    config = build.config
    build.rootfs = cache.provide_root(build.plan, build.root, cache_dir=config.cache_dir,
                                      max_age_days=config.cache_max_age,
                                      mode=build.cache_mode, apt_proxy=config.apt_proxy)
    build.record.rootfs = build.rootfs.note
    build.save()


def empty_root(root: Path) -> None:
    """Remove what an earlier run, cut off in the bootstrap, left in the root file system."""
    leftovers = [p for p in root.iterdir() if p.name != "lost+found"]
    if leftovers:
        logger.info("    removing the half-bootstrapped tree an earlier run left")
    for path in leftovers:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()


def install_skeleton(build: Build, stack: ExitStack, done: bool) -> None:
    if not done:
        sources.write(build.root, build.distribution, build.suite, build.config.security_mirror)
        edited = skeleton.install(build.skel, build.root, build.suite)
        logger.debug("%%DISTR%% replaced in %s", ", ".join(map(str, edited)) or "no file")
        skeleton.copy_resolv_conf(build.root)
        fstab.write(build.root, build.filesystems)
        network.write(build.root, build.config)
        chroot.apt_proxy_conf(build.root, build.config.apt_proxy)
        chroot.dpkg_unsafe_io(build.root, True)
    enter_chroot(build, stack)


def enter_chroot(build: Build, stack: ExitStack) -> None:
    fs, nodes = build.filesystems, build.partitions
    chroot.enter(stack, build.root, [build.device, *nodes.all],
                 {fs.root_uuid: nodes.root, fs.swap_uuid: nodes.swap})


def run_postunpack_hook(build: Build, stack: ExitStack, done: bool) -> None:
    if done:
        return
    identity.set_hostname(build.root, build.name)
    identity.add_root_aliases(build.root)
    _hook(build, hooks.POSTUNPACK)


def install_in_chroot(build: Build, stack: ExitStack, done: bool) -> None:
    if done:
        return
    config = build.config
    chroot.run_in(
        build.root,
        ["/root/bin/install.sh"],
        env={
            "HOSTCREATOR_NAME": build.name,
            "HOSTCREATOR_DISTR": build.suite,
            "HOSTCREATOR_TIMEZONE": config.timezone,
            "HOSTCREATOR_LOCALE": config.locale,
        },
        what="install.sh",
    )
    access.install(build.root, build.login)


def run_postconfig_hook(build: Build, stack: ExitStack, done: bool) -> None:
    if not done:
        _hook(build, hooks.POSTCONFIG)


def install_boot_loader(build: Build, stack: ExitStack, done: bool) -> None:
    if not done:
        bootloader.install(build.root, build.distribution, build.device,
                           build.filesystems)


def finish(build: Build, stack: ExitStack, done: bool) -> None:
    if not done:
        finish_root(build)
    faults.point("before:release")
    stack.close()
    flush(build)


def finish_root(build: Build) -> None:
    identity.reset(build.root)
    identity.link_resolv_conf(build.root)
    chroot.apt_proxy_conf(build.root, None)
    chroot.dpkg_unsafe_io(build.root, False)
    # Written out now, whatever happens to the mount later (see flush()).
    syncfs(build.root)


def _hook(build: Build, hook: str) -> None:
    hooks.run_hook(build.config.hook_dir, hook, build.name, build.root, build.suite,
                   build.distribution.name)


def flush(build: Build) -> None:
    """Everything on the disk before success is reported: the loop device gone, then fsync."""
    inuse.wait_released(build.disk.path, hint="the build was written out; do not start the "
                          "VM before what holds it has let go of it")
    with open(build.disk.path, "rb") as f:
        os.fsync(f.fileno())


@dataclass(frozen=True)
class Step:
    stage: Stage
    title: str
    run: Callable[[Build, ExitStack, bool], None]


STEPS = (
    Step(Stage.DISK, "disk", provide_disk),
    Step(Stage.PARTITIONS, "partitions and file systems", partition_disk),
    Step(Stage.BOOTSTRAP, "bootstrap {suite}", bootstrap_root),
    Step(Stage.SKELETON, "skeleton", install_skeleton),
    Step(Stage.POSTUNPACK, "postunpack hook", run_postunpack_hook),
    Step(Stage.INSTALL, "chroot install", install_in_chroot),
    Step(Stage.POSTCONFIG, "postconfig hook", run_postconfig_hook),
    Step(Stage.BOOTLOADER, "boot loader", install_boot_loader),
    Step(Stage.FINISH, "finish", finish),
)


def peak_rss_mb() -> int:
    """The largest resident set of this process so far (not of the commands it ran)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024


def _dirs_of(build: Build) -> list[Path]:
    """Every directory and file the build uses: what it lies on stays in its namespace."""
    return [*build.config.paths(), build.skel, build.disk.path]


def run_steps(build: Build, progress: Progress) -> None:
    """Every stage not finished earlier, each one written down as it starts and ends."""
    record = build.record
    with ExitStack() as stack:
        # From here on nobody else sees our mounts, and they die with us.
        record.namespace = private_namespace(keep=_dirs_of(build))
        build.save()
        for step in STEPS:
            done = step.stage in record.done
            faults.point(f"before:{step.stage}")
            with progress.stage(step.title.format(suite=build.suite)):
                record.begin(step.stage)
                build.save()
                step.run(build, stack, done)
                if done:
                    progress.note("done in an earlier run")
                elif step.stage is Stage.BOOTSTRAP:
                    progress.note(build.rootfs.note)
                record.end(step.stage)
                build.save()
            faults.point(f"after:{step.stage}")


def build_mode(resume: bool, restart: bool) -> Mode:
    if resume and restart:
        raise InvalidInput("--resume and --restart exclude each other")
    if resume:
        return Mode.RESUME
    return Mode.RESTART if restart else Mode.NEW


def cache_mode(no_cache: bool, refresh_cache: bool) -> cache.Mode:
    if no_cache and refresh_cache:
        raise InvalidInput("--no-cache and --refresh-cache exclude each other")
    if no_cache:
        return cache.Mode.OFF
    return cache.Mode.REFRESH if refresh_cache else cache.Mode.USE


def plan_build(config: Config, distribution: str, name: str, suite: str | None, *,
               force: bool = False, resume: bool = False, restart: bool = False,
               no_cache: bool = False, refresh_cache: bool = False) -> Build:
    """The Build that `create-DISTRIBUTION NAME [SUITE]` with these options asks for."""
    dist = distro.get(distribution)
    mode = build_mode(resume, restart)
    return Build(config, dist, name, suite_for(config, dist, name, suite, mode), force=force,
                 mode=mode, cache_mode=cache_mode(no_cache, refresh_cache))


def dry_run(build: Build) -> dict[str, Any]:
    """Every check create() makes, then its plan; nothing is created, locked or written."""
    validate(build)
    config = build.config
    taken_up = check_previous(build, journal.load(config.journal_dir, build.name))
    build.own_disk = taken_up is not None
    check_state(build, taken_up)
    outcome = cache.lookup(build.plan, cache_dir=config.cache_dir,
                           max_age_days=config.cache_max_age, mode=build.cache_mode)
    return report.plan(build, outcome)


def create(build: Build) -> dict[str, Any]:
    """Run the whole recipe for BUILD (or what an earlier run left of it); returns the summary."""
    validate(build)
    config = build.config
    with vm_lock(build.paths, build.program):
        previous = journal.load(config.journal_dir, build.name)
        taken_up = check_previous(build, previous)
        build.own_disk = taken_up is not None
        if taken_up is not None:
            with log_file(build.log_path):
                logger.info("%s: the earlier build %s", build.name, taken_up.describe())
                recover.clear_build(config, build.name, build.disk.path)
            taken_up = journal.load(config.journal_dir, build.name)
        check_state(build, taken_up)
        progress = Progress(total=len(STEPS))
        journal_path = build.paths.journal
        with log_file(build.log_path):
            start_journal(build, taken_up)
            logger.info("building %s (%s %s) on %s; log: %s; journal: %s", build.name,
                        build.distribution.name, build.suite, build.disk.describe(),
                        build.log_path, build.paths.journal)
            try:
                run_steps(build, progress)
            except Interrupted as exc:
                build.record.stop(Status.INTERRUPTED, f"interrupted by {exc}")
                build.save()
                raise
            except BaseException as exc:
                build.record.stop(Status.FAILED, str(exc) or type(exc).__name__)
                build.save()
                raise
            build.record.stop(Status.FINISHED)
            build.save()
            logger.info("%s is ready on %s\n%s\n  peak memory of hostcreator: %d MB", build.name,
                        build.disk.describe(), progress.summary(), peak_rss_mb())
            for line in access.describe(build.login, build.name, network.address(config)):
                logger.info("%s", line)
    return report.summary(build, progress, build.log_path, journal_path)
