"""Out of the box: a VM built with neither ROOT_PASSWORD_FILE nor SSH_AUTHORIZED_KEYS, with a
static address, booted once under QEMU and checked from the inside.

One build (from the rootfs cache the Debian e2e build filled) and one boot prove:
root logs in on the serial console with the generated password; root logs in over
SSH (a host port forwarded by QEMU's user network) with the key of the user who ran
create-debian; the static address inside QEMU's user network is the VM's, and it
resolves its mirror's host name; the boot is clean (no error line, no failed unit);
the hook directories ran; --json gives the summary, --dry-run the plan.
"""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess

import pytest
from conftest import DEBIAN_SUITE, TestEnv, run_cli, unique_name
from guest import console_errors, free_port, running_guest

pytestmark = pytest.mark.e2e

STATIC = {"IP_ADDRESS": "10.0.2.15/24", "GATEWAY": "10.0.2.2", "DNS": "10.0.2.3"}


def user_home(env: TestEnv) -> tuple[dict[str, str], str]:
    """An environment whose user has an SSH key pair of their own, as create-debian sees it."""
    home = env.base / "home"
    (home / ".ssh").mkdir(parents=True, mode=0o700)
    key = home / ".ssh" / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "hctest@host", "-f",
                    str(key)], check=True, stdin=subprocess.DEVNULL)
    environ = {k: v for k, v in os.environ.items() if k != "SUDO_USER"}
    environ["HOME"] = str(home)
    return environ, str(key)


def hook_dirs(env: TestEnv) -> None:
    parts = env.hook_dir / "postconfig.d"
    parts.mkdir(parents=True)
    (parts / "50-mark").write_text('#!/bin/sh\necho "$1 $3 $HOSTCREATOR_HOOK" > '
                                   '"$2/etc/hctest-hook-dir"\n')
    (parts / "50-mark").chmod(0o755)
    (parts / "60-off").write_text("#!/bin/sh\nexit 1\n")  # not executable: skipped


@pytest.fixture(scope="module")
def login_vm(tmp_path_factory, debian_vm):
    env = TestEnv(tmp_path_factory.mktemp("login-vm"))
    # The rootfs cache the Debian build filled: this build unpacks it.
    env.write(USER_SSH_KEYS="yes", CACHE_DIR=str(debian_vm.env.cache_dir), **STATIC)
    hook_dirs(env)
    environ, key = user_home(env)
    name = unique_name()
    argv = ("create-debian", name, DEBIAN_SUITE, "--config", str(env.config))
    plan = run_cli(*argv, "--dry-run", "--json", env=environ, timeout=300)
    assert plan.returncode == 0, plan.stderr
    result = run_cli(*argv, "--json", env=environ)
    if result.returncode != 0:
        env.cleanup()
        pytest.fail(f"create-debian failed:\n{result.stderr}")
    yield {"env": env, "name": name, "key": key, "plan": plan, "result": result,
           "summary": json.loads(result.stdout)}
    leaks = env.leaks()
    env.cleanup()
    assert not leaks, f"left behind: {leaks}"


@pytest.fixture(scope="module")
def inside(login_vm):
    """login_vm booted once: what root sees after logging in on the console, and over SSH."""
    env, name = login_vm["env"], login_vm["name"]
    password = (env.secrets_dir / name / "root-password").read_text().strip()
    port = free_port()
    console_log = env.log_dir / f"{name}.login-console.log"
    seen = {}
    with running_guest(env.image(name), console_log, ssh_port=port) as console:
        console.login(password)
        seen["arithmetic"] = console.run("echo $((6 * 7))")
        seen["running"] = console.run("systemctl is-system-running --wait")
        seen["failed"] = console.run("systemctl --failed --plain --no-legend")
        seen["errors"] = console.run("journalctl -b -p err -q --no-pager")
        seen["ipv4"] = console.run("ip -4 -o addr show scope global | awk '{print $4}'")
        seen["route"] = console.run("ip -4 route show default")
        host = console.run("sed -n 's|^deb [^ ]*://\\([^/ ]*\\).*|\\1|p' "
                           "/etc/apt/sources.list | head -n 1")
        seen["mirror_host"] = host
        seen["resolved"] = console.run(f"getent ahostsv4 {host[1].strip()} | head -n 1")
        seen["hook_dir"] = console.run("cat /etc/hctest-hook-dir")
        seen["ssh"] = subprocess.run(
            ["ssh", "-i", login_vm["key"], "-p", str(port), "-o", "BatchMode=yes",
             "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
             "-o", "ConnectTimeout=60", "root@127.0.0.1", "hostname; id -u"],
            capture_output=True, text=True, timeout=180, stdin=subprocess.DEVNULL)
        console.run("sync")
    seen["console"] = console_log.read_bytes().decode("utf-8", "replace")
    return seen


def test_root_logs_in_on_the_console_with_the_generated_password(login_vm, inside):
    assert inside["arithmetic"] == (0, "42\n")
    path = login_vm["env"].secrets_dir / login_vm["name"] / "root-password"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    password = path.read_text().strip()
    out = login_vm["result"].stdout + login_vm["result"].stderr
    assert str(path) in out  # the summary says where it is...
    log = (login_vm["env"].log_dir / f"{login_vm['name']}.log").read_text()
    journal = login_vm["env"].journal(login_vm["name"])
    for text in (out, log, json.dumps(journal), login_vm["plan"].stdout):
        assert password not in text  # ...never what it is


def test_root_logs_in_over_ssh_with_the_users_key(login_vm, inside):
    ssh = inside["ssh"]
    assert ssh.returncode == 0, ssh.stderr
    assert ssh.stdout.split() == [login_vm["name"], "0"]
    assert login_vm["summary"]["login"]["ssh_keys"] == 1


def test_the_static_address_is_the_vms_and_it_resolves_its_mirror(inside):
    assert inside["ipv4"] == (0, "10.0.2.15/24\n")
    assert "default via 10.0.2.2 " in inside["route"][1]
    code, host = inside["mirror_host"]
    assert code == 0 and re.fullmatch(r"[a-z0-9.-]+\.[a-z]+\n", host), host
    code, resolved = inside["resolved"]
    assert code == 0 and re.match(r"\d+\.\d+\.\d+\.\d+ ", resolved), resolved


def test_the_first_boot_is_clean(inside):
    assert inside["running"] == (0, "running\n"), inside["failed"]
    assert inside["failed"] == (0, "")
    assert inside["errors"] == (0, ""), inside["errors"]
    assert console_errors(inside["console"]) == []


def test_the_hook_directories_ran(login_vm, inside):
    assert inside["hook_dir"] == (0, f"{login_vm['name']} {DEBIAN_SUITE} postconfig.sh\n")
    err = login_vm["result"].stderr
    assert "postconfig.d/60-off is not executable, skipped" in err


def test_json_gives_the_summary_and_dry_run_the_plan(login_vm):
    summary = login_vm["summary"]
    env, name = login_vm["env"], login_vm["name"]
    assert summary["name"] == name and summary["suite"] == DEBIAN_SUITE
    assert summary["disk"]["path"] == str(env.image(name))
    assert [p["name"] for p in summary["layout"]] == ["bios_grub", "swap", "root"]
    assert summary["cache"]["status"] == "hit"
    assert len(summary["timings"]) == 9 and summary["total_seconds"] > 0
    assert summary["network"] == "static 10.0.2.15/24, gateway 10.0.2.2, DNS 10.0.2.3"
    plan = json.loads(login_vm["plan"].stdout)
    assert plan["dry_run"] and plan["cache"]["status"] == "hit"
    assert plan["disk"]["exists"] is False and plan["layout"] == summary["layout"]
    hooks = {h["path"].rsplit("/", 1)[1]: h["runs"] for h in plan["hooks"]["postconfig.sh"]}
    assert hooks == {"50-mark": True, "60-off": False}
    assert str(env.hook_dir / "postconfig.d" / "50-mark") in plan["scripts"]


def test_dry_run_creates_nothing(testenv, debian_vm, libvirtd):
    """Every check, the archive's answer included, then the plan: nothing else."""
    name = unique_name()
    testenv.write(CACHE_DIR=str(debian_vm.env.cache_dir), **STATIC)
    before = sorted(p for p in testenv.base.rglob("*"))
    result = run_cli("create-debian", name, DEBIAN_SUITE, "--config", str(testenv.config),
                     "--dry-run", timeout=300)
    assert result.returncode == 0, result.stderr
    assert re.search(r"^disk +image file .*to be created\)$", result.stdout, re.MULTILINE)
    assert re.search(r"^bootstrap +rootfs cache hit ", result.stdout, re.MULTILINE)
    assert sorted(p for p in testenv.base.rglob("*")) == before
    for directory in ("images", "log", "state", "journal", "secrets", "mnt"):
        assert not (testenv.base / directory).exists(), directory
    domains = subprocess.run(["virsh", "-c", libvirtd, "list", "--all", "--name"],
                             capture_output=True, text=True, check=True).stdout.split()
    assert name not in domains
