"""The Python package as a user gets it: `python -m build` gives an sdist and a wheel (built
from the sdist, so the sdist is complete too); the wheel, installed into a fresh virtual
environment outside the checkout, carries everything the commands need, and a VM built
with it (no SKEL_DIR: the skeleton comes from the wheel) boots."""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest
from conftest import DEBIAN_SUITE, _built_vm
from guest import boot_and_report, check_report

ROOT = Path(__file__).parent.parent
SHIPPED = ("skel", "hooks", "etc")


def tree(top: Path) -> dict[str, bool]:
    """The files below TOP (relative, as posix paths) and whether each is executable."""
    return {str(path.relative_to(top)): os.access(path, os.X_OK)
            for path in top.rglob("*") if path.is_file()}


def checkout_files(name: str) -> dict[str, bool]:
    return {f"{name}/{rel}": executable for rel, executable in tree(ROOT / name).items()}


def package_data() -> set[str]:
    """The files of the package beside its modules (the domain templates), as wheel paths;
    rglob does not follow the links in hostcreator/shipped/."""
    package = ROOT / "hostcreator"
    return {f"hostcreator/{p.relative_to(package).as_posix()}" for p in package.rglob("*")
            if p.is_file() and p.suffix not in (".py", ".pyc") and "__pycache__" not in p.parts}


@pytest.fixture(scope="session")
def fresh_venv(dist: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A new virtual environment outside the checkout with only the wheel (and what it
    depends on) installed: no editable install, no system site-packages."""
    venv = tmp_path_factory.mktemp("wheel-venv") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    (wheel,) = dist.glob("hostcreator-*.whl")
    result = subprocess.run([str(venv / "bin" / "pip"), "install", "-q",
                             "--disable-pip-version-check", str(wheel)],
                            capture_output=True, text=True, stdin=subprocess.DEVNULL,
                            cwd=venv)
    assert result.returncode == 0, result.stdout + result.stderr
    return venv


@pytest.mark.package
def test_wheel_carries_the_shipped_trees_with_their_modes(dist: Path):
    (wheel,) = dist.glob("hostcreator-*.whl")
    with zipfile.ZipFile(wheel) as whl:
        shipped = {info.filename.removeprefix("hostcreator/shipped/"):
                   bool((info.external_attr >> 16) & 0o111) for info in whl.infolist()
                   if info.filename.startswith("hostcreator/shipped/")}
        names = whl.namelist()
    expected = {k: v for name in SHIPPED for k, v in checkout_files(name).items()}
    assert shipped == expected
    for script in ("install.sh", "grub.sh"):  # the chroot scripts stay executable
        assert shipped[f"skel/root/bin/{script}"], script
    # The guest's systemd waits 5 min for its devices (the directory's name has a dot:
    # never a package of its own, only the package data's glob takes it).
    assert "skel/etc/systemd/system.conf.d/hostcreator.conf" in shipped
    assert not package_data() - set(names), "package data missing from the wheel"


@pytest.mark.package
def test_sdist_holds_the_trees_at_the_top_and_as_package_data(dist: Path):
    (sdist,) = dist.glob("hostcreator-*.tar.gz")
    with tarfile.open(sdist) as tar:
        members = tar.getmembers()
    top = members[0].name.split("/")[0]
    files = {m.name.removeprefix(f"{top}/"): m for m in members if m.isfile()}
    assert not [m.name for m in members if m.issym() or m.islnk()]
    for name in SHIPPED:
        for rel, executable in checkout_files(name).items():
            for path in (rel, f"hostcreator/shipped/{rel}"):
                assert path in files, path
                assert bool(files[path].mode & 0o111) == executable, path


@pytest.mark.package
def test_fresh_venv_finds_the_shipped_trees_in_its_own_package(fresh_venv: Path):
    python = str(fresh_venv / "bin" / "python")
    code = ("import hostcreator.resources as r; "
            "print(*(r.shipped(n) for n in ('skel', 'hooks', 'etc')), sep='\\n')")
    result = subprocess.run([python, "-c", code], capture_output=True, text=True, check=True,
                            cwd=fresh_venv, env={"PATH": os.environ["PATH"]})
    site = next((fresh_venv / "lib").glob("python3*/site-packages"))
    assert result.stdout.split() == [str(site / "hostcreator" / "shipped" / n) for n in SHIPPED]
    helped = subprocess.run([str(fresh_venv / "bin" / "create-debian"), "--help"],
                            capture_output=True, text=True, cwd=fresh_venv)
    assert helped.returncode == 0 and "NAME" in helped.stdout, helped.stderr


@pytest.mark.package
def test_fresh_venv_has_the_man_pages_and_completions(fresh_venv: Path):
    share = fresh_venv / "share"
    # man finds a virtual environment's pages through PATH (bin/ -> share/man).
    found = subprocess.run(["man", "-w", "create-debian"], capture_output=True, text=True,
                           env={"PATH": f"{fresh_venv / 'bin'}:/usr/bin:/bin"})
    assert found.stdout.strip() == str(share / "man" / "man1" / "create-debian.1"), found
    for program in ("hostcreator", "create-debian", "create-kvm", "mount-vm"):
        assert (share / "bash-completion" / "completions" / program).is_file()
        assert (share / "zsh" / "site-functions" / f"_{program}").is_file()


@pytest.fixture(scope="session")
def wheel_vm(fresh_venv: Path, shared_cache: Path,
             tmp_path_factory: pytest.TempPathFactory):
    """A Debian VM built by the fresh virtual environment's create-debian."""
    program = str(fresh_venv / "bin" / "create-debian")
    yield from _built_vm(tmp_path_factory, "debian", DEBIAN_SUITE, program=program,
                         CACHE_DIR=str(shared_cache))


@pytest.mark.e2e
def test_vm_built_by_the_installed_wheel_boots(wheel_vm):
    log = (wheel_vm.env.log_dir / f"{wheel_vm.name}.log").read_text()
    # The skeleton was copied from the wheel's package data, not from the checkout.
    assert f"{fresh_site(wheel_vm.result)}/hostcreator/shipped/skel/" in log
    assert str(ROOT / "skel") not in log
    report = boot_and_report(wheel_vm.image, wheel_vm.env.log_dir / f"{wheel_vm.name}.report.log")
    check_report(report, wheel_vm.name, DEBIAN_SUITE)


def fresh_site(result: subprocess.CompletedProcess[str]) -> str:
    """The site-packages of the virtual environment whose create-debian made RESULT."""
    program = Path(result.args[0])
    return str(next((program.parent.parent / "lib").glob("python3*/site-packages")))
