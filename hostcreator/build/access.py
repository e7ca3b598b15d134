"""How root gets in: a password from a file and SSH authorized keys.

The password never appears on a command line, in an environment or in a log:
it reaches chpasswd inside the chroot on its standard input.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from hostcreator.build import chroot
from hostcreator.errors import InvalidInput


def read_password(path: Path) -> str:
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise InvalidInput(f"ROOT_PASSWORD_FILE: cannot read {path}: {exc.strerror}") from None
    if not lines or not lines[0]:
        raise InvalidInput(f"ROOT_PASSWORD_FILE: {path} is empty")
    return lines[0]


def check_keys_file(path: Path) -> None:
    try:
        text = path.read_text()
    except OSError as exc:
        raise InvalidInput(f"SSH_AUTHORIZED_KEYS: cannot read {path}: {exc.strerror}") from None
    if not any(line.strip() and not line.startswith("#") for line in text.splitlines()):
        raise InvalidInput(f"SSH_AUTHORIZED_KEYS: {path} holds no key")


def set_root_password(root: Path, password: str) -> None:
    # A crypt hash ($id$...) is taken as it is, anything else is hashed by chpasswd.
    argv = ["chpasswd", "--encrypted"] if password.startswith("$") else ["chpasswd"]
    chroot.run_in(root, argv, input=f"root:{password}\n", secret_input=True)


def install_authorized_keys(root: Path, keys: Path) -> None:
    ssh = root / "root" / ".ssh"
    ssh.mkdir(mode=0o700, exist_ok=True)
    os.chmod(ssh, 0o700)
    target = ssh / "authorized_keys"
    shutil.copyfile(keys, target)
    os.chmod(target, 0o600)
