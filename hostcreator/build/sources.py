"""The VM's apt sources: the suite debootstrap used, plus its update pockets.

debootstrap writes only the suite itself; a VM also wants its security and
stable updates, and the bootstrap takes its packages from all of them (so
that the tree it makes is current). The mirror is the one debootstrap actually used (read back
from the sources it wrote), so no archive host is ever named here.
"""

from __future__ import annotations

from pathlib import Path

from hostcreator.distro import Distribution

SOURCES_LIST = Path("etc/apt/sources.list")


def mirror_used(root: Path) -> str | None:
    """The archive URL of the first `deb` line debootstrap wrote."""
    try:
        lines = (root / SOURCES_LIST).read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        words = line.split()
        if len(words) >= 3 and words[0] == "deb":
            return next((w for w in words[1:] if not w.startswith("[")), None)
    return None


def lines(distribution: Distribution, suite: str, mirror: str,
          security_mirror: str | None = None) -> list[str]:
    """The `deb` lines of SUITE and its update pockets: the VM's sources and the bootstrap's."""
    components = " ".join(distribution.components)
    found = [f"deb {mirror} {suite} {components}"]
    if suite not in distribution.rolling:
        for pocket, url_suffix in distribution.pockets:
            url = mirror.rstrip("/") + url_suffix
            if url_suffix and security_mirror:
                url = security_mirror
            found.append(f"deb {url} {suite}{pocket} {components}")
    return found


def text(deb_lines: list[str]) -> str:
    """sources.list holding DEB_LINES."""
    return "\n".join(["# Written by hostcreator.", *deb_lines]) + "\n"


def render(distribution: Distribution, suite: str, mirror: str,
           security_mirror: str | None = None) -> str:
    return text(lines(distribution, suite, mirror, security_mirror))


def write(root: Path, distribution: Distribution, suite: str,
          security_mirror: str | None = None) -> bool:
    """Rewrite the VM's sources.list; False when debootstrap left none to start from."""
    mirror = mirror_used(root)
    if mirror is None:
        return False
    (root / SOURCES_LIST).write_text(render(distribution, suite, mirror, security_mirror))
    return True
