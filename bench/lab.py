#!/usr/bin/env python3
"""The lab host by hand (as root): a KVM host VM with LVM, built by hostcreator.

    .venv/bin/python bench/lab.py up [--dir DIR]     build it, boot it, make the VG hclab
    .venv/bin/python bench/lab.py run CMD... [--dir DIR] [--timeout S]
    .venv/bin/python bench/lab.py ssh [--dir DIR]    print the ssh command line
    .venv/bin/python bench/lab.py down [--dir DIR]   stop it, remove its images
    .venv/bin/python bench/lab.py measure [--dir DIR]
        up, then create-debian in the lab on LVM and on the file backend, down;
        prints how long each part took (the numbers of issue 16)

The lab is tests/lab.py's, the one the `lab` tests use; in it, create-debian
and the other commands read /etc/default/hostcreator (STORAGE=lvm VG_NAME=hclab).
DIR defaults to /var/tmp/hostcreator-lab; lab.log there holds every command and
its output, console.log the lab's serial console.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from conftest import DEBIAN_SUITE, build_dist
from lab import LAB_CACHE, VG, Lab

DEFAULT_DIR = Path("/var/tmp/hostcreator-lab")


def up(base: Path) -> Lab:
    if (base / "lab.json").exists() and Lab.load(base).running():
        sys.exit(f"a lab runs already in {base}: bench/lab.py down --dir {base}")
    if base.exists():
        shutil.rmtree(base)  # what an earlier lab left there: its logs, its key
    lab = Lab(base)
    try:
        # The wheel of this checkout; the lab's builds are handed the entry of their
        # inputs from the lab's own persistent cache (made there once).
        (base / "dist").mkdir(parents=True)
        lab.build(build_dist(base / "dist"), LAB_CACHE)
        lab.start(detach=True)
        lab.make_vg()
    except BaseException:
        lab.destroy()
        raise
    print(f"lab {lab.name} is up: bench/lab.py run --dir {base} CMD")
    return lab


def down(base: Path) -> None:
    lab = Lab.load(base)
    lab.stop()
    lab.destroy()
    print(f"lab {lab.name} is down; its logs stay in {base}")


def measure(base: Path) -> None:
    load = os.getloadavg()
    lab = up(base)
    try:
        for storage in ("lvm", "file"):
            name = f"hcbench-{storage}"
            started = time.monotonic()
            # The suite of the entry handed in: a cache hit on both backends.
            lab.run(f"create-debian {name} {DEBIAN_SUITE} --storage {storage}", timeout=1800)
            lab.timed(f"inner create-debian on {storage}", started)
        lab.run(f"lvs {VG}")
    finally:
        lab.stop()
        lab.destroy()
    print(json.dumps({"load_before": load, "load_after": os.getloadavg(),
                      "seconds": lab.timings}, indent=2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=("up", "run", "ssh", "down", "measure"))
    parser.add_argument("command", nargs="*")
    parser.add_argument("--dir", type=Path, default=DEFAULT_DIR)
    parser.add_argument("--timeout", type=float, default=1800)
    args = parser.parse_intermixed_args()
    if os.geteuid() != 0:
        sys.exit("bench/lab.py runs as root (loop devices, mounts)")
    if args.action == "up":
        up(args.dir)
    elif args.action == "measure":
        measure(args.dir)
    elif args.action == "down":
        down(args.dir)
    elif args.action == "ssh":
        print(shlex.join(Lab.load(args.dir).ssh_argv("")[:-1]))
    else:
        result = Lab.load(args.dir).run(shlex.join(args.command) if len(args.command) > 1
                                        else " ".join(args.command), timeout=args.timeout,
                                        check=False)
        sys.exit(result.returncode)


if __name__ == "__main__":
    main()
