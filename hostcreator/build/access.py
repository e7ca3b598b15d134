"""How root gets in: a password and SSH authorized keys.

Configured: the password of ROOT_PASSWORD_FILE, the keys of SSH_AUTHORIZED_KEYS.
When neither is configured, the first login is made possible anyway: root gets
the public SSH keys of the user who runs the command (USER_SSH_KEYS), and a
random password for the console (RANDOM_ROOT_PASSWORD), kept in
SECRETS_DIR/NAME/root-password, which only root may read.

The password never appears on a command line, in an environment or in a log:
it reaches chpasswd inside the chroot on its standard input.
"""

from __future__ import annotations

import base64
import os
import pwd
import re
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from hostcreator import inputs
from hostcreator.build import chroot
from hostcreator.config import Config
from hostcreator.errors import InvalidInput
from hostcreator.log import logger

# A password or an authorized_keys file of more than this is no such file.
FILE_LIMIT = 256 * 1024
# The key types OpenSSH accepts in authorized_keys.
KEY_TYPES = ("ssh-ed25519", "ssh-rsa", "ssh-dss", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384",
             "ecdsa-sha2-nistp521", "sk-ssh-ed25519@openssh.com",
             "sk-ecdsa-sha2-nistp256@openssh.com")
# [options] TYPE BASE64 [comment]; the options may hold quoted spaces.
KEY_LINE = re.compile(r"(?:^|.*\s)(?P<type>" + "|".join(map(re.escape, KEY_TYPES))
                      + r")\s+(?P<blob>[A-Za-z0-9+/]+={0,2})(?:\s.*)?")


# Letters and digits that cannot be mistaken for each other on a console (no 0/O, 1/l/I).
PASSWORD_ALPHABET = "abcdefghijkmnpqrstuvwxyzACDEFGHJKLMNPQRTUVWXY346789"
PASSWORD_GROUPS = 4  # of 5 characters: about 113 bits
USER_KEY_FILES = ("authorized_keys", "id_*.pub")


@dataclass(frozen=True)
class Login:
    """How root will log in to the VM."""

    password: str | None = field(default=None, repr=False)
    # Where the generated password is kept (None: configured, or none).
    password_file: Path | None = None
    keys: tuple[str, ...] = ()
    keys_from: tuple[Path, ...] = ()
    # Where the invoking user's keys were looked for (None: they were not).
    keys_looked_in: Path | None = None

    @property
    def generated(self) -> bool:
        return self.password_file is not None


def read_password(path: Path) -> str:
    lines = inputs.read_text(path, "ROOT_PASSWORD_FILE", FILE_LIMIT).splitlines()
    if not lines or not lines[0]:
        raise InvalidInput(f"ROOT_PASSWORD_FILE: {path} is empty")
    if not lines[0].isprintable():
        raise InvalidInput(f"ROOT_PASSWORD_FILE: {path} holds control characters",
                           hint="the first line is the password (or a crypt hash)")
    return lines[0]


def key_lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines()
            if line.strip() and not line.lstrip().startswith("#")]


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


def check_keys_file(path: Path) -> tuple[str, ...]:
    """The SSH public keys in PATH, one a line (comments and blank lines allowed)."""
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
    return tuple(line.strip() for _n, line in keys)


def invoking_home(environ: Mapping[str, str] = os.environ,
                  lookup: Callable[[str], pwd.struct_passwd] = pwd.getpwnam) -> Path | None:
    """The home of the user who runs the command: with sudo, the one who called sudo."""
    user = environ.get("SUDO_USER")
    if user and user != "root":
        try:
            return Path(lookup(user).pw_dir)
        except KeyError:
            logger.warning("warning: SUDO_USER %s is not a user of this host", user)
    home = environ.get("HOME")
    return Path(home) if home else None


def user_keys(home: Path | None) -> tuple[tuple[str, ...], tuple[Path, ...]]:
    """The public keys in HOME/.ssh (authorized_keys, id_*.pub), each once, and their files."""
    if home is None:
        return (), ()
    keys: dict[str, None] = {}
    files = []
    for pattern in USER_KEY_FILES:
        for path in sorted((home / ".ssh").glob(pattern)):
            try:
                found = [k for k in key_lines(inputs.read_text(path, str(path), FILE_LIMIT))
                         if _is_public_key(k)]
            except InvalidInput as exc:
                logger.warning("warning: %s", exc.message)
                continue
            if found:
                files.append(path)
                keys.update(dict.fromkeys(found))
    return tuple(keys), tuple(files)


def random_password() -> str:
    groups = ("".join(secrets.choice(PASSWORD_ALPHABET) for _ in range(5))
              for _ in range(PASSWORD_GROUPS))
    return "-".join(groups)


def plan(config: Config, password_file: Path) -> Login:
    """How root will log in; checks the configured files (nothing is written). A generated
    password is to be kept in PASSWORD_FILE (VmPaths.root_password)."""
    if config.root_password_file or config.ssh_authorized_keys:
        password = (read_password(config.root_password_file) if config.root_password_file
                    else None)
        keys = (check_keys_file(config.ssh_authorized_keys) if config.ssh_authorized_keys
                else ())
        return Login(password, None, keys, tuple(filter(None, [config.ssh_authorized_keys])))
    home = invoking_home() if config.user_ssh_keys else None
    keys, files = user_keys(home)
    looked_in = home / ".ssh" if home is not None else None
    if not config.random_root_password:
        return Login(None, None, keys, files, looked_in)
    return Login(random_password(), password_file, keys, files, looked_in)


def keep_password(path: Path, password: str) -> None:
    """PASSWORD in PATH, readable by root only (the directories too), written whole."""
    for directory in (path.parent.parent, path.parent):
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(directory, 0o700)
    temporary = path.with_name(f".{path.name}.new")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, f"{password}\n".encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(temporary, path)


def set_root_password(root: Path, password: str) -> None:
    # A crypt hash ($id$...) is taken as it is, anything else is hashed by chpasswd.
    argv = ["chpasswd", "--encrypted"] if password.startswith("$") else ["chpasswd"]
    chroot.run_in(root, argv, input=f"root:{password}\n", secret_input=True)


def install_authorized_keys(root: Path, keys: tuple[str, ...]) -> None:
    ssh = root / "root" / ".ssh"
    ssh.mkdir(mode=0o700, exist_ok=True)
    os.chmod(ssh, 0o700)
    target = ssh / "authorized_keys"
    target.write_text("".join(f"{key}\n" for key in keys))
    os.chmod(target, 0o600)


def install(root: Path, login: Login) -> None:
    """Give root of the VM at ROOT its password and keys; keep a generated password."""
    if login.password is not None:
        if login.password_file is not None:
            keep_password(login.password_file, login.password)
        set_root_password(root, login.password)
    if login.keys:
        install_authorized_keys(root, login.keys)


def describe(login: Login, name: str, address: str = "ADDRESS") -> list[str]:
    """How to log in, for the summary (never the password itself)."""
    lines = []
    if login.generated:
        lines.append(f"root's password is in {login.password_file} (only root can read it): "
                     f"log in as root on the console (create-kvm {name}, then "
                     f"virsh console {name})")
    elif login.password is not None:
        lines.append("root's password is the one of ROOT_PASSWORD_FILE")
    if login.keys:
        lines.append(f"root accepts SSH with {len(login.keys)} key(s) of "
                     + ", ".join(map(str, login.keys_from)) + f": ssh root@{address}")
    elif login.keys_looked_in is not None:
        lines.append(f"root has no SSH key: there is none in {login.keys_looked_in} "
                     "(authorized_keys, id_*.pub)")
    if not lines:
        lines.append("nobody can log in: root has no password and no SSH key (set "
                     "ROOT_PASSWORD_FILE or SSH_AUTHORIZED_KEYS)")
    return lines
