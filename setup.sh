#!/bin/sh
# setup.sh: install what hostcreator needs on a Debian or Ubuntu host, as root:
# the host tools (debootstrap, QEMU, libvirt...), a Python virtual environment
# in .venv with hostcreator and its test tools, and, where no init system
# manages them, the libvirt daemons.
set -eu
cd "$(dirname "$0")"

PACKAGES="
    debootstrap debian-archive-keyring gpgv rsync mmdebstrap eatmydata dpkg-dev zstd
    util-linux mount e2fsprogs parted
    qemu-system-x86 qemu-utils ovmf
    libvirt-daemon-system libvirt-clients libxml2-utils
    python3 python3-venv python3-dev gcc pkg-config libparted-dev libvirt-dev
"
export DEBIAN_FRONTEND=noninteractive
missing=""
for p in $PACKAGES; do
    dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q "install ok installed" \
        || missing="$missing $p"
done
if [ -n "$missing" ]; then
    echo "setup.sh: installing$missing"
    apt-get update -qq
    # shellcheck disable=SC2086
    apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test]'

# libvirtd and virtlogd: systemd starts them where it runs; elsewhere (containers,
# CI) start them here.
if ! virsh -c qemu:///system version >/dev/null 2>&1; then
    if [ -d /run/systemd/system ]; then
        systemctl start virtlogd.socket libvirtd.socket libvirtd.service || true
    else
        pgrep -x virtlogd >/dev/null || virtlogd -d
        pgrep -x libvirtd >/dev/null || libvirtd -d
    fi
fi
echo "setup.sh: ready; commands are in $(pwd)/.venv/bin"
