"""create-debian / create-ubuntu: the recipe, one verb-named step per stage.

Everything is checked before anything is touched (prepare()); then every
resource is acquired with its undo registered on one ExitStack, so that the
disk is unmounted and detached on success, on error and on SIGINT/SIGTERM
alike.
"""

from __future__ import annotations

import os
import resource
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

from hostcreator import (
    access,
    archive,
    bootloader,
    bootstrap,
    cache,
    chroot,
    fstab,
    hooks,
    identity,
    loopdev,
    partition,
    skeleton,
    sources,
    storage,
    vmmount,
)
from hostcreator.config import Config, StorageKind
from hostcreator.distro import Distribution
from hostcreator.errors import HostCreatorError, InvalidInput
from hostcreator.lock import vm_lock
from hostcreator.log import Progress, log_file, logger
from hostcreator.mounts import (
    is_mount_point,
    mount,
    namespaces_holding,
    shared_mount_point,
    syncfs,
)
from hostcreator.run import require_commands

HOST_COMMANDS = ("debootstrap", "rsync", "losetup", "partx", "wipefs", "mkswap",
                 "mkfs.ext4", "tune2fs", "mount", "umount", "chroot")
STAGES = 9


@dataclass
class Build:
    """What one build knows; the steps below fill it in as they go."""

    config: Config
    distribution: Distribution
    name: str
    suite: str
    force: bool = False
    cache_mode: cache.Mode = cache.Mode.USE
    disk: storage.Storage = field(init=False)
    plan: bootstrap.BootstrapPlan = field(init=False)
    skel: Path = field(init=False)
    password: str | None = field(init=False, default=None, repr=False)
    disk_size: int = 0
    device: Path = field(init=False)
    partitions: list[Path] = field(default_factory=list)
    filesystems: partition.FileSystems = field(init=False)
    rootfs: cache.Outcome = field(init=False)

    @property
    def root(self) -> Path:
        return self.config.state_dir / "build" / self.name

    @property
    def log_path(self) -> Path:
        return self.config.log_dir / f"{self.name}.log"


def prepare(build: Build) -> None:
    """Every check that can be made before anything is touched."""
    identity.validate_name(build.name)
    config = build.config
    build.plan = bootstrap.plan(config, build.distribution, build.suite)
    if config.size * partition.GIB < partition.minimum_disk_size():
        raise InvalidInput(
            f"SIZE={config.size} GiB is too small",
            hint=f"at least {-(-partition.minimum_disk_size() // partition.GIB)} GiB",
        )
    build.skel = skeleton.find(config)
    if config.root_password_file:
        build.password = access.read_password(config.root_password_file)
    if config.ssh_authorized_keys:
        access.check_keys_file(config.ssh_authorized_keys)
    if not config.hook_dir.is_dir():
        logger.debug("hook directory %s does not exist: no hooks", config.hook_dir)
    require_commands(HOST_COMMANDS)
    if build.cache_mode is not cache.Mode.OFF:
        require_commands(cache.COMMANDS)
    if config.storage_kind is StorageKind.LVM:
        require_commands(("lvs", "vgs", "lvcreate"))
    build.disk = storage.for_vm(config, build.name)
    build.disk.check()
    storage.check_size(build.disk, partition.minimum_disk_size())
    vmmount.check_not_mounted(config, build.name)
    if is_mount_point(build.root):
        raise InvalidInput(f"{build.root} is mounted: is another build of {build.name} running?")
    # Last, as it asks the network: the archive must offer the suite.
    archive.check_suite(build.distribution, build.suite, bootstrap.archive_mirror(build.plan),
                        config.apt_proxy)


def provide_disk(build: Build, stack: ExitStack) -> None:
    build.disk_size = storage.ensure_blank_disk(
        build.disk, build.config.size, build.force, partition.minimum_disk_size()
    )
    partition.wipe(build.disk.path, build.disk_size)
    build.device = loopdev.attach(stack, build.disk.path)


def partition_disk(build: Build) -> None:
    plan = partition.layout(build.disk_size)
    partition.write_table(build.device, plan)
    build.partitions = loopdev.wait_for_partitions(build.device, len(plan.parts))
    _bios, swap, root = build.partitions
    build.filesystems = partition.make_filesystems(swap, root, build.name)


def bootstrap_root(build: Build, stack: ExitStack) -> None:
    build.root.mkdir(parents=True, exist_ok=True)
    shared_mount_point(stack, build.root)
    # No cache flushes to the disk while building (every fsync would reach the
    # host's disk through the loop device): the disk is flushed once at the end.
    mount(stack, build.partitions[2], build.root, fstype="ext4", options=("nobarrier",))
    config = build.config
    build.rootfs = cache.provide_root(build.plan, build.root, cache_dir=config.cache_dir,
                                      max_age_days=config.cache_max_age,
                                      mode=build.cache_mode, apt_proxy=config.apt_proxy)


def install_skeleton(build: Build) -> None:
    sources.write(build.root, build.distribution, build.suite, build.config.security_mirror)
    edited = skeleton.install(build.skel, build.root, build.suite)
    logger.debug("%%DISTR%% replaced in %s", ", ".join(map(str, edited)) or "no file")
    skeleton.copy_resolv_conf(build.root)
    fstab.write(build.root, build.filesystems)
    chroot.apt_proxy_conf(build.root, build.config.apt_proxy)
    chroot.dpkg_unsafe_io(build.root, True)


def enter_chroot(build: Build, stack: ExitStack) -> None:
    fs = build.filesystems
    root_part, swap_part = build.partitions[2], build.partitions[1]
    chroot.enter(stack, build.root, [build.device, *build.partitions],
                 {fs.root_uuid: root_part, fs.swap_uuid: swap_part})


def run_postunpack_hook(build: Build) -> None:
    identity.set_hostname(build.root, build.name)
    identity.add_root_aliases(build.root)
    _hook(build, hooks.POSTUNPACK)


def install_in_chroot(build: Build) -> None:
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
    if build.password is not None:
        access.set_root_password(build.root, build.password)
    if config.ssh_authorized_keys:
        access.install_authorized_keys(build.root, config.ssh_authorized_keys)


def run_postconfig_hook(build: Build) -> None:
    _hook(build, hooks.POSTCONFIG)


def install_boot_loader(build: Build) -> None:
    bootloader.install(build.root, build.distribution.grub_script, build.device,
                       build.filesystems)


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


RELEASE_WAIT_SECONDS = 30.0


def wait_for_release(build: Build) -> None:
    """The disk's loop device must be gone: only then is the file system shut down.

    It stays when the file system is still mounted in another mount namespace
    (cloned while we built): umount here then only removed our view of it.
    """
    deadline = time.monotonic() + RELEASE_WAIT_SECONDS
    while loops := storage.loop_devices_of(build.disk.path):
        if time.monotonic() > deadline:
            holders = [h for loop in loops for h in namespaces_holding(Path(loop))]
            raise HostCreatorError(
                f"{build.disk.describe()} is still attached to {', '.join(loops)}: its file "
                f"system is still mounted in the mount namespace of {', '.join(holders)}",
                hint="the build was written out; do not start the VM before that process "
                "ends or unmounts it (umount in its namespace: nsenter -m -t PID umount ...)",
            )
        time.sleep(0.2)


def flush(build: Build) -> None:
    """Everything on the disk before success is reported."""
    wait_for_release(build)
    with open(build.disk.path, "rb") as f:
        os.fsync(f.fileno())


def peak_rss_mb() -> int:
    """The largest resident set of this process so far (not of the commands it ran)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024


def create(build: Build) -> Progress:
    """Run the whole recipe for BUILD; returns the timings."""
    prepare(build)
    progress = Progress(total=STAGES)
    with vm_lock(build.config.state_dir, build.name, f"create-{build.distribution.name}"), \
            log_file(build.log_path):
        logger.info("building %s (%s %s) on %s; log: %s", build.name, build.distribution.name,
                    build.suite, build.disk.describe(), build.log_path)
        with ExitStack() as stack:
            with progress.stage("disk"):
                provide_disk(build, stack)
            with progress.stage("partitions and file systems"):
                partition_disk(build)
            with progress.stage(f"bootstrap {build.suite}"):
                bootstrap_root(build, stack)
                progress.note(build.rootfs.note)
            with progress.stage("skeleton"):
                install_skeleton(build)
                enter_chroot(build, stack)
            with progress.stage("postunpack hook"):
                run_postunpack_hook(build)
            with progress.stage("chroot install"):
                install_in_chroot(build)
            with progress.stage("postconfig hook"):
                run_postconfig_hook(build)
            with progress.stage("boot loader"):
                install_boot_loader(build)
            with progress.stage("finish"):
                finish_root(build)
                stack.close()
                flush(build)
        logger.info("%s is ready on %s\n%s\n  peak memory of hostcreator: %d MB", build.name,
                    build.disk.describe(), progress.summary(), peak_rss_mb())
    return progress
