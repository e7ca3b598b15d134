"""Booting a built disk in the tests and reading the guest's report."""

from __future__ import annotations

import re
from pathlib import Path

from hostcreator.domain import qemu

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


def boot_and_report(image: Path, console_log: Path, timeout: float = 600) -> dict[str, str]:
    boot = qemu.boot(image, console_log, until=REPORT_END, timeout=timeout)
    return parse_report(boot.console)


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
    # The release never changes: the VM gets its fixes from the update pockets.
    assert sorted(report["apt_suites"].split()) == [suite, f"{suite}-security",
                                                    f"{suite}-updates"], report["apt_suites"]
