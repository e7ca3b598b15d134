"""Debian."""

from pathlib import Path

from hostcreator.distro import Distribution

DEBIAN = Distribution(
    name="debian",
    origin="Debian",
    default_suite="trixie",
    suites={
        "bookworm": "sid",
        "trixie": "sid",
        "forky": "sid",
        "sid": "sid",
        "stable": "sid",
        "testing": "sid",
        "unstable": "sid",
    },
    components=("main",),
    keyring=Path("/usr/share/keyrings/debian-archive-keyring.gpg"),
    keyring_package="debian-archive-keyring",
    kernel_package="linux-image-amd64",
    packages=(
        "linux-image-amd64",
        "grub-pc",
        "openssh-server",
        "locales",
        "dbus",
        "systemd-resolved",
        "qemu-guest-agent",
        "ca-certificates",
        # update-initramfs compresses with zstd when it is there (else gzip: slower
        # to build and to boot).
        "zstd",
    ),
    pockets=(("-updates", ""), ("-security", "-security")),
    rolling=frozenset({"sid", "unstable", "testing", "forky"}),
)
