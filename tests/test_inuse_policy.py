"""The in-use policy as a table: which user of a disk each command refuses, and what it allows.

The facts are given as data (each is asked of the real host and libvirt by the root
and libvirt tests: test_disk_in_use.py, test_vmmount*.py, test_domain_libvirt.py,
test_release.py); here only the rule that judges them is under test.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from hostcreator.errors import DiskInUse
from hostcreator.host import inuse
from hostcreator.host.inuse import Allowed, Command, Domain, Mount

pytestmark = pytest.mark.unit

DISK = Path("/nonexistent/hctest-web1-disk01.img")
PID = 1  # described as '1 (init)' or so: whatever runs as 1, it is there
NOTHING = dict(loops=[], mounts=[], holders=[], processes=[], loop_processes=[], domains=[],
               mount_state=None, mounted_at=None, leftovers=[])
USERS = {
    "mount-vm": dict(mounted_at=Path("/mnt/hc/web1")),
    "state file": dict(mount_state=Path("/run/hc/mounts/web1.json"), leftovers=[
        "state file /run/hc/mounts/web1.json"]),
    "mounted here": dict(mounts=[Mount("/dev/loop7", Path("/mnt/x"), None, Path("/dev/loop7"))],
                         loops=[Path("/dev/loop7")]),
    "mounted elsewhere": dict(mounts=[Mount("/dev/loop7", Path("/mnt/x"), PID, Path("/dev/loop7"))],
                              loops=[Path("/dev/loop7")]),
    "loop": dict(loops=[Path("/dev/loop7")]),
    "holder": dict(holders=["dm-0"]),
    "defined domain": dict(domains=[Domain("other", "u-1", False, True)]),
    "running domain": dict(domains=[Domain("other", "u-1", True, True)]),
    "running NAME": dict(domains=[Domain("web1", "u-2", True, False)]),
    "process": dict(processes=[PID]),
}
ALL = ("mount-vm", "state file", "mounted here", "mounted elsewhere", "loop", "holder",
       "defined domain", "running domain", "running NAME", "process")


def users(tmp_path: Path, **facts: object) -> inuse.Users:
    vm = inuse.Vm("web1", tmp_path / "state", tmp_path / "mnt" / "web1", tmp_path / "build")
    found = inuse.users_of(DISK, vm=vm)
    for key, value in {**NOTHING, **facts}.items():
        setattr(found, key, value)  # the cached facts, given instead of asked
    return found


def verdict(tmp_path: Path, user: str, command: Command, allowed: Allowed) -> str | None:
    try:
        inuse.refuse(users(tmp_path, **USERS[user]), command, str(DISK), allowed)
    except DiskInUse as exc:
        return exc.message
    return None


# What clone and export refuse of the disk they copy.
COPIED = {
    "mount-vm": "web1 is mounted at /mnt/hc/web1 (mount-vm)",
    "mounted here": f"{DISK} is mounted: /dev/loop7 at /mnt/x",
    "mounted elsewhere": f"{DISK} is mounted in another mount namespace: /dev/loop7 at",
    "loop": f"{DISK} is in use by /dev/loop7",
    "holder": f"{DISK} is in use by dm-0",
    "running domain": f"{DISK} is the disk of running libvirt domain other (running)",
    "process": f"{DISK} is open in process(es) {PID} (",
}

# (command, what it allows, the users it refuses: user -> a piece of the message)
TABLE = [
    (Command.CREATE, Allowed(), {
        "mount-vm": "web1 is mounted at /mnt/hc/web1 (mount-vm)",
        "mounted here": f"{DISK} is mounted: /dev/loop7 at /mnt/x",
        "mounted elsewhere": f"{DISK} is mounted in another mount namespace: /dev/loop7 at",
        "loop": f"{DISK} is in use by /dev/loop7",
        "holder": f"{DISK} is in use by dm-0",
        "defined domain": f"{DISK} is the disk of libvirt domain other (shut off)",
        "running domain": f"{DISK} is the disk of libvirt domain other (running)",
        "process": f"{DISK} is open in process(es) {PID} (",
    }),
    (Command.CREATE_KVM, Allowed(), {
        "mount-vm": "web1 is mounted at /mnt/hc/web1 (mount-vm)",
        "mounted here": f"{DISK} is in use by /dev/loop7",
        "mounted elsewhere": f"{DISK} is in use by /dev/loop7",
        "loop": f"{DISK} is in use by /dev/loop7",
        "holder": f"{DISK} is in use by dm-0",
        "defined domain": f"{DISK} is the disk of domain other (shut off)",
        "running domain": f"{DISK} is the disk of domain other (running)",
        "process": f"{DISK} is open in process(es) {PID} (",
    }),
    # Before libvirt is asked: a process waits until it is.
    (Command.CREATE_KVM, Allowed(processes=True), {
        "mount-vm": "(mount-vm)", "mounted here": "in use by", "mounted elsewhere": "in use by",
        "loop": "in use by", "holder": "in use by dm-0", "defined domain": "disk of domain",
        "running domain": "disk of domain",
    }),
    # --start: the domain started is not 'another' domain.
    (Command.CREATE_KVM, Allowed(domain="u-1"), {
        "mount-vm": "(mount-vm)", "mounted here": "in use by", "mounted elsewhere": "in use by",
        "loop": "in use by", "holder": "in use by dm-0", "process": "is open in process(es)",
    }),
    (Command.MOUNT_VM, Allowed(), {
        "state file": "web1 is half-mounted or its disk is still attached: state file",
        "mounted here": "web1 is half-mounted or its disk is still attached: loop device",
        "mounted elsewhere": "still attached: loop device /dev/loop7, /dev/loop7 at /mnt/x in",
        "loop": "web1 is half-mounted or its disk is still attached: loop device /dev/loop7",
        "running domain": "web1 is running: libvirt domain other (running)",
        "running NAME": "web1 is running: libvirt domain web1 (running)",
        "process": f"web1 is running: process(es) {PID} (",
    }),
    # --read-only: a running VM is only warned about.
    (Command.MOUNT_VM, Allowed(read_only=True), {
        "state file": "half-mounted", "mounted here": "half-mounted",
        "mounted elsewhere": "half-mounted", "loop": "half-mounted",
    }),
    # Before detaching: its own loop devices, unless someone mounted one here.
    (Command.UMOUNT_VM, Allowed(loops=True), {
        "mounted here": "/dev/loop7 is mounted at /mnt/x, not by hostcreator",
    }),
    (Command.UMOUNT_VM, Allowed(), {
        "mounted here": "/dev/loop7 is mounted at /mnt/x, not by hostcreator",
        "mounted elsewhere": "/dev/loop7 could not be detached: still in use (/dev/loop7 at",
        "loop": "/dev/loop7 could not be detached: still in use",
    }),
    (Command.REMOVE, Allowed(), {
        "mount-vm": "web1 is mounted at /mnt/hc/web1 (mount-vm)",
        "mounted here": f"{DISK} is mounted: /dev/loop7 at /mnt/x",
        "mounted elsewhere": f"{DISK} is mounted in another mount namespace: /dev/loop7 at",
        "loop": f"{DISK} is in use by /dev/loop7",
        "holder": f"{DISK} is in use by dm-0",
        "defined domain": f"{DISK} is the disk of domain other (shut off)",
        "running domain": f"{DISK} is the disk of domain other (running)",
        "process": f"{DISK} is open in process(es) {PID} (",
    }),
    # Before libvirt is asked: no domain is known, the processes are asked later.
    (Command.REMOVE, Allowed(processes=True), {
        "mount-vm": "(mount-vm)", "mounted here": "is mounted:",
        "mounted elsewhere": "in another mount namespace", "loop": "in use by /dev/loop7",
        "holder": "in use by dm-0", "defined domain": "is the disk of domain other",
        "running domain": "is the disk of domain other",
    }),
    # NAME's own domain, running: not another's, and its QEMU (PID) has the disk open.
    (Command.REMOVE, Allowed(domain="u-1", pids=frozenset({PID})), {
        "mount-vm": "(mount-vm)", "mounted here": "is mounted:",
        "mounted elsewhere": "in another mount namespace", "loop": "in use by /dev/loop7",
        "holder": "in use by dm-0",
    }),
    # ... but no other process.
    (Command.REMOVE, Allowed(domain="u-1", pids=frozenset({PID + 1})), {
        "mount-vm": "(mount-vm)", "mounted here": "is mounted:",
        "mounted elsewhere": "in another mount namespace", "loop": "in use by /dev/loop7",
        "holder": "in use by dm-0", "process": f"{DISK} is open in process(es) {PID} (",
    }),
    # clone only reads SOURCE's disk: a shut-off domain with it is the normal case.
    (Command.CLONE, Allowed(), COPIED),
    # ... and export NAME's, for the same reason.
    (Command.EXPORT, Allowed(), COPIED),
    (Command.CLEANUP, Allowed(), {"state file": "web1 is mounted by mount-vm"}),
    (Command.RELEASE, Allowed(hint="h"), {
        "mounted here": f"{DISK} is still attached to /dev/loop7: its file system is held by "
                        "a mount at /mnt/x",
        "mounted elsewhere": f"{DISK} is still attached to /dev/loop7: its file system is held "
                             f"by {PID} (",
        "loop": f"{DISK} is still attached to /dev/loop7",
    }),
]


@pytest.mark.parametrize("command,allowed,refused", TABLE,
                         ids=[f"{c}-{i}" for i, (c, _a, _r) in enumerate(TABLE)])
def test_each_command_refuses_its_users_and_lets_the_rest_pass(tmp_path, command, allowed,
                                                               refused):
    for user in ALL:
        message = verdict(tmp_path, user, command, allowed)
        if user in refused:
            assert message is not None and refused[user] in message, (user, message)
        else:
            assert message is None, (user, message)


def test_mount_vm_read_only_warns_about_the_running_vm(tmp_path, caplog):
    inuse.refuse(users(tmp_path, **USERS["running NAME"]), Command.MOUNT_VM, str(DISK),
                 Allowed(read_only=True))
    assert "warning: web1 is in use (libvirt domain web1 (running)): mounting it read-only" \
        in caplog.text


def test_mount_vm_refuses_files_in_the_mount_point(tmp_path):
    found = users(tmp_path)
    assert found.vm is not None
    found.vm.mountpoint.mkdir(parents=True)
    (found.vm.mountpoint / "note").write_text("mine\n")
    with pytest.raises(DiskInUse, match="is not empty"):
        inuse.refuse(found, Command.MOUNT_VM, str(DISK))
    inuse.refuse(found, Command.CREATE, str(DISK))  # a build does not look there


def test_every_command_has_a_rule():
    assert set(inuse.RULES) == set(Command)
