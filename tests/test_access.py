"""Root's way in, read as input: the password file and the SSH public keys."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import TEST_SSH_KEY

from hostcreator.build import access
from hostcreator.errors import InvalidInput

pytestmark = pytest.mark.unit


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
