"""hostcreator export NAME --format qcow2|vmdk|ova|raw [--output PATH]: NAME as a sealed
appliance that other hypervisors import and boot.

The recipe: every refusal first (check), before anything is made; then, holding
NAME's lock, a copy of NAME's disk in IMAGE_DIR (disk/copy.py: a reflink or the
allocated extents, under a hidden name; of an LV, its blocks with the zero ones
left as holes), sealed (identity.seal: what NAME made
for itself removed, root's password locked, the freed blocks and the swap
discarded), converted by qemu-img beside PATH under a hidden name (for an OVA: the
streamOptimized VMDK, then the descriptor, the manifest and the VMDK packed), and
only then given PATH's name. NAME's disk is only ever opened read-only; the
sealed copy is removed at the end whatever happens, the partial output too when
the export fails or is interrupted. NAME's journal is not changed; its log tells
of the export.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hostcreator import faults
from hostcreator.build import identity
from hostcreator.config import Config
from hostcreator.disk import copy, image
from hostcreator.disk.image import Format
from hostcreator.disk.partition import GIB
from hostcreator.domain import ovf, qemu, virt
from hostcreator.errors import InvalidInput
from hostcreator.host import inuse, mounts, places
from hostcreator.log import Progress, log_file, logger
from hostcreator.paths import VmPaths, name_of_image
from hostcreator.run import require_commands
from hostcreator.state.journal import Journal
from hostcreator.state.lock import vm_lock
from hostcreator.vm import clone

HOST_COMMANDS = ("losetup", "partx", "mount", "umount", "blkid", "mkswap", "blkdiscard",
                 "fstrim", "qemu-img")
DIRECTORIES = ("IMAGE_DIR", "LOG_DIR", "STATE_DIR")
KIND = "export"  # the temporary files' mark (copy.temporary_name)
DISK_FORMATS = {Format.QCOW2: "compressed qcow2", Format.VMDK: "streamOptimized VMDK",
                Format.OVA: "streamOptimized VMDK", Format.RAW: "sparse raw"}


@dataclass
class Export:
    """What export was asked and found while checking."""

    config: Config
    name: str
    format: Format
    output: Path
    force: bool
    record: Journal
    domains: list[inuse.DomainView] | None = None

    @property
    def paths(self) -> VmPaths:
        return VmPaths.of(self.config, self.name)

    @property
    def disk(self) -> Path:
        return self.paths.disk

    @property
    def copy_target(self) -> Path:
        """Beside what the sealed copy is made: NAME's image file; when NAME's disk is an
        LV (and IMAGE_DIR may not even exist), a file of that name beside the output."""
        if self.disk == self.paths.image:
            return self.paths.image
        return self.output.parent / self.paths.image.name

    @property
    def efi(self) -> bool:
        # The firmware the disk was built for, as its build recorded it.
        return self.record.settings.get("FIRMWARE") == "uefi"


# --- the refusals ------------------------------------------------------------------------

def parse_format(text: str) -> Format:
    try:
        return Format(text)
    except ValueError:
        raise InvalidInput(f"--format {text!r} is not one of "
                           f"{' | '.join(f.value for f in Format)}") from None


def output_path(name: str, fmt: Format, output: Path | None) -> Path:
    """PATH as given; a directory (or none: the current one) gets NAME.FORMAT in it."""
    default = f"{name}{image.SUFFIX[fmt]}"
    if output is None:
        return Path.cwd() / default
    path = Path(os.path.abspath(output))
    return path / default if path.is_dir() else path


def check(config: Config, name: str, fmt_text: str, output: Path | None,
          force: bool = False) -> Export:
    """Every refusal that needs no lock, the cheapest first."""
    VmPaths.of(config, name)
    fmt = parse_format(fmt_text)
    target = output_path(name, fmt, output)
    require_commands(HOST_COMMANDS)
    places.check_writable(config, DIRECTORIES)
    record = clone.check_source(config, name, "export seals")
    job = Export(config, name, fmt, target, force, record)
    check_output(job)
    check_room(job)
    return job


def check_output(job: Export) -> None:
    """PATH is a new file in an existing directory (an existing one only with --force,
    and never a VM's disk)."""
    target = job.output
    if not target.parent.is_dir():
        raise InvalidInput(f"--output: the directory {target.parent} does not exist",
                           hint="make it first, or name another")
    images = Path(os.path.realpath(job.config.image_dir))
    if Path(os.path.realpath(target.parent)) == images and name_of_image(target):
        raise InvalidInput(f"--output: {target} is where a VM's disk lives (IMAGE_DIR)",
                           hint="an export never replaces a VM's disk: name another file")
    if os.path.lexists(target):
        if not job.force:
            raise InvalidInput(f"--output: {target} exists", hint="--force replaces it")
        if target.is_symlink() or not target.is_file():
            raise InvalidInput(f"--output: {target} is not a regular file; --force replaces "
                               "only a file", hint="name another file")
        if job.disk.exists() and os.path.samefile(target, job.disk):
            raise InvalidInput(f"--output: {target} is {job.name}'s disk",
                               hint="an export never replaces a VM's disk: name another file")
    places.check_directory(target.parent, "--output")
    # A sparse raw image is as large as the disk; the others hold what it uses, at most.
    largest = (copy.size_of(job.disk) if job.format is Format.RAW
               else copy.allocated_bytes(job.disk))
    places.check_file_size(target, largest, f"--output: {target}",
                           hint="--output on another file system (ext4, XFS), or "
                                "another format")


def needed_bytes(job: Export, used: int) -> dict[Path, int]:
    """Where the export writes how much, estimated from the bytes NAME's disk uses: the
    sealed copy beside the copy target (IMAGE_DIR, or PATH's directory for an LV; unless
    it is a reflink), the output beside PATH (at most what the disk uses; an OVA's VMDK
    and the package itself both, for a moment). A raw export on the copy's file system is
    the sealed copy itself."""
    images = places.nearest_existing(job.copy_target.parent)
    same = os.stat(images).st_dev == os.stat(job.output.parent).st_dev
    output = 0 if job.format is Format.RAW and same else used * (
        2 if job.format is Format.OVA else 1)
    if same:
        return {images: used + output}
    return {images: used, job.output.parent: output}


def check_room(job: Export) -> None:
    used = copy.allocated_bytes(job.disk)
    for where, needed in needed_bytes(job, used).items():
        places.check_free(where, needed, f"the export of {job.name} as {job.format} (its disk "
                          f"uses {used / GIB:.1f} GiB)",
                          hint="free some space, or --output on a larger file system")


def check_use(job: Export, ask_libvirt: bool = True) -> None:
    """Nothing uses NAME's disk (inuse's EXPORT rule): no running domain has it."""
    uri = job.config.libvirt_uri
    if ask_libvirt:
        found = virt.domains_at(uri, f"whether {job.name} runs")()
        job.domains = list(found) if found is not None else None
    views = job.domains
    users = inuse.users_of(job.disk, vm=inuse.Vm.of(job.config, job.name),
                           domains=(lambda: views) if ask_libvirt else None,
                           remote=virt.is_remote(uri))
    inuse.refuse(users, inuse.Command.EXPORT, f"{job.name}'s disk {job.disk}")


# --- the recipe --------------------------------------------------------------------------

def export(config: Config, name: str, fmt: str, output: Path | None = None,
           force: bool = False) -> dict[str, Any]:
    """Export NAME; see the module documentation. Returns the summary."""
    job = check(config, name, fmt, output, force)
    check_use(job)
    with ExitStack() as locks:
        locks.enter_context(vm_lock(job.paths, f"export to {job.output}"))
        locks.enter_context(log_file(job.paths.log))
        # Asked again under the lock: a mount-vm or a QEMU may have come meanwhile.
        check_use(job, ask_libvirt=False)
        clone.remove_stale_copies(job.copy_target, KIND)
        for left in copy.stale(job.output, KIND):
            _remove_tree(left)
            logger.info("removed %s, left by an export that was killed", left)
        return make(job)


def stages(fmt: Format) -> int:
    return 5 if fmt is Format.OVA else 4


class Meter:
    """qemu-img's percentage on the terminal, every tenth of the way."""

    def __init__(self) -> None:
        self.shown = 0

    def __call__(self, done: float) -> None:
        if done >= self.shown + 10:
            self.shown = int(done // 10) * 10
            logger.info("    %d%%", self.shown)


def make(job: Export) -> dict[str, Any]:
    progress = Progress(total=stages(job.format))
    logger.info("export %s as %s to %s", job.name, job.format, job.output)
    with ExitStack() as stack:
        with progress.stage(f"copy {job.name}'s disk"):
            # Removed at the end in every case: only the output stays.
            copied = copy.copy(stack, job.disk, job.copy_target, kind=KIND)
            progress.note(str(copied.method))
        # As a build's: nobody sees the copy's root mounted.
        mounts.private_namespace(keep=[*job.config.paths(), job.disk, job.output])
        with progress.stage("seal the copy"), ExitStack() as attached:
            attached.callback(_remove_dir, job.paths.build_root)
            password_removed = identity.seal(attached, copied.temporary, job.paths.build_root)
        inuse.wait_released(copied.temporary, hint="the copy is removed once it is free")
        # The output's files are made in a hidden directory beside it, under the names
        # they will have (a VMDK's own descriptor names its file).
        work = copy.temporary_name(job.output, kind=KIND)
        work.mkdir(mode=0o700)
        stack.callback(_remove_tree, work)
        temporary = work / job.output.name
        with progress.stage(f"convert to {DISK_FORMATS[job.format]}"):
            written = convert(job, copied, temporary)
            progress.note(size_text(written))
        if job.format is Format.OVA:
            with progress.stage("package the OVA"):
                pack(job, copied, temporary)
        with progress.stage("finish"):
            faults.point("export:before:publish")
            digest = ovf.sha256_of(temporary)
            size = temporary.stat().st_size
            copy.publish_file(temporary, job.output, replace=job.force)
    logger.info("%s is exported: %s (%s, %s)\n%s", job.name, job.output, job.format,
                size_text(size), progress.summary())
    if password_removed:
        logger.info("  root's password was removed: log in with root's SSH keys, or set one "
                    "after the import")
    return summary(job, copied, size, digest, password_removed, progress)


def size_text(size: int) -> str:
    return f"{size / GIB:.2f} GiB" if size >= GIB else f"{size / 2**20:.1f} MiB"


def _remove_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.rmdir()


def _remove_tree(path: Path) -> None:
    """A teardown step: logs and goes on."""
    try:
        shutil.rmtree(path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        logger.warning("warning: could not remove %s: %s", path, exc.strerror)


def convert(job: Export, copied: copy.Copied, temporary: Path) -> int:
    """The sealed copy in the export's format at TEMPORARY (an OVA's VMDK beside it);
    returns the bytes written."""
    if job.format is Format.RAW and same_file_system(copied.temporary, temporary):
        # The sealed copy is a sparse raw image already: it only changes its name.
        os.rename(copied.temporary, temporary)
        return copy.allocated_bytes(temporary)
    target = disk_of(temporary, job.name) if job.format is Format.OVA else temporary
    image.convert(copied.temporary, target, job.format, progress=Meter())
    return target.stat().st_size


def same_file_system(a: Path, b: Path) -> bool:
    return os.stat(a).st_dev == os.stat(b.parent).st_dev


def disk_of(temporary: Path, name: str) -> Path:
    """Where an OVA's VMDK is written before it is packed: beside the package."""
    return temporary.with_name(ovf.disk_file_of(name))


def appliance(job: Export, copied: copy.Copied, vmdk: Path) -> ovf.Appliance:
    return ovf.Appliance(
        name=job.name, distribution=job.record.distribution, suite=job.record.suite,
        vcpus=job.config.vcpus or qemu.KVM_VCPUS, memory_mib=job.config.memory,
        capacity=copied.size, populated_size=copy.allocated_bytes(copied.temporary),
        disk_file=ovf.disk_file_of(job.name), disk_file_size=vmdk.stat().st_size,
        vendor=job.config.appliance_vendor, version=job.config.appliance_version,
        efi=job.efi)


def pack(job: Export, copied: copy.Copied, temporary: Path) -> None:
    """The OVA at TEMPORARY: descriptor, manifest, VMDK, in this order."""
    vmdk = disk_of(temporary, job.name)
    described = appliance(job, copied, vmdk)
    descriptor = ovf.descriptor(described).encode()
    manifest = ovf.manifest([(described.descriptor_file, ovf.sha256_bytes(descriptor)),
                             (described.disk_file, ovf.sha256_of(vmdk))]).encode()
    ovf.package(temporary, [(described.descriptor_file, descriptor),
                            (described.manifest_file, manifest),
                            (described.disk_file, vmdk)])
    copy.remove(vmdk)


def summary(job: Export, copied: copy.Copied, size: int, digest: str,
            password_removed: bool, progress: Progress) -> dict[str, Any]:
    return {
        "name": job.name, "format": str(job.format), "path": str(job.output), "size": size,
        "allocated": copy.allocated_bytes(job.output),
        "sha256": digest, "disk": str(job.disk), "disk_size": copied.size,
        "disk_allocated": copied.allocated, "method": str(copied.method),
        "efi": job.efi, "root_password_removed": password_removed,
        # In the order the stages ran (a JSON object's keys would be sorted).
        "timings": [[title, round(seconds, 2)] for title, seconds in progress.timings],
        "log": str(job.paths.log),
    }
