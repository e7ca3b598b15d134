#!/usr/bin/env python3
"""Benchmark (not a test): how long `hostcreator export` takes, and how large its output is.

Issue 19's numbers: the export of a 4 GiB VM with about 1 GiB used, as qcow2 and as
OVA, the times and the sizes next to the space the VM's disk uses. In one run, in a
directory of its own (removed at the end):
  gold    an image of --size GiB with create-debian's partitions, swap and an ext4 root
          (bench/clone.py's gold, with what a VM that ran keeps) filled with --used GiB
          of this host's own files from /usr: data that compresses as an installed
          system does (random data would not compress at all, zeros too well);
  export  `hostcreator export` to each of --formats, into a directory on the same
          file system (the copy there is an extents copy on ext4, a reflink on XFS).
Printed: per format, the seconds, the output's size, its ratio to the bytes the disk
uses, and the export's stage times.

    sudo .venv/bin/python bench/export.py [--size 4] [--used 1] [--dir /var/tmp]
                                          [--formats qcow2,ova] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path

from clone import BIN, make_gold, settings, timed

from hostcreator.disk import partition
from hostcreator.disk.partition import GIB
from hostcreator.host import loopdev, mounts

SOURCES = (Path("/usr/lib"), Path("/usr/share"), Path("/usr/bin"))


def host_files(limit: int):
    """Regular files of this host under SOURCES, until LIMIT bytes."""
    total = 0
    for top in SOURCES:
        for folder, _dirs, files in os.walk(top):
            for name in sorted(files):
                path = Path(folder) / name
                if path.is_symlink() or not path.is_file():
                    continue
                size = path.stat().st_size
                if total + size > limit:
                    return
                total += size
                yield path


def fill_with_host_files(image: Path, used: float) -> int:
    """Copy --used GiB of this host's files into the gold's root; the bytes copied."""
    copied = 0
    with ExitStack() as stack:
        nodes = partition.find(loopdev.attach(stack, image))
        root = mounts.mount(stack, nodes.root, image.parent / "fill-root", fstype="ext4")
        for path in host_files(int(used * GIB)):
            target = root / "usr-copy" / path.relative_to("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                shutil.copyfile(path, target)
            except OSError:
                continue  # unreadable (a socket, a file that went away)
            copied += path.stat().st_size
    (image.parent / "fill-root").rmdir()
    return copied


def measure(conf: Path, out: Path, fmt: str) -> dict[str, object]:
    seconds, stdout = timed([str(BIN / "hostcreator"), "export", "bench-gold", "--format",
                             fmt, "--output", str(out), "--config", str(conf), "--json"])
    summary = json.loads(stdout)
    Path(summary["path"]).unlink()
    # A sparse raw image's size is its allocated bytes; the others have no holes.
    size = summary["allocated"] if fmt == "raw" else summary["size"]
    return {"format": fmt, "seconds": round(seconds, 2), "size": size,
            "disk_allocated": summary["disk_allocated"], "method": summary["method"],
            "ratio": round(size / summary["disk_allocated"], 3), "stages": summary["timings"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=4, help="GiB of the gold's image")
    parser.add_argument("--used", type=float, default=1.0,
                        help="GiB of the host's files copied into its root")
    parser.add_argument("--dir", type=Path, default=Path("/var/tmp"),
                        help="where the images and exports go (its file system is measured)")
    parser.add_argument("--formats", default="qcow2,ova",
                        help="comma-separated: qcow2, vmdk, ova, raw")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench/export.py runs as root (loop devices, mounts)")
    base = Path(tempfile.mkdtemp(prefix="hc-bench-export-", dir=args.dir))
    rows = []
    try:
        images = base / "images"
        gold = images / "bench-gold-disk01.img"
        make_gold(gold, "bench-gold", args.size, 0.0, base / "journal")
        filled = fill_with_host_files(gold, args.used)
        conf = settings(base, images)
        out = base / "out"
        out.mkdir()
        for fmt in args.formats.split(","):
            rows.append(measure(conf, out, fmt.strip()))
        allocated = os.stat(gold).st_blocks * 512
    finally:
        shutil.rmtree(base, ignore_errors=True)
    head = (f"{args.size} GiB image, {filled / GIB:.2f} GiB of host files in its root, "
            f"{allocated / GIB:.2f} GiB allocated")
    if args.json:
        print(json.dumps({"image": head, "rows": rows}, indent=2))
        return
    print(f"export of a {head}:")
    for row in rows:
        print(f"  {row['format']:<5} {row['seconds']:6.1f} s  {row['size'] / GIB:6.3f} GiB "
              f"({row['ratio']:.0%} of the disk's allocated bytes; copy: {row['method']})")
        print("        stages: " + ", ".join(f"{t} {s} s" for t, s in row["stages"]))


if __name__ == "__main__":
    main()
