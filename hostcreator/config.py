"""Configuration: one frozen dataclass, one table of settings.

Values come, lowest first, from the built-in defaults, the config file
(/etc/default/hostcreator, else the older /etc/default/kvm-hostcreator, or the
file named by --config / HOSTCREATOR_CONFIG), the environment
(HOSTCREATOR_<KEY>) and the command line (options and --set KEY=VALUE).
The file holds shell KEY=VALUE lines, so the same file can be sourced by shell
scripts.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
import shlex
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from hostcreator import inputs
from hostcreator.errors import InvalidInput
from hostcreator.log import logger

DEFAULT_FILE = Path("/etc/default/hostcreator")
LEGACY_FILE = Path("/etc/default/kvm-hostcreator")
ENV_FILE = "HOSTCREATOR_CONFIG"
ENV_PREFIX = "HOSTCREATOR_"
# HOSTCREATOR_* variables that are not settings: the config file's name, the fault
# injection switch of the tests (faults.py) and the test suite's own.
NOT_SETTINGS = re.compile(r"HOSTCREATOR_(CONFIG|FAULT|TEST_\w*|REGENERATE)")


class StorageKind(StrEnum):
    LVM = "lvm"
    FILE = "file"


class VirtType(StrEnum):
    AUTO = "auto"
    KVM = "kvm"
    QEMU = "qemu"


class BootstrapTool(StrEnum):
    AUTO = "auto"
    DEBOOTSTRAP = "debootstrap"
    MMDEBSTRAP = "mmdebstrap"


class NetworkType(StrEnum):
    AUTO = "auto"
    BRIDGE = "bridge"
    NETWORK = "network"
    USER = "user"


class Graphics(StrEnum):
    VNC = "vnc"
    SPICE = "spice"
    NONE = "none"


def _optional_text(value: str) -> str | None:
    return value or None


def _label(value: str) -> str:
    """A short line of text a person reads (a product's vendor or version)."""
    if not value or not value.isprintable() or len(value) > 200:
        raise ValueError(f"{printable(value)!r} is not one printable line of 1-200 "
                         "characters")
    return value


def _path(value: str) -> Path:
    if not value:
        raise ValueError("an empty path")
    return absolute_path(value)


def _optional_path(value: str) -> Path | None:
    return absolute_path(value) if value else None


# Linux's limits (limits.h): a file name of at most NAME_MAX bytes, a path of less than
# PATH_MAX bytes (the NUL included). Longer ones fail in the middle of a build.
NAME_MAX = 255
PATH_MAX = 4096


def absolute_path(value: str) -> Path:
    """VALUE as an absolute path, a relative one taken from the working directory (the
    commands run in other directories: a chroot, libvirt); within the system's limits."""
    # os.path.join keeps "..": normalising it away could step over a symbolic link.
    path = Path(os.path.join(os.getcwd(), value))
    size = len(os.fsencode(str(path)))
    if size >= PATH_MAX:
        raise ValueError(f"the path {printable(str(path), 60)!r} has {size} bytes, more than "
                         f"the {PATH_MAX - 1} a path may have")
    for part in path.parts:
        if len(os.fsencode(part)) > NAME_MAX:
            raise ValueError(f"the path component {printable(part, 40)!r} has "
                             f"{len(os.fsencode(part))} bytes, more than the {NAME_MAX} a "
                             "file name may have")
    return path


def _positive_int(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise ValueError(f"{value!r} is not a whole number") from None
    if number <= 0:
        raise ValueError(f"{value} is not a positive number")
    return number


def _int_range(low: int, high: int, unit: str = "") -> Callable[[str], int]:
    def parse(value: str) -> int:
        number = _positive_int(value)
        if not low <= number <= high:
            raise ValueError(f"{value}{unit} is out of range ({low}-{high}{unit})")
        return number

    return parse


def _optional_int_range(low: int, high: int) -> Callable[[str], int | None]:
    parse = _int_range(low, high)
    return lambda value: parse(value) if value else None


def _url(*schemes: str) -> Callable[[str], str | None]:
    """An optional URL of one of SCHEMES (a mirror, a proxy)."""

    def parse(value: str) -> str | None:
        if not value:
            return None
        shown = mask_credentials(value)
        try:
            split = urlsplit(value)
            split.port  # noqa: B018  a port that is no number raises here, not in the build
        except ValueError as exc:
            raise ValueError(f"{shown!r} is not a URL: {exc}") from None
        if split.scheme not in schemes or (split.scheme.startswith("http") and not split.netloc):
            raise ValueError(f"{shown!r} is not a URL ({' '.join(s + ':' for s in schemes)})")
        return value

    parse.holds_credentials = True  # type: ignore[attr-defined]
    return parse


def mask_credentials(value: str) -> str:
    """A URL's password hidden: http://user:password@proxy:3128 -> http://user:***@proxy:3128."""
    return re.sub(r"(//[^/:@]*:)[^/@]*@", r"\1***@", value)


ZONEINFO = Path("/usr/share/zoneinfo")
TIMEZONE_NAME = re.compile(r"[A-Za-z0-9_+-]+(/[A-Za-z0-9_+-]+)*")


def _timezone(value: str) -> str:
    # The VM's tzdata has the zones the host's has: an unknown one would stop
    # install.sh in the middle of the build.
    if not TIMEZONE_NAME.fullmatch(value) or (
        ZONEINFO.is_dir() and not (ZONEINFO / value).is_file()
    ):
        raise ValueError(f"unknown time zone {value!r} (see {ZONEINFO}, e.g. Europe/Berlin)")
    return value


SUPPORTED_LOCALES = Path("/usr/share/i18n/SUPPORTED")
LOCALE_NAME = re.compile(r"[a-z]{2,3}(_[A-Z]{2})?(\.[A-Za-z0-9-]+)?(@[a-z]+)?")
PLAIN_LOCALES = ("C", "POSIX", "C.UTF-8", "C.utf8")


def _locale(value: str) -> str:
    try:
        supported = {line.split()[0] for line in SUPPORTED_LOCALES.read_text().splitlines()
                     if line.strip() and not line.startswith("#")}
        known = value in supported
    except OSError:  # no locales package on the host: the shape at least
        known = bool(LOCALE_NAME.fullmatch(value))
    if not known and value not in PLAIN_LOCALES:
        raise ValueError(f"unknown locale {value!r} (see {SUPPORTED_LOCALES}, e.g. "
                         "en_US.UTF-8)")
    return value


# An LVM name: what lvm(8) accepts for a volume group or logical volume.
VG_NAME = re.compile(r"[A-Za-z0-9+_.][A-Za-z0-9+_.-]*")


def _lvm_name(what: str) -> Callable[[str], str | None]:
    def parse(value: str) -> str | None:
        if value and (not VG_NAME.fullmatch(value) or value in (".", "..")):
            raise ValueError(f"{value!r} is not {what} (letters, digits, + _ . -)")
        return value or None

    return parse


# Debian policy's package names.
PACKAGE_NAME = re.compile(r"[a-z0-9][a-z0-9+.-]+")


def _packages(value: str) -> tuple[str, ...]:
    words = _words(value)
    bad = [w for w in words if not PACKAGE_NAME.fullmatch(w)]
    if bad:
        raise ValueError(f"{bad[0]!r} is not a package name")
    return words


# Variants debootstrap knows (mmdebstrap knows them too).
VARIANTS = ("minbase", "buildd", "fakechroot")


def _variant(value: str) -> str | None:
    if value and value not in VARIANTS:
        raise ValueError(f"{value!r} is not one of {' | '.join(VARIANTS)}")
    return value or None


IpInterface = ipaddress.IPv4Interface | ipaddress.IPv6Interface
IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def _ip_address(value: str) -> IpAddress:
    try:
        return ipaddress.ip_address(value)
    except ValueError:
        raise ValueError(f"{value!r} is not an IP address") from None


def _optional_ip_address(value: str) -> IpAddress | None:
    return _ip_address(value) if value else None


def _ip_addresses(value: str) -> tuple[IpAddress, ...]:
    return tuple(_ip_address(word) for word in _words(value))


def _cidr(value: str) -> IpInterface | None:
    """An address with its prefix length (CIDR), e.g. 192.0.2.10/24, of a host."""
    if not value:
        return None
    address, slash, prefix = value.partition("/")
    ip = _ip_address(address)
    if not slash:
        raise ValueError(f"{value!r} has no prefix length (CIDR), e.g. {ip}/24")
    if not prefix.isdigit() or not 1 <= int(prefix) <= ip.max_prefixlen:
        raise ValueError(f"prefix /{prefix} of {value!r} is out of range "
                         f"(1-{ip.max_prefixlen})")
    interface = ipaddress.ip_interface(value)
    network = interface.network
    if ip.version == 4 and network.prefixlen < 31 and ip in (network.network_address,
                                                             network.broadcast_address):
        raise ValueError(f"{ip} is the network's own or its broadcast address, not a host's "
                         f"in {network}")
    return interface


def _optional_bool(value: str) -> bool | None:
    return _bool(value) if value.strip() else None


def _libvirt_uri(value: str) -> str:
    if not re.fullmatch(r"[a-z][a-z0-9+]*://.*", value):
        raise ValueError(f"{value!r} is not a libvirt URI, e.g. qemu:///system")
    return value


def _bool(value: str) -> bool:
    word = value.strip().lower()
    if word in ("yes", "true", "1", "on"):
        return True
    if word in ("", "no", "false", "0", "off"):
        return False
    raise ValueError(f"{value!r} is not yes or no")


def _words(value: str) -> tuple[str, ...]:
    return tuple(w for w in re.split(r"[\s,]+", value) if w)


def _choice(enum: type[StrEnum]) -> Callable[[str], Any]:
    def parse(value: str) -> Any:
        try:
            return enum(value.lower())
        except ValueError:
            choices = " | ".join(e.value for e in enum)
            raise ValueError(f"{value!r} is not one of {choices}") from None

    return parse


def _optional_choice(enum: type[StrEnum]) -> Callable[[str], Any]:
    parse = _choice(enum)
    return lambda value: parse(value) if value else None


def host_timezone() -> str:
    """The host's time zone name, so that a VM defaults to where its host is."""
    try:
        zone = Path("/etc/timezone").read_text().strip()
        if zone:
            return zone
    except OSError:
        pass
    try:
        target = os.readlink("/etc/localtime")
        if "zoneinfo/" in target:
            return target.split("zoneinfo/", 1)[1]
    except OSError:
        pass
    return "Etc/UTC"


def host_locale() -> str:
    """The host's default locale (LANG of /etc/default/locale), else C.UTF-8."""
    try:
        for line in Path("/etc/default/locale").read_text().splitlines():
            key, _, value = line.strip().partition("=")
            if key == "LANG" and value.strip("\"'"):
                return value.strip("\"'")
    except OSError:
        pass
    return "C.UTF-8"


class OriginKind(StrEnum):
    DEFAULT = "default"
    FILE = "file"
    ENVIRONMENT = "environment"
    OPTION = "option"
    SET = "set"


@dataclass(frozen=True)
class Origin:
    """Where a value came from: errors name it, `hostcreator config` shows it."""

    kind: OriginKind
    name: str = ""  # the file, the environment variable or the option
    line: int = 0

    def __str__(self) -> str:
        if self.kind is OriginKind.DEFAULT:
            return "built-in default"
        if self.kind is OriginKind.FILE:
            return f"{self.name}:{self.line}"
        if self.kind is OriginKind.ENVIRONMENT:
            return f"${self.name}"
        return self.name

    @property
    def strict(self) -> bool:
        """An unknown key is an error on the command line, a warning elsewhere."""
        return self.kind in (OriginKind.OPTION, OriginKind.SET)


DEFAULT_ORIGIN = Origin(OriginKind.DEFAULT)
SET_ORIGIN = Origin(OriginKind.SET, "--set")


@dataclass(frozen=True)
class Override:
    """KEY=VALUE from somewhere, ORIGIN saying where."""

    key: str
    value: str
    origin: Origin


@dataclass(frozen=True)
class Setting:
    key: str
    parse: Callable[[str], Any]
    default: Callable[[], Any]
    help: str
    option: str | None = None  # the command-line option that sets it, besides --set
    directory: bool = False  # a directory hostcreator makes when it is missing
    field: str = ""  # the Config field, filled in from the dataclass


METADATA = "hostcreator.setting"


def setting(key: str, parse: Callable[[str], Any], default: Any, help: str,
            option: str | None = None, directory: bool = False) -> dict[str, Setting]:
    """The metadata of a Config field that is a setting: KEY in files, the environment
    and --set; DEFAULT a value or a function giving it."""
    make = default if callable(default) else _const(default)
    return {METADATA: Setting(key, parse, make, help, option, directory)}


def _const(value: Any) -> Callable[[], Any]:
    return lambda: value


MIRROR_SCHEMES = ("http", "https", "file", "copy", "ftp")
# The least a Debian or Ubuntu kernel and systemd boot in; q35's most vCPUs.
MEMORY_RANGE = (256, 16 * 1024**2)
VCPUS_RANGE = (1, 288)


@dataclass(frozen=True)
class Config:
    """The settings, each declared once: its key, parser, default, help (and option)."""

    storage: StorageKind | None = field(metadata=setting(
        "STORAGE", _optional_choice(StorageKind), None,
        "where VM disks live: lvm or file (default: lvm when VG_NAME is set, else file)",
        option="--storage"))
    vg_name: str | None = field(metadata=setting(
        "VG_NAME", _lvm_name("a volume group name"), None,
        "LVM volume group for the disks <NAME>-disk01", option="--vg"))
    thin_pool: str | None = field(metadata=setting(
        "THIN_POOL", _lvm_name("a logical volume name"), None,
        "thin pool in VG_NAME for new disks (thin volumes; default: linear volumes)"))
    size: int = field(metadata=setting(
        "SIZE", _positive_int, 8, "disk size in GiB for a new disk", option="--size"))
    image_dir: Path = field(metadata=setting(
        "IMAGE_DIR", _path, Path("/var/lib/hostcreator/images"),
        "directory of the raw image files <NAME>-disk01.img (file storage)",
        option="--image-dir", directory=True))
    distr: str | None = field(metadata=setting(
        "DISTR", _optional_text, None,
        "distribution suite (default: the distribution's current release)"))
    mirror: str | None = field(metadata=setting(
        "MIRROR", _url(*MIRROR_SCHEMES), None,
        "archive mirror URL (default: debootstrap's own default for the suite)",
        option="--mirror"))
    security_mirror: str | None = field(metadata=setting(
        "SECURITY_MIRROR", _url(*MIRROR_SCHEMES), None,
        "mirror of the security updates (default: beside MIRROR, as the archive has it)"))
    keyring: Path | None = field(metadata=setting(
        "KEYRING", _optional_path, None,
        "archive keyring file used to verify the archive signatures"))
    insecure_no_signature_check: bool = field(metadata=setting(
        "INSECURE_NO_SIGNATURE_CHECK", _bool, False,
        "yes: do NOT verify the archive signatures (debootstrap --no-check-gpg); anything "
        "could be installed. Never the default", option="--insecure-no-signature-check"))
    packages: tuple[str, ...] = field(metadata=setting(
        "PACKAGES", _packages, (),
        "extra packages to install with debootstrap (space or comma separated)"))
    variant: str | None = field(metadata=setting(
        "VARIANT", _variant, None,
        "debootstrap variant, e.g. minbase (default: debootstrap's default)"))
    hook_dir: Path = field(metadata=setting(
        "HOOK_DIR", _path, Path("/etc/hostcreator"),
        "directory of postunpack.sh and postconfig.sh", directory=True))
    skel_dir: Path | None = field(metadata=setting(
        "SKEL_DIR", _optional_path, None,
        "skeleton tree copied into every VM (default: HOOK_DIR/skel, else the packaged "
        "skel/)", directory=True))
    timezone: str = field(metadata=setting(
        "TIMEZONE", _timezone, host_timezone, "time zone of the VM"))
    locale: str = field(metadata=setting(
        "LOCALE", _locale, host_locale, "default locale of the VM"))
    ssh_authorized_keys: Path | None = field(metadata=setting(
        "SSH_AUTHORIZED_KEYS", _optional_path, None,
        "file of SSH public keys to install for root"))
    root_password_file: Path | None = field(metadata=setting(
        "ROOT_PASSWORD_FILE", _optional_path, None,
        "file holding root's password (plain or crypt hash); when neither it nor "
        "SSH_AUTHORIZED_KEYS is set, see RANDOM_ROOT_PASSWORD and USER_SSH_KEYS"))
    random_root_password: bool = field(metadata=setting(
        "RANDOM_ROOT_PASSWORD", _bool, True,
        "yes: when neither ROOT_PASSWORD_FILE nor SSH_AUTHORIZED_KEYS is set, root gets a "
        "random password for the console, kept in SECRETS_DIR/NAME/root-password"))
    user_ssh_keys: bool = field(metadata=setting(
        "USER_SSH_KEYS", _bool, True,
        "yes: when neither ROOT_PASSWORD_FILE nor SSH_AUTHORIZED_KEYS is set, root gets the "
        "public SSH keys of the user who runs the command (~/.ssh/authorized_keys, "
        "~/.ssh/id_*.pub; with sudo, SUDO_USER's)"))
    secrets_dir: Path = field(metadata=setting(
        "SECRETS_DIR", _path, Path("/var/lib/hostcreator/secrets"),
        "where generated root passwords are kept (NAME/root-password; only root may read "
        "them)", directory=True))
    ip_address: IpInterface | None = field(metadata=setting(
        "IP_ADDRESS", _cidr, None,
        "static address of the VM with its prefix length, e.g. 192.0.2.10/24 (default: DHCP)",
        option="--ip"))
    gateway: IpAddress | None = field(metadata=setting(
        "GATEWAY", _optional_ip_address, None,
        "default gateway with IP_ADDRESS (inside its subnet)", option="--gateway"))
    dns: tuple[IpAddress, ...] = field(metadata=setting(
        "DNS", _ip_addresses, (), "name servers of the VM (space or comma separated addresses)",
        option="--dns"))
    dhcp: bool | None = field(metadata=setting(
        "DHCP", _optional_bool, None,
        "yes: the VM asks for its address by DHCP (default: yes unless IP_ADDRESS)"))
    apt_proxy: str | None = field(metadata=setting(
        "APT_PROXY", _url("http", "https"), None,
        "HTTP proxy for apt in the bootstrap and inside the VM"))
    log_dir: Path = field(metadata=setting(
        "LOG_DIR", _path, Path("/var/log/hostcreator"), "directory of the per-VM log files",
        directory=True))
    cache_dir: Path = field(metadata=setting(
        "CACHE_DIR", _path, Path("/var/cache/hostcreator"),
        "cache of downloaded packages (debs/) and of bootstrapped root trees (rootfs/)",
        directory=True))
    cache_max_age: int = field(metadata=setting(
        "CACHE_MAX_AGE", _positive_int, 7,
        "days after which a cached root tree is bootstrapped afresh"))
    bootstrap_tool: BootstrapTool = field(metadata=setting(
        "BOOTSTRAP", _choice(BootstrapTool), BootstrapTool.AUTO,
        "auto (mmdebstrap when installed, else debootstrap), debootstrap or mmdebstrap"))
    state_dir: Path = field(metadata=setting(
        "STATE_DIR", _path, Path("/run/hostcreator"),
        "where builds mount disks and keep their locks", directory=True))
    journal_dir: Path = field(metadata=setting(
        "JOURNAL_DIR", _path, Path("/var/lib/hostcreator/journal"),
        "where the journal of every build is kept (it outlives a reboot)", directory=True))
    mount_dir: Path = field(metadata=setting(
        "MOUNT_DIR", _path, Path("/mnt/hostcreator"),
        "mount-vm mounts the root file system of VM NAME at MOUNT_DIR/NAME", directory=True))
    network: str | None = field(metadata=setting(
        "NETWORK", _optional_text, None,
        "bridge or libvirt network the VM's NIC is attached to (default: br0 for a bridge, "
        "default for a libvirt network)", option="--network"))
    network_type: NetworkType = field(metadata=setting(
        "NETWORK_TYPE", _choice(NetworkType), NetworkType.AUTO,
        "kind of NIC: auto (the bridge br0 if this host has it, else libvirt's network "
        "default if active, else user), bridge, network or user", option="--network-type"))
    live_iso: Path | None = field(metadata=setting(
        "LIVE_ISO", _optional_path, None, "ISO image the first boot starts from",
        option="--live-iso"))
    memory: int = field(metadata=setting(
        "MEMORY", _int_range(*MEMORY_RANGE, " MiB"), 2048, "memory of the VM in MiB",
        option="--memory"))
    vcpus: int | None = field(metadata=setting(
        "VCPUS", _optional_int_range(*VCPUS_RANGE), None,
        "virtual CPUs of the VM (default: 2 under KVM, 1 under software emulation)",
        option="--vcpus"))
    virt_type: VirtType = field(metadata=setting(
        "VIRT_TYPE", _choice(VirtType), VirtType.AUTO,
        "auto (kvm when a guest is seen to run under KVM here), kvm or qemu (software "
        "emulation)",
        option="--virt-type"))
    libvirt_uri: str = field(metadata=setting(
        "LIBVIRT_URI", _libvirt_uri, "qemu:///system", "libvirt connection URI",
        option="--uri"))
    graphics: Graphics = field(metadata=setting(
        "GRAPHICS", _choice(Graphics), Graphics.VNC,
        "display of the VM on the host's loopback address: vnc, spice or none",
        option="--graphics"))
    appliance_vendor: str = field(metadata=setting(
        "APPLIANCE_VENDOR", _label, "hostcreator",
        "the vendor an exported appliance names (hostcreator export: the OVF ProductSection)"))
    appliance_version: str = field(metadata=setting(
        "APPLIANCE_VERSION", _label, "1.0",
        "the version an exported appliance names (hostcreator export: the OVF "
        "ProductSection)"))
    # Not settings: the file read, and where each value came from (KEY -> Origin).
    source: Path | None = field(default=None, compare=False)
    origins: Mapping[str, Origin] = field(default_factory=dict, compare=False, repr=False)

    @property
    def storage_kind(self) -> StorageKind:
        if self.storage is not None:
            return self.storage
        return StorageKind.LVM if self.vg_name else StorageKind.FILE

    def origin(self, key: str) -> Origin:
        return self.origins.get(key, DEFAULT_ORIGIN)

    def replace(self, **changes: Any) -> Config:
        return dataclasses.replace(self, **changes)

    def paths(self) -> list[Path]:
        """Every file and directory the settings name (what a command's work lies on)."""
        return [value for f in dataclasses.fields(self)
                if isinstance(value := getattr(self, f.name), Path)]


SETTINGS: tuple[Setting, ...] = tuple(
    dataclasses.replace(f.metadata[METADATA], field=f.name)
    for f in dataclasses.fields(Config) if METADATA in f.metadata
)
BY_KEY = {s.key: s for s in SETTINGS}
# Directories hostcreator makes when they are missing, so they may be absent,
# but not a file (nor below one): mkdir would fail in the middle of a command.
DIRECTORIES = tuple(s.key for s in SETTINGS if s.directory)


def parse_shell_assignments(text: str, origin: str) -> list[Override]:
    """KEY=VALUE lines as a shell would read them (quotes, comments, `export`)."""
    values: list[Override] = []
    # Lines end at a newline only, as for the shell (str.splitlines would also end them
    # at \x0b, \x1c, \u2028, ...).
    for number, line in enumerate(text.split("\n"), 1):
        where = Origin(OriginKind.FILE, origin, number)
        if len(line) > LINE_LIMIT:
            raise InvalidInput(f"{where}: a line of {len(line)} characters, more than "
                               f"{LINE_LIMIT}")
        try:
            words = shlex.split(line, comments=True)
        except ValueError as exc:
            raise InvalidInput(f"{where}: cannot parse line: {exc}") from None
        if words[:1] == ["export"]:
            words = words[1:]
        if not words:
            continue
        if len(words) != 1 or "=" not in words[0]:
            raise InvalidInput(
                f"{where}: expected KEY=VALUE, got {printable(line.strip())!r}",
                hint="quote values that contain spaces",
            )
        key, _, value = words[0].partition("=")
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
            raise InvalidInput(f"{where}: {printable(key)!r} is not a valid key")
        if "$" in value:
            logger.warning("%s: %s: variables are not expanded in %r", where, key, value)
        values.append(Override(key, value, where))
    return values


def config_file(explicit: Path | None) -> Path | None:
    """The file to read: --config, $HOSTCREATOR_CONFIG, the default, the legacy one."""
    try:
        return _config_file(explicit)
    except OSError as exc:  # a name too long
        raise InvalidInput(f"config file {printable(str(explicit))}: {exc.strerror}") from None
    except ValueError as exc:  # a NUL byte
        raise InvalidInput(f"config file {printable(str(explicit))}: {exc}") from None


def _config_file(explicit: Path | None) -> Path | None:
    if explicit is not None:
        if not explicit.exists():
            raise InvalidInput(f"config file not found: {explicit}")
        return explicit
    if env := os.environ.get(ENV_FILE):
        path = Path(env)
        if not path.is_file():
            raise InvalidInput(f"config file not found: {path} (from ${ENV_FILE})")
        return path
    for path in (DEFAULT_FILE, LEGACY_FILE):
        if path.is_file():
            return path
    return None


# What a configuration file and a value may hold: far more than any needs, little
# enough to be refused at once (a line is parsed by shlex, character by character).
FILE_LIMIT = 1024 * 1024
LINE_LIMIT = 16 * 1024


def read_file(source: Path) -> list[Override]:
    return parse_shell_assignments(inputs.read_text(source, "config file", FILE_LIMIT),
                                   str(source))


def from_environment(environ: Mapping[str, str]) -> list[Override]:
    return [Override(k[len(ENV_PREFIX):], v, Origin(OriginKind.ENVIRONMENT, k))
            for k, v in environ.items()
            if k.startswith(ENV_PREFIX) and not NOT_SETTINGS.fullmatch(k)]


# Characters no value may hold: controls (a NUL cannot be in a path or an argument, a
# newline would forge a line of `hostcreator config`), line and paragraph separators.
FORBIDDEN = re.compile("[\x00-\x08\x0a-\x1f\x7f\x85\u2028\u2029]")


def printable(text: str, limit: int = 200) -> str:
    """TEXT with what would break a line or a terminal written as escapes, at most LIMIT
    characters of it."""
    if len(text) > limit:
        text = text[:limit] + f"...({len(text)} characters)"
    return FORBIDDEN.sub(lambda m: f"\\x{ord(m.group()):02x}" if ord(m.group()) < 256
                         else f"\\u{ord(m.group()):04x}", text)


def _apply(values: dict[str, Any], origins: dict[str, Origin], item: Override) -> None:
    setting = BY_KEY.get(item.key)
    if setting is None:
        close = [k for k in BY_KEY
                 if k.replace("_", "") == item.key.upper().replace("_", "")]
        msg = f"{item.origin}: unknown setting {printable(item.key)}" + (
            f" (did you mean {close[0]}?)" if close else "")
        if item.origin.strict:
            raise InvalidInput(msg, hint="known settings: " + ", ".join(BY_KEY))
        logger.warning("warning: %s", msg)
        return
    where = f"{item.origin}: {item.key}"
    if len(item.value) > LINE_LIMIT:
        raise InvalidInput(f"{where}: a value of {len(item.value)} characters, more than "
                           f"{LINE_LIMIT}")
    if bad := FORBIDDEN.search(item.value):
        raise InvalidInput(f"{where}: the value holds the control character "
                           f"{printable(bad.group())}", hint="a value is one line of text")
    try:
        values[item.key] = setting.parse(item.value)
    except (ValueError, OSError) as exc:  # OSError: a name too long to look up
        raise InvalidInput(f"{where}: {exc}") from None
    origins[item.key] = item.origin
    if isinstance(values[item.key], Path) and not item.value.startswith("/"):
        logger.info("note: %s: the relative path %s is taken as %s", where,
                    printable(item.value), printable(str(values[item.key])))


def check_directories(config: Config) -> None:
    for key in DIRECTORIES:
        path = getattr(config, BY_KEY[key].field)
        if path is None:
            continue
        where = f"{config.origin(key)}: {key}"
        try:
            existing = next((p for p in (path, *path.parents) if p.exists()), None)
            if existing is not None and not existing.is_dir():
                raise InvalidInput(f"{where}: {existing} is not a directory",
                                   hint=f"set {key} to a directory")
        except OSError as exc:
            raise InvalidInput(f"{where}: cannot look at {path}: {exc.strerror}") from None


Overrides = Mapping[str, str] | Iterable[Override]


def overrides_of(overrides: Overrides | None) -> list[Override]:
    """OVERRIDES as Override items; a plain mapping counts as --set KEY=VALUE."""
    if overrides is None:
        return []
    if isinstance(overrides, Mapping):
        return [Override(k, v, SET_ORIGIN) for k, v in overrides.items()]
    return list(overrides)


def option(key: str, value: Any) -> Override:
    """KEY set by its own command-line option (--size 12), named as the origin."""
    setting = BY_KEY[key]
    name = setting.option or f"--{key.lower().replace('_', '-')}"
    return Override(key, str(value), Origin(OriginKind.OPTION, name))


def load(
    path: Path | None = None,
    overrides: Overrides | None = None,
    environ: Mapping[str, str] | None = None,
) -> Config:
    """Read the configuration: the file, the environment, then OVERRIDES (the command
    line: --set KEY=VALUE items, or Override items naming their option), later wins."""
    source = config_file(path)
    items = read_file(source) if source is not None else []
    items += from_environment(os.environ if environ is None else environ)
    items += overrides_of(overrides)
    values: dict[str, Any] = {}
    origins: dict[str, Origin] = {}
    for item in items:
        _apply(values, origins, item)
    config = Config(**{s.field: values[s.key] if s.key in values else s.default()
                       for s in SETTINGS}, source=source, origins=origins)
    check_directories(config)
    if config.storage_kind is StorageKind.LVM and not config.vg_name:
        raise InvalidInput(
            f"{config.origin('STORAGE')}: STORAGE=lvm needs VG_NAME",
            hint="set VG_NAME to the volume group of the VM disks, or STORAGE=file",
        )
    return config


def parse_assignments(items: Iterable[str]) -> dict[str, str]:
    """--set KEY=VALUE options into a mapping."""
    return {o.key: o.value for o in set_options(items)}


def set_options(items: Iterable[str]) -> list[Override]:
    """--set KEY=VALUE options, in order, each with --set as its origin."""
    result = []
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise InvalidInput(f"--set {printable(item)!r}: expected KEY=VALUE")
        result.append(Override(key.strip().upper(), value, SET_ORIGIN))
    return result


# --- the configuration shown: `hostcreator config` ---

def text_of(value: Any) -> str:
    """VALUE as its setting's parser reads it back."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, tuple):
        return " ".join(map(str, value))
    return str(value)


def json_of(value: Any) -> Any:
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, tuple):
        return [json_of(v) for v in value]
    return str(value)


def as_lines(config: Config, secrets: bool = False) -> list[str]:
    """KEY=VALUE lines, shell-quoted, each with its origin as a comment: read back as a
    configuration file, they give CONFIG again - with SECRETS only, as otherwise the
    passwords in URLs are masked."""
    lines = [f"# configuration file: {printable(str(config.source or 'none'))}"]
    for s in SETTINGS:
        origin = config.origin(s.key)
        comment = "built-in default" if origin.kind is OriginKind.DEFAULT else f"from {origin}"
        text = shown(s, text_of(getattr(config, s.field)), secrets)
        lines.append(f"{s.key}={shlex.quote(text) if text else ''}"
                     f"  # {printable(comment)}")
    return lines


def as_json(config: Config, secrets: bool = False) -> dict[str, dict[str, Any]]:
    """{KEY: {"value": ..., "origin": ...}} for every setting (passwords in URLs masked
    unless SECRETS)."""
    return {s.key: {"value": shown(s, json_of(getattr(config, s.field)), secrets),
                    "origin": str(config.origin(s.key))} for s in SETTINGS}


def shown(setting: Setting, value: Any, secrets: bool) -> Any:
    """SETTING's VALUE as shown: the password of a URL masked, unless SECRETS."""
    if secrets or not isinstance(value, str) or not getattr(setting.parse, "holds_credentials",
                                                            False):
        return value
    return mask_credentials(value)
