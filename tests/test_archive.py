"""DISTR is checked against what the archive offers, before anything is touched.

The archives here are directories served through file: URLs, read by the same
urllib code as an http mirror; the unreachable one is a closed local port.
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from hostcreator import distro
from hostcreator.build import archive
from hostcreator.errors import HostCreatorError, InvalidInput

pytestmark = pytest.mark.unit
UBUNTU = distro.get("ubuntu")


def fake_archive(base: Path, suites: dict[str, str]) -> str:
    """An archive at BASE offering SUITES (suite -> Origin); its mirror URL."""
    for suite, origin in suites.items():
        dists = base / "dists" / suite
        dists.mkdir(parents=True)
        (dists / "Release").write_text(
            f"Origin: {origin}\nLabel: {origin}\nSuite: {suite}\nVersion: 26.04\n"
            f"Codename: {suite}\nComponents: main restricted\nMD5Sum:\n"
            " 0123456789abcdef0123456789abcdef 1234 main/binary-amd64/Packages\n"
        )
    return base.as_uri()


def test_parse_fields_reads_the_head_only():
    fields = archive.parse_fields("Origin: Ubuntu\nSuite: resolute\nMD5Sum:\n abc 12 Origin: x\n")
    assert fields == {"Origin": "Ubuntu", "Suite": "resolute", "MD5Sum": ""}


def test_a_suite_the_archive_offers_passes(tmp_path):
    mirror = fake_archive(tmp_path, {"resolute": "Ubuntu"})
    archive.check_suite(UBUNTU, "resolute", mirror)
    archive.check_suite(UBUNTU, "resolute", mirror + "/")


def test_a_suite_the_archive_lacks_is_unknown(tmp_path):
    mirror = fake_archive(tmp_path, {"resolute": "Ubuntu"})
    with pytest.raises(InvalidInput) as exc:
        archive.check_suite(UBUNTU, "noble", mirror)
    assert exc.value.message == (f"unknown ubuntu suite 'noble': the archive {mirror} has no "
                                 "dists/noble/Release")
    assert "resolute" in exc.value.hint and "noble" in exc.value.hint


def test_a_suite_of_another_distribution_is_refused(tmp_path):
    mirror = fake_archive(tmp_path, {"trixie": "Debian"})
    with pytest.raises(InvalidInput, match="'trixie' is a suite of Debian, not of Ubuntu"):
        archive.check_suite(UBUNTU, "trixie", mirror)


def test_an_unreachable_archive_is_an_error_naming_it():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # Nothing listens there any more: the connection is refused at once.
    mirror = f"http://127.0.0.1:{port}/ubuntu"
    with pytest.raises(HostCreatorError) as exc:
        archive.check_suite(UBUNTU, "resolute", mirror, timeout=5)
    assert not isinstance(exc.value, InvalidInput)
    assert "archive is unreachable" in exc.value.message
    assert f"{mirror}/dists/resolute/Release" in exc.value.message
    assert "MIRROR" in exc.value.hint
