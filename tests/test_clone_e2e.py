"""The proof of issue 17: two clones of one gold VM, made after the gold has booted once,
each booted under QEMU and asked from the inside; the gold's disk unchanged by cloning,
and the gold still boots. Slow: the two clones and the gold booted together under
software emulation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import DEBIAN_SUITE, run_cli, sha256, unique_name
from guest import boot_and_report_together, check_report

pytestmark = pytest.mark.e2e


def clone(gold, name: str) -> dict:
    result = run_cli("hostcreator", "clone", gold.name, name, "--config", str(gold.env.config),
                     "--json", timeout=300)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_two_clones_of_a_booted_gold_differ_and_the_gold_is_unchanged(debian_vm,
                                                                      debian_vm_report):
    gold = debian_vm
    # debian_vm_report booted the gold once: it has its machine-id, host keys, leases.
    assert debian_vm_report.get("hostname") == gold.name
    before = sha256(gold.image)
    names = [unique_name(), unique_name()]
    summaries = [clone(gold, name) for name in names]
    assert sha256(gold.image) == before

    # The gold and a clone can be mounted at the same time: they share no disk or UUID.
    # The gold read-only (a read-write mount writes its superblock), so its checksum holds.
    config = str(gold.env.config)
    mounted = [run_cli("mount-vm", gold.name, "--read-only", "--config", config, timeout=120),
               run_cli("mount-vm", names[0], "--config", config, timeout=120)]
    try:
        assert [m.returncode for m in mounted] == [0, 0], [m.stderr for m in mounted]
    finally:
        for n in (gold.name, names[0]):
            run_cli("umount-vm", n, "--config", config, timeout=120)
    assert sha256(gold.image) == before

    # Booted together: the two clones on the network at once, as users run them, and the
    # gold again (it still boots as itself). Three QEMUs of one vCPU each.
    *reports, again = boot_and_report_together(
        [(Path(summary["disk"]), gold.env.log_dir / f"{name}.report.log")
         for name, summary in zip(names, summaries, strict=True)]
        + [(gold.image, gold.env.log_dir / f"{gold.name}.report-again.log")], timeout=900)
    for name, summary, report in zip(names, summaries, reports, strict=True):
        assert summary["source"] == gold.name
        check_report(report, name, DEBIAN_SUITE)
        assert report["root_uuid"] == summary["root_uuid"]
        assert report["swap_uuid"] == summary["swap_uuid"]
        assert gold.env.journal(name)["source"] == gold.name
    first, second = reports
    for key in ("hostname", "machine_id", "ssh_key", "root_uuid", "swap_uuid",
                "dhcp_client_id"):
        values = {first.get(key), second.get(key), debian_vm_report.get(key)}
        assert len(values) == 3 and "" not in values and None not in values, (key, values)
    assert again.get("hostname") == gold.name
    assert again["root_uuid"] == debian_vm_report["root_uuid"]
