#!/bin/sh
# setup.sh: install what hostcreator needs on a Debian or Ubuntu host, as root:
# the host tools (debootstrap, QEMU, libvirt...), the tools the tests build the
# Debian package with (debhelper, lintian), a Python virtual environment
# in .venv with hostcreator and its test tools, and, where no init system
# manages them, the libvirt daemons.
set -eu
cd "$(dirname "$0")"

PACKAGES="
    debootstrap debian-archive-keyring gpgv gnupg rsync mmdebstrap eatmydata dpkg-dev zstd
    util-linux mount e2fsprogs parted
    qemu-system-x86 qemu-utils ovmf libvmdk-utils
    libvirt-daemon-system libvirt-clients libxml2-utils
    xorriso
    python3 python3-venv python3-dev gcc pkg-config libparted-dev libvirt-dev
    man-db debhelper dh-python pybuild-plugin-pyproject python3-all python3-setuptools lintian
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

# The Ubuntu archive keyring, so that Ubuntu guests are verified like Debian
# ones. Ubuntu hosts and Debian 13+ have the package; Debian 12 has not, but
# Debian 13's ubuntu-keyring (architecture all, no dependencies) installs
# there: it is fetched from the "trixie" suite of the Debian archive the host
# already uses (read from apt, so no mirror is named here), with apt checking
# it against the Debian archive keyring as usual.
UBUNTU_KEYRING=/usr/share/keyrings/ubuntu-archive-keyring.gpg
UBUNTU_KEYRING_SUITE=trixie
ubuntu_keyring_from_debian() {
    # shellcheck disable=SC1091
    codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
    debian_uris() {
        apt-get indextargets --format '$(REPO_URI)' "Origin: Debian" "Label: Debian" \
            "Codename: $codename" "Identifier: Packages" | sort -u
    }
    uris=$(debian_uris)
    if [ -z "$uris" ]; then  # no package lists yet
        apt-get update -qq
        uris=$(debian_uris)
    fi
    if [ -z "$uris" ]; then
        echo "setup.sh: no Debian archive in the apt sources: install ubuntu-keyring" >&2
        return 1
    fi
    tmp=$(mktemp -d)
    mkdir -p "$tmp/lists/partial" "$tmp/cache/archives/partial"
    # apt downloads as the user _apt, which must reach the directory.
    chmod 755 "$tmp"
    if id _apt >/dev/null 2>&1; then chown -R _apt "$tmp"; fi
    for uri in $uris; do
        echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg]" \
            "$uri $UBUNTU_KEYRING_SUITE main"
    done > "$tmp/sources.list"
    # Its own sources, lists and cache: the host's apt state stays as it was.
    set -- -o "Dir::Etc::SourceList=$tmp/sources.list" -o Dir::Etc::SourceParts=- \
        -o "Dir::State::Lists=$tmp/lists" -o "Dir::Cache=$tmp/cache"
    if apt-get "$@" -qq update && (cd "$tmp" && apt-get "$@" -qq download ubuntu-keyring) \
            && dpkg -i "$tmp"/ubuntu-keyring_*.deb >/dev/null; then
        rm -rf "$tmp"
    else
        rm -rf "$tmp"
        return 1
    fi
}
if [ ! -s "$UBUNTU_KEYRING" ]; then
    echo "setup.sh: installing the Ubuntu archive keyring"
    if apt-cache policy ubuntu-keyring 2>/dev/null | grep -q 'Candidate: [0-9]'; then
        apt-get install -y -qq ubuntu-keyring >/dev/null
    else
        ubuntu_keyring_from_debian
    fi
fi
# A throw-away GnuPG home: root's own is not touched.
gnupghome=$(mktemp -d)
if ! GNUPGHOME=$gnupghome gpg --batch --show-keys "$UBUNTU_KEYRING" 2>/dev/null \
        | grep -q "Ubuntu Archive Automatic Signing Key"; then
    rm -rf "$gnupghome"
    echo "setup.sh: $UBUNTU_KEYRING holds no Ubuntu archive signing key" >&2
    exit 1
fi
rm -rf "$gnupghome"

if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test]'

# Without udev nobody gives /dev/kvm the group and mode of udev's rule (root:kvm
# 0660); libvirt, which checks it as its QEMU user, then probes QEMU anew at every
# call, and defining a domain takes a minute instead of a moment.
if [ -c /dev/kvm ] && getent group kvm >/dev/null && [ "$(stat -c %G /dev/kvm)" != kvm ]; then
    chgrp kvm /dev/kvm && chmod 0660 /dev/kvm
fi

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
