#!/usr/bin/env python3
"""Benchmark (not a test): the seed recipe by hand against hostcreator, cold and warm.

In one session, on this machine, as root:
  baseline  bench/baseline.sh: sgdisk, mkfs, plain debootstrap with kernel and
            GRUB from debootstrap's default mirror (no package cache),
            grub-install and update-grub in the chroot (Debian only);
  cold      create-DISTRIBUTION with a fresh, empty CACHE_DIR: no rootfs cache
            entry and no downloaded packages either;
  warm      create-DISTRIBUTION of a second VM of the same suite, same CACHE_DIR;
  kvm       create-kvm --wait of the warm VM (libvirt, software emulation, user
            networking): the time until the guest agent answers, then the
            domain is destroyed and undefined.
for each distribution asked (default: debian and ubuntu, each its default suite).
Each image is SIZE GiB; --boot also boots the cold and warm ones under plain
QEMU to the login prompt. Printed: a table with the wall seconds of each step,
the build's ratio to the baseline, the peak resident memory of the hostcreator
process itself (VmHWM, as create-* reports it) and of the largest process it
ran (wait4), and the machine's load (1-minute average, from uptime) before and
after each step: on a shared machine the numbers are only as good as that.

    sudo .venv/bin/python bench/run.py [--distributions debian,ubuntu] [--workdir DIR]
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
    distribution: str = "debian"
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


def run_step(step: Step, argv: list[str], image: Path | None, work: Path, args) -> Step:
    print(f"--- {step.distribution} {step.name}: {step.what}", flush=True)
    out = work / f"{step.distribution}-{step.name}.out"
    step.load_before = load()
    wall, code, tree_kb, hwm_kb = timed(argv, out)
    step.load_after = load()
    output = out.read_text(errors="replace")
    if code != 0:
        sys.exit(f"{step.name} failed (exit {code}); see {out}:\n"
                 + "\n".join(output.splitlines()[-15:]))
    step.wall = wall
    step.rss_tree_mb = tree_kb / 1024
    if step.name != "baseline":
        peak = PEAK_LINE.search(output)
        step.rss_self_mb = float(peak.group(1)) if peak else (hwm_kb or 0) / 1024
        step.stages = [(m.group(1), float(m.group(2))) for line in output.splitlines()
                       if (m := SUMMARY_LINE.match(line))]
    print(f"    done in {wall:.1f} s (load {step.load_before:.2f} -> {step.load_after:.2f})",
          flush=True)
    if args.boot and image is not None:
        step.boot = boot(image, work / f"{step.distribution}-{step.name}.console.log",
                         args.boot_timeout)
        print(f"    booted to the login prompt in {step.boot:.0f} s", flush=True)
    return step


def write_config(work: Path, size: int) -> Path:
    (work / "hooks").mkdir(parents=True, exist_ok=True)
    config = work / "hostcreator.conf"
    config.write_text("".join(f'{k}="{v}"\n' for k, v in {
        "SIZE": size, "IMAGE_DIR": work / "images", "LOG_DIR": work / "log",
        "HOOK_DIR": work / "hooks", "STATE_DIR": work / "state", "CACHE_DIR": work / "cache",
        "JOURNAL_DIR": work / "journal", "SECRETS_DIR": work / "secrets",
        "MOUNT_DIR": work / "mnt",
        "TIMEZONE": "Etc/UTC", "LOCALE": "C.UTF-8",
        # create-kvm: software emulation (KVM hangs guests here), one vCPU (two at
        # times panic a guest under TCG), user networking (nothing on the host's LAN).
        "VIRT_TYPE": "qemu", "VCPUS": 1, "MEMORY": 1024, "NETWORK_TYPE": "user",
        "GRAPHICS": "none",
    }.items()))
    return config


def report(steps: list[Step], args) -> str:
    base = next((s for s in steps if s.name == "baseline"), None)
    header = (f"{'distribution':<13}{'step':<10}{'wall s':>8}{'x base':>8}{'boot s':>8}"
              f"{'RSS hc MB':>11}{'RSS tree MB':>13}{'load before':>13}{'load after':>12}")
    lines = [
        f"{args.size} GiB raw images; {os.cpu_count()} CPUs; load average at the end "
        + " ".join(f"{x:.2f}" for x in os.getloadavg()),
        "", header, "-" * len(header),
    ]
    for s in steps:
        builds = s.name in ("cold", "warm")
        ratio = f"{s.wall / base.wall:.2f}" if base and builds and s.distribution == "debian" \
            else "-"
        boot_s = f"{s.boot:.0f}" if s.boot is not None else "-"
        rss = f"{s.rss_self_mb:.0f}" if s.rss_self_mb is not None else "-"
        lines.append(f"{s.distribution:<13}{s.name:<10}{s.wall:8.1f}{ratio:>8}{boot_s:>8}"
                     f"{rss:>11}{s.rss_tree_mb:13.0f}{s.load_before:13.2f}{s.load_after:12.2f}")
    lines += ["", "goals: cold <= 0.45 x baseline, warm <= 5 s, hostcreator process < 100 MB "
              "RSS; kvm = create-kvm --wait until the guest agent answers"]
    for s in steps:
        if s.stages:
            lines.append(f"{s.distribution} {s.name} stages: "
                         + ", ".join(f"{t} {v:.1f}" for t, v in s.stages))
    lines += ["", "RSS hc: the hostcreator (Python) process alone; RSS tree: the largest "
              "process it ran (wait4), e.g. apt or dpkg inside mmdebstrap.",
              "load: the 1-minute load average before and after the step; the machine "
              "was shared with other work unless it says ~0."]
    return "\n".join(lines)


def remove_domain(name: str) -> None:
    for verb in ("destroy", "undefine"):
        subprocess.run(["virsh", "-c", "qemu:///system", verb, name], capture_output=True,
                       check=False)


def run_distribution(distribution: str, suite: str | None, config: Path, work: Path,
                     args) -> list[Step]:
    create = [str(BIN / f"create-{distribution}")]
    steps = []
    for name, what in (("cold", f"create-{distribution}, empty CACHE_DIR (no rootfs, no "
                                "packages)"),
                       ("warm", f"create-{distribution}, second VM, same CACHE_DIR")):
        vm = f"bench-{distribution[:3]}-{name}"
        image = work / "images" / f"{vm}-disk01.img"
        steps.append(run_step(Step(name, what, distribution),
                              [*create, vm, *([suite] if suite else []), "--config",
                               str(config)], image, work, args))
    if not args.no_kvm:
        vm = f"bench-{distribution[:3]}-warm"
        remove_domain(vm)
        try:
            steps.append(run_step(Step("kvm", f"create-kvm {vm} --wait", distribution),
                                  [str(BIN / "create-kvm"), vm, "--wait",
                                   str(int(args.boot_timeout)), "--config", str(config)],
                                  None, work, args))
        finally:
            remove_domain(vm)
    return steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--distributions", default="debian,ubuntu",
                        help="comma separated, each built with its default suite")
    parser.add_argument("--suite", default="trixie", help="the Debian suite")
    parser.add_argument("--size", type=int, default=4, help="GiB")
    parser.add_argument("--workdir", type=Path, default=Path("/var/tmp/hostcreator-bench"))
    parser.add_argument("--boot-timeout", type=float, default=900)
    parser.add_argument("--boot", action="store_true",
                        help="also boot the cold and warm images under QEMU")
    parser.add_argument("--no-kvm", action="store_true", help="skip create-kvm --wait")
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
    steps = []
    if not args.skip_baseline:
        image = work / "images" / "bench-base.img"
        steps.append(run_step(Step("baseline", "seed recipe by hand, plain debootstrap"),
                              ["sh", str(HERE / "baseline.sh"), str(image), args.suite,
                               f"{args.size}G"], image, work, args))
    for distribution in args.distributions.split(","):
        suite = args.suite if distribution == "debian" else None
        steps += run_distribution(distribution, suite, config, work, args)
    text = report(steps, args)
    print("\n" + text)
    (work / "result.txt").write_text(text + "\n")
    if not args.keep:
        shutil.rmtree(work / "images", ignore_errors=True)


if __name__ == "__main__":
    main()
