"""Root's way in: the password file and the SSH public keys read as input; when neither is
configured, the invoking user's keys and a random password."""

from __future__ import annotations

import base64
import pwd
import stat
from pathlib import Path

import pytest
from conftest import TEST_SSH_KEY

from hostcreator import config
from hostcreator.build import access
from hostcreator.errors import InvalidInput

pytestmark = pytest.mark.unit


def public_key(comment: str, fill: int) -> str:
    """An ed25519 public key line of the shape OpenSSH writes (not anyone's key)."""
    blob = (len(b"ssh-ed25519").to_bytes(4, "big") + b"ssh-ed25519" + (32).to_bytes(4, "big")
            + bytes([fill]) * 32)
    return f"ssh-ed25519 {base64.b64encode(blob).decode()} {comment}"


PASSWORD = Path("/nonexistent/secrets/web1/root-password")  # planned, never written
KEY_A = public_key("alice@desk", 1)
KEY_B = public_key("alice@laptop", 2)


def load(tmp_path, **values):
    values.setdefault("SECRETS_DIR", str(tmp_path / "secrets"))
    return config.load(overrides=values, environ={}, path=write_empty(tmp_path))


def write_empty(tmp_path):
    path = tmp_path / "conf"
    path.write_text("")
    return path


@pytest.fixture
def home(tmp_path, monkeypatch):
    """An invoking user's home with two key files (one key in both)."""
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    (home / ".ssh" / "authorized_keys").write_text(f"# mine\n{KEY_A}\n\n{KEY_B}\nnot a key\n")
    (home / ".ssh" / "id_ed25519.pub").write_text(f"{KEY_A}\n")
    (home / ".ssh" / "id_ed25519").write_text("PRIVATE, never read\n")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("SUDO_USER", raising=False)
    return home


def test_unconfigured_gets_the_users_keys_and_a_random_password(tmp_path, home):
    login = access.plan(load(tmp_path), PASSWORD)
    assert login.keys == (KEY_A, KEY_B)
    assert login.keys_from == (home / ".ssh" / "authorized_keys", home / ".ssh" / "id_ed25519.pub")
    assert login.generated and login.password_file == PASSWORD
    assert len(login.password) == 23 and login.password != access.plan(load(tmp_path), PASSWORD)
    assert login.password not in repr(login)
    assert not (tmp_path / "secrets").exists()  # planned, not written
    text = "\n".join(access.describe(login, "web1"))
    assert str(login.password_file) in text and "virsh console web1" in text
    assert login.password not in text


def test_either_can_be_turned_off(tmp_path, home):
    no_password = access.plan(load(tmp_path, RANDOM_ROOT_PASSWORD="no"), PASSWORD)
    assert no_password.password is None and no_password.keys == (KEY_A, KEY_B)
    no_keys = access.plan(load(tmp_path, USER_SSH_KEYS="no"), PASSWORD)
    assert no_keys.keys == () and no_keys.generated
    neither = access.plan(load(tmp_path, USER_SSH_KEYS="no", RANDOM_ROOT_PASSWORD="no"),
                          PASSWORD)
    assert access.describe(neither, "a")[0].startswith("nobody can log in")


def test_a_configured_file_turns_both_off(tmp_path, home):
    keys = tmp_path / "keys"
    keys.write_text(public_key("other@host", 3) + "\n")
    login = access.plan(load(tmp_path, SSH_AUTHORIZED_KEYS=str(keys)), PASSWORD)
    assert login.keys == (public_key("other@host", 3),) and login.password is None
    secret = tmp_path / "pw"
    secret.write_text("s3cret\n")
    login = access.plan(load(tmp_path, ROOT_PASSWORD_FILE=str(secret)), PASSWORD)
    assert login.password == "s3cret" and not login.generated and login.keys == ()
    (tmp_path / "empty").write_text("# nothing\n")
    with pytest.raises(InvalidInput, match="holds no key"):
        access.plan(load(tmp_path, SSH_AUTHORIZED_KEYS=str(tmp_path / "empty")), PASSWORD)


def test_with_sudo_the_keys_are_the_invoking_users(tmp_path):
    entry = pwd.struct_passwd(("alice", "x", 1000, 1000, "", str(tmp_path / "alice"), "/bin/sh"))
    seen = []

    def lookup(user):
        seen.append(user)
        return entry

    environ = {"SUDO_USER": "alice", "HOME": "/root"}
    assert access.invoking_home(environ, lookup) == tmp_path / "alice" and seen == ["alice"]
    assert access.invoking_home({"SUDO_USER": "root", "HOME": "/root"}, lookup) == \
        Path("/root")
    assert access.invoking_home({}, lookup) is None
    assert access.user_keys(tmp_path / "nobody") == ((), ())


def test_the_password_file_is_root_only(tmp_path):
    path = tmp_path / "secrets" / "web1" / "root-password"
    access.keep_password(path, "abc-def")
    assert path.read_text() == "abc-def\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(path.parent.parent.stat().st_mode) == 0o700
    access.keep_password(path, "new-one")  # a rebuild replaces it, whole
    assert path.read_text() == "new-one\n"
    assert sorted(p.name for p in path.parent.iterdir()) == ["root-password"]


def test_random_passwords_use_an_unambiguous_alphabet():
    for _ in range(50):
        groups = access.random_password().split("-")
        assert [len(g) for g in groups] == [5, 5, 5, 5]
        assert not set("".join(groups)) - set(access.PASSWORD_ALPHABET)
        assert not set("".join(groups)) & set("0O1lI")



def test_public_keys_with_options_comments_and_blank_lines_are_taken(tmp_path):
    keys = tmp_path / "keys"
    keys.write_text(f"# root's keys\n\n{TEST_SSH_KEY}\n"
                    f'command="echo a b",no-pty {TEST_SSH_KEY.split(" hctest")[0]}\n')
    access.check_keys_file(keys)


@pytest.mark.parametrize("line", ["ssh-ed25519", "ssh-ed25519 AAAA me", "ssh-rsa " +
                                  TEST_SSH_KEY.split()[1], "hello world"])
def test_what_is_no_public_key_is_named_with_its_line(tmp_path, line):
    keys = tmp_path / "keys"
    keys.write_text(f"{TEST_SSH_KEY}\n{line}\n")
    with pytest.raises(InvalidInput, match=f"{keys}:2: not an SSH public key"):
        access.check_keys_file(keys)


def test_dev_null_is_an_empty_file():
    with pytest.raises(InvalidInput, match="/dev/null is empty"):
        access.read_password(Path("/dev/null"))
