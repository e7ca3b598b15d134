"""What a build will do (--dry-run) and what it did (the summary, --json): as data.

Both are plain dicts of JSON types, so that `--json` prints them as they are
and the human summary is read from the same values.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hostcreator.build import access, bootloader, bootstrap, cache, hooks, network
from hostcreator.disk import partition
from hostcreator.log import Progress

# A build is pipeline.Build, which imports this module: not named here (no import cycle).
Build = Any

# What runs inside the chroot, besides the skeleton's GRUB script (bootloader.script_for).
INSTALL_SCRIPT = "root/bin/install.sh"
CUSTOM_SCRIPT = "root/bin/install-custom.sh"


def disk(build: Build, size: int) -> dict[str, Any]:
    return {"path": str(build.disk.path), "kind": str(build.config.storage_kind),
            "describe": build.disk.describe(), "size_bytes": size}


def layout(size: int) -> list[dict[str, Any]]:
    return [{"name": p.name, "start": p.start, "size": p.size}
            for p in partition.layout(size).parts]


def login(build: Build) -> dict[str, Any]:
    given = build.login
    return {"password": ("generated" if given.generated else
                         "ROOT_PASSWORD_FILE" if given.password is not None else None),
            "password_file": str(given.password_file) if given.password_file else None,
            "ssh_keys": len(given.keys), "ssh_keys_from": [str(p) for p in given.keys_from],
            "how": access.describe(given, build.name, network.address(build.config))}


def scripts(build: Build) -> list[str]:
    """The scripts the build runs, in order: hooks on the host, the chroot's scripts."""
    hook_dir = build.config.hook_dir
    ran: list[str] = []
    grub = bootloader.script_for(build.skel, build.distribution).lstrip("/")
    for hook, inside in ((hooks.POSTUNPACK, (INSTALL_SCRIPT, CUSTOM_SCRIPT)),
                         (hooks.POSTCONFIG, (grub,))):
        ran += [str(s.path) for s in hooks.scripts(hook_dir, hook) if s.runs]
        ran += [f"/{rel} (in the chroot)" for rel in inside
                if rel != CUSTOM_SCRIPT or (build.skel / rel).is_file()]
    return ran


def plan(build: Build, outcome: cache.Outcome) -> dict[str, Any]:
    """What `create-* NAME` would do, from the checks --dry-run ran."""
    config, p = build.config, build.plan
    size = build.disk.size_bytes() if build.disk.exists() else config.size * partition.GIB
    return {
        "dry_run": True, "name": build.name, "distribution": build.distribution.name,
        "suite": build.suite, "mode": str(build.mode),
        "disk": {**disk(build, size), "exists": build.disk.exists()},
        "layout": layout(size), "mirror": bootstrap.archive_mirror(p),
        "bootstrap": str(p.tool), "packages": list(p.packages), "variant": p.variant,
        "cache": {"status": outcome.status, "key": outcome.key, "note": outcome.note},
        "network": network.describe(config), "login": login(build),
        "skeleton": str(build.skel),
        "hooks": {hook: [{"path": str(s.path), "runs": s.runs, "note": s.note}
                         for s in hooks.scripts(config.hook_dir, hook)]
                  for hook in hooks.HOOKS},
        "scripts": scripts(build),
    }


def summary(build: Build, progress: Progress, log: Path, journal: Path) -> dict[str, Any]:
    """What the finished build made, and how long each stage took."""
    outcome = getattr(build, "rootfs", None)
    return {
        "name": build.name, "distribution": build.distribution.name, "suite": build.suite,
        "disk": disk(build, build.disk_size), "layout": layout(build.disk_size),
        "filesystems": {"root_uuid": build.filesystems.root_uuid,
                        "swap_uuid": build.filesystems.swap_uuid},
        "timings": [{"stage": title, "seconds": round(secs, 1)}
                    for title, secs in progress.timings],
        "total_seconds": round(sum(secs for _, secs in progress.timings), 1),
        "cache": ({"status": outcome.status, "key": outcome.key, "note": outcome.note}
                  if outcome is not None else {"status": "earlier run",
                                               "note": build.record.rootfs}),
        "network": network.describe(build.config), "login": login(build),
        "log": str(log), "journal": str(journal),
    }
