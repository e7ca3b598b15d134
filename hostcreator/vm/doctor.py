"""hostcreator doctor: what this host can and cannot do for hostcreator, one line per check.

Each check is a small function of the Host (the configuration, and libvirt at
LIBVIRT_URI once a check asks for it) that returns a Finding: ok; warning (it works,
with less: software emulation, no reflinks, no OVMF); or failed. Each says what it
found and, unless ok, what to do. The checks ask the functions the commands ask
(require_commands, bootstrap.plan, archive.check_suite, the KVM probe through
choose.virt_type, choose's network, storage, places, copy.reflinks, the rootfs
cache, the build journals, mount-vm's listing), so doctor says what a command would
find. The library's errors become failed lines with their hints; any other exception
(a defect) becomes a failed line too, and the other checks still run.

Required are root, the host tools, libvirt, storage and loop devices: without any of
them no VM is built or started, and a failed one gives the report exit code 1 (as any
other error). The checks that may take seconds are bounded: the archive by
MIRROR_TIMEOUT, the KVM probe by its own timeout (its answer is kept for this boot of
the host, as create-kvm keeps it).
"""

from __future__ import annotations

import contextlib
import functools
import os
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import libvirt

from hostcreator.build import archive, bootstrap, cache, pipeline, recover
from hostcreator.config import BootstrapTool, Config, NetworkType, StorageKind, VirtType
from hostcreator.disk import copy, storage
from hostcreator.distro import Distribution, distributions
from hostcreator.domain import choose, kvmprobe, virt
from hostcreator.errors import BrokenJournal, CommandError, HostCreatorError
from hostcreator.host import loopdev, places
from hostcreator.log import logger
from hostcreator.paths import VmPaths
from hostcreator.run import PACKAGE_OF, missing_commands, require_commands
from hostcreator.state import journal, lock
from hostcreator.state.journal import Journal
from hostcreator.state.journal import Status as BuildStatus
from hostcreator.vm import mount as vmmount

# The archive answers in well under a second when it answers at all.
MIRROR_TIMEOUT = 5.0
GIB = 2**30
# Without virtlogd a local libvirt defines domains but cannot start them.
VIRTLOGD_SOCKET = Path("/run/libvirt/virtlogd-sock")
# Debian's ovmf package: UEFI (FIRMWARE=uefi, hybrid) and Secure Boot with Microsoft's
# keys enrolled (SECURE_BOOT=yes, the secure profile).
OVMF_DIR = Path("/usr/share/OVMF")
OVMF_UEFI = ("OVMF_CODE_4M.fd", "OVMF_VARS_4M.fd")
OVMF_SECURE_BOOT = ("OVMF_CODE_4M.secboot.fd", "OVMF_VARS_4M.ms.fd")
SWTPM_COMMANDS = ("swtpm", "swtpm_setup")
INTERNAL_HINT = "a defect of hostcreator; rerun with --debug for the traceback"


class Status(StrEnum):
    OK = "ok"
    WARNING = "warning"
    FAILED = "failed"


@dataclass(frozen=True)
class Finding:
    """What one check found; HINT says what to do when it is not ok."""

    status: Status
    detail: str
    hint: str | None = None


def ok(detail: str) -> Finding:
    return Finding(Status.OK, detail)


def warning(detail: str, hint: str) -> Finding:
    return Finding(Status.WARNING, detail, hint)


def failed(detail: str, hint: str | None) -> Finding:
    return Finding(Status.FAILED, detail, hint)


@dataclass(frozen=True)
class Check:
    """One line of the report."""

    name: str
    status: Status
    detail: str
    hint: str | None
    required: bool
    seconds: float

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Report:
    checks: list[Check]

    @property
    def failed_required(self) -> list[Check]:
        return [c for c in self.checks if c.required and c.status is Status.FAILED]

    @property
    def exit_code(self) -> int:
        """1 when a required check failed (HostCreatorError's code), else 0."""
        return HostCreatorError.exit_code if self.failed_required else 0

    def counts(self) -> dict[Status, int]:
        return {s: sum(c.status is s for c in self.checks) for s in Status}

    def as_json(self) -> dict[str, Any]:
        return {"checks": [c.as_json() for c in self.checks], "exit_code": self.exit_code,
                "failed_required": [c.name for c in self.failed_required]}


class Host:
    """What the checks look at: the configuration, and libvirt at LIBVIRT_URI, connected
    once when a check first asks (closed on STACK)."""

    def __init__(self, config: Config, stack: ExitStack) -> None:
        self.config = config
        self._stack = stack
        self._conn: libvirt.virConnect | None = None
        self._error: HostCreatorError | None = None

    def connection(self) -> libvirt.virConnect:
        """The connection; raises the error of connecting (the same each time it is asked)."""
        if self._error is not None:
            raise self._error
        if self._conn is None:
            try:
                self._conn = self._stack.enter_context(virt.connect(self.config.libvirt_uri))
            except HostCreatorError as exc:
                self._error = exc
                raise
        return self._conn

    def connection_or_none(self) -> libvirt.virConnect | None:
        """The connection, or None where libvirt does not answer (the libvirt line says it)."""
        with contextlib.suppress(HostCreatorError):
            return self.connection()
        return None


# --- the checks, in the order of the report -------------------------------------------------


def check_root(_host: Host) -> Finding:
    if os.geteuid() == 0:
        return ok("running as root")
    return failed(f"running as UID {os.geteuid()}: building, mounting and starting VMs "
                  "(loop devices, mounts, chroot, libvirt's system instance) need root",
                  "run it as root: sudo hostcreator doctor")


def host_tools(config: Config) -> list[str]:
    """The commands create-*, mount-vm and create-kvm need with CONFIG."""
    tools = [*pipeline.HOST_COMMANDS, *cache.COMMANDS, *vmmount.HOST_COMMANDS, "gpgv",
             kvmprobe.QEMU]
    if config.bootstrap_tool is BootstrapTool.MMDEBSTRAP:
        tools.append("mmdebstrap")
    if config.storage_kind is StorageKind.LVM:
        tools += ["lvs", "vgs", "lvcreate"]
    return list(dict.fromkeys(tools))


def check_tools(host: Host) -> Finding:
    tools = host_tools(host.config)
    require_commands(tools)
    found = f"all {len(tools)} commands found ({', '.join(tools)})"
    if host.config.bootstrap_tool is BootstrapTool.AUTO and missing_commands(["mmdebstrap"]):
        return warning(f"{found}; mmdebstrap is not installed: debootstrap bootstraps "
                       "(slower)", f"apt-get install {PACKAGE_OF['mmdebstrap']}")
    return ok(found)


def configured_suite(config: Config, distribution: Distribution) -> str:
    """The suite create-<distribution> NAME builds: DISTR when it is one of DISTRIBUTION's
    (DISTR is one setting for both commands), else its default suite. A DISTR that no
    distribution knows is DISTRIBUTION's too: both lines then say so."""
    distr = config.distr
    if distr and (distribution.knows(distr) or not any(d.knows(distr) for d in distributions())):
        return distr
    return distribution.default_suite


def check_suite(host: Host, distribution: Distribution) -> Finding:
    """The debootstrap script and the archive keyring of the configured suite."""
    suite = configured_suite(host.config, distribution)
    plan = bootstrap.plan(host.config, distribution, suite)  # the suite, the keyring
    script = distribution.suite_script(suite)
    if not script.is_file():
        return failed(f"{suite}: debootstrap has no script {script}",
                      f"apt-get install {PACKAGE_OF['debootstrap']}")
    found = f"{suite}: script {script}" if plan.script is None else \
        f"{suite}: the host's debootstrap has no script for it, {script.name}'s is named ({script})"
    if plan.keyring is None:
        return warning(f"{found}; the archive signatures are NOT checked "
                       "(INSECURE_NO_SIGNATURE_CHECK)",
                       "unset INSECURE_NO_SIGNATURE_CHECK once a keyring is installed")
    return ok(f"{found}; keyring {plan.keyring}")


def check_mirror(host: Host, distribution: Distribution) -> Finding:
    """The archive answers and offers the configured suite (the head of its Release)."""
    config = host.config
    suite = configured_suite(config, distribution)
    distribution.check_suite(suite)
    mirror = bootstrap.mirror_of(distribution, suite, config.mirror)
    start = time.monotonic()
    archive.check_suite(distribution, suite, mirror, config.apt_proxy, timeout=MIRROR_TIMEOUT)
    return ok(f"{mirror} offers {suite} (answered in {time.monotonic() - start:.1f} s)")


def check_libvirt(host: Host) -> Finding:
    conn = host.connection()
    uri = host.config.libvirt_uri
    found = (f"{uri}: libvirt {virt.version_text(conn.getLibVersion())}, "
             f"{conn.getType()} {virt.version_text(conn.getVersion())}")
    types = virt.domain_types(conn)
    if not types:
        return failed(f"{found}; it offers no x86_64 domains",
                      f"apt-get install {PACKAGE_OF[kvmprobe.QEMU]}, then restart libvirtd")
    if not virt.is_remote(uri) and uri.startswith("qemu:") and uri.endswith("/system") \
            and not VIRTLOGD_SOCKET.exists():
        return failed(f"{found}; virtlogd is not running ({VIRTLOGD_SOCKET} is missing): "
                      "domains are defined but do not start",
                      "start it: systemctl start virtlogd (without systemd: virtlogd -d)")
    return ok(f"{found}; domain types {', '.join(types)}")


def check_kvm(host: Host) -> Finding:
    """The answer VIRT_TYPE=auto gets (the real probe), whatever VIRT_TYPE says."""
    config = host.config
    conn = host.connection_or_none()
    chosen, note, _probe = choose.virt_type(config.replace(virt_type=VirtType.AUTO), conn)
    assert note is not None
    if chosen is VirtType.KVM:
        if config.virt_type is VirtType.QEMU:
            return ok(f"{note} (VIRT_TYPE=qemu: create-kvm uses software emulation anyway)")
        return ok(note)
    if config.virt_type is VirtType.KVM:
        return failed(f"VIRT_TYPE=kvm, but {note}",
                      "set VIRT_TYPE=auto (or qemu): KVM guests would not boot here")
    emulation = not missing_commands([kvmprobe.QEMU]) and (
        conn is None or "qemu" in virt.domain_types(conn))
    if not emulation:
        return failed(f"{note}; and software emulation is not offered either",
                      f"apt-get install {PACKAGE_OF[kvmprobe.QEMU]}")
    return warning(note, "for KVM: hardware virtualization on in the firmware, or nested "
                   "virtualization where this host is itself a VM")


def check_network(host: Host) -> Finding:
    """What create-kvm's NIC attaches to: the bridge, libvirt's network, or QEMU's user mode."""
    config = host.config
    conn = host.connection_or_none()
    if config.network_type is not NetworkType.AUTO:
        kind, name = choose.explicit_network(config, conn, choose.SYS_NET)
        return ok(f"NETWORK_TYPE={kind}" + (f": {name}" if name else ""))
    kind, name, note = choose.auto_network(config, conn, choose.SYS_NET)
    if kind is NetworkType.NETWORK and conn is None:
        return warning(f"NETWORK={name} is no bridge of this host, and whether it is an active "
                       "libvirt network cannot be asked: libvirt does not answer",
                       "see the libvirt line")
    if kind is not NetworkType.USER:
        return ok(note)
    if conn is None:
        note = (f"network: QEMU's user mode (NAT inside QEMU; there is no bridge "
                f"{choose.BRIDGE}, and libvirt's networks cannot be asked: libvirt does not "
                "answer)")
    return warning(note,
                   f"for VMs others reach: a bridge {choose.BRIDGE} (ip link add "
                   f"{choose.BRIDGE} type bridge, with the host's NIC in it), or start "
                   f"libvirt's NAT network: virsh net-start {choose.LIBVIRT_NETWORK}")


def check_storage(host: Host) -> Finding:
    """Where new disks go: the volume group's free extents, or IMAGE_DIR's free space."""
    config = host.config
    size = config.size * GIB
    if config.storage_kind is StorageKind.LVM:
        assert config.vg_name is not None
        free = storage.vg_free(config.vg_name)
        found = f"volume group {config.vg_name}: {free / GIB:.1f} GiB free"
        if size > free and not config.thin_pool:
            return warning(f"{found}: a new disk of SIZE={config.size} GiB does not fit",
                           "extend the volume group, choose a smaller SIZE, or set THIN_POOL")
        return ok(found)
    places.check_directory(config.image_dir, "IMAGE_DIR")
    free = places.free_bytes(config.image_dir)
    found = (f"image files in {config.image_dir}: {free / GIB:.1f} GiB free on "
             f"{places.nearest_existing(config.image_dir)}")
    if size > free:
        return warning(f"{found}: less than SIZE={config.size} GiB (the images are sparse: "
                       "a VM fails once its writes fill the file system)",
                       "free space there, or set IMAGE_DIR to a larger file system")
    return ok(found)


def check_thin_pool(host: Host) -> Finding | None:
    config = host.config
    if config.storage_kind is not StorageKind.LVM or not config.thin_pool:
        return None
    assert config.vg_name is not None
    storage.check_thin_pool(config.vg_name, config.thin_pool)
    return ok(f"{config.vg_name}/{config.thin_pool} is a thin pool: new disks are thin "
              "volumes in it")


def check_reflink(host: Host) -> Finding | None:
    """Whether clone and export copy an image in a moment (a reflink) or byte by byte."""
    config = host.config
    if config.storage_kind is not StorageKind.FILE:
        return None
    directory = places.nearest_existing(config.image_dir)
    if copy.reflinks(directory):
        return ok(f"the file system of {directory} makes reflinks: clones and exports copy "
                  "an image in a moment")
    return warning(f"the file system of {directory} makes no reflinks: clone and export copy "
                   "the allocated extents of an image (seconds per GiB)",
                   "for clones in a moment: IMAGE_DIR on XFS or btrfs")


def check_loop_devices(_host: Host) -> Finding:
    hint = "load the loop module: modprobe loop"
    if not loopdev.LOOP_CONTROL.exists():
        return failed(f"{loopdev.LOOP_CONTROL} is missing: no loop device can be added", hint)
    try:
        device = loopdev.free_device()
    except CommandError as exc:
        return failed(f"no free loop device: {exc.message}", hint)
    return ok(f"{device} is free ({loopdev.LOOP_CONTROL} adds more)")


def firmware(names: tuple[str, ...], what: str) -> Finding:
    missing = [n for n in names if not (OVMF_DIR / n).is_file()]
    if missing:
        return warning(f"{', '.join(missing)} missing in {OVMF_DIR}: no {what} (BIOS VMs "
                       "need none)", "apt-get install ovmf")
    return ok(f"{', '.join(str(OVMF_DIR / n) for n in names)}: {what}")


def check_uefi(_host: Host) -> Finding:
    return firmware(OVMF_UEFI, "UEFI guests (FIRMWARE=uefi or hybrid)")


def check_secure_boot(_host: Host) -> Finding:
    return firmware(OVMF_SECURE_BOOT, "Secure Boot with Microsoft's keys (SECURE_BOOT=yes, "
                    "the secure profile)")


def check_swtpm(_host: Host) -> Finding:
    missing = missing_commands(SWTPM_COMMANDS)
    if missing:
        packages = " ".join(sorted({PACKAGE_OF.get(c, c) for c in missing}))
        return warning(f"{', '.join(missing)} not installed: no emulated TPM (the secure "
                       "profile; other VMs need none)", f"apt-get install {packages}")
    return ok("swtpm and swtpm_setup: an emulated TPM 2.0 for the secure profile")


def check_cache(host: Host) -> Finding:
    """The rootfs cache: what a build finds there, and what is stale or left over."""
    config = host.config
    rootfs = cache.RootfsCache.under(config.cache_dir)
    entries = rootfs.entries()
    leftovers = rootfs.leftovers()
    if not entries:
        found = f"{rootfs.base}: empty (the first build of each suite bootstraps it)"
    else:
        ages = [e.age_days() for e in entries]
        found = (f"{rootfs.base}: {len(entries)} entries, "
                 f"{sum(e.size for e in entries) / 2**20:.0f} MB, "
                 f"{min(ages):.1f} to {max(ages):.1f} days old")
    old = [e for e in entries if e.age_days() > config.cache_max_age]
    if leftovers or old:
        parts = [f"{len(leftovers)} unfinished"] if leftovers else []
        parts += [f"{len(old)} older than CACHE_MAX_AGE={config.cache_max_age} days "
                  "(bootstrapped afresh at the next build)"] if old else []
        return warning(f"{found}; {', '.join(parts)}", "hostcreator cache prune")
    return ok(found)


def builds(config: Config) -> tuple[list[tuple[str, Journal, str]], list[str]]:
    """The builds that run or did not finish (name, journal, how it stands), and the
    names whose journal cannot be read (recover.unfinished, with those named)."""
    found, broken = [], []
    for name in journal.names(config.journal_dir):
        try:
            record = journal.load(config.journal_dir, name)
        except BrokenJournal:
            broken.append(name)
            continue
        if record is not None and not record.finished:
            found.append((name, record, recover.describe(config, name, record)))
    return found, broken


def check_builds(host: Host) -> Finding:
    """Builds that did not finish (a running one is no trouble), and unreadable journals."""
    config = host.config
    found, broken = builds(config)
    if not found and not broken:
        return ok(f"none in {config.journal_dir}")
    stuck = [name for name, record, _how in found
             if not (record.status is BuildStatus.RUNNING
                     and lock.held_by(VmPaths.of(config, name).lock))]
    listed = [f"{name} {how}" for name, _record, how in found]
    listed += [f"the build journal of {name} cannot be read" for name in broken]
    if not stuck and not broken:
        return ok("; ".join(listed))
    return warning("; ".join(listed),
                   f"hostcreator cleanup NAME (for {' '.join([*stuck, *broken])}), then "
                   "create-debian or create-ubuntu NAME --resume or --restart, or "
                   "hostcreator remove NAME")


def check_mounted(host: Host) -> Finding:
    """The VMs mount-vm has mounted; half-mounted ones are for umount-vm to clear."""
    config = host.config
    found = vmmount.list_mounted(config)
    if not found:
        return ok(f"none (MOUNT_DIR={config.mount_dir})")
    listed = "; ".join(f"{i.name} {i.mode} at {i.mountpoint}" for i in found)
    broken = [i.name for i in found if i.mode not in ("read-only", "read-write")]
    if broken:
        return warning(listed, f"umount-vm NAME clears it: {' '.join(broken)}")
    return ok(listed)


@dataclass(frozen=True)
class Entry:
    """A check of the report: its name, its function (None: it does not apply here), and
    whether a failure stops hostcreator's work (the exit code)."""

    name: str
    check: Callable[[Host], Finding | None]
    required: bool = False


def entries() -> list[Entry]:
    """Every check, in the order of the report."""
    per_distribution = [
        *(Entry(f"{d.name} suite", functools.partial(check_suite, distribution=d))
          for d in distributions()),
        *(Entry(f"{d.name} mirror", functools.partial(check_mirror, distribution=d))
          for d in distributions()),
    ]
    return [
        Entry("root", check_root, required=True),
        Entry("host tools", check_tools, required=True),
        *per_distribution,
        Entry("libvirt", check_libvirt, required=True),
        Entry("kvm", check_kvm),
        Entry("network", check_network),
        Entry("storage", check_storage, required=True),
        Entry("thin pool", check_thin_pool, required=True),
        Entry("reflink", check_reflink),
        Entry("loop devices", check_loop_devices, required=True),
        Entry("uefi firmware", check_uefi),
        Entry("secure boot", check_secure_boot),
        Entry("swtpm", check_swtpm),
        Entry("rootfs cache", check_cache),
        Entry("unfinished builds", check_builds),
        Entry("mounted vms", check_mounted),
    ]


NAME_WIDTH = max(len(e.name) for e in entries())


def run_check(entry: Entry, host: Host, traceback: bool = False) -> Check | None:
    """ENTRY's line: the library's errors failed lines with their hints, and so is any
    other exception (with TRACEBACK, logged); None where the check does not apply."""
    start = time.monotonic()
    try:
        finding = entry.check(host)
    except HostCreatorError as exc:
        finding = failed(exc.message, exc.hint)
    except Exception as exc:  # a defect: the other checks still run
        if traceback:
            logger.exception("%s: traceback", entry.name)
        detail = f"{type(exc).__name__}: {exc}".replace("\n", " ")
        finding = failed(f"internal error: {detail}", INTERNAL_HINT)
    if finding is None:
        return None
    return Check(entry.name, finding.status, finding.detail, finding.hint, entry.required,
                 round(time.monotonic() - start, 2))


def examine(config: Config, on_check: Callable[[Check], None] | None = None,
            traceback: bool = False) -> Report:
    """Every check in turn, each handed to ON_CHECK as soon as it is made (the terminal
    shows them as they come)."""
    checks = []
    with ExitStack() as stack:
        host = Host(config, stack)
        for entry in entries():
            check = run_check(entry, host, traceback)
            if check is not None:
                checks.append(check)
                if on_check is not None:
                    on_check(check)
    return Report(checks)
