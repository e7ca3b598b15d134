"""The Debian package: `dpkg-buildpackage -us -uc -b` builds hostcreator_<version>_all.deb
from a copy of the checkout, lintian finds no error in it, and `apt-get install ./...deb`
in a fresh Debian 13 root (mmdebstrap, minbase) gives working commands, man pages,
completion and the conffile."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import CACHE_DIR

from hostcreator import __version__, distro
from hostcreator.build import bootstrap
from hostcreator.host import mounts
from hostcreator.run import SYSTEM_PATH

ROOT = Path(__file__).parent.parent
SUITE = "trixie"  # the package targets Debian 13; Debian 12's python3-typer is too old
DEB = f"hostcreator_{__version__}_all.deb"
# The host's tools, not a virtual environment's or pyenv's python: pybuild builds with
# the system's python3 and its modules.
ENV = {"PATH": SYSTEM_PATH, "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "HOME": "/root",
       "DEBIAN_FRONTEND": "noninteractive"}
# What a checkout holds besides its source: everywhere, and at its top only.
NOT_SOURCE = shutil.ignore_patterns(".git", ".venv", "*.egg-info", "__pycache__", ".*_cache")
NOT_SOURCE_AT_TOP = {"build", "dist", ".pybuild"}


def not_source(directory: str, names: list[str]) -> set[str]:
    top = NOT_SOURCE_AT_TOP & set(names) if Path(directory) == ROOT else set()
    return set(NOT_SOURCE(directory, names)) | top


def run(*argv: str | Path, **kwargs) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([str(a) for a in argv], capture_output=True, text=True,
                            stdin=subprocess.DEVNULL, env={**ENV, **kwargs.pop("env", {})},
                            **kwargs)
    assert result.returncode == 0, f"{argv}:\n{result.stdout}\n{result.stderr}"
    return result


@pytest.fixture(scope="module")
def deb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("deb")
    shutil.copytree(ROOT, out / "src", symlinks=True, ignore=not_source)
    run("dpkg-buildpackage", "-us", "-uc", "-b", cwd=out / "src")
    assert (out / DEB).is_file(), sorted(p.name for p in out.iterdir())
    return out / DEB


@pytest.mark.unit
def test_the_changelog_names_the_version_of_the_code():
    head = (ROOT / "debian" / "changelog").read_text().splitlines()[0]
    assert re.match(rf"hostcreator \({re.escape(__version__)}\) ", head), head


@pytest.mark.package
def test_lintian_finds_no_error(deb: Path):
    result = subprocess.run(["lintian", "--fail-on", "error", str(deb)], capture_output=True,
                            text=True, env=ENV)
    errors = [line for line in result.stdout.splitlines() if line.startswith("E:")]
    assert result.returncode == 0 and not errors, result.stdout + result.stderr


@pytest.mark.package
def test_package_holds_the_pages_completions_conffile_and_examples(deb: Path):
    listing = run("dpkg-deb", "--contents", deb).stdout
    files = {line.split()[-1].removeprefix(".") for line in listing.splitlines()}
    for program in ("hostcreator", "create-debian", "create-ubuntu", "create-kvm", "mount-vm",
                    "umount-vm"):
        assert f"/usr/bin/{program}" in files
        assert f"/usr/share/man/man1/{program}.1.gz" in files
        assert f"/usr/share/bash-completion/completions/{program}" in files
        assert f"/usr/share/zsh/vendor-completions/_{program}" in files
    site = "/usr/lib/python3/dist-packages"
    modules = {f"{site}/{p.relative_to(ROOT)}" for p in (ROOT / "hostcreator").rglob("*.py")}
    assert not modules - files, "modules missing from the package"
    # What the commands read at run time: the domain templates and the shipped trees.
    shipped = f"{site}/hostcreator/shipped"
    data = {f"{site}/{p.relative_to(ROOT)}" for p in (ROOT / "hostcreator").rglob("*.j2")}
    data |= {f"{shipped}/{p.relative_to(ROOT)}" for top in ("skel", "hooks", "etc")
             for p in (ROOT / top).rglob("*") if p.is_file()}
    assert not data - files, "package data missing from the package"
    assert f"{shipped}/skel/etc/systemd/system.conf.d/hostcreator.conf" in files
    assert f"{shipped}/skel/root/bin/grub.sh" in files
    for example in ("hostcreator", "postunpack.sh", "postconfig.sh"):
        assert f"/usr/share/doc/hostcreator/examples/{example}" in files
    conffiles = subprocess.run(["dpkg-deb", "--ctrl-tarfile", str(deb)], capture_output=True,
                               check=True)
    listed = subprocess.run(["tar", "-xO", "./conffiles"], input=conffiles.stdout,
                            capture_output=True, check=True).stdout.decode()
    assert listed.split() == ["/etc/default/hostcreator"]
    depends = run("dpkg-deb", "--field", deb, "Depends").stdout
    for module in ("python3-parted", "python3-pyudev", "python3-jinja2", "python3-typer",
                   "python3-libvirt", "debootstrap", "rsync", "e2fsprogs"):
        assert module in depends


@pytest.fixture(scope="module")
def trixie(deb: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh Debian 13 root (minbase) with the package installed by apt; the packages
    come from and go to the shared package cache."""
    target = tmp_path_factory.mktemp("trixie") / "root"
    debs = CACHE_DIR / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    copy_in, copy_out = bootstrap.deb_cache_hooks(debs)
    debian = distro.get("debian")
    mirror = bootstrap.default_mirror(debian.suite_script(SUITE), SUITE)
    run("mmdebstrap", "--mode=root", "--variant=minbase", "--format=directory",
        "--skip=cleanup/apt/lists", "--skip=essential/unlink", f"--setup-hook={copy_in}",
        f"--customize-hook={copy_out}", SUITE, target, mirror)
    shutil.copy(deb, target / "tmp" / deb.name)
    shutil.copyfile("/etc/resolv.conf", target / "etc" / "resolv.conf")
    run("sh", "-c", copy_in, "sh", target)
    in_chroot(target, "apt-get", "install", "-y", "-q", "--no-install-recommends",
              f"/tmp/{deb.name}", "man-db")
    run("sh", "-c", copy_out, "sh", target)
    yield target
    assert not mounts.mounts_below(target)
    shutil.rmtree(target)


def in_chroot(root: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    """ARGV run in ROOT with /proc, /sys and /dev mounted: in a mount namespace of its
    own, so that the kernel undoes the mounts when it ends, however it ends."""
    script = ('mount -t proc proc "$0/proc" && mount -t sysfs sys "$0/sys" && '
              'mount --bind /dev "$0/dev" && mount --bind /dev/pts "$0/dev/pts" && '
              'exec chroot "$0" "$@"')
    return run("unshare", "--mount", "--propagation", "private", "sh", "-c", script, root,
               *argv)


@pytest.mark.package
def test_installed_commands_answer(trixie: Path):
    for program in ("create-debian", "create-ubuntu", "create-kvm", "mount-vm", "umount-vm",
                    "hostcreator"):
        assert "Usage:" in in_chroot(trixie, program, "--help").stdout, program
    assert in_chroot(trixie, "create-debian", "--version").stdout.strip() == \
        f"hostcreator {__version__}"


@pytest.mark.package
def test_installed_package_finds_its_shipped_trees(trixie: Path):
    code = "from hostcreator.resources import shipped; print(shipped('skel'))"
    found = in_chroot(trixie, "python3", "-c", code).stdout.strip()
    assert found == "/usr/lib/python3/dist-packages/hostcreator/shipped/skel"
    for script in ("install.sh", "grub.sh"):
        assert (trixie / found.lstrip("/") / "root" / "bin" / script).stat().st_mode & 0o111


@pytest.mark.package
def test_man_finds_the_pages(trixie: Path):
    assert in_chroot(trixie, "man", "-w", "create-debian").stdout.strip() == \
        "/usr/share/man/man1/create-debian.1.gz"
    page = in_chroot(trixie, "man", "-P", "cat", "umount-vm").stdout
    assert "EXIT STATUS" in page and "--config" in page


@pytest.mark.package
def test_bash_completion_works_with_the_systems_typer(trixie: Path):
    script = ("source /usr/share/bash-completion/completions/create-debian; "
              "COMP_WORDS=(create-debian --re); COMP_CWORD=1; "
              '_create_debian_completion create-debian; printf "%s\\n" "${COMPREPLY[@]}"')
    offered = in_chroot(trixie, "bash", "--norc", "-c", script).stdout.split()
    assert offered == ["--refresh-cache", "--resume", "--restart"]


@pytest.mark.package
def test_configuration_is_a_conffile(trixie: Path):
    conffiles = in_chroot(trixie, "dpkg-query", "-W", "-f", "${Conffiles}", "hostcreator")
    assert "/etc/default/hostcreator" in conffiles.stdout
    assert "/etc/default/hostcreator" in in_chroot(trixie, "hostcreator", "config").stdout
