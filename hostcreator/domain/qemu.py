"""Boot a VM disk once under QEMU and watch its serial console.

This is the proof that a built disk works, for the demo and the tests; it
does not need libvirt. The guest runs from a throw-away snapshot by default,
so the disk stays as it was built.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from hostcreator.domain.console import LOGIN_PROMPT, Guest, watch
from hostcreator.errors import HostCreatorError
from hostcreator.log import logger
from hostcreator.paths import qemu_log_of
from hostcreator.run import spawn, stop

POLL_SECONDS = 0.5
# One vCPU under software emulation. With two, each in a thread of its own, a Linux guest
# at times panics at boot: one vCPU runs kernel code the other has just patched as it was
# before ("Oops: int3"). Both in one thread (tcg,thread=single) is worse: the kernel's
# timer check then at times fails ("IO-APIC + timer doesn't work!"). bench/tcg_smp.py
# counts such panics. create-kvm's default (domain/choose.py) follows it.
EMULATED_VCPUS = 1
KVM_VCPUS = 2


@dataclass
class Boot:
    console: str
    seconds: float


@dataclass(frozen=True)
class Slice:
    """The bytes OFFSET to OFFSET+SIZE of a file: where an LV lies in its PV's image."""

    offset: int
    size: int


def drive(disk: Path, part: Slice | None = None) -> str:
    if part is None:
        return f"file={disk},format=raw,if=virtio,cache=unsafe"
    return (f"driver=raw,offset={part.offset},size={part.size},file.driver=file,"
            f"file.filename={disk},if=virtio,cache=unsafe")


def qemu_argv(disk: Path, console_log: Path, *, accel: str = "tcg", memory: int = 1024,
              snapshot: bool = True, ssh_port: int | None = None,
              console_socket: Path | None = None, part: Slice | None = None,
              extra_disks: Sequence[Path] = ()) -> list[str]:
    """QEMU's command line; SSH_PORT on the host's loopback forwards to the guest's port 22,
    CONSOLE_SOCKET makes the serial console a socket to talk to (still logged); PART boots
    a slice of DISK; EXTRA_DISKS are further raw disks (vdb, vdc...), written to."""
    nic = "user,model=virtio-net-pci"
    if ssh_port is not None:
        # To the address QEMU's user network gives the guest (its DHCP's first lease).
        nic += f",hostfwd=tcp:127.0.0.1:{ssh_port}-:22"
    if console_socket is not None:
        serial = ["-chardev", f"socket,id=console,path={console_socket},server=on,wait=off,"
                  f"logfile={console_log}", "-serial", "chardev:console"]
    else:
        serial = ["-serial", f"file:{console_log}"]
    argv = [
        "qemu-system-x86_64",
        "-accel", accel,
        "-m", str(memory),
        "-smp", str(EMULATED_VCPUS if accel == "tcg" else KVM_VCPUS),
        "-drive", drive(disk, part),
        *(arg for extra in extra_disks for arg in ("-drive", drive(extra))),
        "-nic", nic,
        "-display", "none",
        "-monitor", "none",
        *serial,
        "-no-reboot",
    ]
    if snapshot:
        argv.append("-snapshot")
    return argv


class Process(Guest):
    """A QEMU process of our own: it is stopped whatever the outcome."""

    def __init__(self, proc: subprocess.Popen[bytes], console_log: Path) -> None:
        self.proc = proc
        self.console_log = console_log

    def stopped(self, console: bytes) -> HostCreatorError | None:
        if self.proc.poll() is None:
            return None
        return HostCreatorError(
            f"QEMU stopped (exit code {self.proc.returncode}) before the guest was up",
            hint=f"see {self.console_log} and {qemu_log_of(self.console_log)}",
        )

    def panic_hint(self) -> str:
        return f"the whole console is in {self.console_log}"

    timeout_hint = panic_hint


def boot(disk: Path, console_log: Path, *, until: re.Pattern[bytes] = LOGIN_PROMPT,
         timeout: float = 600, accel: str = "tcg", snapshot: bool = True,
         part: Slice | None = None) -> Boot:
    """Boot DISK (or the PART of it) until its serial console shows UNTIL; the console
    text is returned."""
    console_log.parent.mkdir(parents=True, exist_ok=True)
    console_log.write_bytes(b"")
    proc = spawn(qemu_argv(disk, console_log, accel=accel, snapshot=snapshot, part=part),
                 output=qemu_log_of(console_log))
    try:
        seen = watch(Process(proc, console_log), console_log, until=until, timeout=timeout,
                     poll=POLL_SECONDS)
    finally:
        stop(proc)
    logger.info("    the guest is up after %.0f s", seen.seconds)
    return Boot(seen.console.decode("utf-8", "replace"), seen.seconds)
