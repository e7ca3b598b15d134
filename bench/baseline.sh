#!/bin/sh
# baseline.sh IMAGE SUITE [SIZE]: the seed recipe by hand, as the old shell
# scripts did it - the yardstick of bench/run.py, not part of hostcreator.
# A sparse raw image, GPT (BIOS boot, swap, root) with sgdisk, mkswap and
# mkfs.ext4, plain debootstrap with the kernel and GRUB (debootstrap's own
# default mirror, no package cache), then grub-install and update-grub in the
# chroot. The result boots to a login prompt on the serial console.
set -eu
image=$1
suite=$2
size=${3:-4G}
name=$(basename "$image" .img)

mnt=$(mktemp -d /tmp/hc-baseline.XXXXXX)
loop=""
uuid_link=""
cleanup() {
    set +e
    for m in dev/pts dev sys proc ""; do
        mountpoint -q "$mnt/$m" 2>/dev/null && umount "$mnt/$m"
    done
    [ -n "$uuid_link" ] && rm -f "$uuid_link"
    [ -n "$loop" ] && losetup -d "$loop"
    rmdir "$mnt"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

for tool in sgdisk debootstrap mkfs.ext4; do
    command -v "$tool" >/dev/null || { echo "baseline.sh: $tool is missing (sgdisk: apt-get install gdisk)" >&2; exit 127; }
done

rm -f "$image"
truncate -s "$size" "$image"
loop=$(losetup --show --find --partscan "$image")
sgdisk --zap-all \
    --new=1:0:+4M --typecode=1:ef02 \
    --new=2:0:+1020M --typecode=2:8200 \
    --new=3:0:0 --typecode=3:8300 "$loop" >/dev/null
partx --update "$loop" 2>/dev/null || partx --add "$loop"
i=0
while [ ! -b "${loop}p3" ]; do
    i=$((i + 1))
    [ $i -le 100 ] || { echo "baseline.sh: ${loop}p3 did not appear" >&2; exit 1; }
    partx --update "$loop" 2>/dev/null || true
    sleep 0.1
done
mkswap "${loop}p2" >/dev/null
mkfs.ext4 -q -F "${loop}p3"
tune2fs -c 0 -i 0 "${loop}p3" >/dev/null
mount "${loop}p3" "$mnt"

debootstrap --arch=amd64 --include=linux-image-amd64,grub-pc "$suite" "$mnt"

root_uuid=$(blkid -s UUID -o value "${loop}p3")
swap_uuid=$(blkid -s UUID -o value "${loop}p2")
printf 'UUID=%s / ext4 errors=remount-ro 0 1\nUUID=%s none swap sw 0 0\n' \
    "$root_uuid" "$swap_uuid" > "$mnt/etc/fstab"
echo "$name" > "$mnt/etc/hostname"
cat >> "$mnt/etc/default/grub" <<'EOF'
GRUB_CMDLINE_LINUX="console=ttyS0,115200"
GRUB_TERMINAL="serial console"
GRUB_SERIAL_COMMAND="serial --unit=0 --speed=115200"
EOF

mount --bind /dev "$mnt/dev"
mount --bind /dev/pts "$mnt/dev/pts"
mount -t proc proc "$mnt/proc"
mount -t sysfs sysfs "$mnt/sys"
# What udev would have made: grub-mkconfig names the root by UUID only when
# /dev/disk/by-uuid/<uuid> exists (this host runs no udev).
mkdir -p /dev/disk/by-uuid
uuid_link=/dev/disk/by-uuid/$root_uuid
ln -sf "../../$(basename "${loop}p3")" "$uuid_link"
chroot "$mnt" grub-install --target=i386-pc "$loop"
chroot "$mnt" update-grub
grep -q "root=UUID=$root_uuid" "$mnt/boot/grub/grub.cfg"

cleanup
trap - EXIT
sync "$image"
