"""Reading the serial console log that --wait looks for the login prompt in."""

from __future__ import annotations

import pytest

from hostcreator import bootwait

pytestmark = pytest.mark.unit


def test_only_output_after_the_start_counts(tmp_path):
    log = tmp_path / "vm.serial.log"
    log.write_bytes(b"old boot\r\nvm1 login: ")
    since = bootwait.log_size(log)
    assert bootwait.read_since(log, since) == b""
    with open(log, "ab") as f:
        f.write(b"\x1b[2J\x1b[1;1HGNU GRUB\r\n[    1.0] Linux\r\n")
    new = bootwait.read_since(log, since)
    assert not bootwait.LOGIN_PROMPT.search(new)
    with open(log, "ab") as f:
        f.write(b"\r\nDebian GNU/Linux 13 vm1 ttyS0\r\n\r\nvm1 login: ")
    assert bootwait.LOGIN_PROMPT.search(bootwait.read_since(log, since))


def test_a_rotated_log_is_read_from_its_start(tmp_path):
    log = tmp_path / "vm.serial.log"
    log.write_bytes(b"x" * 100)
    since = bootwait.log_size(log)
    log.write_bytes(b"vm1 login: ")
    assert bootwait.LOGIN_PROMPT.search(bootwait.read_since(log, since))


def test_missing_log(tmp_path):
    assert bootwait.log_size(tmp_path / "none") == 0
    assert bootwait.read_since(tmp_path / "none", 0) == b""
    assert bootwait.read_since(None, 0) == b""


def test_last_lines_are_plain_text():
    console = (b"\x1b[?25l\x1b[5;78H\x1b[22;1H  Booting `Debian GNU/Linux'\r\n\r\n"
               b"\rLoading Linux 6.12 ...\r\n\x1b[!p\x1b]104\x07\x1b[?7h[   42.3] systemd\r\n"
               b"\r\nlast line\r\n")
    lines = bootwait.last_lines(console, 3)
    assert lines[0] == "Loading Linux 6.12 ..."
    assert lines[2] == "last line"
    assert all("\x1b" not in line for line in lines)


def test_output_after_the_login_prompt_does_not_hide_it():
    console = b"\r\nDebian GNU/Linux 13 vm1 ttyS0\r\n\r\nvm1 login: [   61.2] random: crng init\r\n"
    assert bootwait.LOGIN_PROMPT.search(console)
    assert not bootwait.LOGIN_PROMPT.search(b"\r\n[   3.1] systemd-logind: New login: x\r\n")
