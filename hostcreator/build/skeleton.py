"""The skeleton tree: copied into every new root, %DISTR% replaced in its text files."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from hostcreator.config import Config
from hostcreator.errors import InvalidInput
from hostcreator.resources import shipped
from hostcreator.run import run

TOKEN = b"%DISTR%"
HOST_RESOLV_CONF = Path("/etc/resolv.conf")


def find(config: Config) -> Path:
    """SKEL_DIR, else /etc/hostcreator/skel, else the skel/ shipped with hostcreator."""
    if config.skel_dir is not None:
        if not config.skel_dir.is_dir():
            raise InvalidInput(f"SKEL_DIR: {config.skel_dir} is not a directory")
        return config.skel_dir
    installed = config.hook_dir / "skel"
    return installed if installed.is_dir() else shipped("skel")


def is_text(data: bytes) -> bool:
    """Text is what has no NUL byte and decodes as UTF-8: the files a token may be in."""
    if b"\0" in data:
        return False
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def substitute(data: bytes, distr: str) -> bytes | None:
    """DATA with %DISTR% replaced, or None when it is binary or holds no token."""
    if TOKEN not in data or not is_text(data):
        return None
    return data.replace(TOKEN, distr.encode())


def copied_files(skel: Path) -> list[Path]:
    """Regular files of SKEL, relative to it (links are copied as links, never edited)."""
    files = []
    for dirpath, _dirs, names in os.walk(skel):
        for name in names:
            path = Path(dirpath) / name
            if path.is_file() and not path.is_symlink():
                files.append(path.relative_to(skel))
    return sorted(files)


def install(skel: Path, root: Path, distr: str) -> list[Path]:
    """Copy SKEL into ROOT, replace %DISTR%; return the files that were edited."""
    # --keep-dirlinks: the target's /bin, /lib... may be links into /usr (merged /usr);
    # --no-perms: a directory of the checkout (0755) must not open up the guest's /root.
    run(["rsync", "--archive", "--keep-dirlinks", "--no-owner", "--no-group", "--no-perms",
         "--executability", f"{skel}/",
         f"{root}/"])
    edited = []
    for rel in copied_files(skel):
        target = root / rel
        new = substitute(target.read_bytes(), distr)
        if new is not None:
            target.write_bytes(new)
            edited.append(rel)
    return edited


def copy_resolv_conf(root: Path) -> None:
    """The host's resolver configuration, so that apt works inside the chroot."""
    target = root / "etc" / "resolv.conf"
    if target.is_symlink() or target.exists():
        target.unlink()
    shutil.copyfile(HOST_RESOLV_CONF, target)
