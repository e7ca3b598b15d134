"""The lab host: a KVM host in a VM, built by hostcreator itself, where LVM works.

This host's kernel has no device-mapper (lvcreate fails), a guest kernel has.
So the LVM backend is proven inside a lab VM: built by create-debian on the
file backend with what a KVM host needs (lvm2, thin-provisioning-tools,
libvirt, QEMU, the bootstrap tools), hostcreator installed from a wheel of
this checkout, and handed what its own builds need so that they do not
bootstrap from the network: the rootfs cache entry of their inputs and the
package cache. It boots under TCG (one vCPU) with QEMU user networking; a
second, sparse disk becomes the volume group hclab with a thin pool. Commands
run in it through SSH (a key made for the lab, a host port forward), each
with a timeout, their output in the test's output and in lab.log.

Used by the `lab` fixture (tests/conftest.py) and by bench/lab.py, which a
developer runs by hand.
"""

from __future__ import annotations

import ctypes
import json
import os
import shlex
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from conftest import (
    CACHE_DIR,
    DATA,
    DEBIAN_SUITE,
    TestEnv,
    access_settings,
    run_cli,
    unique_name,
    with_shared_debs,
)
from guest import free_port

from hostcreator import config, distro
from hostcreator.build import bootstrap, cache
from hostcreator.domain import console, qemu
from hostcreator.paths import VmPaths

# The rootfs cache of the lab itself (Debian with LAB_PACKAGES: an entry of its own), kept
# between test runs like the package cache beside it (CACHE_DIR/debs), so that a lab is
# unpacked, not bootstrapped; an entry is bootstrapped afresh after CACHE_MAX_AGE days.
LAB_CACHE = CACHE_DIR / "lab"
# The lab runs trixie: Debian 13's python3-typer is new enough for the CLI (Debian 12's
# is not, see debian/control), so the wheel installs beside Debian's libraries.
LAB_SUITE = "trixie"
VG = "hclab"
THIN_POOL = "pool"
THIN_POOL_GIB = 8
PV_GIB = 32
LAB_SIZE_GIB = 12
LAB_MEMORY_MIB = 3072
# What a KVM host running hostcreator needs (setup.sh's host tools), from
# Debian's archive, Python's libraries included: the wheel is installed into a
# venv that sees them, and pip (given no index) checks that they satisfy it.
LAB_PACKAGES = (
    "lvm2", "thin-provisioning-tools",
    "libvirt-daemon-system", "libvirt-clients", "libxml2-utils",
    "qemu-system-x86", "qemu-utils",
    "debootstrap", "debian-archive-keyring", "gpgv", "mmdebstrap", "eatmydata",
    "rsync", "dpkg-dev", "zstd", "parted", "e2fsprogs",
    "python3-venv", "python3-parted", "python3-pyudev", "python3-jinja2",
    "python3-libvirt", "python3-typer",
)
# In the lab: the configuration of its own builds and their hooks (the skeleton is the
# wheel's own).
INNER = Path("/root/lab")
INNER_CONFIG = INNER / "hostcreator.conf"
WHEELS = Path("/root/wheels")
VENV = Path("/opt/hostcreator")
COMMANDS = ("hostcreator", "create-debian", "create-ubuntu", "mount-vm", "umount-vm",
            "create-kvm")
SSH_OPTIONS = (
    "-F", "/dev/null",  # neither root's ssh configuration nor its known hosts
    "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
    "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
    "-o", "GlobalKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR",
    "-o", "ConnectTimeout=10", "-o", "ServerAliveInterval=15", "-o", "ServerAliveCountMax=4",
)
BOOT_TIMEOUT = 1800
STOP_TIMEOUT = 180


class LabError(Exception):
    pass


def inner_settings() -> dict[str, str]:
    """The lab's own builds: on LVM in hclab, in the lab's default directories (CACHE_DIR
    too: the entry and the packages handed in are there)."""
    return {
        "STORAGE": "lvm",
        "VG_NAME": VG,
        "SIZE": "4",
        "HOOK_DIR": str(INNER / "hooks"),
        "LOG_DIR": str(INNER / "log"),
        "TIMEZONE": "Etc/UTC",
        "LOCALE": "C.UTF-8",
        "ROOT_PASSWORD_FILE": str(INNER / "root-password"),
        "SSH_AUTHORIZED_KEYS": str(INNER / "authorized_keys"),
        # Not the lab's own key (root's authorized_keys there): the VMs get one key.
        "USER_SSH_KEYS": "no",
        # create-kvm in the lab: software emulation in software emulation, just started.
        "VIRT_TYPE": "qemu",
        "VCPUS": "1",
        "MEMORY": "256",
        "NETWORK_TYPE": "user",
        "GRAPHICS": "none",
    }


def _die_with_parent() -> None:
    # The fixture's QEMU dies with the test process, however that ends (SIGKILL too).
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def in_stage(stage: Path, path: Path) -> Path:
    """Where PATH of the lab is in STAGE, the tree its postconfig hook copies into it."""
    return stage / path.relative_to("/")


@dataclass
class Lab:
    base: Path
    name: str = field(default_factory=lambda: unique_name("hctest-lab"))
    suite: str = LAB_SUITE
    port: int = 0
    pid: int = 0
    timings: dict[str, float] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None
    # One SSH connection that the commands share (a handshake costs a second and more
    # under TCG): started once SSH answers, it ends with the lab.
    master: subprocess.Popen[bytes] | None = None

    # --- where things are on the outer host ---
    @property
    def env(self) -> TestEnv:
        return TestEnv(self.base / "outer")

    @property
    def image(self) -> Path:
        return self.env.image(self.name)

    @property
    def pv_image(self) -> Path:
        return self.base / "pv.img"

    @property
    def key(self) -> Path:
        return self.base / "id_lab"

    @property
    def control_path(self) -> Path:
        return self.base / "ssh.control"

    @property
    def console_log(self) -> Path:
        return self.base / "console.log"

    @property
    def log_file(self) -> Path:
        return self.base / "lab.log"

    @property
    def state_file(self) -> Path:
        return self.base / "lab.json"

    @property
    def inner_config(self) -> Path:
        """A copy of the lab's INNER_CONFIG, read on this host as the lab reads it."""
        return self.base / "inner.conf"

    def inner(self, cache_dir: Path | None = None) -> config.Config:
        """The configuration of the lab's builds (with CACHE_DIR: one of this host)."""
        overrides = config.set_options([f"CACHE_DIR={cache_dir}"] if cache_dir else [])
        return config.load(self.inner_config, overrides, environ={})

    def paths(self, name: str) -> VmPaths:
        """Where the lab keeps NAME's files (journal, logs...), as the lab names them."""
        return VmPaths.of(self.inner(), name)

    def say(self, text: str) -> None:
        print(text, flush=True)
        with open(self.log_file, "a") as f:
            f.write(text + "\n")

    def timed(self, part: str, started: float) -> None:
        self.timings[part] = round(time.monotonic() - started, 1)
        self.say(f"lab: {part} took {self.timings[part]} s")

    # --- building ---
    def build(self, wheel: Path, inner_cache: Path) -> None:
        """Build the lab's disk on the outer host (file backend, in BASE) with WHEEL (this
        checkout's, as `python -m build` makes it) and, for the lab's builds, the entry of
        their inputs in the rootfs cache INNER_CACHE (bootstrapped there when missing)."""
        self.base.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "hctest-lab",
                        "-f", self.key], check=True, stdin=subprocess.DEVNULL)
        stage = self.base / "stage"
        in_stage(stage, WHEELS).mkdir(parents=True)
        shutil.copy(wheel, in_stage(stage, WHEELS))
        self._stage_inner(stage)
        # The hook's `cp -a` gives the lab's directories the modes of the stage's.
        in_stage(stage, Path("/root")).chmod(0o700)
        self.timed("wheel and files", started)
        started = time.monotonic()
        self._handin_cache(stage, inner_cache)
        self.timed("inner rootfs cache entry", started)
        started = time.monotonic()
        env = self.env
        env.base.mkdir(parents=True, exist_ok=True)
        settings = access_settings(env)
        settings["SSH_AUTHORIZED_KEYS"] = str(self.key.with_suffix(".pub"))
        env.write(SIZE=str(LAB_SIZE_GIB), PACKAGES=" ".join(LAB_PACKAGES),
                  CACHE_DIR=str(with_shared_debs(LAB_CACHE)), **settings)
        env.install_hook("postconfig.sh", self._postconfig_hook(stage, wheel.name))
        result = run_cli("create-debian", self.name, self.suite, "--config", str(env.config))
        self.say(result.stdout + result.stderr)
        leaks = env.leaks()
        if result.returncode != 0 or leaks:
            env.cleanup()
            raise LabError(f"building the lab failed (exit code {result.returncode}); "
                           f"left behind: {leaks}; see {env.log_dir}")
        shutil.rmtree(stage)
        with open(self.pv_image, "xb") as f:
            f.truncate(PV_GIB * 1024**3)
        self.timed("lab build", started)

    def _stage_inner(self, stage: Path) -> None:
        """The lab's INNER directory: its builds' configuration, report hook, secrets."""
        inner = in_stage(stage, INNER)
        (inner / "hooks").mkdir(parents=True)
        shutil.copy(DATA / "report-postconfig.sh", inner / "hooks" / "postconfig.sh")
        values = inner_settings()
        self.inner_config.write_text("".join(f"{k}={shlex.quote(v)}\n"
                                             for k, v in values.items()))
        shutil.copy(self.inner_config, in_stage(stage, INNER_CONFIG))
        secrets_env = TestEnv(self.base / "inner-secrets")
        secrets_env.base.mkdir()
        for key, path in access_settings(secrets_env).items():
            shutil.copy(path, in_stage(stage, Path(values[key])))

    def _handin_cache(self, stage: Path, inner_cache: Path) -> None:
        """The outer host's rootfs cache entry of the lab's builds (the same inputs: the
        lab's configuration, DEBIAN_SUITE, mmdebstrap on both) and its package cache, into
        the lab's CACHE_DIR; the entry is bootstrapped into INNER_CACHE when missing, so
        the tests after the lab find it there too."""
        cfg = self.inner(with_shared_debs(inner_cache))
        lab_cache = in_stage(stage, self.inner().cache_dir)
        plan = bootstrap.plan(cfg, distro.get("debian"), DEBIAN_SUITE)
        rootfs = cache.RootfsCache.under(cfg.cache_dir)
        key = cache.key_of(cache.inputs(plan))
        if rootfs.usable(key, cfg.cache_max_age) is None:
            tree = self.base / "inner-tree"
            tree.mkdir()
            try:
                cache.provide_root(plan, tree, cache_dir=cfg.cache_dir,
                                   max_age_days=cfg.cache_max_age, mode=cache.Mode.USE,
                                   apt_proxy=cfg.apt_proxy)
            finally:
                shutil.rmtree(tree)
        entry = rootfs.read(key)
        if entry is None:
            raise LabError(f"no rootfs cache entry {key} in {cfg.cache_dir}")
        self.say(f"lab: handing in rootfs cache entry {cache.short(key)} ({entry.describe()})"
                 f" and the package cache {plan.cache_dir}")
        (lab_cache / "rootfs").mkdir(parents=True)
        shutil.copytree(entry.path, lab_cache / "rootfs" / entry.key)
        if plan.cache_dir is not None and plan.cache_dir.is_dir():
            shutil.copytree(plan.cache_dir, lab_cache / "debs" / plan.cache_dir.name)

    def _postconfig_hook(self, stage: Path, wheel: str) -> str:
        links = " ".join(COMMANDS)
        return f"""#!/bin/sh
# The lab's postconfig hook (tests/lab.py): what the lab is handed, and hostcreator
# from the wheel, in a venv that sees Debian's Python libraries; given no index, pip
# fails unless they satisfy the wheel's requirements.
set -eu
root=$2
cp -a {stage}/. "$root/"
chroot "$root" python3 -m venv --system-site-packages {VENV}
chroot "$root" {VENV}/bin/pip install -q --no-index --disable-pip-version-check \\
    {WHEELS / wheel}
rm -r "$root{WHEELS}"
for c in {links}; do ln -sf {VENV}/bin/$c "$root/usr/local/bin/$c"; done
# Its builds read this configuration.
ln -s {INNER_CONFIG} "$root/etc/default/hostcreator"
chroot "$root" systemctl enable virtlogd.socket libvirtd.socket
# Under TCG on a loaded host the lab gets a fifth of a CPU while its clock runs on
# at the host's pace: systemd's and udev's timeouts and service watchdogs then
# expire before the work is done (devices "timed out", journald killed).
mkdir -p "$root/etc/systemd/system.conf.d"
cat > "$root/etc/systemd/system.conf.d/hctest-lab.conf" <<EOF
[Manager]
DefaultTimeoutStartSec=30min
DefaultDeviceTimeoutSec=30min
ServiceWatchdogs=no
EOF
echo "event_timeout=1800" >> "$root/etc/udev/udev.conf"
"""

    # --- running ---
    def start(self, *, detach: bool = False) -> None:
        """Boot the lab under TCG and wait until SSH answers."""
        started = time.monotonic()
        self.port = free_port()
        self.console_log.write_bytes(b"")
        # Written to (no snapshot): after the lab is down, the LVs in its second disk are
        # read here.
        argv = qemu.qemu_argv(self.image, self.console_log, memory=LAB_MEMORY_MIB,
                              snapshot=False, ssh_port=self.port,
                              extra_disks=[self.pv_image])
        self.say("lab: + " + shlex.join(map(str, argv)))
        with open(self.base / "qemu.log", "ab") as out:
            self.proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True, preexec_fn=None if detach else _die_with_parent)
        self.pid = self.proc.pid
        self.save()
        self._wait_for_ssh(time.monotonic() + BOOT_TIMEOUT)
        if not detach:
            self._start_master()
        self.timed("lab boot", started)

    def _start_master(self) -> None:
        """The shared connection; a command finds it through its ControlPath (without
        it, as after the lab's shutdown began, a command connects on its own)."""
        argv = self.ssh_argv("")[:-1]
        self.master = subprocess.Popen(
            # The first value of an option counts: these before ssh_argv's ControlMaster=no.
            [argv[0], "-N", "-o", "ControlMaster=yes", "-o", "ControlPersist=no", *argv[1:]],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, preexec_fn=_die_with_parent)
        deadline = time.monotonic() + 60
        while not self.control_path.exists() and self.master.poll() is None:
            if time.monotonic() > deadline:
                break
            time.sleep(0.2)
        self.say(f"lab: shared SSH connection {'up' if self.control_path.exists() else 'not up'}")

    def _stop_master(self) -> None:
        if self.master is not None:
            self.master.kill()
            self.master.wait()
            self.master = None

    def _wait_for_ssh(self, deadline: float) -> None:
        while True:
            data = self.console_log.read_bytes()
            why = console.panic(data)
            if why is not None:
                raise LabError(f"the lab will not come up: its {why}; see {self.console_log}")
            if not self.running():
                raise LabError(f"the lab's QEMU stopped; see {self.base / 'qemu.log'}")
            # Not the login prompt: on a loaded host the serial getty may time out
            # waiting for udev, while sshd comes up.
            try:
                probe = subprocess.run(self.ssh_argv("true"), capture_output=True,
                                       stdin=subprocess.DEVNULL, timeout=120)
                if probe.returncode == 0:
                    return
            except subprocess.TimeoutExpired:
                pass  # sshd is up but too slow to answer yet: ask again
            if time.monotonic() > deadline:
                raise LabError(f"SSH in the lab did not answer within {BOOT_TIMEOUT} s; last "
                               "console lines: " + " | ".join(console.last_lines(data)))
            time.sleep(2)

    def running(self) -> bool:
        if self.proc is not None:
            return self.proc.poll() is None
        if self.pid <= 0:  # never started
            return False
        try:
            os.kill(self.pid, 0)
        except OSError:
            return False
        try:
            return Path(f"/proc/{self.pid}/cmdline").read_bytes().startswith(b"qemu-system")
        except FileNotFoundError:  # gone meanwhile
            return False

    def ssh_argv(self, command: str) -> list[str]:
        return ["ssh", *SSH_OPTIONS, "-o", "ControlMaster=no",
                "-o", f"ControlPath={self.control_path}", "-i", str(self.key),
                "-p", str(self.port), "root@127.0.0.1", command]

    def run(self, command: str, *, timeout: float = 600,
            check: bool = True) -> subprocess.CompletedProcess[str]:
        """COMMAND in the lab (a shell line); its output goes to the test's output."""
        self.say(f"lab$ {command}")
        started = time.monotonic()
        try:
            result = subprocess.run(self.ssh_argv(command), capture_output=True, text=True,
                                    stdin=subprocess.DEVNULL, timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            raise LabError(f"{command!r} in the lab took more than {timeout} s") from exc
        self.say(result.stdout + result.stderr
                 + f"[exit code {result.returncode} after {time.monotonic() - started:.1f} s]")
        if check and result.returncode != 0:
            raise LabError(f"{command!r} in the lab failed with exit code {result.returncode}: "
                           f"{result.stderr.strip()[-500:]}")
        return result

    def make_vg(self) -> None:
        started = time.monotonic()
        self.run(f"pvcreate -q /dev/vdb && vgcreate -q {VG} /dev/vdb && lvcreate -q --type "
                 f"thin-pool -L {THIN_POOL_GIB}g -n {THIN_POOL} {VG}", timeout=300)
        self.timed("volume group", started)

    def stop(self) -> None:
        """Shut the lab down cleanly (its disks then hold all it wrote); kill it if it hangs."""
        if not self.running():
            return
        started = time.monotonic()
        subprocess.run(self.ssh_argv("systemctl poweroff"), capture_output=True,
                       stdin=subprocess.DEVNULL, timeout=60, check=False)
        deadline = time.monotonic() + STOP_TIMEOUT
        while self.running() and time.monotonic() < deadline:
            time.sleep(1)
        self._stop_master()
        if self.running():
            self.say(f"lab: not down after {STOP_TIMEOUT} s, killed")
            self.kill()
        self.timed("lab shutdown", started)

    def copy_out(self, path: Path, target: Path) -> None:
        """PATH of the lab's own disk to TARGET on this host (sparse), the lab shut down:
        the lab is a VM hostcreator built, so mount-vm mounts its root, read-only."""
        if self.running():
            raise LabError("the lab runs: stop it before its disk is read")
        config = str(self.env.config)
        mounted = run_cli("mount-vm", self.name, "--read-only", "--config", config,
                          timeout=300)
        if mounted.returncode != 0:
            raise LabError(f"mount-vm of the lab failed: {mounted.stderr.strip()}")
        point = Path(mounted.stdout.strip().splitlines()[-1])
        try:
            subprocess.run(["cp", "--sparse=always", point / path.relative_to("/"), target],
                           check=True, capture_output=True)
        finally:
            done = run_cli("umount-vm", self.name, "--config", config, timeout=300)
            if done.returncode != 0:
                raise LabError(f"umount-vm of the lab failed: {done.stderr.strip()}")
        self.say(f"lab: copied {path} out to {target}")

    def kill(self) -> None:
        self._stop_master()
        if self.running():
            os.killpg(self.pid, signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait()

    def destroy(self) -> None:
        """Nothing left: QEMU stopped (killed if need be), the images removed."""
        try:
            self.kill()
        finally:
            self.env.cleanup()
            for image in (self.image, self.pv_image):
                image.unlink(missing_ok=True)

    # --- state, for bench/lab.py's separate runs ---
    def save(self) -> None:
        self.state_file.write_text(json.dumps(
            {"name": self.name, "suite": self.suite, "port": self.port, "pid": self.pid}))

    @classmethod
    def load(cls, base: Path) -> Lab:
        state = json.loads((base / "lab.json").read_text())
        return cls(base, state["name"], state["suite"], state["port"], state["pid"])


def extents_of(lab: Lab, lv: str) -> qemu.Slice:
    """From what the lab's LVM says: one linear segment on /dev/vdb."""
    segments = lab.run(f"lvs --noheadings --separator '|' -o seg_pe_ranges,seg_size_pe "
                       f"{VG}/{lv} --segments").stdout.split()
    if len(segments) != 1:
        raise LabError(f"{VG}/{lv} has {len(segments)} segments, not one: {segments}")
    ranges, count = segments[0].split("|")
    device, _, pe_range = ranges.partition(":")
    first = int(pe_range.split("-")[0])
    pe_start = int(lab.run(f"pvs --noheadings --nosuffix --units b -o pe_start {device}")
                   .stdout.strip())
    extent = int(lab.run(f"vgs --noheadings --nosuffix --units b -o vg_extent_size {VG}")
                 .stdout.strip())
    return qemu.Slice(pe_start + first * extent, int(count) * extent)
