"""The one way hostcreator runs an external command.

Every process gets an argv list, a closed (or given) stdin, a controlled
environment and its own process group; the argv is logged, its output goes
line by line to the log file, and a failure raises CommandError carrying the
argv, the exit code and the tail of the output. If we are interrupted while a
command runs, the command's whole process group is stopped before the
interruption travels on, so that the undo steps find nothing still busy.
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import threading
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from hostcreator.errors import CommandError, HostCreatorError
from hostcreator.log import logger

SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# Passed through so that debootstrap and apt can reach the archive from behind a proxy.
PASSTHROUGH = ("http_proxy", "https_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY")
TAIL_LINES = 30
STOP_GRACE_SECONDS = 10

# Which Debian package brings a command, for the hint when it is missing.
PACKAGE_OF = {
    "debootstrap": "debootstrap",
    "mmdebstrap": "mmdebstrap",
    "tar": "tar",
    "zstd": "zstd",
    "dpkg-architecture": "dpkg-dev",
    "rsync": "rsync",
    "mkfs.ext4": "e2fsprogs",
    "tune2fs": "e2fsprogs",
    "mkswap": "util-linux",
    "losetup": "mount",
    "wipefs": "util-linux",
    "partx": "util-linux",
    "fallocate": "util-linux",
    "lvchange": "lvm2",
    "lvcreate": "lvm2",
    "lvremove": "lvm2",
    "lvrename": "lvm2",
    "lvs": "lvm2",
    "vgs": "lvm2",
    "qemu-system-x86_64": "qemu-system-x86",
    "qemu-img": "qemu-utils",
    "gpgv": "gpgv",
    "chroot": "coreutils",
    "mount": "mount",
    "umount": "mount",
    "swtpm": "swtpm",
    "swtpm_setup": "swtpm-tools",
}


@dataclass
class Result:
    argv: list[str]
    returncode: int
    stdout: str
    tail: list[str]


def base_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = {"PATH": SYSTEM_PATH, "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "HOME": "/root"}
    env.update({k: v for k in PASSTHROUGH if (v := os.environ.get(k))})
    if extra:
        env.update(extra)
    return env


def _pieces(stream: IO[bytes]) -> Iterator[bytes]:
    """What a progress meter writes: pieces ended by a carriage return or a newline."""
    rest = b""
    while chunk := stream.read1(4096):  # type: ignore[attr-defined]
        *done, rest = (rest + chunk).replace(b"\r", b"\n").split(b"\n")
        yield from (piece for piece in done if piece.strip())
    if rest.strip():
        yield rest


def _pump(stream: IO[bytes], name: str, keep: list[str] | None, tail: deque[str],
          own: deque[str], progress: Callable[[str], None] | None = None) -> None:
    pieces = _pieces(stream) if progress is not None else iter(stream.readline, b"")
    for raw in pieces:
        line = raw.decode("utf-8", "replace").rstrip("\n")
        if progress is not None:
            progress(line)
            continue
        if keep is not None:
            keep.append(line)
        else:
            logger.debug("  %s| %s", name, line)
        tail.append(line)
        own.append(line)
    stream.close()


def _not_found(program: str) -> HostCreatorError:
    package = PACKAGE_OF.get(Path(program).name)
    hint = f"install it: apt-get install {package}" if package else None
    return HostCreatorError(f"command not found: {program}", hint=hint)


def _last(lines: deque[str]) -> str:
    return next((line.strip() for line in reversed(lines) if line.strip()), "")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """Stop the command and everything it started, politely first."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=STOP_GRACE_SECONDS)
            return
        except subprocess.TimeoutExpired:
            continue


def run(
    argv: Sequence[str | os.PathLike[str]],
    *,
    input: bytes | str | None = None,
    env: Mapping[str, str] | None = None,
    capture: bool = False,
    check: bool = True,
    cwd: Path | None = None,
    what: str | None = None,
    secret_input: bool = False,
    progress: Callable[[str], None] | None = None,
) -> Result:
    """Run ARGV; see the module documentation. With capture, stdout is returned, not logged.

    With secret_input, nothing about the input is logged (it is never logged anyway,
    but the flag documents the call site). With PROGRESS, each piece of stdout (a
    progress meter ends them by carriage returns) goes to it instead of the log.
    """
    args = [os.fspath(a) for a in argv]
    logger.debug("+ %s%s", shlex.join(args), "  (stdin: secret)" if secret_input else "")
    data = input.encode() if isinstance(input, str) else input
    try:
        proc = subprocess.Popen(
            args,
            stdin=subprocess.PIPE if data is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=base_env(env),
            cwd=cwd,
            process_group=0,
        )
    except FileNotFoundError:
        raise _not_found(args[0]) from None
    tail: deque[str] = deque(maxlen=TAIL_LINES)
    # The error names the last line of stderr: the two streams interleave at random.
    err_tail: deque[str] = deque(maxlen=TAIL_LINES)
    out_tail: deque[str] = deque(maxlen=TAIL_LINES)
    out: list[str] | None = [] if capture else None
    assert proc.stdout is not None and proc.stderr is not None
    pumps = [
        threading.Thread(target=_pump, args=(proc.stdout, "out", out, tail, out_tail,
                                             progress), daemon=True),
        threading.Thread(target=_pump, args=(proc.stderr, "err", None, tail, err_tail),
                         daemon=True),
    ]
    for t in pumps:
        t.start()
    try:
        if data is not None and proc.stdin is not None:
            try:
                proc.stdin.write(data)
            except BrokenPipeError:
                pass
            finally:
                proc.stdin.close()
        returncode = proc.wait()
        for t in pumps:
            t.join()
    except BaseException:
        _stop(proc)
        raise
    stdout = "\n".join(out) + ("\n" if out else "") if out is not None else ""
    if returncode != 0:
        logger.debug("  exit code %d", returncode)
    if check and returncode != 0:
        raise CommandError(args, returncode, list(tail), what=what,
                           last=_last(err_tail) or _last(out_tail))
    return Result(args, returncode, stdout, list(tail))


def missing_commands(commands: Sequence[str]) -> list[str]:
    return [c for c in commands if shutil.which(c, path=SYSTEM_PATH) is None]


def require_commands(commands: Sequence[str]) -> None:
    """Fail before anything is touched when a needed host command is missing."""
    missing = missing_commands(commands)
    if missing:
        packages = sorted({PACKAGE_OF.get(c, c) for c in missing})
        raise HostCreatorError(
            f"missing host command(s): {', '.join(missing)}",
            hint=f"apt-get install {' '.join(packages)}",
        )


def spawn(argv: Sequence[str | os.PathLike[str]], *, output: Path) -> subprocess.Popen[bytes]:
    """Start a long-running command in the background, its output going to OUTPUT.

    The caller owns the process and must stop it (stop()).
    """
    args = [os.fspath(a) for a in argv]
    logger.debug("+ %s &  (output: %s)", shlex.join(args), output)
    with open(output, "ab") as out:
        try:
            return subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=out,
                                    stderr=subprocess.STDOUT, env=base_env(),
                                    process_group=0)
        except FileNotFoundError:
            raise _not_found(args[0]) from None


def stop(proc: subprocess.Popen[bytes]) -> None:
    """Stop a process started by spawn(), and what it started."""
    if proc.poll() is None:
        _stop(proc)
