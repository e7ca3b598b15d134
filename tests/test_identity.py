from __future__ import annotations

import pytest

from hostcreator import paths
from hostcreator.build import bootloader, identity
from hostcreator.disk import fstab
from hostcreator.disk.partition import FileSystems
from hostcreator.errors import HostCreatorError, InvalidInput

pytestmark = pytest.mark.unit
FS = FileSystems(root_uuid="11111111-2222-3333-4444-555555555555",
                 swap_uuid="66666666-7777-8888-9999-000000000000")


@pytest.mark.parametrize("name", ["web1", "a", "db-01", "x" * 63, "0"])
def test_valid_names(name):
    paths.validate_name(name)


@pytest.mark.parametrize("name", ["", "-a", "a-", "Web1", "a_b", "a.b", "x" * 64, "a b",
                                  "../etc"])
def test_invalid_names(name):
    with pytest.raises(InvalidInput, match="not a valid host name"):
        paths.validate_name(name)


def test_hostname_hosts_and_aliases(tmp_path):
    (tmp_path / "etc").mkdir()
    (tmp_path / "root").mkdir()
    (tmp_path / "etc" / "hosts").write_text("127.0.0.1\tlocalhost\n127.0.1.1\told\n::1 x\n")
    identity.set_hostname(tmp_path, "web1")
    identity.add_root_aliases(tmp_path)
    identity.add_root_aliases(tmp_path)
    assert (tmp_path / "etc" / "hostname").read_text() == "web1\n"
    assert (tmp_path / "etc" / "hosts").read_text() == \
        "127.0.0.1\tlocalhost\n127.0.1.1\tweb1\n::1 x\n"
    profile = (tmp_path / "root" / ".profile").read_text()
    assert profile.count("alias ll='ls -l'") == 1


def test_reset_removes_what_must_be_unique(tmp_path):
    for rel in ("etc/ssh/ssh_host_ed25519_key", "etc/ssh/ssh_host_ed25519_key.pub",
                "etc/ssh/sshd_config", "var/lib/systemd/random-seed",
                "var/cache/apt/archives/a.deb", "var/lib/dbus/x"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("x")
    (tmp_path / "etc" / "machine-id").write_text("0123456789abcdef0123456789abcdef\n")
    (tmp_path / "var/lib/dbus/machine-id").symlink_to("/etc/machine-id")
    identity.reset(tmp_path)
    assert (tmp_path / "etc" / "machine-id").read_text() == ""
    assert not list((tmp_path / "etc" / "ssh").glob("ssh_host_*"))
    assert (tmp_path / "etc" / "ssh" / "sshd_config").exists()
    assert not (tmp_path / "var/lib/systemd/random-seed").exists()
    assert not (tmp_path / "var/lib/dbus/machine-id").is_symlink()
    assert not (tmp_path / "var/cache/apt/archives/a.deb").exists()


def test_fstab_names_root_and_swap_by_uuid():
    lines = [line.split() for line in fstab.render(FS).splitlines() if not line.startswith("#")]
    assert lines == [
        [f"UUID={FS.root_uuid}", "/", "ext4", "errors=remount-ro", "0", "1"],
        [f"UUID={FS.swap_uuid}", "none", "swap", "sw", "0", "0"],
    ]


def grub_tree(tmp_path, cfg_text):
    (tmp_path / "boot/grub/i386-pc").mkdir(parents=True)
    (tmp_path / "boot/grub/i386-pc/core.img").write_bytes(b"x")
    (tmp_path / "boot/grub/grub.cfg").write_text(cfg_text)


def test_grub_cfg_with_root_by_uuid_passes(tmp_path):
    grub_tree(tmp_path, f"linux /vmlinuz root=UUID={FS.root_uuid} ro quiet\n")
    bootloader.verify(tmp_path, FS)


def test_grub_cfg_with_root_by_device_name_fails(tmp_path):
    grub_tree(tmp_path, "linux /vmlinuz root=/dev/loop0p3 ro quiet\n")
    with pytest.raises(HostCreatorError, match="names the root as /dev/loop0p3"):
        bootloader.verify(tmp_path, FS)


OLD = FileSystems(root_uuid="aaaaaaaa-0000-0000-0000-000000000001",
                  swap_uuid="bbbbbbbb-0000-0000-0000-000000000002")


def test_forget_runs_removes_what_a_booted_vm_made_and_keeps_the_rest(tmp_path):
    traces = ["var/lib/dhcp/dhclient.eth0.leases", "var/lib/systemd/network/duid",
              "var/log/journal/0123/system.journal", "root/.bash_history"]
    kept = ["var/lib/dhcp/README", "var/log/syslog", "root/.profile"]
    for rel in traces + kept:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("x")
    identity.forget_runs(tmp_path)
    assert [rel for rel in traces if (tmp_path / rel).exists()] == []
    assert (tmp_path / "var/log/journal").is_dir()  # persistent journaling stays on
    assert all((tmp_path / rel).exists() for rel in kept)


def test_grub_cfg_follows_the_new_uuids(tmp_path):
    grub = tmp_path / "boot" / "grub"
    (grub / "i386-pc").mkdir(parents=True)
    (grub / "i386-pc" / "core.img").write_text("")
    (grub / "grub.cfg").write_text(
        f"search --fs-uuid --set=root {OLD.root_uuid}\n"
        f"linux /vmlinuz root=UUID={OLD.root_uuid} resume=UUID={OLD.swap_uuid} ro\n")
    bootloader.follow(tmp_path, OLD, FS)
    assert (grub / "grub.cfg").read_text() == (
        f"search --fs-uuid --set=root {FS.root_uuid}\n"
        f"linux /vmlinuz root=UUID={FS.root_uuid} resume=UUID={FS.swap_uuid} ro\n")


def test_a_disk_without_grub_cfg_is_not_followed(tmp_path):
    with pytest.raises(HostCreatorError, match="the disk has no boot loader"):
        bootloader.follow(tmp_path, OLD, FS)


def test_renew_inside_refuses_a_hostname_link(tmp_path):
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "hostname").symlink_to("/etc/hostname")
    with pytest.raises(HostCreatorError, match="is a symbolic link or below one: not written"):
        identity.renew_inside(tmp_path, "web2", OLD, FS)


@pytest.mark.parametrize("link,host_file,call", [
    ("var/lib/NetworkManager", "x.lease", identity.forget_runs),
    ("etc/ssh", "ssh_host_ed25519_key",
     lambda root: identity.renew_inside(root, "web2", OLD, FS)),
], ids=["leases", "host-keys"])
def test_a_link_out_of_the_root_is_never_followed(tmp_path, link, host_file, call):
    host = tmp_path / "host"
    host.mkdir()
    (host / host_file).write_text("the host's")
    root = tmp_path / "root"
    (root / link).parent.mkdir(parents=True)
    (root / link).symlink_to(host)
    with pytest.raises(HostCreatorError, match="leads out of the VM's root"):
        call(root)
    assert (host / host_file).read_text() == "the host's"
