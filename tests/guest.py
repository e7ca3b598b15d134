"""Booting a built disk in the tests and reading the guest's report."""

from __future__ import annotations

import re
from pathlib import Path

from hostcreator import qemu

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
