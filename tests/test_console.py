"""Reading a guest's serial console log: the login prompt --wait looks for, a kernel panic."""

from __future__ import annotations

import pytest

from hostcreator.domain import console
from hostcreator.errors import HostCreatorError

pytestmark = pytest.mark.unit


def test_only_output_after_the_start_counts(tmp_path):
    log = tmp_path / "vm.serial.log"
    log.write_bytes(b"old boot\r\nvm1 login: ")
    since = console.log_size(log)
    assert console.read_since(log, since) == b""
    with open(log, "ab") as f:
        f.write(b"\x1b[2J\x1b[1;1HGNU GRUB\r\n[    1.0] Linux\r\n")
    new = console.read_since(log, since)
    assert not console.LOGIN_PROMPT.search(new)
    with open(log, "ab") as f:
        f.write(b"\r\nDebian GNU/Linux 13 vm1 ttyS0\r\n\r\nvm1 login: ")
    assert console.LOGIN_PROMPT.search(console.read_since(log, since))


def test_a_rotated_log_is_read_from_its_start(tmp_path):
    log = tmp_path / "vm.serial.log"
    log.write_bytes(b"x" * 100)
    since = console.log_size(log)
    log.write_bytes(b"vm1 login: ")
    assert console.LOGIN_PROMPT.search(console.read_since(log, since))


def test_missing_log(tmp_path):
    assert console.log_size(tmp_path / "none") == 0
    assert console.read_since(tmp_path / "none", 0) == b""
    assert console.read_since(None, 0) == b""


def test_last_lines_are_plain_text():
    text = (b"\x1b[?25l\x1b[5;78H\x1b[22;1H  Booting `Debian GNU/Linux'\r\n\r\n"
            b"\rLoading Linux 6.12 ...\r\n\x1b[!p\x1b]104\x07\x1b[?7h[   42.3] systemd\r\n"
            b"\r\nlast line\r\n")
    lines = console.last_lines(text, 3)
    assert lines[0] == "Loading Linux 6.12 ..."
    assert lines[2] == "last line"
    assert all("\x1b" not in line for line in lines)


def test_output_after_the_login_prompt_does_not_hide_it():
    text = b"\r\nDebian GNU/Linux 13 vm1 ttyS0\r\n\r\nvm1 login: [   61.2] random: crng init\r\n"
    assert console.LOGIN_PROMPT.search(text)
    assert not console.LOGIN_PROMPT.search(b"\r\n[   3.1] systemd-logind: New login: x\r\n")


# From a CI run: a Debian 13 guest under QEMU with a thread per vCPU (MTTCG).
PANICKED = (
    b"Loading initial ramdisk ...\r\n"
    b"[    2.985694] Oops: int3: 0000 [#1] PREEMPT SMP NOPTI\r\n"
    b"[    2.986064] CPU: 0 UID: 0 PID: 0 Comm: swapper/0 Not tainted 6.12.117+deb13-amd64 #1\r\n"
    b"[    2.986294] RIP: 0010:sched_clock_cpu+0x9/0x1d0\r\n"
    b"[    2.988249] RIP: 0010:pv_native_safe_halt+0xf/0x20\r\n"
    b"[    2.989137] Oops: int3: 0000 [#2] PREEMPT SMP NOPTI\r\n"
    b"[    2.989462] Kernel panic - not syncing: Fatal exception in interrupt\r\n"
    b"[    5.060864] Shutting down cpus with NMI\r\n"
)


def test_a_kernel_panic_is_named_with_its_first_oops():
    assert console.panic(PANICKED) == (
        "kernel panic: Fatal exception in interrupt "
        "(after: Oops: int3: 0000 [#1] PREEMPT SMP NOPTI in sched_clock_cpu+0x9/0x1d0)")
    assert console.panic(b"[ 1.0] Kernel panic - not syncing: VFS: Unable to mount root fs\r\n") \
        == "kernel panic: VFS: Unable to mount root fs"


def test_no_panic_in_a_good_boot_or_before_the_panic_line_is_complete():
    assert console.panic(b"[ 1.0] Run /init as init process\r\nvm1 login: ") is None
    # An oops the kernel survives is no panic: the guest may still come up.
    assert console.panic(PANICKED.split(b"[    2.989462]")[0]) is None


class Stub(console.Guest):
    """The loop alone: what a real guest would say is given here (the real ones boot in
    test_domain_libvirt.py and the e2e tests)."""

    who = "vm1"

    def __init__(self, gone: bool = False, sign: str | None = None) -> None:
        self.gone = gone
        self.sign = sign

    def other_sign(self):
        return self.sign

    def stopped(self, text):
        return HostCreatorError("vm1 stopped") if self.gone else None

    def panic_hint(self):
        return "panic hint"

    def timeout_hint(self):
        return "timeout hint"


def test_watch_returns_at_the_login_prompt_after_the_offset(tmp_path):
    log = tmp_path / "vm.serial.log"
    log.write_bytes(b"old\r\nvm1 login: ")
    with pytest.raises(HostCreatorError, match=r"vm1 was not up after 0 s; last console "
                                               r"lines: none"):
        console.watch(Stub(), log, since=log.stat().st_size, timeout=0.05, poll=0.01)
    with open(log, "ab") as f:
        f.write(b"\r\nnew boot\r\nvm1 login: ")
    seen = console.watch(Stub(), log, since=len(b"old\r\nvm1 login: "), timeout=0, poll=0.01)
    assert seen.how == "its login prompt is on the serial console"
    assert seen.console == b"\r\nnew boot\r\nvm1 login: "


def test_watch_stops_at_a_panic_a_stop_or_another_sign(tmp_path):
    log = tmp_path / "vm.serial.log"
    log.write_bytes(PANICKED)
    with pytest.raises(HostCreatorError, match="vm1 will not come up: its kernel panic: Fatal "
                       "exception in interrupt") as panicked:
        console.watch(Stub(gone=True), log, timeout=10, poll=0.01)
    assert panicked.value.hint == "panic hint"
    log.write_bytes(b"booting\r\n")
    with pytest.raises(HostCreatorError, match="vm1 stopped"):
        console.watch(Stub(gone=True), log, timeout=10, poll=0.01)
    assert console.watch(Stub(sign="agent"), log, timeout=10, poll=0.01).how == "agent"
    with pytest.raises(HostCreatorError, match=r"last console lines: booting$") as late:
        console.watch(Stub(), log, timeout=0.05, poll=0.01)
    assert late.value.hint == "timeout hint"
