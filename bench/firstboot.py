#!/usr/bin/env python3
"""Benchmark (not a test): what the first boot of a built VM spends its time on, under TCG.

A sparse copy of IMAGE (a disk create-debian or create-ubuntu made, never
booted) gets a unit that waits until the boot has finished and then prints
`systemd-analyze`, `systemd-analyze blame` and `systemd-analyze critical-chain`
to the serial console; the copy is booted once under QEMU (software
emulation, one vCPU) and removed. The image itself is not touched.

    sudo .venv/bin/python bench/firstboot.py IMAGE [--top 25]
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from hostcreator.domain import qemu

END = re.compile(rb"HCANALYZE END")
LINE = re.compile(r"HCANALYZE (.*)")
SCRIPT = """#!/bin/sh
# Written by bench/firstboot.py: once the boot has finished, what it cost.
until systemd-analyze >/dev/null 2>&1; do sleep 1; done
{{
    systemd-analyze
    systemd-analyze blame | head -n {top}
    systemd-analyze critical-chain
    echo END
}} 2>&1 | sed 's/^/HCANALYZE /' > /dev/ttyS0
"""
UNIT = """[Unit]
Description=bench: systemd-analyze once the boot has finished
[Service]
Type=exec
ExecStart=/usr/local/sbin/hc-analyze
[Install]
WantedBy=multi-user.target
"""


def inject(image: Path, top: int) -> None:
    loop = subprocess.run(["losetup", "--show", "-fP", image], check=True, capture_output=True,
                          text=True).stdout.strip()
    mnt = Path(tempfile.mkdtemp(prefix="hc-firstboot."))
    try:
        subprocess.run(["partx", "-u", loop], check=False, capture_output=True)
        subprocess.run(["mount", f"{loop}p3", mnt], check=True)
        try:
            script = mnt / "usr/local/sbin/hc-analyze"
            script.write_text(SCRIPT.format(top=top))
            script.chmod(0o755)
            (mnt / "etc/systemd/system/hc-analyze.service").write_text(UNIT)
            wants = mnt / "etc/systemd/system/multi-user.target.wants"
            wants.mkdir(exist_ok=True)
            link = wants / "hc-analyze.service"
            if not link.is_symlink():
                link.symlink_to("/etc/systemd/system/hc-analyze.service")
        finally:
            subprocess.run(["umount", mnt], check=True)
    finally:
        subprocess.run(["losetup", "-d", loop], check=True)
        mnt.rmdir()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("image", type=Path)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--timeout", type=float, default=900)
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("run as root")
    with tempfile.TemporaryDirectory(prefix="hc-firstboot.", dir="/var/tmp") as tmp:
        copy = Path(tmp) / "disk.img"
        subprocess.run(["cp", "--sparse=always", args.image, copy], check=True)
        inject(copy, args.top)
        load = os.getloadavg()[0]
        boot = qemu.boot(copy, Path(tmp) / "console.log", until=END, timeout=args.timeout,
                         snapshot=False)
        lines = [m.group(1).rstrip() for line in boot.console.splitlines()
                 if (m := LINE.search(line)) and m.group(1).strip() != "END"]
        print(f"{args.image.name}: first boot under TCG, 1 vCPU; load before "
              f"{load:.2f}, after {os.getloadavg()[0]:.2f}")
        print("\n".join(lines))


if __name__ == "__main__":
    main()
