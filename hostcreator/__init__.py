"""hostcreator: turn a name into an installed, bootable Debian or Ubuntu KVM virtual machine."""

__version__ = "0.1.0"
