#!/usr/bin/env python3
"""Benchmark (not a test): how long `hostcreator clone` takes, next to `cp --sparse=always`.

Issue 17's numbers: a clone of an 8 GiB image VM with about 1 GiB used, identity
included, at most 2 s on ext4 and at most 0.5 s on a reflink file system. In one
run, in a directory of its own (removed at the end):
  gold    an image of --size GiB with create-debian's partitions, swap and an ext4
          root holding --used GiB of files (incompressible, in 64 MiB files) plus
          what a VM that ran keeps (machine-id, host keys, leases, grub.cfg), and a
          finished build journal: what clone needs of a gold VM;
  ext4    `hostcreator clone` into the image directory beside the gold (the file
          system of --dir, ext4 on the development machine), then `cp --sparse=always`;
  xfs     the same in an XFS file system with reflinks (mkfs.xfs -m reflink=1, in a
          sparse image file mounted here), when mkfs.xfs is installed (xfsprogs).
Printed: the seconds of each (cp also followed by sync, as durable as the clone), and
the method the clone's output names. The gold is synced first: a VM at rest.

    sudo .venv/bin/python bench/clone.py [--size 8] [--used 1] [--dir /var/tmp] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

from hostcreator.disk import partition
from hostcreator.disk.partition import GIB, MIB
from hostcreator.host import loopdev, mounts
from hostcreator.state import journal
from hostcreator.state.journal import Journal, Stage, Status

BIN = Path(sys.executable).parent
CHUNK = 64 * MIB


def settings(base: Path, image_dir: Path) -> Path:
    conf = base / f"hostcreator-{image_dir.name}.conf"
    values = {"IMAGE_DIR": image_dir, "LOG_DIR": base / "log", "STATE_DIR": base / "state",
              "JOURNAL_DIR": base / "journal", "SECRETS_DIR": base / "secrets",
              "MOUNT_DIR": base / "mnt", "HOOK_DIR": base / "hooks", "CACHE_DIR": base / "cache",
              "USER_SSH_KEYS": "no", "RANDOM_ROOT_PASSWORD": "no",
              "LIBVIRT_URI": "qemu+unix:///system?socket=/nonexistent/libvirt-sock"}
    conf.write_text("".join(f"{k}={v}\n" for k, v in values.items()))
    return conf


def fill_root(root: Path, name: str, used: float, root_uuid: str) -> None:
    files = {"etc/hostname": f"{name}\n", "etc/hosts": f"127.0.1.1\t{name}\n",
             "etc/machine-id": "0123456789abcdef0123456789abcdef\n",
             "etc/ssh/ssh_host_ed25519_key": "key\n", "var/lib/systemd/random-seed": "seed",
             "var/lib/dhcp/dhclient.leases": "lease\n",
             "boot/grub/grub.cfg": f"linux /vmlinuz root=UUID={root_uuid} ro\n",
             "boot/grub/i386-pc/core.img": "core"}
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    data = root / "data"
    data.mkdir()
    block = os.urandom(CHUNK)
    for n in range(int(used * GIB) // CHUNK):
        (data / f"{n:04}").write_bytes(block)


def make_gold(image: Path, name: str, size: int, used: float, journal_dir: Path) -> None:
    image.parent.mkdir(parents=True, exist_ok=True)
    with open(image, "xb") as f:
        f.truncate(size * GIB)
    plan = partition.layout(size * GIB)
    partition.write_table(image, plan)
    with ExitStack() as stack:
        nodes = partition.find(loopdev.attach(stack, image))
        fs = partition.make_filesystems(nodes, name)
        root = mounts.mount(stack, nodes.root, image.parent / "gold-root", fstype="ext4")
        fill_root(root, name, used, fs.root_uuid)
    (image.parent / "gold-root").rmdir()
    journal.save(journal_dir, Journal(name, "debian", "trixie", image, done=list(Stage),
                                      status=Status.FINISHED, root_uuid=fs.root_uuid,
                                      swap_uuid=fs.swap_uuid))


def timed(argv: list[str]) -> tuple[float, str]:
    start = time.monotonic()
    result = subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    elapsed = time.monotonic() - start
    if result.returncode != 0:
        sys.exit(f"{' '.join(argv)} failed:\n{result.stderr}")
    return elapsed, result.stdout


def measure(base: Path, image_dir: Path, gold: Path, label: str) -> dict[str, object]:
    conf = settings(base, image_dir)
    clone_name = f"bench-{label}"
    seconds, out = timed([str(BIN / "hostcreator"), "clone", "bench-gold", clone_name,
                          "--config", str(conf), "--json"])
    summary = json.loads(out)
    method = summary["method"]
    cp_seconds, _ = timed(["cp", "--sparse=always", str(gold), str(image_dir / "cp.img")])
    # As durable as the clone, which syncs its copy before it names it.
    synced, _ = timed(["sh", "-c", 'cp --sparse=always "$1" "$2" && sync "$2"', "sh",
                       str(gold), str(image_dir / "cp-synced.img")])
    for path in (image_dir / "cp.img", image_dir / "cp-synced.img",
                 image_dir / f"{clone_name}-disk01.img"):
        path.unlink()
    (base / "journal" / f"{clone_name}.json").unlink()
    return {"fs": label, "clone_s": round(seconds, 2), "method": method,
            "stages": summary["timings"], "cp_sparse_s": round(cp_seconds, 2),
            "cp_sparse_sync_s": round(synced, 2)}


def xfs_dir(stack: ExitStack, base: Path, size: int) -> Path | None:
    """An XFS file system with reflinks, in a sparse file mounted below BASE."""
    if shutil.which("mkfs.xfs") is None:
        return None
    backing = base / "xfs.img"
    with open(backing, "xb") as f:
        f.truncate((3 * size + 2) * GIB)
    subprocess.run(["mkfs.xfs", "-q", "-m", "reflink=1", str(backing)], check=True)
    point = base / "xfs"
    point.mkdir()
    device = loopdev.attach(stack, backing)
    mounts.mount(stack, device, point, fstype="xfs")
    return point


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=8, help="GiB of the gold's image")
    parser.add_argument("--used", type=float, default=1.0, help="GiB of files in its root")
    parser.add_argument("--dir", type=Path, default=Path("/var/tmp"),
                        help="where the ext4 images go (its file system is measured)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="hc-bench-clone-", dir=args.dir))
    rows = []
    try:
        with ExitStack() as stack:
            images = base / "images"
            gold = images / "bench-gold-disk01.img"
            make_gold(gold, "bench-gold", args.size, args.used, base / "journal")
            # A gold VM at rest, as one that was shut down is: nothing of it waits to be
            # written (a reflink flushes its source's dirty pages first).
            os.sync()
            rows.append(measure(base, images, gold, "ext4"))
            xfs = xfs_dir(stack, base, args.size)
            if xfs is not None:
                xfs_images = xfs / "images"
                xfs_images.mkdir()
                subprocess.run(["cp", "--sparse=always", str(gold), str(xfs_images / gold.name)],
                               check=True)
                os.sync()
                rows.append(measure(base, xfs_images, xfs_images / gold.name, "xfs"))
            else:
                rows.append({"fs": "xfs", "skipped": "mkfs.xfs is not installed (xfsprogs)"})
    finally:
        shutil.rmtree(base, ignore_errors=True)
    allocated = f"{args.size} GiB image, {args.used} GiB used"
    if args.json:
        print(json.dumps({"image": allocated, "rows": rows}, indent=2))
        return
    print(f"clone of a {allocated}:")
    for row in rows:
        if "skipped" in row:
            print(f"  {row['fs']:<5} skipped: {row['skipped']}")
        else:
            print(f"  {row['fs']:<5} clone {row['clone_s']:6.2f} s ({row['method']}), "
                  f"cp --sparse=always {row['cp_sparse_s']:6.2f} s, with sync "
                  f"{row['cp_sparse_sync_s']:6.2f} s")
            print("        stages: " + ", ".join(f"{t} {s} s" for t, s in row["stages"].items()))


if __name__ == "__main__":
    main()
