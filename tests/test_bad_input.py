"""Bad input, one table for every command: each row is refused with its own one-line
message and exit code before anything is touched.

Every row runs the real command with the test configuration (the testenv fixture),
whose directories (IMAGE_DIR, LOG_DIR, STATE_DIR, JOURNAL_DIR, ...) do not exist yet,
and then asserts that the test's directory is exactly as it was (no image directory,
log, lock or state file), and that no loop device and no mount refers to it. libvirt (LIBVIRT_URI)
and the archive (MIRROR) point nowhere, so that a row that got past its check
would fail with another message instead of reaching them.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from conftest import NOWHERE, hand_made_disk, run_cli

from hostcreator import paths
from hostcreator import run as run_module
from hostcreator.disk import storage
from hostcreator.errors import InvalidInput
from hostcreator.host import mounts, places
from hostcreator.state import mountstate

pytestmark = pytest.mark.unit
CREATE_DEBIAN = ("create-debian",)
CREATE_UBUNTU = ("create-ubuntu",)
CREATE_KVM = ("create-kvm",)
MOUNT_VM = ("mount-vm",)
UMOUNT_VM = ("umount-vm",)
BOOT_TEST = ("hostcreator", "boot-test")
REMOVE = ("hostcreator", "remove")
LIST = ("hostcreator", "list")
CLONE = ("hostcreator", "clone")
EXPORT = ("hostcreator", "export")
DOCTOR = ("hostcreator", "doctor")


def row(cmd: tuple[str, ...], args: list[str], message: str, *, code: int = 2,
        hint: str | None = None, conf: str = "", setup: str | None = None,
        id: str) -> pytest.ParameterSet:
    """ARGS of the command CMD, with CONF lines added to the configuration and SETUP
    made beforehand, fail with MESSAGE (and HINT) and exit code CODE; {tmp}, {conf} and
    {line} stand for the test's directory, the configuration file and CONF's line in it
    ({next} for the line after it)."""
    return pytest.param(cmd, args, code, message, hint, conf, setup, id=id)


ROWS = [
    # --- create-debian / create-ubuntu: NAME, DISTR, SIZE, settings, paths ---
    row(CREATE_DEBIAN, ["Bad_Name"], "'Bad_Name' is not a valid host name", id="name-upper"),
    row(CREATE_DEBIAN, ["web_1"], "'web_1' is not a valid host name", id="name-underscore"),
    row(CREATE_DEBIAN, ["--", "-web"], "'-web' is not a valid host name", id="name-dash"),
    row(CREATE_DEBIAN, ["a" * 64], f"'{'a' * 64}' is not a valid host name", id="name-64"),
    row(CREATE_DEBIAN, ["../x"], "'../x' is not a valid host name", id="name-path"),
    row(CREATE_DEBIAN, ["web1", "trixy"], "unknown debian suite 'trixy'", id="suite-typo"),
    row(CREATE_DEBIAN, ["web1", "jammy"], "'jammy' is a suite of Ubuntu, not of Debian",
        id="suite-ubuntu"),
    row(CREATE_UBUNTU, ["web1", "trixie"], "'trixie' is a suite of Debian, not of Ubuntu",
        hint="create-debian NAME trixie", id="suite-debian"),
    row(CREATE_UBUNTU, ["web1", "nobel"], "unknown ubuntu suite 'nobel'",
        hint="known suites: jammy, noble, questing, resolute", id="suite-typo-ub"),
    row(CREATE_DEBIAN, ["web1", "../etc"], "unknown debian suite '../etc'", id="suite-path"),
    row(CREATE_DEBIAN, ["web1", "--size", "2"], "SIZE=2 GiB is too small", id="size-small"),
    row(CREATE_DEBIAN, ["web1", "--set", "SIZE=x"],
        "--set: SIZE: 'x' is not a whole number", id="size-text"),
    row(CREATE_DEBIAN, ["web1", "--size", "0"], "--size: SIZE: 0 is not a positive",
        id="size-zero"),
    row(CREATE_DEBIAN, ["web1"], "image file {tmp}/images/web1-disk01.img has 1.0 GiB, at "
        "least 3.0 GiB are needed", setup="small-disk", id="disk-small"),
    row(CREATE_DEBIAN, ["web1", "--set", "NOPE=1"], "--set: unknown setting NOPE",
        id="setting-unknown"),
    row(CREATE_DEBIAN, ["web1", "--config", "{tmp}/nope"], "config file not found: {tmp}/nope",
        id="config-missing"),
    row(CREATE_DEBIAN, ["web1", "--set", "SIZE"], "--set 'SIZE': expected KEY=VALUE",
        id="set-syntax"),
    row(CREATE_DEBIAN, ["web1"], "{conf}:{line}: expected KEY=VALUE, got 'SIZE 8'",
        conf="SIZE 8", id="file-syntax"),
    row(CREATE_DEBIAN, ["web1", "--set", "INSECURE_NO_SIGNATURE_CHECK=maybe"],
        "INSECURE_NO_SIGNATURE_CHECK: 'maybe' is not yes or no", id="bool"),
    row(CREATE_DEBIAN, ["web1", "--set", "KEYRING={tmp}/none.gpg"],
        "the debian archive keyring {tmp}/none.gpg is missing", id="keyring-debian"),
    row(CREATE_UBUNTU, ["web1", "--set", "KEYRING={tmp}/none.gpg"],
        "the ubuntu archive keyring {tmp}/none.gpg is missing",
        hint="apt-get install ubuntu-keyring, or set KEYRING", id="keyring-ubuntu"),
    row(CREATE_DEBIAN, ["web1", "--set", "ROOT_PASSWORD_FILE={tmp}/none"],
        "ROOT_PASSWORD_FILE: cannot read {tmp}/none: No such file", id="password-file"),
    row(CREATE_DEBIAN, ["web1", "--set", "ROOT_PASSWORD_FILE={tmp}/empty"],
        "ROOT_PASSWORD_FILE: {tmp}/empty is empty", setup="empty", id="password-empty"),
    row(CREATE_DEBIAN, ["web1", "--set", "SSH_AUTHORIZED_KEYS={tmp}/none"],
        "SSH_AUTHORIZED_KEYS: cannot read {tmp}/none", id="keys-file"),
    row(CREATE_DEBIAN, ["web1", "--set", "SSH_AUTHORIZED_KEYS={tmp}/empty"],
        "SSH_AUTHORIZED_KEYS: {tmp}/empty holds no key", setup="empty", id="keys-empty"),
    # --- input files: what they are, bounded, decoded (issue 14) ---
    row(CREATE_DEBIAN, ["web1", "--config", "{tmp}/fifo"],
        "config file: {tmp}/fifo is a FIFO, not a file", setup="fifo", id="config-fifo"),
    row(CREATE_DEBIAN, ["web1", "--config", "/dev/zero"],
        "config file: /dev/zero is a device, not a file", id="config-device"),
    row(CREATE_DEBIAN, ["web1", "--config", "{tmp}/big"],
        "config file: {tmp}/big has 2097152 bytes, more than the 1024 KiB", setup="big",
        id="config-big"),
    row(CREATE_DEBIAN, ["web1"], "{conf}:{line}: a line of 20008 characters, more than 16384",
        conf="NETWORK=" + "x" * 20000, id="config-long-line"),
    row(CREATE_DEBIAN, ["web1"], "config file: {conf}:{next}: not UTF-8 (byte",
        hint="write the file in UTF-8", setup="latin1-conf", id="config-latin1"),
    row(CREATE_DEBIAN, ["web1"], "{conf}:{next}: IMAGE_DIR: the value holds the control "
        "character \\x00", setup="nul-conf", id="config-nul"),
    row(CREATE_DEBIAN, ["web1", "--mirror", "http://h:80a/debian"],
        "--mirror: MIRROR: 'http://h:80a/debian' is not a URL: Port could not be cast",
        id="mirror-port"),
    row(CREATE_DEBIAN, ["web1", "--set", "APT_PROXY=http://me:s3cret@proxy:99999"],
        "--set: APT_PROXY: 'http://me:***@proxy:99999' is not a URL: Port out of range",
        id="proxy-port-masked"),
    row(CREATE_DEBIAN, ["web1", "--set", "ROOT_PASSWORD_FILE={tmp}/fifo"],
        "ROOT_PASSWORD_FILE: {tmp}/fifo is a FIFO, not a file", setup="fifo",
        id="password-fifo"),
    row(CREATE_DEBIAN, ["web1", "--set", "ROOT_PASSWORD_FILE={tmp}/binary"],
        "ROOT_PASSWORD_FILE: {tmp}/binary holds control characters", setup="binary",
        id="password-binary"),
    row(CREATE_DEBIAN, ["web1", "--set", "ROOT_PASSWORD_FILE={tmp}/latin1"],
        "ROOT_PASSWORD_FILE: {tmp}/latin1:1: not UTF-8 (byte 2: 0xfc)", setup="latin1",
        id="password-latin1"),
    row(CREATE_DEBIAN, ["web1", "--set", "ROOT_PASSWORD_FILE={tmp}"],
        "ROOT_PASSWORD_FILE: {tmp} is a directory, not a file", id="password-dir"),
    row(CREATE_DEBIAN, ["web1", "--set", "SSH_AUTHORIZED_KEYS={tmp}/fifo"],
        "SSH_AUTHORIZED_KEYS: {tmp}/fifo is a FIFO, not a file", setup="fifo", id="keys-fifo"),
    row(CREATE_DEBIAN, ["web1", "--set", "SSH_AUTHORIZED_KEYS={tmp}/key"],
        "SSH_AUTHORIZED_KEYS: {tmp}/key holds a private key",
        hint="give the public key: the .pub file, or `ssh-keygen -y -f KEY` prints it",
        setup="private-key", id="keys-private"),
    row(CREATE_DEBIAN, ["web1", "--set", "SSH_AUTHORIZED_KEYS={tmp}/binary"],
        "SSH_AUTHORIZED_KEYS: {tmp}/binary:1: not an SSH public key", setup="binary",
        id="keys-garbage"),
    # --- paths: within the system's limits, named with their key and origin ---
    row(CREATE_DEBIAN, ["web1", "--set", "IMAGE_DIR={tmp}/" + "n" * 256],
        "--set: IMAGE_DIR: the path component '" + "n" * 40 + "...(256 characters)' has 256 "
        "bytes, more than the 255 a file name may have", id="path-name-max"),
    row(CREATE_DEBIAN, ["web1"], "{conf}:{line}: LOG_DIR: the path ", conf="LOG_DIR={tmp}"
        + "/abcdefgh" * 460, id="path-max"),
    row(CREATE_KVM, ["web1", "--live-iso", "x" * 300 + ".iso"],
        "--live-iso: LIVE_ISO: the path component", id="kvm-live-iso-name-max"),
    row(CREATE_DEBIAN, ["web1", "--set", "ROOT_PASSWORD_FILE=" + "\u00e9" * 130],
        "ROOT_PASSWORD_FILE: the path component '" + "\u00e9" * 40 + "...(130 characters)' "
        "has 260 bytes", id="path-name-max-utf8"),
    row(CREATE_DEBIAN, ["web1", "--storage", "lvm"], "--storage: STORAGE=lvm needs VG_NAME",
        id="lvm-no-vg"),
    row(CREATE_DEBIAN, ["web1", "--vg", "vg/../x"],
        "VG_NAME: 'vg/../x' is not a volume group name", id="vg-name"),
    row(CREATE_DEBIAN, ["web1", "--vg", "vg0", "--set", "THIN_POOL=a/b"],
        "THIN_POOL: 'a/b' is not a logical volume name", id="thin-pool-name"),
    row(CREATE_DEBIAN, ["web1"], "{conf}:{line}: TIMEZONE: unknown time zone 'Mars/Base'",
        conf="TIMEZONE=Mars/Base", id="timezone"),
    row(CREATE_DEBIAN, ["web1", "--set", "TIMEZONE=../../etc/passwd"],
        "TIMEZONE: unknown time zone '../../etc/passwd'", id="timezone-path"),
    row(CREATE_DEBIAN, ["web1", "--set", "LOCALE=en_XX.UTF-9"],
        "--set: LOCALE: unknown locale 'en_XX.UTF-9'", id="locale"),
    row(CREATE_DEBIAN, ["web1", "--mirror", "notaurl"],
        "--mirror: MIRROR: 'notaurl' is not a URL", id="mirror"),
    row(CREATE_DEBIAN, ["web1", "--set", "SECURITY_MIRROR=http:/x"],
        "SECURITY_MIRROR: 'http:/x' is not a URL", id="security-mirror"),
    row(CREATE_DEBIAN, ["web1", "--set", "APT_PROXY=proxy:3128"],
        "APT_PROXY: 'proxy:3128' is not a URL (http: https:)", id="apt-proxy"),
    row(CREATE_DEBIAN, ["web1", "--set", "VARIANT=tiny"],
        "VARIANT: 'tiny' is not one of minbase | buildd | fakechroot", id="variant"),
    row(CREATE_DEBIAN, ["web1", "--set", "PACKAGES=vim;reboot"],
        "PACKAGES: 'vim;reboot' is not a package name", id="packages"),
    row(CREATE_DEBIAN, ["web1", "--set", "BOOTSTRAP=cdebootstrap"],
        "BOOTSTRAP: 'cdebootstrap' is not one of auto | debootstrap | mmdebstrap",
        id="bootstrap-tool"),
    row(CREATE_DEBIAN, ["web1", "--set", "HOOK_DIR={tmp}/file"],
        "--set: HOOK_DIR: {tmp}/file is not a directory", setup="file", id="hook-dir"),
    row(CREATE_DEBIAN, ["web1"], "HOOK_DIR: {tmp}/hooks/postconfig.d/10-site is a directory, "
        "not a hook script", hint="only files go into {tmp}/hooks/postconfig.d",
        setup="hook-subdir", id="hook-d-entry-dir"),
    row(CREATE_UBUNTU, ["web1"], "HOOK_DIR: {tmp}/hooks/postunpack.d is not a directory",
        setup="hook-d-file", id="hook-d-file"),
    row(CREATE_DEBIAN, ["web1", "--set", "SKEL_DIR={tmp}/none"],
        "SKEL_DIR: {tmp}/none is not a directory", id="skel-dir"),
    row(CREATE_DEBIAN, ["web1", "--image-dir", "{tmp}/file"],
        "--image-dir: IMAGE_DIR: {tmp}/file is not a directory", setup="file", id="image-dir"),
    row(CREATE_DEBIAN, ["web1", "--set", "LOG_DIR={tmp}/file/log"],
        "LOG_DIR: {tmp}/file is not a directory", setup="file", id="log-dir"),
    row(CREATE_DEBIAN, ["web1"], "{conf}:{line}: STATE_DIR: {tmp}/file is not a directory",
        conf="STATE_DIR={tmp}/file", setup="file", id="state-dir"),
    row(CREATE_DEBIAN, ["web1", "--set", "CACHE_DIR={tmp}/file"],
        "CACHE_DIR: {tmp}/file is not a directory", setup="file", id="cache-dir"),
    row(CREATE_DEBIAN, ["web1", "--no-cache", "--refresh-cache"],
        "--no-cache and --refresh-cache exclude each other", id="cache-flags"),
    row(CREATE_DEBIAN, ["web1", "--ip", "10.0.2.300/24"],
        "--ip: IP_ADDRESS: '10.0.2.300' is not an IP address", id="ip-not-address"),
    row(CREATE_DEBIAN, ["web1", "--ip", "10.0.2.15"],
        "IP_ADDRESS: '10.0.2.15' has no prefix length (CIDR)", id="ip-no-prefix"),
    row(CREATE_UBUNTU, ["web1", "--ip", "10.0.2.15/33"],
        "IP_ADDRESS: prefix /33 of '10.0.2.15/33' is out of range (1-32)", id="ip-prefix"),
    row(CREATE_DEBIAN, ["web1", "--ip", "10.0.2.15/24", "--gateway", "10.0.3.1"],
        "GATEWAY=10.0.3.1 is outside the subnet 10.0.2.0/24 of IP_ADDRESS=10.0.2.15/24",
        id="gateway-outside"),
    row(CREATE_DEBIAN, ["web1", "--gateway", "10.0.2.2"], "GATEWAY=10.0.2.2 needs IP_ADDRESS",
        id="gateway-no-ip"),
    row(CREATE_DEBIAN, ["web1", "--ip", "10.0.2.15/24"],
        "IP_ADDRESS=10.0.2.15/24 and DHCP=yes exclude each other", conf="DHCP=yes",
        id="ip-and-dhcp"),
    row(CREATE_DEBIAN, ["web1", "--dns", "10.0.2.3,ns1"], "DNS: 'ns1' is not an IP address",
        id="dns"),
    row(CREATE_DEBIAN, ["web1", "--set", "RANDOM_ROOT_PASSWORD=sometimes"],
        "RANDOM_ROOT_PASSWORD: 'sometimes' is not yes or no", id="random-password"),
    row(CREATE_DEBIAN, ["web1", "--set", "SECRETS_DIR={tmp}/file"],
        "SECRETS_DIR: {tmp}/file is not a directory", setup="file", id="secrets-dir"),
    row(CREATE_DEBIAN, ["Bad_Name", "--dry-run"], "'Bad_Name' is not a valid host name",
        id="dry-run-name"),
    row(CREATE_UBUNTU, ["web1", "--dry-run", "--ip", "10.0.2.15/24", "--gateway", "10.0.2.15"],
        "GATEWAY=10.0.2.15 is the VM's own address", id="dry-run-gateway"),
    row(CREATE_DEBIAN, ["web1", "--dry-run"], "HOOK_DIR: {tmp}/hooks/postconfig.d/10-site is "
        "a directory", setup="hook-subdir", id="dry-run-hook-d-entry-dir"),
    # --- where a command writes: can be made and written, before anything is ---
    row(CREATE_DEBIAN, ["web1", "--set", "STATE_DIR=/proc/nope"], "--set: STATE_DIR: /proc/nope "
        "cannot be made: nothing can be made in /proc (Operation not supported)",
        hint="set it to a directory on a writable file system", id="state-dir-proc"),
    row(CREATE_DEBIAN, ["web1", "--set", "JOURNAL_DIR={tmp}/file"],
        "--set: JOURNAL_DIR: {tmp}/file is not a directory", setup="file", id="journal-dir-file"),
    row(CREATE_DEBIAN, ["web1", "--image-dir", "/proc/self"], "--image-dir: IMAGE_DIR: no file "
        "can be written in /proc/self (Operation not permitted)", id="image-dir-proc-self"),
    row(CREATE_DEBIAN, ["web1"], "{conf}:{line}: LOG_DIR: /sys/nope/log cannot be made: nothing "
        "can be made in /sys", conf="LOG_DIR=/sys/nope/log", id="log-dir-sys"),
    row(CREATE_DEBIAN, ["web1", "--set", "CACHE_DIR=/proc/self/cache"],
        "CACHE_DIR: /proc/self/cache cannot be made", id="cache-dir-proc"),
    row(CREATE_DEBIAN, ["web1"], "image file {tmp}/images/web1-disk01.img is a dangling "
        "symbolic link (to {tmp}/gone)", setup="dangling-disk", id="disk-dangling-link"),
    row(CREATE_KVM, ["web1", "--set", "STATE_DIR=/proc/nope"],
        "--set: STATE_DIR: /proc/nope cannot be made", setup="hand-disk", id="kvm-state-dir"),
    row(MOUNT_VM, ["web1", "--set", "MOUNT_DIR=/proc/self/mnt"],
        "--set: MOUNT_DIR: /proc/self/mnt cannot be made", setup="hand-disk", id="mount-dir-proc"),
    # --- SIZE within what the storage holds ---
    row(CREATE_DEBIAN, ["web1", "--set", "SIZE=1000000000000"],
        "--set: SIZE: 1000000000000 GiB are more than any file can have", id="size-beyond-files"),
    # --- build journals that cannot be read: said so, and how to set them aside ---
    row(CREATE_DEBIAN, ["web1"], "the build journal {tmp}/journal/web1.json cannot be read: "
        "Expecting property name", code=6,
        hint="hostcreator cleanup web1 sets it aside (renamed, kept)", setup="broken-journal",
        id="journal-corrupt"),
    row(CREATE_DEBIAN, ["web1", "--resume"], "the build journal {tmp}/journal/web1.json cannot "
        "be read", code=6, setup="broken-journal", id="journal-corrupt-resume"),
    row(CREATE_UBUNTU, ["web1", "--restart"], "the build journal {tmp}/journal/web1.json cannot "
        "be read: 'disk' is no absolute path: '/tmp/p/im\\x00g'", code=6,
        setup="nul-journal", id="journal-nul-path"),
    row(CREATE_KVM, ["web1"], "the build journal {tmp}/journal/web1.json cannot be read: a JSON "
        "list, not an object", code=6, setup="hand-disk+list-journal", id="kvm-journal-list"),
    # --- hostcreator cleanup: a name nothing is known of creates nothing ---
    row(("hostcreator", "cleanup"), ["web1"], "web1 is not known: it has no build journal "
        "({tmp}/journal/web1.json) and no disk (image file {tmp}/images/web1-disk01.img does "
        "not exist)", hint="hostcreator status lists the unfinished builds",
        id="cleanup-unknown-name"),
    row(("hostcreator", "cleanup"), ["Bad_Name"], "'Bad_Name' is not a valid host name",
        id="cleanup-name"),
    # --- create-kvm: libvirt is never asked ---
    row(CREATE_KVM, ["Bad_Name"], "'Bad_Name' is not a valid host name", id="kvm-name"),
    row(CREATE_KVM, ["Bad_Name", "--dry-run"], "'Bad_Name' is not a valid host name",
        id="kvm-name-dry-run"),
    row(CREATE_KVM, ["web1"], "web1 has no disk: image file {tmp}/images/web1-disk01.img "
        "does not exist", hint="build it first: create-debian web1", id="kvm-no-disk"),
    row(CREATE_KVM, ["web1"], "image file {tmp}/images/web1-disk01.img holds no GPT partition "
        "table (it is empty); refused: it has no bootable layout", setup="empty-disk",
        id="kvm-empty-disk"),
    row(CREATE_KVM, ["web1", "--dry-run"], "image file {tmp}/images/web1-disk01.img holds no GPT "
        "partition table (it is empty)", setup="empty-disk", id="kvm-empty-disk-dry-run"),
    row(CREATE_KVM, ["web1"], "image file {tmp}/images/web1-disk01.img has no partition with a "
        "root file system; refused", setup="gpt-disk", id="kvm-gpt-no-root"),
    row(CREATE_KVM, ["web1", "--set", "MEMORY=lots"], "MEMORY: 'lots' is not a whole number",
        id="kvm-memory-text"),
    row(CREATE_KVM, ["web1", "--memory", "64"], "MEMORY: 64 MiB is out of range (256-",
        id="kvm-memory-small"),
    row(CREATE_KVM, ["web1", "--vcpus", "1000"], "VCPUS: 1000 is out of range (1-288)",
        id="kvm-vcpus"),
    row(CREATE_KVM, ["web1", "--virt-type", "xen"],
        "VIRT_TYPE: 'xen' is not one of auto | kvm | qemu", id="kvm-virt-type"),
    row(CREATE_KVM, ["web1", "--graphics", "sdl"],
        "GRAPHICS: 'sdl' is not one of vnc | spice | none", id="kvm-graphics"),
    row(CREATE_KVM, ["web1", "--uri", "system"], "LIBVIRT_URI: 'system' is not a libvirt URI",
        id="kvm-uri"),
    row(CREATE_KVM, ["web1", "--network-type", "bridge", "--network", "hcnobr0"],
        "bridge 'hcnobr0' does not exist on this host",
        hint="create it (ip link add NAME type bridge)", id="kvm-bridge"),
    row(CREATE_KVM, ["web1", "--network-type", "bridge", "--network", "hcnobr0", "--dry-run"],
        "bridge 'hcnobr0' does not exist on this host", id="kvm-bridge-dry-run"),
    row(CREATE_KVM, ["web1", "--network-type", "bridge", "--network", "lo"],
        "'lo' is a network interface, not a bridge", id="kvm-not-bridge"),
    row(CREATE_KVM, ["web1", "--live-iso", "{tmp}/none.iso"],
        "LIVE_ISO: {tmp}/none.iso is not a file", id="kvm-live-iso"),
    row(CREATE_KVM, ["web1", "--start", "--dry-run"], "--start does not go with --dry-run",
        id="kvm-start-dry-run"),
    # --- mount-vm, umount-vm ---
    row(MOUNT_VM, [], "the NAME of a VM is needed (or --list)", id="mount-no-name"),
    row(MOUNT_VM, ["Bad_Name"], "'Bad_Name' is not a valid host name", id="mount-name"),
    row(MOUNT_VM, ["web1"], "web1 has no disk: image file {tmp}/images/web1-disk01.img does "
        "not exist", id="mount-no-disk"),
    row(MOUNT_VM, ["web1"], "image file {tmp}/images/web1-disk01.img holds no GPT partition "
        "table", setup="small-disk", id="mount-blank-disk"),
    row(MOUNT_VM, ["web1"], "image file {tmp}/images/web1-disk01.img has no ext2/3/4 file "
        "system on its root partition", hint="mount-vm knows disks with BIOS boot, swap and "
        "root partitions", setup="gpt-disk", id="mount-gpt-no-root"),
    row(MOUNT_VM, ["web1"], "image file {tmp}/images/web1-disk01.img does not have the "
        "partitions create-debian makes (bios, swap, root, in that order): its GPT has 1",
        setup="one-partition-disk", id="mount-other-layout"),
    row(MOUNT_VM, ["web1"], "{conf}:{line}: MOUNT_DIR: {tmp}/file is not a directory",
        conf="MOUNT_DIR={tmp}/file/mnt", setup="file", id="mount-dir"),
    row(UMOUNT_VM, ["Bad_Name"], "'Bad_Name' is not a valid host name", id="umount-name"),
    row(UMOUNT_VM, ["../web1"], "'../web1' is not a valid host name", id="umount-path"),
    row(UMOUNT_VM, ["web1"], "web1 has no disk and nothing of it is mounted: "
        "image file {tmp}/images/web1-disk01.img does not exist", id="umount-unknown-name"),
    # --- hostcreator list, remove (refusals that need libvirt: test_quickstart.py) ---
    row(LIST, ["--set", "IMAGE_DIR={tmp}/file"],
        "--set: IMAGE_DIR: {tmp}/file is not a directory", setup="file", id="list-dir"),
    row(REMOVE, ["Bad_Name", "--yes"], "'Bad_Name' is not a valid host name",
        id="remove-name"),
    row(REMOVE, ["web1"], "remove web1 asks before removing, and there is no terminal to ask "
        "on", hint="--yes removes without asking", id="remove-no-terminal"),
    row(REMOVE, ["web1", "--yes"], "cannot connect to libvirt at", code=1,
        id="remove-no-libvirt"),
    # Refused before libvirt is asked (LIBVIRT_URI points nowhere) and before the lock.
    row(REMOVE, ["web1", "--yes"], "web1 is mounted at /mnt/hctest-web1 (mount-vm)", code=3,
        hint="umount-vm web1 first", setup="mount-state", id="remove-mounted-by-mount-vm"),
    row(REMOVE, ["web1", "--yes", "--disk", "--set", "LIBVIRT_URI=qemu+ssh://nohost.invalid/"
        "system"], "--disk with a remote libvirt (qemu+ssh://nohost.invalid/system): the disk "
        "is on that host, not here", hint="remove web1 without --disk, and delete its disk "
        "there", id="remove-remote-disk"),
    # --- hostcreator clone SOURCE NAME (issue 17) ---
    row(CLONE, ["Bad_Name", "web2"], "'Bad_Name' is not a valid host name", id="clone-source"),
    row(CLONE, ["web1", "../web2"], "'../web2' is not a valid host name", id="clone-name"),
    row(CLONE, ["web1", "web1"], "a VM cannot be cloned onto itself (web1)", id="clone-self"),
    row(CLONE, ["web1"], "Missing argument 'NAME'", hint="`hostcreator clone -h` shows how "
        "to call it", id="clone-usage"),
    row(CLONE, ["web1", "web2", "--set", "JOURNAL_DIR=/proc/nope"],
        "--set: JOURNAL_DIR: /proc/nope cannot be made", setup="hand-disk",
        id="clone-journal-dir"),
    row(CLONE, ["web1", "web2"], "web1 has no disk: image file {tmp}/images/web1-disk01.img "
        "does not exist", id="clone-no-source"),
    row(CLONE, ["web1", "web2"], "web1 was not built by hostcreator: it has no build journal "
        "({tmp}/journal/web1.json)", setup="hand-disk", id="clone-no-journal"),
    row(CLONE, ["web1", "web2"], "the build journal {tmp}/journal/web1.json cannot be read",
        code=6, setup="hand-disk+broken-journal", id="clone-broken-journal"),
    row(CLONE, ["web1", "web2"], "the build of web1 failed before its first stage", code=6,
        hint="finish it first: create-debian web1 --resume",
        setup="hand-disk+failed-journal", id="clone-unfinished"),
    row(CLONE, ["web1", "web2"], "does not have the partitions create-debian makes",
        setup="one-partition-disk+finished-journal", id="clone-other-layout"),
    row(CLONE, ["web1", "web2"], "web2 has a disk already: image file "
        "{tmp}/images/web2-disk01.img", code=3, hint="clone never overwrites a disk: choose "
        "another name", setup="hand-disk+finished-journal+web2-disk", id="clone-name-disk"),
    row(CLONE, ["web1", "web2"], "web2 is known already: its build journal "
        "{tmp}/journal/web2.json says it was built",
        setup="hand-disk+finished-journal+web2-journal", id="clone-name-journal"),
    # --- hostcreator export NAME --format F --output PATH (issue 19) ---
    row(EXPORT, ["Bad_Name", "--format", "qcow2"], "'Bad_Name' is not a valid host name",
        id="export-name"),
    row(EXPORT, ["web1"], "Missing option '--format'", hint="`hostcreator export -h` shows "
        "how to call it", id="export-usage"),
    row(EXPORT, ["web1", "--format", "vdi", "--output", "{tmp}/out"],
        "--format 'vdi' is not one of qcow2 | vmdk | ova | raw", id="export-format"),
    row(EXPORT, ["web1", "--format", "qcow2", "--output", "{tmp}"], "web1 has no disk: image "
        "file {tmp}/images/web1-disk01.img does not exist", id="export-no-disk"),
    row(EXPORT, ["web1", "--format", "qcow2", "--output", "{tmp}"], "web1 was not built by "
        "hostcreator: it has no build journal", hint="export seals VMs that create-debian or "
        "create-ubuntu built", setup="hand-disk", id="export-no-journal"),
    row(EXPORT, ["web1", "--format", "raw", "--output", "{tmp}"], "the build of web1 failed "
        "before its first stage", code=6, setup="hand-disk+failed-journal",
        id="export-unfinished"),
    row(EXPORT, ["web1", "--format", "qcow2", "--output", "{tmp}/nope/web1.qcow2"],
        "--output: the directory {tmp}/nope does not exist",
        setup="hand-disk+finished-journal", id="export-output-dir"),
    row(EXPORT, ["web1", "--format", "qcow2", "--output", "{tmp}/file"],
        "--output: {tmp}/file exists", hint="--force replaces it",
        setup="hand-disk+finished-journal+file", id="export-output-exists"),
    row(EXPORT, ["web1", "--format", "raw", "--output", "{tmp}/images/web2-disk01.img",
                 "--force"], "--output: {tmp}/images/web2-disk01.img is where a VM's disk "
        "lives (IMAGE_DIR)", setup="hand-disk+finished-journal", id="export-output-vm-disk"),
    row(EXPORT, ["web1", "--format", "vmdk", "--output", "{tmp}"],
        "web1 is mounted at /mnt/hctest-web1 (mount-vm)", code=3,
        setup="hand-disk+finished-journal+mount-state", id="export-mounted"),
    # --- hostcreator boot-test, config, status, cache ---
    row(BOOT_TEST, ["../x"], "'../x' is not a valid host name", id="boot-name"),
    row(BOOT_TEST, ["web1", "--accel", "xen"], "--accel 'xen' is not tcg or kvm",
        id="boot-accel"),
    row(BOOT_TEST, ["web1"], "web1 has no disk: image file {tmp}/images/web1-disk01.img does "
        "not exist", id="boot-no-disk"),
    row(("hostcreator", "config"), ["--set", "VCPUS=-1"], "VCPUS: -1 is not a positive number",
        id="config-vcpus"),
    row(("hostcreator", "status"), [], "STATE_DIR: {tmp}/file is not a directory",
        conf="STATE_DIR={tmp}/file", setup="file", id="status-state-dir"),
    row(("hostcreator", "cache", "list"), [], "CACHE_DIR: {tmp}/file is not a directory",
        conf="CACHE_DIR={tmp}/file", setup="file", id="cache-dir-file"),
    row(("hostcreator", "cache", "prune"), ["--older-than", "-1"],
        "--older-than must not be negative", id="cache-prune-negative"),
    row(DOCTOR, ["--set", "VIRT_TYPE=xen"],
        "--set: VIRT_TYPE: 'xen' is not one of auto | kvm | qemu", id="doctor-set"),
    row(DOCTOR, [], "{conf}:{line}: STORAGE=lvm needs VG_NAME", conf="STORAGE=lvm",
        id="doctor-config"),
    row(DOCTOR, ["--bogus"], "No such option: --bogus",
        hint="`hostcreator doctor -h` shows how to call it", id="doctor-unknown-option"),
    row(DOCTOR, ["web1"], "unexpected extra argument(s) (web1)", id="doctor-argument"),
    # --- the command line itself: one line and a hint, as every other error ---
    row(CREATE_DEBIAN, [], "Missing argument 'NAME'",
        hint="`create-debian -h` shows how to call it", id="usage-no-name"),
    row(CREATE_UBUNTU, ["web1", "--bogus"], "No such option: --bogus", id="usage-unknown-option"),
    row(CREATE_KVM, ["web1", "--wait", "0"], "Invalid value for '--wait'", id="usage-wait-zero"),
    row(MOUNT_VM, ["web1", "extra"], "unexpected extra argument(s) (extra)", id="usage-extra"),
    row(("hostcreator", "cache", "prune"), ["--older-than", "soon"],
        "Invalid value for '--older-than'",
        hint="`hostcreator cache prune -h` shows how to call it", id="usage-not-a-number"),
]


def journal_text(disk: str, status: str = "failed", name: str = "web1") -> str:
    return json.dumps({"name": name, "distribution": "debian", "suite": "trixie",
                       "disk": disk, "status": status})


def make(setup: str | None, tmp: Path) -> None:
    if setup and "+" in setup:
        for part in setup.split("+"):
            make(part, tmp)
    elif setup in ("broken-journal", "nul-journal", "list-journal"):
        (tmp / "journal").mkdir(exist_ok=True)
        text = {"broken-journal": "{not json", "list-journal": "[]",
                "nul-journal": journal_text("/tmp/p/im\0g")}[setup]
        (tmp / "journal" / "web1.json").write_text(text)
    elif setup == "mount-state":
        state = mountstate.MountState("web1", paths.image_file(tmp / "images", "web1"),
                                      Path("/mnt/hctest-web1"), read_only=True)
        (tmp / "state" / "mounts").mkdir(parents=True)
        paths.state_file(tmp / "state" / "mounts", "web1").write_text(
            json.dumps(state.to_json()))
    elif setup in ("failed-journal", "finished-journal", "web2-journal"):
        (tmp / "journal").mkdir(exist_ok=True)
        name = "web2" if setup == "web2-journal" else "web1"
        status = "failed" if setup == "failed-journal" else "finished"
        disk = str(paths.image_file(tmp / "images", name))
        (tmp / "journal" / f"{name}.json").write_text(journal_text(disk, status, name))
    elif setup == "web2-disk":
        hand_made_disk(paths.image_file(tmp / "images", "web2"))
    elif setup in ("empty-disk", "dangling-disk", "hand-disk", "gpt-disk", "one-partition-disk"):
        disk = tmp / "images" / f"{storage.disk_name('web1')}.img"
        disk.parent.mkdir(exist_ok=True)
        if setup == "empty-disk":
            disk.write_bytes(b"")
        elif setup == "dangling-disk":
            disk.symlink_to(tmp / "gone")
        else:
            hand_made_disk(disk, root_fs=setup != "gpt-disk",
                           only_root=setup == "one-partition-disk")
    elif setup == "file":
        (tmp / "file").write_text("not a directory\n")
    elif setup == "hook-subdir":
        (tmp / "hooks" / "postconfig.d" / "10-site").mkdir(parents=True)
    elif setup == "hook-d-file":
        (tmp / "hooks").mkdir(exist_ok=True)
        (tmp / "hooks" / "postunpack.d").write_text("#!/bin/sh\n")
    elif setup == "empty":
        (tmp / "empty").write_text("")
    elif setup == "fifo":
        os.mkfifo(tmp / "fifo")
    elif setup == "big":
        with open(tmp / "big", "wb") as f:
            f.truncate(2 << 20)
    elif setup in ("latin1-conf", "nul-conf"):
        with open(tmp / "hostcreator.conf", "ab") as f:
            f.write(b"# Gr\xfc\xdfe\n" if setup == "latin1-conf" else b"IMAGE_DIR=/x/im\0g\n")
    elif setup == "binary":
        (tmp / "binary").write_bytes(b"\x01\x02pw\x00\n")
    elif setup == "latin1":
        (tmp / "latin1").write_bytes("pw\u00fc\n".encode("latin-1"))
    elif setup == "private-key":
        (tmp / "key").write_text("-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaA==\n"
                                 "-----END OPENSSH PRIVATE KEY-----\n")
    elif setup == "small-disk":
        disk = paths.image_file(tmp / "images", "web1")
        disk.parent.mkdir()
        with open(disk, "wb") as f:
            f.truncate(1 << 30)
    else:
        assert setup is None, setup


def snapshot(tmp: Path) -> dict[str, tuple[bool, int, int]]:
    """Every file and directory below TMP with its kind, size and modification time."""
    found = {}
    for top, dirs, files in os.walk(tmp):
        for entry in (*dirs, *files):
            path = Path(top) / entry
            st = path.lstat()
            found[str(path.relative_to(tmp))] = (path.is_dir(), st.st_size, st.st_mtime_ns)
    return found


def loop_devices_below(tmp: Path) -> list[str]:
    result = subprocess.run(["losetup", "--list", "--noheadings", "--output",
                             "NAME,BACK-FILE"], capture_output=True, text=True, check=False)
    return [line for line in result.stdout.splitlines() if str(tmp) in line]


# Never reached: a row that got that far would fail with another message.
UNREACHABLE = {"MIRROR": "file://{tmp}/no-mirror", "LIBVIRT_URI": NOWHERE,
               "NETWORK_TYPE": "user"}


@pytest.mark.parametrize("cmd,args,code,message,hint,conf,setup", ROWS)
def test_bad_input(testenv, cmd, args, code, message, hint, conf, setup):
    tmp = testenv.base
    config = testenv.config
    base_lines = len(testenv.settings(**UNREACHABLE))

    def fill(text: str) -> str:
        # {line}: the configuration's line that the row added, {next}: the one after it
        # (what SETUP appends).
        return (text.replace("{tmp}", str(tmp)).replace("{conf}", str(config))
                .replace("{line}", str(base_lines + 1)).replace("{next}", str(base_lines + 2)))

    testenv.write(**{k: fill(v) for k, v in UNREACHABLE.items()})
    config.write_text(config.read_text() + fill(conf) + "\n")
    make(setup, tmp)
    before = snapshot(tmp)
    made = {d: d.exists() for d in (testenv.image_dir, testenv.log_dir, testenv.state_dir,
                                    testenv.journal_dir)}

    result = run_cli(*cmd, "--config", str(config), *map(fill, args), timeout=60)

    program = " ".join(cmd[1:]) if cmd[0] == "hostcreator" else cmd[0]
    errors = [line for line in result.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1, result.stderr
    assert errors[0].startswith(f"{program}: error: "), result.stderr
    assert fill(message) in errors[0], result.stderr
    assert result.returncode == code, result.stderr
    if hint is not None:
        assert f"{program}: hint: {fill(hint)}" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr and "╭" not in result.stderr, result.stderr
    assert result.stdout == "", result.stdout
    # Nothing touched: no image directory, disk, log, lock, journal or state file (what
    # SETUP made is as it was); no loop device, no mount.
    assert snapshot(tmp) == before
    assert {d: d.exists() for d in made} == made
    assert loop_devices_below(tmp) == []
    assert mounts.mounts_below(tmp) == []


def test_the_table_covers_every_command():
    commands = {" ".join(p.values[0]) for p in ROWS}
    assert commands >= {"create-debian", "create-ubuntu", "create-kvm", "mount-vm",
                        "umount-vm", "hostcreator boot-test", "hostcreator config",
                        "hostcreator status", "hostcreator cache list",
                        "hostcreator cache prune", "hostcreator list", "hostcreator remove",
                        "hostcreator clone", "hostcreator export", "hostcreator doctor"}
    assert len(ROWS) >= 24


def test_a_missing_volume_group_is_named(monkeypatch):
    # LVM cannot run here (no device-mapper, no lvm2): vgs's answer is faked.
    def vgs(argv, **_kwargs):
        assert argv[:1] == ["vgs"] and argv[-1] == "vg0"
        return run_module.Result(list(argv), 5, "", ['Volume group "vg0" not found'])

    monkeypatch.setattr(storage, "run", vgs)
    with pytest.raises(InvalidInput, match="volume group 'vg0' not found") as exc:
        storage.LvmStorage("vg0", "web1-disk01").check()
    assert exc.value.hint == "check VG_NAME, or use STORAGE=file for image files"


def test_the_free_extents_of_the_volume_group_bound_size(monkeypatch):
    # LVM cannot run here (no device-mapper): vgs's and lvs's answers are faked, the argv
    # is asserted.
    calls = []

    def lvm(argv, **_kwargs):
        calls.append(list(argv))
        if argv[0] == "vgs":
            return run_module.Result(list(argv), 0, f"  {10 * storage.GIB}\n", [])
        return run_module.Result(list(argv), 0, "", [])  # lvs: no LV of that name yet

    monkeypatch.setattr(storage, "run", lvm)
    volume = storage.LvmStorage("vg0", "web1-disk01")
    volume.check_room(8 * storage.GIB, "--size: SIZE")
    with pytest.raises(InvalidInput) as exc:
        volume.check_room(12 * storage.GIB, "--size: SIZE")
    assert exc.value.message == "--size: SIZE: 12 GiB do not fit in volume group vg0: 10.0 GiB " \
        "are free"
    assert exc.value.hint == "choose a smaller SIZE, extend the volume group, or set THIN_POOL"
    assert ["vgs", "--noheadings", "--nosuffix", "--units", "b", "-o", "vg_free",
            "vg0"] in calls
    assert storage.parse_vg_free("  1073741824\n") == storage.GIB


@pytest.mark.parametrize(("pool_attr", "refused"), [
    ("  twi-a-tz--\n", False),  # a thin pool
    ("  -wi-a-----\n", True),   # a linear LV of that name
    (None, True),               # no LV of that name
])
def test_a_thin_volume_needs_its_pool_not_the_free_extents(monkeypatch, pool_attr, refused):
    # A thin volume may be bigger than the VG's free space (the pool fills as the VM
    # writes), but the pool must be one; lvs's answers are faked, the argv asserted.
    calls = []

    def lvm(argv, **_kwargs):
        calls.append(list(argv))
        if argv[:4] == ["lvs", "--noheadings", "-o", "lv_attr"]:
            if pool_attr is None:
                return run_module.Result(list(argv), 5, "", [])
            return run_module.Result(list(argv), 0, pool_attr, [])
        if argv[0] == "vgs":
            return run_module.Result(list(argv), 0, f"  {storage.GIB}\n", [])
        return run_module.Result(list(argv), 0, "", [])  # lvs: no LV of that name yet

    monkeypatch.setattr(storage, "run", lvm)
    volume = storage.LvmStorage("vg0", "web1-disk01", "pool")
    if refused:
        with pytest.raises(InvalidInput) as exc:
            volume.check_room(100 * storage.GIB, "--size: SIZE")
        assert exc.value.message == "THIN_POOL: volume group vg0 has no thin pool 'pool'"
        assert exc.value.hint == ("check THIN_POOL, or make the pool: lvcreate --type "
                                  "thin-pool -L SIZE -n pool vg0")
    else:
        volume.check_room(100 * storage.GIB, "--size: SIZE")
    assert ["lvs", "--noheadings", "-o", "lv_attr", "vg0/pool"] in calls
    assert not any(argv[0] == "vgs" for argv in calls)


def test_an_image_larger_than_the_free_space_is_warned_about(testenv):
    # Sparse: it may be made, but the VM fails once it has filled the file system.
    testenv.write(**{k: v.replace("{tmp}", str(testenv.base)) for k, v in UNREACHABLE.items()})
    st = os.statvfs(testenv.base)
    size = st.f_bavail * st.f_frsize // storage.GIB + 2
    ok = places.probe(testenv.base, size * storage.GIB) is None
    result = run_cli("create-debian", "web1", "--config", str(testenv.config),
                     "--size", str(size), timeout=60)
    if ok:
        assert f"warning: --size: SIZE: the sparse image of {size} GiB is larger than the" \
            in result.stderr, result.stderr
    else:  # a file system whose files cannot be that large (ext4: 16 TiB)
        assert "can have (File too large)" in result.stderr, result.stderr
    assert result.returncode == 2, result.stderr
    assert len([line for line in result.stderr.splitlines() if "error:" in line]) == 1
    assert not testenv.image_dir.exists() and not testenv.journal_dir.exists()


@pytest.mark.parametrize("exponent", [30, 40, 44, 50, 62])
def test_the_largest_file_is_the_file_systems_answer(tmp_path, exponent):
    # check_file_size agrees with a real, named file truncated to that size.
    size = 1 << exponent
    real = tmp_path / "real"
    with open(real, "wb") as f:
        try:
            f.truncate(size)
            fits = True
        except OSError:
            fits = False
    real.unlink()
    if fits:
        places.check_file_size(tmp_path / "images" / "d.img", size, "SIZE")
    else:
        with pytest.raises(InvalidInput, match="can have"):
            places.check_file_size(tmp_path / "images" / "d.img", size, "SIZE")
    assert list(tmp_path.iterdir()) == []


def errors_of(result: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in result.stderr.splitlines() if "error:" in line]


def test_a_nul_in_a_config_path_spoils_nothing(testenv, tmp_path):
    # Issue 14, item 1: the bad configuration is refused before anything is written, a
    # good one then goes as far as it would have, and cleanup is not confused; a journal
    # an older version wrote with such a path is set aside by cleanup.
    good = testenv.write(**{k: v.replace("{tmp}", str(testenv.base))
                            for k, v in UNREACHABLE.items()})
    bad = tmp_path / "bad.conf"
    bad.write_bytes(good.read_bytes() + b"IMAGE_DIR=/tmp/p/im\0g\n")
    result = run_cli("create-debian", "web1", "--config", str(bad), timeout=60)
    assert result.returncode == 2 and errors_of(result) == [
        f"create-debian: error: {bad}:{len(good.read_text().splitlines()) + 1}: IMAGE_DIR: "
        "the value holds the control character \\x00"], result.stderr
    assert not testenv.journal_dir.exists() and not testenv.state_dir.exists()

    def with_good_config(*argv: str) -> subprocess.CompletedProcess[str]:
        return run_cli(*argv, "web1", "--config", str(good), timeout=60)

    first = with_good_config("create-debian")
    assert first.returncode == 2 and "archive" in first.stderr, first.stderr  # MIRROR: nowhere
    assert "journal" not in first.stderr and not testenv.journal_dir.exists()
    unknown = with_good_config("hostcreator", "cleanup")
    assert unknown.returncode == 2 and "web1 is not known" in unknown.stderr, unknown.stderr
    assert not testenv.state_dir.exists() and not testenv.log_dir.exists()

    make("nul-journal", testenv.base)
    spoiled = with_good_config("create-debian")
    assert spoiled.returncode == 6 and "cannot be read" in spoiled.stderr, spoiled.stderr
    assert "hint: hostcreator cleanup web1 sets it aside" in spoiled.stderr
    status = run_cli("hostcreator", "status", "--config", str(good), timeout=60)
    assert status.returncode == 0 and "warning: the build journal" in status.stderr, status.stderr
    cleaned = with_good_config("hostcreator", "cleanup")
    assert cleaned.returncode == 0, cleaned.stderr
    aside = list(testenv.journal_dir.glob("web1.json.broken-*"))
    assert len(aside) == 1 and not (testenv.journal_dir / "web1.json").exists()
    assert f"was set aside as {aside[0]}" in cleaned.stderr
    assert "/tmp/p/im" in aside[0].read_text()  # kept as it was, for a look
    again = with_good_config("create-debian")
    assert again.returncode == 2 and "archive" in again.stderr, again.stderr
    assert "journal" not in again.stderr


def test_create_kvm_takes_a_hand_made_disk_with_a_note_and_relative_paths(testenv, tmp_path):
    # A disk hostcreator did not build (no journal) but with a GPT and a root file system;
    # relative paths (IMAGE_DIR, --live-iso) are made absolute before the XML is checked.
    conf = testenv.write(LIBVIRT_URI=NOWHERE, NETWORK_TYPE="user")
    hand_made_disk(testenv.image("web1"), root_fs=True)
    (testenv.base / "live.iso").write_bytes(b"")
    result = run_cli("create-kvm", "web1", "--config", str(conf), "--dry-run",
                     "--set", "IMAGE_DIR=images", "--live-iso", "live.iso", cwd=testenv.base,
                     timeout=60)
    assert result.returncode == 0, result.stderr
    assert f"<source file='{testenv.image('web1')}'" in result.stdout.replace('"', "'")
    assert f"<source file='{testenv.base}/live.iso'" in result.stdout.replace('"', "'")
    assert (f"note: web1 has no build journal: hostcreator did not build image file "
            f"{testenv.image('web1')} (the partitions create-debian makes (bios, swap, root), "
            "ext2/3/4 on root); it is booted as it is") in result.stderr
    assert "note: --set: IMAGE_DIR: the relative path images is taken as" in result.stderr
    assert not testenv.journal_dir.exists() and not testenv.state_dir.exists()
