#!/bin/sh
# postunpack.sh NAME MOUNTPOINT DISTR
#
# Runs on the host after debootstrap and the skeleton, before the chroot
# install. MOUNTPOINT is the new VM's root with /proc, /sys and /dev mounted,
# so `chroot "$MOUNTPOINT" ...` works; service starts are blocked. Also set:
# HOSTCREATOR_NAME, HOSTCREATOR_ROOT, HOSTCREATOR_DISTR,
# HOSTCREATOR_DISTRIBUTION (debian or ubuntu), HOSTCREATOR_HOOK.
# A non-zero exit stops the build (everything is unmounted and detached).
# The mounts are the build's own (a private mount namespace): the rest of the
# host does not see MOUNTPOINT's contents. A build resumed after this hook
# failed (create-* NAME --resume) runs it again: write it so that a second run
# does no harm.
# Install it as /etc/hostcreator/postunpack.sh and make it executable; more
# scripts of the same kind go into /etc/hostcreator/postunpack.d/ (run after
# this one, in lexical order of their names; not executable: skipped).
set -eu
name=$1
root=$2
distr=$3

# Examples:
# cp /etc/hostcreator/site-ca.crt "$root/usr/local/share/ca-certificates/"
# echo "deb http://apt.example.org/ $distr main" > "$root/etc/apt/sources.list.d/site.list"
: "$name" "$root" "$distr"
