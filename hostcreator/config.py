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
import os
import re
import shlex
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

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
    BRIDGE = "bridge"
    NETWORK = "network"
    USER = "user"


class Graphics(StrEnum):
    VNC = "vnc"
    SPICE = "spice"
    NONE = "none"


def _text(value: str) -> str:
    return value


def _optional_text(value: str) -> str | None:
    return value or None


def _path(value: str) -> Path:
    if not value:
        raise ValueError("an empty path")
    return Path(value)


def _optional_path(value: str) -> Path | None:
    return Path(value) if value else None


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


def _url(*schemes: str) -> Callable[[str], str | None]:
    """An optional URL of one of SCHEMES (a mirror, a proxy)."""

    def parse(value: str) -> str | None:
        if not value:
            return None
        split = urlsplit(value)
        if split.scheme not in schemes or (split.scheme.startswith("http") and not split.netloc):
            raise ValueError(f"{value!r} is not a URL ({' '.join(s + ':' for s in schemes)})")
        return value

    return parse


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


# An LVM name: what lvm(8) accepts for a volume group.
VG_NAME = re.compile(r"[A-Za-z0-9+_.][A-Za-z0-9+_.-]*")


def _vg_name(value: str) -> str | None:
    if value and (not VG_NAME.fullmatch(value) or value in (".", "..")):
        raise ValueError(f"{value!r} is not a volume group name (letters, digits, + _ . -)")
    return value or None


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


@dataclass(frozen=True)
class Setting:
    key: str
    field: str
    parse: Callable[[str], Any]
    default: Callable[[], Any]
    help: str


def _const(value: Any) -> Callable[[], Any]:
    return lambda: value


MIRROR_SCHEMES = ("http", "https", "file", "copy", "ftp")
# The least a Debian or Ubuntu kernel and systemd boot in; q35's most vCPUs.
MEMORY_RANGE = (256, 16 * 1024**2)
VCPUS_RANGE = (1, 288)

SETTINGS: tuple[Setting, ...] = (
    Setting("STORAGE", "storage", _optional_choice(StorageKind), _const(None),
            "where VM disks live: lvm or file (default: lvm when VG_NAME is set, else file)"),
    Setting("VG_NAME", "vg_name", _vg_name, _const(None),
            "LVM volume group for the disks <NAME>-disk01"),
    Setting("SIZE", "size", _positive_int, _const(8), "disk size in GiB for a new disk"),
    Setting("IMAGE_DIR", "image_dir", _path, _const(Path("/var/lib/hostcreator/images")),
            "directory of the raw image files <NAME>-disk01.img (file storage)"),
    Setting("DISTR", "distr", _optional_text, _const(None),
            "distribution suite (default: the distribution's current release)"),
    Setting("MIRROR", "mirror", _url(*MIRROR_SCHEMES), _const(None),
            "archive mirror URL (default: debootstrap's own default for the suite)"),
    Setting("SECURITY_MIRROR", "security_mirror", _url(*MIRROR_SCHEMES), _const(None),
            "mirror of the security updates (default: beside MIRROR, as the archive has it)"),
    Setting("KEYRING", "keyring", _optional_path, _const(None),
            "archive keyring file used to verify the archive signatures"),
    Setting("INSECURE_NO_SIGNATURE_CHECK", "insecure_no_signature_check", _bool,
            _const(False), "yes: do NOT verify the archive signatures (debootstrap "
            "--no-check-gpg); anything could be installed. Never the default"),
    Setting("PACKAGES", "packages", _packages, _const(()),
            "extra packages to install with debootstrap (space or comma separated)"),
    Setting("VARIANT", "variant", _variant, _const(None),
            "debootstrap variant, e.g. minbase (default: debootstrap's default)"),
    Setting("HOOK_DIR", "hook_dir", _path, _const(Path("/etc/hostcreator")),
            "directory of postunpack.sh and postconfig.sh"),
    Setting("SKEL_DIR", "skel_dir", _optional_path, _const(None),
            "skeleton tree copied into every VM (default: /etc/hostcreator/skel, "
            "else the packaged skel/)"),
    Setting("TIMEZONE", "timezone", _timezone, host_timezone, "time zone of the VM"),
    Setting("LOCALE", "locale", _locale, host_locale, "default locale of the VM"),
    Setting("SSH_AUTHORIZED_KEYS", "ssh_authorized_keys", _optional_path, _const(None),
            "file of SSH public keys to install for root"),
    Setting("ROOT_PASSWORD_FILE", "root_password_file", _optional_path, _const(None),
            "file holding root's password (plain or crypt hash); unset leaves root locked"),
    Setting("APT_PROXY", "apt_proxy", _url("http", "https"), _const(None),
            "HTTP proxy for apt in the bootstrap and inside the VM"),
    Setting("LOG_DIR", "log_dir", _path, _const(Path("/var/log/hostcreator")),
            "directory of the per-VM log files"),
    Setting("CACHE_DIR", "cache_dir", _path, _const(Path("/var/cache/hostcreator")),
            "cache of downloaded packages (debs/) and of bootstrapped root trees (rootfs/)"),
    Setting("CACHE_MAX_AGE", "cache_max_age", _positive_int, _const(7),
            "days after which a cached root tree is bootstrapped afresh"),
    Setting("BOOTSTRAP", "bootstrap_tool", _choice(BootstrapTool), _const(BootstrapTool.AUTO),
            "auto (mmdebstrap when installed, else debootstrap), debootstrap or mmdebstrap"),
    Setting("STATE_DIR", "state_dir", _path, _const(Path("/run/hostcreator")),
            "where builds mount disks and keep their locks"),
    Setting("JOURNAL_DIR", "journal_dir", _path,
            _const(Path("/var/lib/hostcreator/journal")),
            "where the journal of every build is kept (it outlives a reboot)"),
    Setting("MOUNT_DIR", "mount_dir", _path, _const(Path("/mnt/hostcreator")),
            "mount-vm mounts the root file system of VM NAME at MOUNT_DIR/NAME"),
    Setting("NETWORK", "network", _text, _const("br0"),
            "bridge (or libvirt network) the VM's NIC is attached to"),
    Setting("NETWORK_TYPE", "network_type", _choice(NetworkType), _const(NetworkType.BRIDGE),
            "kind of NIC: bridge, network or user"),
    Setting("LIVE_ISO", "live_iso", _optional_path, _const(None),
            "ISO image the first boot starts from"),
    Setting("MEMORY", "memory", _int_range(*MEMORY_RANGE, " MiB"), _const(2048),
            "memory of the VM in MiB"),
    Setting("VCPUS", "vcpus", _int_range(*VCPUS_RANGE), _const(2), "virtual CPUs of the VM"),
    Setting("VIRT_TYPE", "virt_type", _choice(VirtType), _const(VirtType.AUTO),
            "auto (kvm when /dev/kvm works), kvm or qemu (software emulation)"),
    Setting("LIBVIRT_URI", "libvirt_uri", _libvirt_uri, _const("qemu:///system"),
            "libvirt connection URI"),
    Setting("GRAPHICS", "graphics", _choice(Graphics), _const(Graphics.VNC),
            "display of the VM on the host's loopback address: vnc, spice or none"),
)
BY_KEY = {s.key: s for s in SETTINGS}


@dataclass(frozen=True)
class Config:
    storage: StorageKind | None
    vg_name: str | None
    size: int
    image_dir: Path
    distr: str | None
    mirror: str | None
    security_mirror: str | None
    keyring: Path | None
    insecure_no_signature_check: bool
    packages: tuple[str, ...]
    variant: str | None
    hook_dir: Path
    skel_dir: Path | None
    timezone: str
    locale: str
    ssh_authorized_keys: Path | None
    root_password_file: Path | None
    apt_proxy: str | None
    log_dir: Path
    cache_dir: Path
    cache_max_age: int
    bootstrap_tool: BootstrapTool
    state_dir: Path
    journal_dir: Path
    mount_dir: Path
    network: str
    network_type: NetworkType
    live_iso: Path | None
    memory: int
    vcpus: int
    virt_type: VirtType
    libvirt_uri: str
    graphics: Graphics
    source: Path | None = None

    @property
    def storage_kind(self) -> StorageKind:
        if self.storage is not None:
            return self.storage
        return StorageKind.LVM if self.vg_name else StorageKind.FILE

    def replace(self, **changes: Any) -> Config:
        return dataclasses.replace(self, **changes)


def parse_shell_assignments(text: str, origin: str) -> dict[str, str]:
    """KEY=VALUE lines as a shell would read them (quotes, comments, `export`)."""
    values: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        where = f"{origin}:{number}"
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
                f"{where}: expected KEY=VALUE, got {line.strip()!r}",
                hint="quote values that contain spaces",
            )
        key, _, value = words[0].partition("=")
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
            raise InvalidInput(f"{where}: {key!r} is not a valid key")
        if "$" in value:
            logger.warning("%s: %s: variables are not expanded in %r", where, key, value)
        values[key] = value
    return values


def config_file(explicit: Path | None) -> Path | None:
    """The file to read: --config, $HOSTCREATOR_CONFIG, the default, the legacy one."""
    if explicit is not None:
        if not explicit.exists() or explicit.is_dir():
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


def _apply(
    raw: dict[str, Any], values: Mapping[str, str], origin: str, strict: bool,
    origins: dict[str, str],
) -> None:
    for key, value in values.items():
        setting = BY_KEY.get(key)
        if setting is None:
            close = [k for k in BY_KEY if k.replace("_", "") == key.upper().replace("_", "")]
            msg = f"{origin}: unknown setting {key}" + (f" (did you mean {close[0]}?)" if close
                                                         else "")
            if strict:
                raise InvalidInput(msg, hint="known settings: " + ", ".join(BY_KEY))
            logger.warning("warning: %s", msg)
            continue
        try:
            raw[setting.field] = setting.parse(value)
            origins[key] = origin
        except ValueError as exc:
            raise InvalidInput(f"{origin}: {key}: {exc}") from None


# Directories hostcreator makes when they are missing, so they may be absent,
# but not a file (nor below one): mkdir would fail in the middle of a command.
DIRECTORIES = ("IMAGE_DIR", "HOOK_DIR", "SKEL_DIR", "LOG_DIR", "CACHE_DIR", "STATE_DIR",
               "MOUNT_DIR")


def check_directories(config: Config, origins: Mapping[str, str]) -> None:
    for key in DIRECTORIES:
        path = getattr(config, BY_KEY[key].field)
        if path is None:
            continue
        existing = next((p for p in (path, *path.parents) if p.exists()), None)
        if existing is not None and not existing.is_dir():
            where = f"{origins.get(key, 'built-in default')}: {key}"
            raise InvalidInput(f"{where}: {existing} is not a directory",
                               hint=f"set {key} to a directory")


def load(
    path: Path | None = None,
    overrides: Mapping[str, str] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Config:
    """Read the configuration; OVERRIDES are KEY=VALUE from the command line."""
    raw: dict[str, Any] = {s.field: s.default() for s in SETTINGS}
    origins: dict[str, str] = {}
    source = config_file(path)
    if source is not None:
        try:
            text = source.read_text()
        except OSError as exc:
            raise InvalidInput(f"cannot read config file {source}: {exc.strerror}") from None
        _apply(raw, parse_shell_assignments(text, str(source)), str(source), strict=False,
               origins=origins)
    env = os.environ if environ is None else environ
    from_env = {
        k[len(ENV_PREFIX):]: v
        for k, v in env.items()
        if k.startswith(ENV_PREFIX) and not NOT_SETTINGS.fullmatch(k)
    }
    _apply(raw, from_env, "environment", strict=False, origins=origins)
    _apply(raw, overrides or {}, "command line", strict=True, origins=origins)
    config = Config(**raw, source=source)
    check_directories(config, origins)
    if config.storage_kind is StorageKind.LVM and not config.vg_name:
        raise InvalidInput(
            f"{source or 'configuration'}: STORAGE=lvm needs VG_NAME",
            hint="set VG_NAME to the volume group of the VM disks, or STORAGE=file",
        )
    return config


def parse_assignments(items: Iterable[str]) -> dict[str, str]:
    """--set KEY=VALUE options into a mapping."""
    result = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise InvalidInput(f"--set {item!r}: expected KEY=VALUE")
        result[key.strip().upper()] = value
    return result
