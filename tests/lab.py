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
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

from conftest import (
    CACHE_DIR,
    DATA,
    TestEnv,
    access_settings,
    run_cli,
    unique_name,
    with_shared_debs,
)

from hostcreator import config as hcconfig
from hostcreator import distro
from hostcreator.build import bootstrap, cache
from hostcreator.domain import console, qemu
from hostcreator.resources import REPO_ROOT

# The rootfs cache of the lab and of its builds, kept between test runs like the
# package cache beside it (CACHE_DIR/debs), so that a lab takes minutes, not ten;
# an entry is bootstrapped afresh after CACHE_MAX_AGE days.
LAB_CACHE = CACHE_DIR / "lab"
VG = "hclab"
THIN_POOL = "pool"
THIN_POOL_GIB = 8
PV_GIB = 32
LAB_SIZE_GIB = 12
LAB_MEMORY_MIB = 3072
# What a KVM host running hostcreator needs (setup.sh's host tools), from
# Debian's archive, Python's libraries included: the wheel is installed
# without dependencies into a venv that sees them.
LAB_PACKAGES = (
    "lvm2", "thin-provisioning-tools",
    "libvirt-daemon-system", "libvirt-clients", "libxml2-utils",
    "qemu-system-x86", "qemu-utils",
    "debootstrap", "debian-archive-keyring", "gpgv", "mmdebstrap", "eatmydata",
    "rsync", "dpkg-dev", "zstd", "parted", "e2fsprogs",
    "python3-venv", "python3-parted", "python3-pyudev", "python3-jinja2",
    "python3-libvirt", "python3-typer",
)
# In the lab: the configuration of its own builds, their hooks and skeleton.
INNER = Path("/root/lab")
INNER_CONFIG = INNER / "hostcreator.conf"
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
    """The lab's own builds: on LVM in hclab, in the lab's default directories."""
    return {
        "STORAGE": "lvm",
        "VG_NAME": VG,
        "SIZE": "4",
        "HOOK_DIR": str(INNER / "hooks"),
        # A wheel carries no skel/ yet (issue 13): the lab gets a copy.
        "SKEL_DIR": str(INNER / "skel"),
        "LOG_DIR": str(INNER / "log"),
        "TIMEZONE": "Etc/UTC",
        "LOCALE": "C.UTF-8",
        "ROOT_PASSWORD_FILE": str(INNER / "root-password"),
        "SSH_AUTHORIZED_KEYS": str(INNER / "authorized_keys"),
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


def _not_sources(directory: str, names: list[str]) -> set[str]:
    """What a copy of the checkout for building the wheel leaves out."""
    top = Path(directory) == REPO_ROOT
    return {n for n in names if n == "__pycache__" or n.endswith(".egg-info")
            or (top and n in (".venv", ".git", "build", "dist"))}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Lab:
    base: Path
    name: str = field(default_factory=lambda: unique_name("hctest-lab"))
    suite: str = "trixie"
    port: int = 0
    pid: int = 0
    timings: dict[str, float] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None

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
    def console_log(self) -> Path:
        return self.base / "console.log"

    @property
    def log_file(self) -> Path:
        return self.base / "lab.log"

    @property
    def state_file(self) -> Path:
        return self.base / "lab.json"

    def say(self, text: str) -> None:
        print(text, flush=True)
        with open(self.log_file, "a") as f:
            f.write(text + "\n")

    def timed(self, part: str, started: float) -> None:
        self.timings[part] = round(time.monotonic() - started, 1)
        self.say(f"lab: {part} took {self.timings[part]} s")

    # --- building ---
    def build(self) -> None:
        """Build the lab's disk on the outer host (file backend, in BASE)."""
        self.base.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "hctest-lab",
                        "-f", self.key], check=True, stdin=subprocess.DEVNULL)
        stage = self.base / "stage"
        self._wheels(stage / "root")
        self._stage_inner(stage)
        self.timed("wheel and files", started)
        started = time.monotonic()
        self._handin_cache(stage)
        self.timed("inner rootfs cache entry", started)
        started = time.monotonic()
        env = self.env
        settings = access_settings(env)
        settings["SSH_AUTHORIZED_KEYS"] = str(self.key.with_suffix(".pub"))
        env.write(SIZE=str(LAB_SIZE_GIB), PACKAGES=" ".join(LAB_PACKAGES),
                  CACHE_DIR=str(LAB_CACHE), **settings)
        env.install_hook("postconfig.sh", self._postconfig_hook(stage))
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

    def _wheels(self, into: Path) -> None:
        """hostcreator's wheel, built from the checkout, and the wheels it needs beside
        Debian's packages, into INTO (the lab's /root)."""
        into.mkdir(parents=True, mode=0o700)
        with tempfile.TemporaryDirectory(dir=self.base) as tmp:
            # A copy: the build must not leave build/ or *.egg-info in the checkout.
            src = Path(tmp) / "src"
            shutil.copytree(REPO_ROOT, src, ignore=_not_sources)
            subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps",
                            "--disable-pip-version-check", "-w", into, src],
                           check=True, stdin=subprocess.DEVNULL, capture_output=True)
            # Debian's typer and click (trixie) lack what the CLI imports (a typer that
            # carries its own click): the lab gets this venv's typer as a wheel.
            # TODO: typer's own dependencies (pydantic, annotated-doc) beside Debian's.
            pins = [f"typer=={metadata.version('typer')}"]
            subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps",
                            "--only-binary=:all:", "--disable-pip-version-check",
                            "-d", into, *pins],
                           check=True, stdin=subprocess.DEVNULL, capture_output=True)

    def _stage_inner(self, stage: Path) -> None:
        """The lab's INNER directory: its builds' configuration, hooks, skeleton, secrets."""
        inner = stage / INNER.relative_to("/")
        (inner / "hooks").mkdir(parents=True)
        shutil.copytree(REPO_ROOT / "skel", inner / "skel", symlinks=True)
        shutil.copy(DATA / "report-postconfig.sh", inner / "hooks" / "postconfig.sh")
        values = inner_settings()
        (inner / "hostcreator.conf").write_text(
            "".join(f'{k}="{v}"\n' for k, v in values.items()))
        secrets_env = TestEnv(self.base / "inner-secrets")
        secrets_env.base.mkdir()
        for key, path in access_settings(secrets_env).items():
            shutil.copy(path, Path(inner) / Path(values[key]).name)

    def _handin_cache(self, stage: Path) -> None:
        """The rootfs cache entry of the lab's builds (same inputs as on the lab, as the
        lab has mmdebstrap too) and the package cache, into the lab's CACHE_DIR."""
        lab_cache = stage / "var/cache/hostcreator"
        env = self.env
        env.write(CACHE_DIR=str(with_shared_debs(LAB_CACHE)))
        cfg = hcconfig.load(env.config, environ={})
        plan = bootstrap.plan(cfg, distro.get("debian"), self.suite)
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
        assert entry is not None, f"no rootfs cache entry {key} in {cfg.cache_dir}"
        (lab_cache / "rootfs").mkdir(parents=True)
        shutil.copytree(entry.path, lab_cache / "rootfs" / entry.key)
        if plan.cache_dir is not None and plan.cache_dir.is_dir():
            shutil.copytree(plan.cache_dir, lab_cache / "debs" / plan.cache_dir.name)

    def _postconfig_hook(self, stage: Path) -> str:
        links = " ".join(COMMANDS)
        return f"""#!/bin/sh
# The lab's postconfig hook (tests/lab.py): what the lab is handed, and hostcreator
# from the wheel, in a venv that sees Debian's Python libraries.
set -eu
root=$2
cp -a {stage}/. "$root/"
chroot "$root" python3 -m venv --system-site-packages {VENV}
chroot "$root" sh -c '{VENV}/bin/pip install -q --no-deps --no-index \\
    --disable-pip-version-check /root/*.whl'
rm "$root"/root/*.whl
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
        argv = [
            "qemu-system-x86_64", "-accel", "tcg", "-smp", "1", "-m", str(LAB_MEMORY_MIB),
            "-drive", f"file={self.image},format=raw,if=virtio,cache=unsafe",
            "-drive", f"file={self.pv_image},format=raw,if=virtio,cache=unsafe",
            "-nic", f"user,model=virtio-net-pci,hostfwd=tcp:127.0.0.1:{self.port}-:22",
            "-display", "none", "-monitor", "none", "-serial", f"file:{self.console_log}",
            "-no-reboot",
        ]
        self.say("lab: + " + shlex.join(map(str, argv)))
        with open(self.base / "qemu.log", "ab") as out:
            self.proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True, preexec_fn=None if detach else _die_with_parent)
        self.pid = self.proc.pid
        self.save()
        self._wait_for_ssh(time.monotonic() + BOOT_TIMEOUT)
        self.timed("lab boot", started)

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
        try:
            os.kill(self.pid, 0)
        except OSError:
            return False
        return Path(f"/proc/{self.pid}/cmdline").read_bytes().startswith(b"qemu-system")

    def ssh_argv(self, command: str) -> list[str]:
        return ["ssh", *SSH_OPTIONS, "-i", str(self.key), "-p", str(self.port),
                "root@127.0.0.1", command]

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
        if self.running():
            self.say(f"lab: not down after {STOP_TIMEOUT} s, killed")
            self.kill()
        self.timed("lab shutdown", started)

    def kill(self) -> None:
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
