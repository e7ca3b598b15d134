"""Booting a built disk in the tests and reading the guest's report."""

from __future__ import annotations

import re
import select
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

from hostcreator.domain import qemu
from hostcreator.domain.console import LOGIN_PROMPT
from hostcreator.run import spawn, stop

REPORT_END = re.compile(rb"HCREPORT END")
# The getty on the same serial port may write terminal queries into a line.
REPORT_LINE = re.compile(r"HCREPORT (\w+)=(.*)")


def parse_report(console: str) -> dict[str, str]:
    """The KEY=VALUE lines the report unit printed (the last report wins)."""
    report: dict[str, str] = {}
    for line in console.splitlines():
        match = REPORT_LINE.search(line)
        if match:
            report[match.group(1)] = match.group(2).strip()
    return report


# What the console shows of systemd's failures, and of what logs at error level.
CONSOLE_ERRORS = re.compile(r"\[FAILED\]|\bFailed to\b|\berror\b", re.IGNORECASE)


def console_errors(console: str) -> list[str]:
    return [line.strip() for line in console.splitlines() if CONSOLE_ERRORS.search(line)]


def boot_and_report(image: Path, console_log: Path, timeout: float = 600,
                    part: qemu.Slice | None = None) -> dict[str, str]:
    """The report, and the console's error lines (console_errors, |-separated); PART boots
    a slice of IMAGE (an LV's extents in its PV's image)."""
    boot = qemu.boot(image, console_log, until=REPORT_END, timeout=timeout, part=part)
    report = parse_report(boot.console)
    report["console_errors"] = "|".join(console_errors(boot.console))
    return report


def boot_and_report_together(boots: list[tuple[Path, Path] | tuple[Path, Path, qemu.Slice]],
                             timeout: float = 600) -> list[dict[str, str]]:
    """boot_and_report of each (image, console log[, part]) at the same time, one QEMU
    each: two guests of one vCPU share this machine's two cores about as fast as one
    alone (each QEMU is one process; no guest has several vCPUs, see MACHINE.md)."""
    def one(image: Path, log: Path, part: qemu.Slice | None = None) -> dict[str, str]:
        return boot_and_report(image, log, timeout, part)

    with ThreadPoolExecutor(max_workers=len(boots)) as pool:
        futures = [pool.submit(one, *boot) for boot in boots]
        return [future.result() for future in futures]


def check_current(report: dict[str, str]) -> None:
    """Built from the release and its update pockets: one kernel, nothing left to upgrade."""
    assert (report["kernels"], report["vmlinuz"]) == ("1", "1"), report
    assert report["upgradable"] == "0", report


def check_report(report: dict[str, str], name: str, suite: str) -> None:
    """What every VM must show from the inside, whatever its distribution."""
    assert report.get("hostname") == name, report
    root_uuid = report["root_uuid"]
    assert re.fullmatch(r"[0-9a-f-]{36}", root_uuid)
    assert report["fstab_root"] == f"UUID={root_uuid}"
    assert f"root=UUID={root_uuid}" in report["cmdline"]
    assert "console=ttyS0" in report["cmdline"]
    assert report["swap"].startswith("/dev/vda2")
    assert re.fullmatch(r"[0-9a-f-]{36}", report["swap_uuid"])
    # The skeleton's system.conf.d: a slow udev (TCG, a busy host) does not lose swap or ttyS0.
    assert report["device_timeout"] == "5min", report["device_timeout"]
    # QEMU user networking hands out 10.0.2.15 by DHCP (systemd-networkd).
    assert re.fullmatch(r"e\w+=10\.0\.2\.\d+/24", report["ipv4"]), report["ipv4"]
    assert report["policy_rc_d"] == "absent"
    assert re.fullmatch(r"[0-9a-f]{32}", report["machine_id"])
    # None of the build's SSH host keys are left: they were made at this boot.
    assert report["ssh_keys_new"] == "yes"
    assert report["keygen"] == "yes"
    assert report["ssh_key"].startswith("SHA256:")
    assert report["ssh_served_key"] == report["ssh_key"]
    assert report["timezone"] == "Etc/UTC"
    # ROOT_PASSWORD_FILE and SSH_AUTHORIZED_KEYS of the test configuration.
    assert report["root_password"] == "P"  # a usable password
    assert report["authorized_keys"] == "1"
    # A clean first boot (systemd-ssh-generator's vsock error among what it would show).
    assert report["failed_units"] == "", report["failed_units"]
    assert report["journal_errors"] == "", report["journal_errors"]
    assert report["console_errors"] == "", report["console_errors"]
    # The release never changes: the VM gets its fixes from the update pockets.
    check_current(report)
    assert sorted(report["apt_suites"].split()) == [suite, f"{suite}-security",
                                                    f"{suite}-updates"], report["apt_suites"]


# --- a guest to talk to: its serial console as a socket, its SSH port forwarded ---

PROMPT = re.compile(rb"root@[a-z0-9-]+:~# ")
OUTPUT = re.compile(rb"HCBEGIN\r?\n(.*?)HCEND (\d+)\r?\n", re.DOTALL)


class Console:
    """The serial console of a running QEMU, through its chardev socket."""

    def __init__(self, path: Path, proc, timeout: float = 60) -> None:
        self.proc = proc
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                self.sock.connect(str(path))
                break
            except OSError:
                self.sock.close()
                assert time.monotonic() < deadline, f"no console socket {path}"
                assert proc.poll() is None, f"QEMU stopped (exit code {proc.returncode})"
                time.sleep(0.2)
        self.seen = b""

    def expect(self, pattern: re.Pattern[bytes], timeout: float) -> re.Match[bytes]:
        """Read until PATTERN shows in what came after the last match; return the match."""
        deadline = time.monotonic() + timeout
        while (match := pattern.search(self.seen)) is None:
            left = deadline - time.monotonic()
            assert left > 0, f"no {pattern.pattern!r} on the console after {timeout:.0f} s; " \
                f"last: {self.seen[-400:]!r}"
            assert self.proc.poll() is None, f"QEMU stopped: {self.seen[-400:]!r}"
            ready, _, _ = select.select([self.sock], [], [], min(left, 1.0))
            if ready:
                self.seen += self.sock.recv(65536)
        self.seen = self.seen[match.end():]
        return match

    def send(self, text: str) -> None:
        self.sock.sendall(text.encode())

    def login(self, password: str, timeout: float = 900) -> None:
        self.expect(LOGIN_PROMPT, timeout)
        self.send("root\r")
        self.expect(re.compile(rb"Password: "), 60)
        self.send(f"{password}\r")
        self.expect(PROMPT, 120)
        self.run("dmesg -n 1")  # the kernel's messages would come between the lines
        # Plain output to compare: no colours (ip, systemd) nor line erasing (journalctl).
        self.run("export TERM=dumb NO_COLOR=1 SYSTEMD_COLORS=0")

    def run(self, command: str, timeout: float = 300) -> tuple[int, str]:
        """Run COMMAND in the logged-in shell: its exit code and output."""
        # The quotes keep the markers out of the echo of the typed line.
        self.send(f"echo HC''BEGIN; {command}; echo HC''END $?\r")
        match = self.expect(OUTPUT, timeout)
        self.expect(PROMPT, 30)
        return int(match[2]), match[1].decode("utf-8", "replace").replace("\r", "")


@contextmanager
def running_guest(image: Path, console_log: Path, *, ssh_port: int) -> Iterator[Console]:
    """IMAGE booted (from a throw-away snapshot) with its console a socket; stopped after."""
    console_log.parent.mkdir(parents=True, exist_ok=True)
    sock = Path(tempfile.mkdtemp(prefix="hctest-console-")) / "console.sock"
    proc = spawn(qemu.qemu_argv(image, console_log, ssh_port=ssh_port, console_socket=sock),
                 output=console_log.with_suffix(".qemu.log"))
    try:
        console = Console(sock, proc)
        yield console
        console.sock.close()
    finally:
        stop(proc)
        shutil.rmtree(sock.parent, ignore_errors=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
