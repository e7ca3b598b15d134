#!/usr/bin/env python3
"""Benchmark (not a test): the seed recipe by hand against hostcreator, cold and warm.

In one session, on this machine, as root:
  baseline  bench/baseline.sh: sgdisk, mkfs, plain debootstrap with kernel and
            GRUB from debootstrap's default mirror (no package cache),
            grub-install and update-grub in the chroot;
  cold      create-debian with a fresh, empty CACHE_DIR: no rootfs cache entry
            and no downloaded packages either;
  warm      create-debian of a second VM of the same suite with the same CACHE_DIR.
Each makes a SIZE GiB raw image that is then booted under QEMU (TCG) until its
login prompt. Printed: wall seconds of each build, its ratio to the baseline,
the boot time, the peak resident memory of the hostcreator process itself
(VmHWM of that one process, as create-debian also reports it) and of the whole
tree of processes it ran (wait4), and the load of the machine around each step.

    sudo .venv/bin/python bench/run.py [--suite trixie] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from hostcreator.domain import qemu
from hostcreator.host import mounts

HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent
SUMMARY_LINE = re.compile(r"^  (\S.*?)\s+(\d+\.\d) s$")
PEAK_LINE = re.compile(r"peak memory of hostcreator: (\d+) MB")


@dataclass
class Step:
    name: str
    what: str
    wall: float = 0.0
    boot: float | None = None
    rss_self_mb: float | None = None
    rss_tree_mb: float = 0.0
    load_before: float = 0.0
    load_after: float = 0.0
    stages: list[tuple[str, float]] = field(default_factory=list)


def load() -> float:
    return os.getloadavg()[0]


def vm_hwm_kb(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def timed(argv: list[str], log: Path) -> tuple[float, int, int, int | None]:
    """Run ARGV; wall seconds, exit status, peak RSS of its tree (KB), its own VmHWM (KB)."""
    start = time.monotonic()
    with open(log, "w") as out:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT)
        hwm = None
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            hwm = vm_hwm_kb(proc.pid) or hwm
            time.sleep(0.1)
    wall = time.monotonic() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    return wall, proc.returncode, usage.ru_maxrss, hwm


def boot(image: Path, console: Path, timeout: float) -> float:
    return qemu.boot(image, console, timeout=timeout).seconds


def run_step(step: Step, argv: list[str], image: Path, work: Path, args) -> Step:
    print(f"--- {step.name}: {step.what}", flush=True)
    step.load_before = load()
    wall, code, tree_kb, hwm_kb = timed(argv, work / f"{step.name}.out")
    step.load_after = load()
    output = (work / f"{step.name}.out").read_text(errors="replace")
    if code != 0:
        sys.exit(f"{step.name} failed (exit {code}); see {work / f'{step.name}.out'}:\n"
                 + "\n".join(output.splitlines()[-15:]))
    step.wall = wall
    step.rss_tree_mb = tree_kb / 1024
    if argv[0].endswith("create-debian"):
        peak = PEAK_LINE.search(output)
        step.rss_self_mb = float(peak.group(1)) if peak else (hwm_kb or 0) / 1024
        step.stages = [(m.group(1), float(m.group(2))) for line in output.splitlines()
                       if (m := SUMMARY_LINE.match(line))]
    print(f"    built in {wall:.1f} s (load {step.load_before:.2f} -> {step.load_after:.2f})",
          flush=True)
    if not args.no_boot:
        step.boot = boot(image, work / f"{step.name}.console.log", args.boot_timeout)
        print(f"    booted to the login prompt in {step.boot:.0f} s", flush=True)
    return step


def write_config(work: Path, size: int) -> Path:
    (work / "hooks").mkdir(parents=True, exist_ok=True)
    config = work / "hostcreator.conf"
    config.write_text("".join(f'{k}="{v}"\n' for k, v in {
        "SIZE": size, "IMAGE_DIR": work / "images", "LOG_DIR": work / "log",
        "HOOK_DIR": work / "hooks", "STATE_DIR": work / "state", "CACHE_DIR": work / "cache",
        "JOURNAL_DIR": work / "journal", "SECRETS_DIR": work / "secrets",
        "TIMEZONE": "Etc/UTC", "LOCALE": "C.UTF-8",
    }.items()))
    return config


def report(steps: list[Step], args) -> str:
    base = next((s for s in steps if s.name == "baseline"), None)
    lines = [
        f"suite {args.suite}, {args.size} GiB raw image, boots under TCG; "
        f"{os.cpu_count()} CPUs; load average at the end "
        + " ".join(f"{x:.2f}" for x in os.getloadavg()),
        "",
        f"{'build':<10} {'wall s':>7} {'x base':>7} {'boot s':>7} {'RSS hc MB':>10} "
        f"{'RSS tree MB':>12} {'load before/after':>18}",
    ]
    for s in steps:
        ratio = f"{s.wall / base.wall:.2f}" if base else "-"
        boot_s = f"{s.boot:.0f}" if s.boot is not None else "-"
        rss = f"{s.rss_self_mb:.0f}" if s.rss_self_mb is not None else "-"
        lines.append(f"{s.name:<10} {s.wall:7.1f} {ratio:>7} {boot_s:>7} {rss:>10} "
                     f"{s.rss_tree_mb:12.0f} {s.load_before:8.2f} / {s.load_after:<7.2f}")
    lines += ["", "targets: cold <= 0.55 x baseline, warm <= 15 s, hostcreator process "
              "< 100 MB RSS"]
    for s in steps:
        if s.stages:
            lines.append(f"{s.name} stages: " + ", ".join(f"{t} {v:.1f}" for t, v in s.stages))
    lines += ["", "RSS hc: the hostcreator (Python) process alone; RSS tree: the largest "
              "process it ran (wait4), e.g. apt or dpkg inside mmdebstrap."]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--suite", default="trixie")
    parser.add_argument("--size", type=int, default=4, help="GiB")
    parser.add_argument("--workdir", type=Path, default=Path("/var/tmp/hostcreator-bench"))
    parser.add_argument("--boot-timeout", type=float, default=900)
    parser.add_argument("--no-boot", action="store_true", help="skip the boot checks")
    parser.add_argument("--skip-baseline", action="store_true")
    parser.add_argument("--keep", action="store_true", help="keep the images")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("run as root")
    work = args.workdir
    if mounts.mounts_below(work):
        sys.exit(f"something is mounted below {work}: {mounts.mounts_below(work)}")
    shutil.rmtree(work, ignore_errors=True)  # the cold build gets an empty CACHE_DIR
    (work / "images").mkdir(parents=True)
    config = write_config(work, args.size)
    create = [str(BIN / "create-debian")]
    steps = []
    if not args.skip_baseline:
        image = work / "images" / "bench-base.img"
        steps.append(run_step(Step("baseline", "seed recipe by hand, plain debootstrap"),
                              ["sh", str(HERE / "baseline.sh"), str(image), args.suite,
                               f"{args.size}G"], image, work, args))
    for name, what in (("cold", "create-debian, empty CACHE_DIR (no rootfs, no packages)"),
                       ("warm", "create-debian, second VM, same CACHE_DIR")):
        vm = f"bench-{name}"
        image = work / "images" / f"{vm}-disk01.img"
        steps.append(run_step(Step(name, what),
                              [*create, vm, args.suite, "--config", str(config)], image, work,
                              args))
    text = report(steps, args)
    print("\n" + text)
    (work / "result.txt").write_text(text + "\n")
    if not args.keep:
        shutil.rmtree(work / "images", ignore_errors=True)


if __name__ == "__main__":
    main()
