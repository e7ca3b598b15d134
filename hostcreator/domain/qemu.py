"""Boot a VM disk once under QEMU and watch its serial console.

This is the proof that a built disk works, for the demo and the tests; it
does not need libvirt. The guest runs from a throw-away snapshot by default,
so the disk stays as it was built.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path

from hostcreator.domain.console import LOGIN_PROMPT, last_lines, panic
from hostcreator.errors import HostCreatorError
from hostcreator.log import logger
from hostcreator.run import spawn, stop

POLL_SECONDS = 0.5


@dataclass
class Boot:
    console: str
    seconds: float


def qemu_argv(disk: Path, console_log: Path, *, accel: str = "tcg", memory: int = 1024,
              snapshot: bool = True) -> list[str]:
    argv = [
        "qemu-system-x86_64",
        "-accel", accel,
        "-m", str(memory),
        # One vCPU under software emulation. With two, each in a thread of its own, a
        # Linux guest at times panics at boot: one vCPU runs kernel code the other has
        # just patched as it was before ("Oops: int3"). Both in one thread
        # (tcg,thread=single) is worse: the kernel's timer check then at times fails
        # ("IO-APIC + timer doesn't work!"). bench/tcg_smp.py counts such panics.
        "-smp", "1" if accel == "tcg" else "2",
        "-drive", f"file={disk},format=raw,if=virtio,cache=unsafe",
        "-nic", "user,model=virtio-net-pci",
        "-display", "none",
        "-monitor", "none",
        "-serial", f"file:{console_log}",
        "-no-reboot",
    ]
    if snapshot:
        argv.append("-snapshot")
    return argv


def boot(disk: Path, console_log: Path, *, until: re.Pattern[bytes] = LOGIN_PROMPT,
         timeout: float = 600, accel: str = "tcg", snapshot: bool = True) -> Boot:
    """Boot DISK until its serial console shows UNTIL; the console text is returned."""
    console_log.parent.mkdir(parents=True, exist_ok=True)
    console_log.write_bytes(b"")
    proc = spawn(qemu_argv(disk, console_log, accel=accel, snapshot=snapshot),
                 output=console_log.with_suffix(".qemu.log"))
    start = time.monotonic()
    try:
        while True:
            data = console_log.read_bytes()
            if until.search(data):
                elapsed = time.monotonic() - start
                logger.info("    the guest is up after %.0f s", elapsed)
                return Boot(data.decode("utf-8", "replace"), elapsed)
            why = panic(data)
            if why is not None:
                raise HostCreatorError(f"the guest will not come up: its {why}",
                                       hint=f"the whole console is in {console_log}")
            if proc.poll() is not None:
                raise HostCreatorError(
                    f"QEMU stopped (exit code {proc.returncode}) before the guest was up",
                    hint=f"see {console_log} and {console_log.with_suffix('.qemu.log')}",
                )
            if time.monotonic() - start > timeout:
                raise HostCreatorError(
                    f"the guest was not up after {timeout:.0f} s; last console lines: "
                    + " | ".join(last_lines(data)),
                    hint=f"the whole console is in {console_log}",
                )
            time.sleep(POLL_SECONDS)
    finally:
        stop(proc)
