#!/bin/sh
# grub.sh DISK PACKAGE...: install the kernel and GRUB (BIOS) on DISK and write
# grub.cfg; runs inside the new VM's root. hostcreator passes the packages from
# what it knows of the distribution (hostcreator/distro/): its kernel, what the
# kernel needs beside it, and GRUB. They are normally installed already:
# hostcreator's bootstrap stage installs them from the update pockets and
# builds the initramfs once; apt-get here only adds what a hook removed. The
# serial console settings are in /etc/default/grub.d/hostcreator.cfg.
set -eu
if [ $# -lt 2 ]; then
    echo "usage: grub.sh DISK PACKAGE..." >&2
    exit 2
fi
disk=$1
shift
export DEBIAN_FRONTEND=noninteractive
if ! dpkg -s "$@" >/dev/null 2>&1; then
    apt-get -y install "$@"
fi
# Later grub-pc upgrades inside the VM reinstall GRUB on its first virtio disk.
echo "grub-pc grub-pc/install_devices multiselect /dev/vda" | debconf-set-selections
grub-install --target=i386-pc "$disk"
update-grub
