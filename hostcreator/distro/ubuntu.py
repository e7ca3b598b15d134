"""Ubuntu."""

from pathlib import Path

from hostcreator.distro import Distribution

UBUNTU = Distribution(
    name="ubuntu",
    origin="Ubuntu",
    # 26.04 LTS, released in April 2026.
    default_suite="resolute",
    # debootstrap bootstraps every Ubuntu suite with the same script, "gutsy";
    # older debootstraps (Debian 12's) just lack the names of the newer suites.
    suites={
        "jammy": "gutsy",
        "noble": "gutsy",
        "questing": "gutsy",
        "resolute": "gutsy",
    },
    components=("main", "restricted", "universe", "multiverse"),
    keyring=Path("/usr/share/keyrings/ubuntu-archive-keyring.gpg"),
    keyring_package="ubuntu-keyring",
    # The "virtual" kernel is the one made for guests.
    kernel_package="linux-image-virtual",
    # Ubuntu's kernels only recommend an initramfs generator, and debootstrap
    # installs no recommendations.
    kernel_companions=("initramfs-tools",),
    packages=(
        "linux-image-virtual",
        "initramfs-tools",
        "grub-pc",
        "openssh-server",
        "locales",
        "dbus",
        "qemu-guest-agent",
        "ca-certificates",
        # update-initramfs compresses with zstd when it is there (else gzip: slower
        # to build and to boot).
        "zstd",
    ),
    # The release pocket never changes after the release: fixes are in these.
    pockets=(("-updates", ""), ("-security", "")),
)
