"""What the archive offers: a suite exists when the archive has its Release file.

Asked before anything is touched, so that a typo in DISTR (or a suite of
another distribution) costs an error message, not a wiped disk. Only the head
of dists/<suite>/Release is read (Origin, Suite, Codename...), with a short
timeout. An archive that cannot be reached is an error too: debootstrap needs
it a moment later, after the disk has been partitioned.
"""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Mapping

from hostcreator.distro import Distribution
from hostcreator.errors import HostCreatorError, InvalidInput
from hostcreator.log import logger

TIMEOUT_SECONDS = 15
HEAD_BYTES = 4096


def release_url(mirror: str, suite: str) -> str:
    # debootstrap's copy: mirrors are local directories, like file: ones.
    if mirror.startswith("copy:"):
        mirror = "file:" + mirror.removeprefix("copy:")
    return f"{mirror.rstrip('/')}/dists/{suite}/Release"


def parse_fields(head: str) -> dict[str, str]:
    """The `Key: value` fields at the top of a Release file (the hash lists follow)."""
    fields: dict[str, str] = {}
    for line in head.splitlines():
        if not line or line[0].isspace() or ":" not in line:
            continue
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    return fields


def fetch_release(url: str, proxy: str | None = None,
                  timeout: float = TIMEOUT_SECONDS) -> Mapping[str, str] | None:
    """The fields of the Release file at URL; None when the archive has no such file.

    Raises OSError (urllib.error.URLError, TimeoutError) when the archive cannot be
    reached. Without PROXY, urllib takes http_proxy from the environment, as
    debootstrap does.
    """
    handlers = [urllib.request.ProxyHandler({"http": proxy, "https": proxy})] if proxy else []
    opener = urllib.request.build_opener(*handlers)
    logger.debug("fetching the head of %s", url)
    try:
        with opener.open(url, timeout=timeout) as response:
            head = response.read(HEAD_BYTES)
    except urllib.error.HTTPError as exc:
        if exc.code in (404, 410):
            return None
        raise
    except urllib.error.URLError as exc:
        if isinstance(exc.reason, FileNotFoundError):  # a file: mirror
            return None
        raise
    return parse_fields(head.decode("utf-8", "replace"))


def check_suite(distribution: Distribution, suite: str, mirror: str,
                proxy: str | None = None, timeout: float = TIMEOUT_SECONDS) -> None:
    """SUITE must be a suite of DISTRIBUTION that the archive at MIRROR offers."""
    url = release_url(mirror, suite)
    known = ", ".join(distribution.suites)
    try:
        fields = fetch_release(url, proxy, timeout)
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise HostCreatorError(
            f"cannot check the {distribution.name} suite {suite!r}: the archive is "
            f"unreachable ({url}: {reason})",
            hint="check the network, MIRROR and APT_PROXY; nothing was touched",
        ) from None
    if fields is None:
        raise InvalidInput(
            f"unknown {distribution.name} suite {suite!r}: the archive {mirror} has no "
            f"dists/{suite}/Release",
            hint=f"known suites: {known}",
        )
    origin = fields.get("Origin")
    if origin is not None and origin != distribution.origin:
        raise InvalidInput(
            f"{suite!r} is a suite of {origin}, not of {distribution.origin} "
            f"(Origin of {url})",
            hint=f"known {distribution.name} suites: {known}",
        )
    logger.debug("%s offers %s %s (%s)", mirror, distribution.origin,
                 fields.get("Codename", suite), fields.get("Version", "no version"))
