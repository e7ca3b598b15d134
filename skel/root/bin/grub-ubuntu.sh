#!/bin/sh
# grub-ubuntu.sh DISK: install the kernel and GRUB (BIOS) on DISK and write
# grub.cfg; runs inside the new VM's root. The serial console settings are in
# /etc/default/grub.d/hostcreator.cfg.
set -eu
disk=$1
export DEBIAN_FRONTEND=noninteractive
# The "virtual" kernel is the one made for guests; Ubuntu's kernels only
# recommend an initramfs generator.
packages="linux-image-virtual initramfs-tools grub-pc"
if ! dpkg -s $packages >/dev/null 2>&1; then
    apt-get -y install $packages
fi
# Later grub-pc upgrades inside the VM reinstall GRUB on its first virtio disk.
echo "grub-pc grub-pc/install_devices multiselect /dev/vda" | debconf-set-selections
grub-install --target=i386-pc "$disk"
update-grub
