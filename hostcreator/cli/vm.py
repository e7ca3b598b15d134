"""Commands on a VM's disk and domain: mount-vm, umount-vm, create-kvm, boot-test, list,
remove."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from hostcreator.cli.common import Common, command, print_table
from hostcreator.config import Config
from hostcreator.errors import InvalidInput
from hostcreator.log import logger
from hostcreator.vm import boottest, clone, export, inventory, kvm, remove
from hostcreator.vm import mount as vmmount

VmName = Annotated[str, typer.Argument(metavar="NAME", help="name of the VM")]
WAIT_DEFAULT = 600


def print_mounted(cfg: Config, found: list[vmmount.Listing] | None = None) -> None:
    found = vmmount.list_mounted(cfg) if found is None else found
    if not found:
        logger.info("no VM is mounted (MOUNT_DIR=%s)", cfg.mount_dir)
        return
    print_table([("NAME", "MODE", "LOOP", "SINCE", "MOUNTPOINT"),
                 *((i.name, i.mode, i.loop, i.since, str(i.mountpoint)) for i in found)])


@command("mount-vm")
def mount_vm(
    common: Common,
    name: Annotated[str | None, typer.Argument(metavar="NAME", help="name of the VM")] = None,
    read_only: Annotated[bool, typer.Option(
        "--read-only", "-r", help="mount read-only without journal replay (allowed while "
        "the VM runs)")] = False,
    list_mounted: Annotated[bool, typer.Option(
        "--list", "-l", help="list the VMs that are mounted")] = False,
) -> None:
    """Mount NAME's disk at MOUNT_DIR/NAME for chroot work; umount-vm NAME undoes it.

    /dev, /dev/pts, /proc and /sys are bound into it. The mount point is printed.
    """
    cfg = common.config()
    if list_mounted:
        print_mounted(cfg)
        return
    if name is None:
        raise InvalidInput("the NAME of a VM is needed (or --list)")
    m = vmmount.mount_vm(cfg, name, read_only)
    how = f"{'read-only' if m.read_only else 'read-write'}, {m.loop}"
    if m.already:
        logger.info("%s is already mounted at %s (%s)", name, m.mountpoint, how)
    else:
        logger.info("%s is mounted at %s (%s)\n  work in it:  chroot %s\n"
                    "  when done:   umount-vm %s", name, m.mountpoint, how, m.mountpoint, name)
    typer.echo(str(m.mountpoint))


@command("umount-vm")
def umount_vm(common: Common, name: VmName) -> None:
    """Undo mount-vm NAME; also clears what an interrupted mount-vm or create left."""
    done = vmmount.umount_vm(common.config(), name)
    if done.nothing:
        logger.info("%s was not mounted; nothing to do", name)
        return
    if done.unmounted:
        logger.info("%s: unmounted %s", name, ", ".join(map(str, done.unmounted)))
    if done.detached:
        logger.info("%s: detached %s", name, ", ".join(done.detached))
    for stale in done.stale:
        logger.info("%s: forgot the stale %s", name, stale)


def optional_wait(args: list[str]) -> list[str]:
    """`--wait` alone means `--wait 600`: typer options cannot have optional values."""
    result: list[str] = []
    for i, arg in enumerate(args):
        if arg == "--":
            return result + args[i:]
        result.append(arg)
        if arg == "--wait" and not (i + 1 < len(args) and args[i + 1].isdigit()):
            result.append(str(WAIT_DEFAULT))
    return result


@command("create-kvm", reports=True,
         undone=lambda a: f"the domain {a['name']} stays as far as it got (virsh list --all)")
def create_kvm(
    common: Common,
    name: Annotated[str, typer.Argument(metavar="NAME",
                                        help="name of the VM whose disk create-debian built")],
    memory: Annotated[int | None, typer.Option("--memory", help="memory in MiB (MEMORY)")]
    = None,
    vcpus: Annotated[int | None, typer.Option("--vcpus", help="virtual CPUs (VCPUS)")] = None,
    virt_type: Annotated[
        str | None, typer.Option("--virt-type", help="auto, kvm or qemu (VIRT_TYPE)")
    ] = None,
    network: Annotated[
        str | None, typer.Option("--network", help="bridge or libvirt network (NETWORK)")
    ] = None,
    network_type: Annotated[
        str | None, typer.Option("--network-type", help="auto, bridge, network or user "
                                 "(NETWORK_TYPE)")
    ] = None,
    uri: Annotated[str | None, typer.Option("--uri", help="libvirt URI (LIBVIRT_URI)")] = None,
    live_iso: Annotated[
        Path | None, typer.Option("--live-iso", help="ISO the first boot starts from (LIVE_ISO)")
    ] = None,
    graphics: Annotated[
        str | None, typer.Option("--graphics", help="vnc, spice or none (GRAPHICS)")
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="print the domain XML; touch nothing")
    ] = False,
    wait: Annotated[
        int | None, typer.Option("--wait", metavar="[SECONDS]", min=1,
                                 help="wait until the guest is up (guest agent or login "
                                 f"prompt), at most SECONDS (default {WAIT_DEFAULT})")
    ] = None,
    start: Annotated[
        bool, typer.Option("--start", help="start the existing, stopped domain NAME")
    ] = False,
) -> None:
    """Define the libvirt domain for NAME's disk and start it; never overwrite a domain."""
    cfg = common.config(MEMORY=memory, VCPUS=vcpus, VIRT_TYPE=virt_type, NETWORK=network,
                        NETWORK_TYPE=network_type, LIBVIRT_URI=uri, LIVE_ISO=live_iso,
                        GRAPHICS=graphics)
    if start:
        if dry_run or live_iso:
            raise InvalidInput("--start does not go with --dry-run or --live-iso",
                               hint="--start starts the domain as it is defined")
        common.emit(kvm.start_existing(cfg, name, wait_seconds=wait).as_json())
    elif dry_run:
        xml = kvm.dry_run(cfg, name)
        common.emit({"domain": name, "dry_run": True, "xml": xml},
                    lambda: typer.echo(xml, nl=False))
    else:
        common.emit(kvm.create(cfg, name, wait_seconds=wait).as_json())


@command("boot-test")
def boot_test(
    common: Common,
    name: Annotated[str, typer.Argument(metavar="NAME", help="name of a VM built by "
                                        "create-debian or create-ubuntu")],
    timeout: Annotated[int, typer.Option(min=1, help="seconds to wait for the login prompt")]
    = 600,
    accel: Annotated[str, typer.Option(help="tcg (software) or kvm")] = "tcg",
) -> None:
    """Boot NAME's disk once under QEMU (a throw-away snapshot) until its login prompt."""
    boottest.boot_test(common.config(), name, timeout=timeout, accel=accel)


def size_text(size: int | None) -> str:
    return "-" if size is None else f"{size / 2**30:.1f}G"


@command("list", reports=True)
def list_vms(common: Common) -> None:
    """List every VM hostcreator knows: distribution, disk, build, domain, addresses, mounts."""
    cfg = common.config()
    vms = inventory.list_vms(cfg)

    def human() -> None:
        if not vms:
            logger.info("no VM is known (IMAGE_DIR=%s, JOURNAL_DIR=%s)", cfg.image_dir,
                        cfg.journal_dir)
            return
        print_table([("NAME", "DISTRIBUTION", "DISK", "SIZE", "USED", "BUILD", "DOMAIN",
                      "MOUNTED", "ADDRESSES"), *(
            (vm.name, " ".join(filter(None, (vm.distribution, vm.suite))) or "-",
             vm.disk.path if vm.disk else "-", size_text(vm.disk.size if vm.disk else None),
             size_text(vm.disk.used if vm.disk else None), vm.build, vm.domain, vm.mounted or "no",
             " ".join(vm.addresses) or "-") for vm in vms)])

    common.emit({"vms": [vm.as_json() for vm in vms]}, human)


@command("remove", reports=True, undone=lambda a: remove.interrupted(a["name"]))
def remove_vm(
    common: Common,
    name: VmName,
    disk: Annotated[bool, typer.Option("--disk", help="delete the disk too (the image file, "
                                       "or the logical volume)")] = False,
    stop: Annotated[bool, typer.Option("--stop", help="shut a running domain down first "
                                       f"(destroyed after {remove.STOP_SECONDS} s)")] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="do not ask")] = False,
) -> None:
    """Remove NAME's domain (with NVRAM and TPM state), journal, logs, secrets and state;
    its disk only with --disk."""
    cfg = common.config()
    if not yes and not sys.stdin.isatty():
        raise InvalidInput(f"remove {name} asks before removing, and there is no terminal to "
                           "ask on", hint="--yes removes without asking")

    def confirm(what: list[str]) -> bool:
        if yes:
            return True
        typer.echo(f"remove {name}:\n" + "".join(f"  {w}\n" for w in what), err=True)
        return typer.confirm("remove all of this?", err=True)

    done = remove.remove(cfg, name, disk=disk, stop=stop, confirm=confirm)

    def human() -> None:
        if not done.removed:
            logger.info("nothing of %s is left to remove", name)
        for what in done.removed:
            logger.info("removed %s", what)
        if done.kept:
            logger.info("kept %s (--disk removes it too)", done.kept)

    common.emit(done.as_json(), human)


@command("clone", reports=True,
         undone="the copy was removed and everything it mounted undone; the source is unchanged")
def clone_vm(
    common: Common,
    source: Annotated[str, typer.Argument(metavar="SOURCE", help="the VM to copy (its build "
                                          "finished; it must not run)")],
    name: Annotated[str, typer.Argument(metavar="NAME", help="name of the new VM")],
) -> None:
    """A new VM NAME from SOURCE's disk, with its own identity: host name, machine-id,
    SSH host keys, file-system UUIDs, login. Then: create-kvm NAME."""
    summary = clone.clone(common.config(), source, name)
    common.emit(summary)
    if not common.json:
        typer.echo(summary["disk"])


@command("export", reports=True,
         undone="the partial output and the sealed copy were removed; NAME's disk is unchanged")
def export_vm(
    common: Common,
    name: VmName,
    fmt: Annotated[str, typer.Option("--format", "-f", metavar="FORMAT",
                                     help="qcow2 (compressed), vmdk (streamOptimized), ova "
                                          "(OVF descriptor, manifest, VMDK) or raw (sparse)")],
    output: Annotated[Path | None, typer.Option("--output", "-o", metavar="PATH",
                                                help="the file to write, or a directory for "
                                                     "NAME.FORMAT (default: NAME.FORMAT here)")
                      ] = None,
    force: Annotated[bool, typer.Option("--force", help="replace PATH if it exists")] = False,
) -> None:
    """NAME as a sealed appliance that other hypervisors import: a copy of its disk without
    NAME's identity (machine-id, SSH host keys, seeds, leases, logs, root's password),
    converted. NAME's disk is never written."""
    summary = export.export(common.config(), name, fmt, output, force)
    common.emit(summary)
    if not common.json:
        typer.echo(summary["path"])
