"""A local Debian archive for the tests: a directory of .debs, signed, served on 127.0.0.1.

Built from the package cache's .debs (dpkg-scanpackages), its Release files
signed (InRelease) with a throw-away key made for it (gpg), served over HTTP so
that apt inside the build's chroot reaches it as the bootstrap does (a file:
URL names a path the chroot does not have). It records every path it served,
and new packages can be published into a pocket while it runs: the archive
moving on.
"""

from __future__ import annotations

import email.utils
import functools
import hashlib
import os
import subprocess
import urllib.parse
from http.server import SimpleHTTPRequestHandler
from pathlib import Path

from proxy import LocalServer

ARCH = "amd64"
COMPONENT = "main"


class LocalArchive(LocalServer):
    """Debian's layout: ROOT/debian holds SUITE and SUITE-updates, ROOT/debian-security
    holds SUITE-security (the security archive lives beside the mirror)."""

    def __init__(self, root: Path, suite: str) -> None:
        self.root = root
        self.suite = suite
        self.served: list[str] = []
        self.gnupg = root / "gnupg"
        self.keyring = root / "archive-keyring.gpg"
        self._make_key()
        for archive, pocket in self.pockets:
            (root / archive / "pool" / pocket).mkdir(parents=True, exist_ok=True)
            self.publish(pocket)
        handler = functools.partial(_Handler, directory=str(root / "www"))
        (root / "www").mkdir(exist_ok=True)
        for archive in ("debian", "debian-security"):
            link = root / "www" / archive
            if not link.exists():
                link.symlink_to(root / archive)
        super().__init__(handler)

    @property
    def pockets(self) -> list[tuple[str, str]]:
        return [("debian", self.suite), ("debian", f"{self.suite}-updates"),
                ("debian-security", f"{self.suite}-security")]

    @property
    def mirror(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/debian"

    def _gpg(self, *args: str, **kwargs) -> subprocess.CompletedProcess:
        return subprocess.run(["gpg", "--batch", "--quiet", "--homedir", str(self.gnupg),
                               *args], check=True, capture_output=True, **kwargs)

    def _make_key(self) -> None:
        self.gnupg.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._gpg("--passphrase", "", "--quick-gen-key", "hctest archive <hctest@invalid>",
                  "ed25519", "sign", "never")
        self.keyring.write_bytes(self._gpg("--export").stdout)

    def archive_of(self, pocket: str) -> Path:
        return self.root / next(a for a, p in self.pockets if p == pocket)

    def add(self, pocket: str, debs: list[Path]) -> None:
        """Put DEBS into POCKET's pool (hard links where they can be) and publish it."""
        pool = self.archive_of(pocket) / "pool" / pocket
        for deb in debs:
            target = pool / deb.name
            if target.exists():
                continue
            try:
                os.link(deb, target)
            except OSError:
                target.write_bytes(deb.read_bytes())
        self.publish(pocket)

    def publish(self, pocket: str) -> None:
        """Write POCKET's Packages and its signed Release files."""
        archive = self.archive_of(pocket)
        dist = archive / "dists" / pocket
        binary = dist / COMPONENT / f"binary-{ARCH}"
        binary.mkdir(parents=True, exist_ok=True)
        packages = subprocess.run(["dpkg-scanpackages", "--multiversion", f"pool/{pocket}",
                                   "/dev/null"], cwd=archive, check=True,
                                  capture_output=True).stdout
        (binary / "Packages").write_bytes(packages)
        index = f"{COMPONENT}/binary-{ARCH}/Packages"
        release = "".join([
            "Origin: Debian\n", "Label: hctest\n", f"Suite: {pocket}\n",
            f"Codename: {pocket}\n", f"Date: {email.utils.formatdate(usegmt=True)}\n",
            f"Architectures: {ARCH}\n", f"Components: {COMPONENT}\n", "SHA256:\n",
            f" {hashlib.sha256(packages).hexdigest()} {len(packages)} {index}\n",
        ])
        (dist / "Release").write_text(release)
        signed = self._gpg("--clearsign", "--output", "-", input=release.encode()).stdout
        tmp = dist / "InRelease.tmp"
        tmp.write_bytes(signed)
        tmp.rename(dist / "InRelease")

    def record(self, path: str) -> None:
        with self._lock:
            self.served.append(path)


class _Handler(SimpleHTTPRequestHandler):
    server: LocalArchive

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        self.server.record(urllib.parse.unquote(self.path))
        super().do_GET()


def newer_version(deb: Path, suffix: str, out_dir: Path) -> Path:
    """DEB rebuilt with SUFFIX appended to its version: what an archive publishes next."""
    unpacked = out_dir / f"{deb.name}.d"
    subprocess.run(["dpkg-deb", "--raw-extract", deb, unpacked], check=True)
    control = unpacked / "DEBIAN" / "control"
    lines = control.read_text().splitlines()
    version = next(line.split(": ", 1)[1] for line in lines if line.startswith("Version: "))
    control.write_text("\n".join(f"Version: {version}{suffix}" if line.startswith("Version: ")
                                 else line for line in lines) + "\n")
    package = next(line.split(": ", 1)[1] for line in lines if line.startswith("Package: "))
    arch = next(line.split(": ", 1)[1] for line in lines if line.startswith("Architecture: "))
    target = out_dir / f"{package}_{version}{suffix}_{arch}.deb".replace(":", "%3a")
    subprocess.run(["dpkg-deb", "--build", "--root-owner-group", unpacked, target], check=True,
                   capture_output=True)
    return target
