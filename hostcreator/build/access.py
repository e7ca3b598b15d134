"""How root gets in: a password from a file and SSH authorized keys.

The password never appears on a command line, in an environment or in a log:
it reaches chpasswd inside the chroot on its standard input.
"""

from __future__ import annotations

import base64
import os
import re
import shutil
from pathlib import Path

from hostcreator import inputs
from hostcreator.build import chroot
from hostcreator.errors import InvalidInput


# A password or an authorized_keys file of more than this is no such file.
FILE_LIMIT = 256 * 1024
# The key types OpenSSH accepts in authorized_keys.
KEY_TYPES = ("ssh-ed25519", "ssh-rsa", "ssh-dss", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384",
             "ecdsa-sha2-nistp521", "sk-ssh-ed25519@openssh.com",
             "sk-ecdsa-sha2-nistp256@openssh.com")
# [options] TYPE BASE64 [comment]; the options may hold quoted spaces.
KEY_LINE = re.compile(r"(?:^|.*\s)(?P<type>" + "|".join(map(re.escape, KEY_TYPES))
                      + r")\s+(?P<blob>[A-Za-z0-9+/]+={0,2})(?:\s.*)?")


def read_password(path: Path) -> str:
    lines = inputs.read_text(path, "ROOT_PASSWORD_FILE", FILE_LIMIT).splitlines()
    if not lines or not lines[0]:
        raise InvalidInput(f"ROOT_PASSWORD_FILE: {path} is empty")
    if not lines[0].isprintable():
        raise InvalidInput(f"ROOT_PASSWORD_FILE: {path} holds control characters",
                           hint="the first line is the password (or a crypt hash)")
    return lines[0]


def _is_public_key(line: str) -> bool:
    match = KEY_LINE.fullmatch(line)
    if match is None:
        return False
    try:
        blob = base64.b64decode(match["blob"], validate=True)
    except ValueError:
        return False
    # The blob starts with its own type as an SSH string: a length, then the name.
    size = int.from_bytes(blob[:4], "big")
    return blob[4:4 + size].decode("ascii", "replace") == match["type"]


def check_keys_file(path: Path) -> None:
    """PATH holds SSH public keys, one a line (comments and blank lines allowed)."""
    what = "SSH_AUTHORIZED_KEYS"
    lines = inputs.read_text(path, what, FILE_LIMIT).splitlines()
    if any("PRIVATE KEY" in line for line in lines):
        raise InvalidInput(f"{what}: {path} holds a private key",
                           hint="give the public key: the .pub file, or "
                           "`ssh-keygen -y -f KEY` prints it")
    keys = [(n, line) for n, line in enumerate(lines, 1)
            if line.strip() and not line.lstrip().startswith("#")]
    if not keys:
        raise InvalidInput(f"{what}: {path} holds no key")
    for number, line in keys:
        if not _is_public_key(line.strip()):
            raise InvalidInput(f"{what}: {path}:{number}: not an SSH public key",
                               hint="one key a line: [options] TYPE BASE64 [comment], "
                               "e.g. ssh-ed25519 AAAA... me@host")


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
