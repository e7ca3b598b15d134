#!/bin/sh
# postconfig.sh NAME MOUNTPOINT DISTR
#
# Runs on the host after the chroot install (install.sh, install-custom.sh,
# root password, SSH keys) and before the boot loader is installed. Same
# arguments, environment and rules as postunpack.sh.
# Install it as /etc/hostcreator/postconfig.sh and make it executable; more
# scripts of the same kind go into /etc/hostcreator/postconfig.d/ (run after
# this one, in lexical order of their names; not executable: skipped).
set -eu
name=$1
root=$2
distr=$3

# Examples:
# chroot "$root" apt-get -y install nginx
# install -m 600 /etc/hostcreator/"$name".env "$root/etc/default/app"
: "$name" "$root" "$distr"
