"""The build journal: what a create-debian / create-ubuntu run of NAME has done.

One JSON file per VM, JOURNAL_DIR/NAME.json (default /var/lib/hostcreator/journal,
so that it outlives a reboot), replaced atomically at every step: the stages
finished, the stage running, the loop device attached, the mount namespace and
mount point of the build, the file systems made, the settings used and how the
run ended. A later run reads it to say that a build did not finish and to resume
after its last finished stage; `hostcreator cleanup NAME` reads it to undo what a
killed run left; create-kvm refuses a disk whose build did not finish.

A journal whose status is `running` while nobody holds NAME's lock belongs to a
run that was killed (SIGKILL, a crash, a reboot): only the lock tells a running
build from a dead one, never a PID that may have been reused.

Nothing secret is written here: settings are recorded as the paths and names the
configuration gives, with any password in a URL masked.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from hostcreator.config import SETTINGS, Config, mask_credentials, printable
from hostcreator.errors import BrokenJournal, InvalidInput
from hostcreator.inputs import read_bytes
from hostcreator.log import logger
from hostcreator.state.statefile import StateFiles

VERSION = 1


class Stage(StrEnum):
    """The stages of the recipe, in the order pipeline.STEPS runs them.

    Their values are the names in journals, messages and fault points
    (`after:bootstrap`): a Stage prints and compares as its name.
    """

    DISK = "disk"
    PARTITIONS = "partitions"
    BOOTSTRAP = "bootstrap"
    SKELETON = "skeleton"
    POSTUNPACK = "postunpack"
    INSTALL = "install"
    POSTCONFIG = "postconfig"
    BOOTLOADER = "bootloader"
    FINISH = "finish"

    @classmethod
    def named(cls, name: object) -> Stage | None:
        """The stage called NAME; None for a name no stage has (a journal of another version)."""
        return cls(name) if isinstance(name, str) and name in cls._value2member_map_ else None


class Status(StrEnum):
    RUNNING = "running"
    FAILED = "failed"
    INTERRUPTED = "interrupted"
    FINISHED = "finished"


def now() -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S")


def settings_of(config: Config) -> dict[str, str]:
    """The configuration as KEY=VALUE strings, as `hostcreator config` shows it."""
    values = {}
    for setting in SETTINGS:
        value = getattr(config, setting.field)
        if isinstance(value, tuple):
            value = " ".join(map(str, value))
        values[setting.key] = mask_credentials("" if value is None else str(value))
    return values


@dataclass
class Journal:
    name: str
    distribution: str
    suite: str
    disk: Path
    status: Status = Status.RUNNING
    done: list[Stage] = field(default_factory=list)
    stage: Stage | None = None
    pid: int = 0
    namespace: str | None = None
    loop: Path | None = None
    root: Path | None = None
    root_uuid: str | None = None
    swap_uuid: str | None = None
    rootfs: str | None = None
    source: str | None = None  # the VM it was cloned from (hostcreator clone)
    error: str | None = None
    started: str = ""
    updated: str = ""
    settings: dict[str, str] = field(default_factory=dict)
    runs: list[str] = field(default_factory=list)

    # --- what it says --------------------------------------------------------------------

    @property
    def finished(self) -> bool:
        return self.status is Status.FINISHED

    def next_stage(self) -> Stage | None:
        """The first stage not finished, where a resumed build goes on."""
        return next((s for s in Stage if s not in self.done), None)

    def describe(self) -> str:
        """'failed in stage install: ...' for a message; RUNNING is read as killed."""
        if self.stage is None:
            where = "before its first stage"
        elif self.stage in self.done:
            where = f"right after stage {self.stage}"
        else:
            where = f"in stage {self.stage}"
        if self.status is Status.FINISHED:
            return f"finished at {self.updated}"
        if self.status is Status.RUNNING:
            return f"was killed {where} (PID {self.pid}, started {self.started})"
        how = "failed" if self.status is Status.FAILED else "was interrupted"
        return f"{how} {where}" + (f": {self.error}" if self.error else "")

    # --- what happens --------------------------------------------------------------------

    def begin_run(self, pid: int, settings: dict[str, str], resumed: bool) -> None:
        self.status = Status.RUNNING
        self.pid = pid
        self.error = None
        self.stage = None
        self.loop = None
        self.namespace = None
        self.settings = settings
        self.started = now()
        what = f"resumed at stage {self.next_stage()}" if resumed else "started"
        self.runs.append(f"{self.started} {what} by PID {pid}")

    def begin(self, stage: Stage) -> None:
        self.stage = stage

    def end(self, stage: Stage) -> None:
        if stage not in self.done:
            self.done.append(stage)

    def stop(self, status: Status, error: str | None = None) -> None:
        self.status = status
        self.error = error
        if status is Status.FINISHED:
            self.stage = None
        self.runs.append(f"{now()} {status}" + (f": {error}" if error else ""))

    # --- the file ------------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data.update(version=VERSION, status=str(self.status), disk=str(self.disk),
                    loop=str(self.loop) if self.loop else None,
                    root=str(self.root) if self.root else None)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Journal:
        fields = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        fields.update(
            disk=Path(data["disk"]),
            status=Status(data.get("status", Status.RUNNING)),
            loop=Path(data["loop"]) if data.get("loop") else None,
            root=Path(data["root"]) if data.get("root") else None,
            done=[stage for stage in map(Stage.named, data.get("done", [])) if stage],
            stage=Stage.named(data.get("stage")),
        )
        return cls(**fields)


# The JSON type of each field (None: may be null); the first four must be there.
FIELD_TYPES: dict[str, tuple[type, ...]] = {
    "name": (str,), "distribution": (str,), "suite": (str,), "disk": (str,),
    "status": (str,), "done": (list,), "stage": (str, type(None)), "pid": (int,),
    "namespace": (str, type(None)), "loop": (str, type(None)), "root": (str, type(None)),
    "root_uuid": (str, type(None)), "swap_uuid": (str, type(None)),
    "rootfs": (str, type(None)), "source": (str, type(None)), "error": (str, type(None)),
    "started": (str,), "updated": (str,), "settings": (dict,), "runs": (list,),
}
REQUIRED = ("name", "distribution", "suite", "disk")
PATHS = ("disk", "loop", "root")


def check(data: Any, name: str) -> None:
    """DATA is the journal of NAME as save() writes it; a ValueError says what is wrong."""
    if not isinstance(data, dict):
        raise ValueError(f"a JSON {type(data).__name__}, not an object")
    if missing := [k for k in REQUIRED if k not in data]:
        raise ValueError(f"no {missing[0]!r}")
    for key, types in FIELD_TYPES.items():
        if key in data and (not isinstance(data[key], types) or isinstance(data[key], bool)):
            raise ValueError(f"{key!r} is a JSON {type(data[key]).__name__}")
    if data["name"] != name:
        raise ValueError(f"it is the journal of {printable(data['name'])!r}")
    if data.get("status", Status.RUNNING) not in set(Status):
        raise ValueError(f"unknown status {printable(str(data['status']))!r}")
    for key in PATHS:
        if data.get(key) and ("\0" in data[key] or not data[key].startswith("/")):
            raise ValueError(f"{key!r} is no absolute path: '{printable(data[key])}'")
    if not all(isinstance(s, str) for s in (*data.get("done", []), *data.get("runs", []))):
        raise ValueError("'done' or 'runs' holds other things than text")


def files(journal_dir: Path) -> StateFiles[Journal]:
    return StateFiles(journal_dir, "build journal", Journal.from_json)


def path_of(journal_dir: Path, name: str) -> Path:
    return files(journal_dir).path(name)


def save(journal_dir: Path, journal: Journal) -> None:
    """Replace the journal atomically and durably: a crash leaves the old or the new one."""
    journal.updated = now()
    files(journal_dir).save(journal)


# Far more than any journal holds (a few KiB), little enough to read at once.
SIZE_LIMIT = 4 * 1024 * 1024


def load(journal_dir: Path, name: str) -> Journal | None:
    """NAME's journal, or None when there is none; one that cannot be read is an error
    (BrokenJournal): how that build ended is not known, so nothing goes on from it."""
    path = path_of(journal_dir, name)
    if not os.path.lexists(path):
        return None
    try:
        data = read_bytes(path, "build journal", SIZE_LIMIT)
    except InvalidInput as exc:  # a directory, a FIFO, too big, unreadable
        raise broken(path, name, exc.message.split(": ", 1)[-1]) from None
    try:
        parsed = json.loads(data)
        check(parsed, name)
        return Journal.from_json(parsed)
    except ValueError as exc:  # json.JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise broken(path, name, str(exc)) from None


def load_or_warn(journal_dir: Path, name: str) -> Journal | None:
    """NAME's journal for a command that only looks (status, umount-vm): one that cannot
    be read is warned about, with what to do, and taken as none."""
    try:
        return load(journal_dir, name)
    except BrokenJournal as exc:
        logger.warning("warning: %s (%s)", exc.message, exc.hint)
        return None


def broken(path: Path, name: str, why: str) -> BrokenJournal:
    return BrokenJournal(f"the build journal {path} cannot be read: {printable(why)}",
                         hint=f"hostcreator cleanup {name} sets it aside (renamed, kept)")


def set_aside(journal_dir: Path, name: str) -> Path:
    """Rename NAME's unreadable journal to NAME.json.broken-<time>; returns the new path."""
    path = path_of(journal_dir, name)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    aside = next(p for n in range(1000) if not os.path.lexists(
        p := path.with_name(f"{path.name}.broken-{stamp}" + (f".{n}" if n else ""))))
    path.rename(aside)
    logger.warning("warning: the unreadable build journal %s was set aside as %s", path, aside)
    return aside


def names(journal_dir: Path) -> list[str]:
    return files(journal_dir).names()
