"""Does a KVM guest run on this host? Booting one tells; /dev/kvm opening does not.

On some hosts (a VM without working nested virtualization) /dev/kvm opens and
answers the KVM API, QEMU starts with -accel kvm, and the guest then hangs
(a Debian kernel after "Probing EDD", or before its first line). So the probe
boots something under `qemu -accel kvm` and watches its serial console for a
line only a guest that ran can write: the host's own kernel (no initramfs, no
root: it runs its whole init and panics at "Unable to mount root fs", then
QEMU exits). Where the host has no kernel in /boot (a container) the answer is
no: a boot sector is no proof (it runs under KVM on hosts where a Linux kernel
then hangs), and VIRT_TYPE=kvm still takes KVM when it is wanted. The answer is
kept in STATE_DIR, keyed by the host's boot id: it holds until the host
reboots (a new kernel, a changed KVM module), and costs seconds only once.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from hostcreator.log import logger
from hostcreator.run import spawn, stop
from hostcreator.state import statefile

QEMU = "qemu-system-x86_64"
KVM_DEVICE = Path("/dev/kvm")
KVM_GET_API_VERSION = 0xAE00  # _IO(KVMIO, 0x00)
KVM_API_VERSION = 12
BOOT_ID = Path("/proc/sys/kernel/random/boot_id")
KERNELS = Path("/boot")
CACHE_FILE = "kvm-probe.json"
# A working KVM boots the kernel to its panic in about a second; software emulation
# needs ~20 s for it here.
TIMEOUT = 10.0
POLL_SECONDS = 0.1
KERNEL_RAN = re.compile(rb"Unable to mount root fs")


@dataclass(frozen=True)
class Probe:
    works: bool
    detail: str  # what was booted and what it showed, for the output
    boot_id: str
    seconds: float = 0.0
    cached: bool = False

    def describe(self) -> str:
        when = "cached for this boot of the host" if self.cached else "probed now"
        return f"{self.detail} ({when})"


def device_answers(device: Path = KVM_DEVICE) -> bool:
    """/dev/kvm opens and speaks the KVM API: needed, but not enough."""
    try:
        fd = os.open(device, os.O_RDWR | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        return fcntl.ioctl(fd, KVM_GET_API_VERSION) == KVM_API_VERSION
    except OSError:
        return False
    finally:
        os.close(fd)


def host_kernel(kernels: Path = KERNELS) -> Path | None:
    """The running kernel's image in /boot, else the newest one there, else None."""
    running = kernels / f"vmlinuz-{os.uname().release}"
    if running.is_file() and os.access(running, os.R_OK):
        return running
    found = sorted((k for k in kernels.glob("vmlinuz-*") if os.access(k, os.R_OK)),
                   key=lambda k: k.stat().st_mtime)
    return found[-1] if found else None


def payload_argv(kernel: Path) -> tuple[list[str], re.Pattern[bytes], str]:
    """What to boot, the console line that proves it ran, and its name."""
    return (["-kernel", str(kernel), "-append", "console=ttyS0 panic=-1"], KERNEL_RAN,
            f"the host's kernel {kernel.name}")


def boot(accel: str, kernel: Path, timeout: float) -> tuple[bool, str, float]:
    """Boot the payload under ACCEL; whether it ran, what was seen, and how long it took.

    Not qemu.boot and console.watch: those boot a VM's disk and take a kernel panic for
    a failure, while here the panic is the proof and any end is an answer, not an error.
    """
    with tempfile.TemporaryDirectory(prefix="hostcreator-kvm-probe-") as tmp:
        workdir = Path(tmp)
        extra, ran, what = payload_argv(kernel)
        console = workdir / "console.log"
        console.write_bytes(b"")
        argv = [QEMU, "-accel", accel, "-m", "256", "-smp", "1", "-nodefaults",
                "-display", "none", "-monitor", "none", "-serial", f"file:{console}",
                "-no-reboot", *extra]
        start = time.monotonic()
        proc = spawn(argv, output=workdir / "qemu.log")
        try:
            while True:
                # Asked before the console is read: all that a QEMU that has ended wrote
                # is in it (it prints its panic, then exits at once).
                ended = proc.poll() is not None
                elapsed = time.monotonic() - start
                if ran.search(console.read_bytes()):
                    return True, f"{what} ran under {accel} in {elapsed:.1f} s", elapsed
                if ended or elapsed >= timeout:
                    break
                time.sleep(POLL_SECONDS)
        finally:
            stop(proc)
        said = "printed nothing" if not console.stat().st_size else "did not get through"
        how = "QEMU stopped" if proc.returncode not in (None, -15, -9) and elapsed < timeout \
            else f"within {timeout:.0f} s"
        return False, f"{what} {said} under {accel} ({how})", elapsed


def boot_id() -> str:
    try:
        return BOOT_ID.read_text().strip()
    except OSError:
        return ""


def cached(state_dir: Path, current: str) -> Probe | None:
    try:
        data = json.loads((state_dir / CACHE_FILE).read_text())
        result = Probe(**data)
    except (OSError, ValueError, TypeError):
        return None
    if not current or result.boot_id != current:
        return None
    return Probe(**{**asdict(result), "cached": True})


def cached_only(state_dir: Path) -> Probe | None:
    """The answer kept for this boot of the host, else None; nothing is booted (a dry run)."""
    return cached(state_dir, boot_id())


def probe(state_dir: Path, *, device: Path | None = None, accel: str = "kvm",
          timeout: float | None = None) -> Probe:
    """Whether a guest runs under ACCEL here, from the cache of this boot or by booting one
    (kept in STATE_DIR's cache)."""
    device = KVM_DEVICE if device is None else device
    timeout = TIMEOUT if timeout is None else timeout
    current = boot_id()
    if accel == "kvm" and (hit := cached(state_dir, current)) is not None:
        return hit
    if accel == "kvm" and not device_answers(device):
        result = Probe(False, f"{device} does not open or does not speak the KVM API", current)
    elif (kernel := host_kernel(KERNELS)) is None:
        result = Probe(False, f"no Linux kernel in {KERNELS} to show that a guest runs under "
                       f"{accel} (a boot sector is no proof)", current)
    else:
        logger.info("    probing whether a guest runs under %s (at most %.0f s)", accel, timeout)
        works, detail, seconds = boot(accel, kernel, timeout)
        result = Probe(works, detail, current, round(seconds, 2))
    if accel == "kvm" and current:
        with contextlib.suppress(OSError):
            statefile.write(state_dir / CACHE_FILE, {**asdict(result), "cached": False})
    return result
