#!/bin/sh
# install.sh: runs inside the new VM's root (chroot) while hostcreator builds
# it, with service starts blocked. hostcreator sets HOSTCREATOR_NAME,
# HOSTCREATOR_DISTR, HOSTCREATOR_TIMEZONE and HOSTCREATOR_LOCALE.
# Site additions belong in /root/bin/install-custom.sh (run at the end).
set -eu
export DEBIAN_FRONTEND=noninteractive

# A resumed build runs this again after an earlier run was cut off, perhaps in
# the middle of dpkg: finish what it left half-configured first.
dpkg --configure -a
timezone=${HOSTCREATOR_TIMEZONE:-Etc/UTC}
locale=${HOSTCREATOR_LOCALE:-C.UTF-8}

echo "### time zone: $timezone"
if [ ! -e "/usr/share/zoneinfo/$timezone" ]; then
    echo "install.sh: unknown time zone $timezone" >&2
    exit 1
fi
ln -sf "/usr/share/zoneinfo/$timezone" /etc/localtime
echo "$timezone" > /etc/timezone
dpkg-reconfigure -f noninteractive tzdata

# No apt-get update or full-upgrade here: hostcreator ran them on this tree in
# its bootstrap stage, with the package cache shared (see README, "Speed").

echo "### locale: $locale"
case "$locale" in
    C|POSIX|C.UTF-8|C.utf8) ;;
    *)
        dpkg -s locales >/dev/null 2>&1 || apt-get -y install locales
        charset=UTF-8
        case "$locale" in *.*) charset=${locale#*.} ;; esac
        if ! grep -q "^$locale " /etc/locale.gen; then
            echo "$locale $charset" >> /etc/locale.gen
        fi
        locale-gen
        ;;
esac
if command -v update-locale >/dev/null; then
    update-locale "LANG=$locale"
else
    echo "LANG=$locale" > /etc/default/locale
fi

# The network comes up by DHCP (systemd-networkd), SSH host keys are made at
# the first boot (hostcreator removes those of the build).
systemctl enable systemd-networkd.service hostcreator-ssh-keygen.service
if [ -e /usr/lib/systemd/system/systemd-resolved.service ]; then
    systemctl enable systemd-resolved.service
fi
if [ -e /usr/lib/systemd/system/qemu-guest-agent.service ]; then
    systemctl enable qemu-guest-agent.service 2>/dev/null || true
fi

if [ -x /root/bin/install-custom.sh ]; then
    echo "### install-custom.sh"
    /root/bin/install-custom.sh
fi
apt-get clean
