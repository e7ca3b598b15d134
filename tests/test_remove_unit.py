"""remove's pieces that need no libvirtd: the logical volume's argv (LVM cannot run here:
no device-mapper, so lvremove's answer is faked), what it removes of the files it finds,
and its answers to a domain (a stand-in for libvirt-python's) that changes under it."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import uuid as uuidlib
from pathlib import Path

import libvirt
import pytest
from conftest import NOWHERE, unique_name
from typer.testing import CliRunner

from hostcreator import config
from hostcreator import run as run_module
from hostcreator.disk import storage
from hostcreator.domain import virt
from hostcreator.errors import DiskInUse, DomainExists, HostCreatorError, Interrupted
from hostcreator.host import mounts
from hostcreator.paths import VmPaths
from hostcreator.vm import remove

pytestmark = pytest.mark.unit


def empty_file(tmp_path: Path) -> Path:
    """A configuration file that sets nothing."""
    path = tmp_path / "empty.conf"
    path.touch()
    return path


def load(tmp_path: Path) -> config.Config:
    """A configuration whose every directory is below TMP_PATH, libvirt nowhere."""
    return config.load(empty_file(tmp_path), {
        "IMAGE_DIR": f"{tmp_path}/images", "LOG_DIR": f"{tmp_path}/log",
        "JOURNAL_DIR": f"{tmp_path}/j", "STATE_DIR": f"{tmp_path}/st",
        "MOUNT_DIR": f"{tmp_path}/mnt", "SECRETS_DIR": f"{tmp_path}/sec",
        "CACHE_DIR": f"{tmp_path}/cache", "HOOK_DIR": f"{tmp_path}/hooks",
        "LIBVIRT_URI": NOWHERE}, environ={})


def libvirt_error(code: int) -> libvirt.libvirtError:
    exc = libvirt.libvirtError("faked")
    exc.err = (code, 0, "faked", 2, None, None, None, 0, 0)
    return exc


class Dom:
    """A domain as libvirt-python shows it; ACTIVE may change as a real one's would."""

    def __init__(self, name: str, *, active: bool = False, made_here: bool = True,
                 disk: Path | None = None, known: int | None = None) -> None:
        self._name, self.active, self.made_here, self.disk = name, active, made_here, disk
        self.uuid = str(uuidlib.uuid4())
        self.known = known  # the undefine flags this libvirt knows (None: all)
        self.calls: list[str] = []

    def name(self) -> str:
        return self._name

    def UUIDString(self) -> str:
        return self.uuid

    def isActive(self) -> int:
        return int(self.active)

    def isPersistent(self) -> int:
        return 1

    def XMLDesc(self, _flags: int = 0) -> str:
        description = virt.MADE_BY if self.made_here else "by hand"
        disk = (f"<disk type='file' device='disk'><source file='{self.disk}'/></disk>"
                if self.disk else "")
        return (f"<domain><name>{self._name}</name><description>{description}</description>"
                f"<devices>{disk}</devices></domain>")

    def shutdown(self) -> None:
        self.calls.append("shutdown")

    def destroy(self) -> None:
        self.calls.append("destroy")
        self.active = False

    def undefineFlags(self, flags: int) -> None:
        if self.known is not None and flags & ~self.known:
            raise libvirt_error(libvirt.VIR_ERR_INVALID_ARG)
        self.calls.append(f"undefine {flags}")


class Conn:
    def __init__(self, *doms: Dom) -> None:
        self.doms = list(doms)

    def listAllDomains(self, _flags: int = 0) -> list[Dom]:
        return self.doms

    def lookupByName(self, name: str) -> Dom:
        for dom in self.doms:
            if dom.name() == name:
                return dom
        raise libvirt_error(libvirt.VIR_ERR_NO_DOMAIN)


def test_a_logical_volume_is_removed_with_lvremove(monkeypatch):
    seen = []

    def lvremove(argv, **_kwargs):
        seen.append(list(argv))
        return run_module.Result(list(argv), 0, "", [])

    monkeypatch.setattr(storage, "run", lvremove)
    storage.LvmStorage("vg0", "web1-disk01").delete()
    assert seen == [["lvremove", "--yes", "vg0/web1-disk01"]]


def make_vm_files(cfg: config.Config, name: str) -> VmPaths:
    """Every file and directory hostcreator keeps for NAME, and NAME's disk."""
    vm = VmPaths.of(cfg, name)
    for path in (vm.journal, vm.log, vm.serial_log, vm.console_log, vm.qemu_log,
                 vm.root_password, vm.image):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("x\n")
    vm.build_root.mkdir(parents=True)
    vm.mountpoint.mkdir(parents=True)
    return vm


def tree(top: Path) -> list[str]:
    return sorted(str(p.relative_to(top)) for p in top.rglob("*"))


def test_what_remove_removes_of_the_files_it_finds(tmp_path):
    cfg = load(tmp_path)
    name = unique_name()
    vm = make_vm_files(cfg, name)
    other = make_vm_files(cfg, unique_name())  # another VM's: untouched
    (vm.mountpoint / "note").write_text("not ours\n")  # a mount point with files stays
    before = tree(tmp_path)
    found = remove.local_files(cfg, name, remove.Plan(name))
    done = remove.carry_out(found, stop=False, stop_seconds=0)
    gone = {str(p.relative_to(tmp_path)) for p in (
        vm.journal, vm.log, vm.serial_log, vm.console_log, vm.qemu_log, vm.root_password,
        vm.secrets, vm.build_root)}
    assert tree(tmp_path) == [p for p in before if p not in gone]
    assert str(vm.mountpoint) not in done and str(vm.secrets) in done
    assert vm.image.exists() and other.root_password.exists()


def test_the_undefine_flags_an_old_libvirt_lacks_are_dropped_newest_first():
    # libvirt 8.0 (Ubuntu 22.04) knows every flag but TPM's (8.9).
    tpm = libvirt.VIR_DOMAIN_UNDEFINE_TPM
    dom = Dom(unique_name(), known=sum(remove.UNDEFINE_FLAGS) & ~tpm)
    remove.undefine(dom)
    assert dom.calls == [f"undefine {sum(remove.UNDEFINE_FLAGS) & ~tpm}"]
    assert libvirt.VIR_DOMAIN_UNDEFINE_NVRAM & sum(remove.UNDEFINE_FLAGS) & ~tpm


def test_a_domain_that_stops_as_it_is_destroyed_is_no_error():
    class Stopping(Dom):
        def destroy(self) -> None:
            self.active = False  # it stopped by itself just before
            raise libvirt_error(libvirt.VIR_ERR_OPERATION_INVALID)

    remove.stop_domain(Stopping(unique_name(), active=True), 0)

    class Stuck(Dom):
        def destroy(self) -> None:
            raise libvirt_error(libvirt.VIR_ERR_INTERNAL_ERROR)

    with pytest.raises(HostCreatorError, match="cannot stop"):
        remove.stop_domain(Stuck(unique_name(), active=True), 0)


def running_vm(tmp_path: Path) -> tuple[VmPaths, Dom, remove.Plan]:
    """A VM with all its files, its domain running, and what remove found of it."""
    cfg = load(tmp_path)
    name = unique_name()
    vm = make_vm_files(cfg, name)
    dom = Dom(name, active=True)
    return vm, dom, remove.local_files(cfg, name, remove.Plan(name, domain=dom))


def test_a_domain_started_since_it_was_asked_is_not_stopped_without_stop(tmp_path):
    vm, dom, found = running_vm(tmp_path)
    name = vm.name
    with pytest.raises(DiskInUse, match=f"{name} is running"):
        remove.carry_out(found, stop=False, stop_seconds=0)
    assert dom.calls == [] and vm.journal.exists()


def test_once_stopped_the_disk_is_asked_again_before_anything_goes(tmp_path):
    vm, dom, found = running_vm(tmp_path)

    def taken() -> None:
        raise DiskInUse("the disk is open in process(es) 7 (qemu)")

    with pytest.raises(DiskInUse, match="open in process"):
        remove.carry_out(found, stop=True, stop_seconds=0, recheck=taken)
    assert dom.calls == ["shutdown", "destroy"] and vm.journal.exists()


def test_secrets_that_cannot_be_removed_are_an_error(tmp_path, monkeypatch):
    cfg = load(tmp_path)
    name = unique_name()
    vm = make_vm_files(cfg, name)
    found = remove.local_files(cfg, name, remove.Plan(name))

    def refuse(path, onerror):  # as rmtree does where a file cannot be deleted
        onerror(Path.unlink, str(vm.root_password), (PermissionError,
                PermissionError(1, "Operation not permitted"), None))

    monkeypatch.setattr(remove.shutil, "rmtree", refuse)
    with pytest.raises(HostCreatorError, match=f"{name} is removed, but for its secrets: "
                       f"{vm.secrets} .{vm.root_password}: Operation not permitted"):
        remove.carry_out(found, stop=False, stop_seconds=0)
    assert not vm.journal.exists()


def test_a_domain_made_by_hand_that_has_only_the_name_is_not_removed(tmp_path):
    cfg = load(tmp_path)
    name = unique_name()
    vm = make_vm_files(cfg, name)
    hand_made = Dom(name, made_here=False, disk=tmp_path / "elsewhere.img")
    with pytest.raises(DomainExists, match=f"the domain {name} was not made by hostcreator"):
        remove.plan(cfg, Conn(hand_made), name, disk=False, stop=False)
    # Made by hand on NAME's disk, or made by create-kvm: NAME's.
    for dom in (Dom(name, made_here=False, disk=vm.image), Dom(name)):
        assert remove.plan(cfg, Conn(dom), name, disk=False, stop=False).domain is dom


def holding(path: Path, *argv: str) -> subprocess.Popen[bytes]:
    """A process with PATH open, its argv ARGV (as libvirt's QEMU has `-uuid UUID`)."""
    code = "import sys, time; f = open(sys.argv[1]); print(flush=True); time.sleep(60)"
    proc = subprocess.Popen([sys.executable, "-c", code, str(path), *argv],
                            stdout=subprocess.PIPE)
    assert proc.stdout is not None and proc.stdout.readline()
    return proc


def test_only_the_qemu_of_names_running_domain_may_have_the_disk_open(tmp_path):
    cfg = load(tmp_path)
    name = unique_name()
    vm = make_vm_files(cfg, name)
    dom = Dom(name, active=True, disk=vm.image)
    the_disk = storage.for_vm(cfg, name)
    with contextlib.ExitStack() as stack:
        qemu = holding(vm.image, "-uuid", dom.uuid)
        stack.callback(qemu.kill)
        assert mounts.runs_domain(qemu.pid, dom.uuid)
        assert not mounts.runs_domain(qemu.pid, str(uuidlib.uuid4()))
        remove.check_disk(cfg, Conn(dom), name, the_disk, dom)
        other = holding(vm.image, "-uuid", str(uuidlib.uuid4()))
        stack.callback(other.kill)
        with pytest.raises(DiskInUse, match=f"open in process.es. {other.pid} "):
            remove.check_disk(cfg, Conn(dom), name, the_disk, dom)


def test_what_changed_while_remove_asked_is_not_removed(tmp_path, monkeypatch):
    cfg = load(tmp_path)
    name = unique_name()
    vm = make_vm_files(cfg, name)
    conn = Conn()
    asked = []

    @contextlib.contextmanager
    def connect(_uri):
        yield conn

    def confirm(what: list[str]) -> bool:
        asked.append(what)
        conn.doms.append(Dom(name))  # defined while the user read the question
        return True

    monkeypatch.setattr(remove.virt, "connect", connect)
    with pytest.raises(HostCreatorError, match=f"{name} changed while remove asked"):
        remove.remove(cfg, name, confirm=confirm)
    assert asked and not any("the domain" in w for w in asked[0]) and vm.journal.exists()
    assert conn.doms[0].calls == []


def test_an_interrupted_remove_does_not_claim_all_was_undone(tmp_path, monkeypatch):
    from hostcreator.cli import app

    def interrupted(*_args, **_kwargs):
        raise Interrupted(signal.SIGINT)

    monkeypatch.setattr(remove, "remove", interrupted)
    name = unique_name()
    handlers = [signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)]
    result = CliRunner().invoke(app, ["remove", name, "--yes", "-c", str(empty_file(tmp_path))])
    assert result.exit_code == 128 + signal.SIGINT
    # The command's handlers were for its own run: the caller's are back (a Ctrl-C in a
    # later test of this process is a KeyboardInterrupt again, not Interrupted).
    assert [signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)] == handlers
    assert "everything it set up was undone" not in result.output
    assert f"what is left of {name} is removed by `hostcreator remove {name}` again" \
        in result.output

