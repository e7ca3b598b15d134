#!/usr/bin/env python3
"""Benchmark (not a test): how often a guest kernel panics at boot under software emulation.

Boots the kernel and initramfs of NAME's disk (built by create-debian or
create-ubuntu) again and again under QEMU with TCG, two QEMUs at a time as in
the tests (--parallel 8 overloads a small host on purpose), in each of three ways:
  mttcg   2 vCPUs, a host thread each (QEMU's default);
  single  2 vCPUs in one host thread (-accel tcg,thread=single);
  smp1    1 vCPU;
each boot until the guest's clock passes --until seconds (the early boot,
where the kernel patches its own code and checks its timer) or the kernel
panics. Printed: the boots and panics of each way, and each panic's reason.
This is what made boot-test and the tests boot with one vCPU.

    sudo .venv/bin/python bench/tcg_smp.py NAME [--config FILE] [--boots 100] [--parallel 2]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from hostcreator import config
from hostcreator.domain import console
from hostcreator.vm import mount as vmmount

WAYS = {
    "mttcg": ["-accel", "tcg", "-smp", "2"],
    "single": ["-accel", "tcg,thread=single", "-smp", "2"],
    "smp1": ["-accel", "tcg", "-smp", "1"],
}
STAMP = re.compile(rb"^\[ *(\d+)\.\d+\]", re.MULTILINE)


def kernel_of(cfg: config.Config, name: str, into: Path) -> tuple[Path, Path]:
    """NAME's newest kernel and initramfs, copied out of its disk (mounted read-only)."""
    mounted = vmmount.mount_vm(cfg, name, read_only=True)
    try:
        boot = mounted.mountpoint / "boot"
        kernel = sorted(boot.glob("vmlinuz-*"))[-1]
        initrd = boot / kernel.name.replace("vmlinuz-", "initrd.img-")
        return (Path(shutil.copy(kernel, into / "vmlinuz")),
                Path(shutil.copy(initrd, into / "initrd")))
    finally:
        vmmount.umount_vm(cfg, name)


def boot(way: str, kernel: Path, initrd: Path, log: Path, until: int) -> tuple[str, str | None]:
    """('up' | 'panic' | 'stuck', the panic's reason) of one boot."""
    log.write_bytes(b"")
    qemu = subprocess.Popen(
        ["qemu-system-x86_64", *WAYS[way], "-m", "1024", "-kernel", str(kernel),
         "-initrd", str(initrd), "-append", "console=ttyS0 ro", "-nic", "none",
         "-display", "none", "-monitor", "none", "-serial", f"file:{log}", "-no-reboot"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        start = time.monotonic()
        while time.monotonic() - start < 300:
            text = log.read_bytes()
            why = console.panic(text)
            if why is not None:
                return "panic", why
            if any(int(s) >= until for s in STAMP.findall(text)[-3:]):
                return "up", None
            time.sleep(0.2)
        return "stuck", None
    finally:
        qemu.kill()
        qemu.wait()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name", help="a VM whose disk create-debian or create-ubuntu built")
    parser.add_argument("--config", type=Path, help="hostcreator configuration file")
    parser.add_argument("--boots", type=int, default=100, help="boots of each way")
    parser.add_argument("--until", type=int, default=6, help="guest seconds a boot must pass")
    parser.add_argument("--ways", default=",".join(WAYS), help="which ways, comma-separated")
    parser.add_argument("--parallel", type=int, default=2, help="QEMUs at a time")
    args = parser.parse_args()
    ways = args.ways.split(",")
    work = Path(tempfile.mkdtemp(prefix="hostcreator-tcg-"))
    kernel, initrd = kernel_of(config.load(args.config, {}), args.name, work)
    results: dict[str, Counter[str]] = {way: Counter() for way in ways}
    reasons: dict[str, Counter[str]] = {way: Counter() for way in ways}
    started = time.monotonic()
    with ThreadPoolExecutor(args.parallel) as pool:
        jobs = {pool.submit(boot, way, kernel, initrd, work / f"{way}-{i}.log", args.until):
                way for i in range(args.boots) for way in ways}
        for job, way in jobs.items():
            outcome, why = job.result()
            results[way][outcome] += 1
            if why:
                reasons[way][why] += 1
    print(f"{args.boots} boots of each way up to {args.until} s of guest time, "
          f"{args.parallel} at a time (load {os.getloadavg()[0]:.1f} at the end), "
          f"in {time.monotonic() - started:.0f} s; consoles in {work}")
    for way in ways:
        counts = results[way]
        print(f"  {way:7} up {counts['up']:4}  panicked {counts['panic']:3}  "
              f"stuck {counts['stuck']:3}   ({' '.join(WAYS[way])})")
        for why, count in reasons[way].most_common():
            print(f"           {count} x {why}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
