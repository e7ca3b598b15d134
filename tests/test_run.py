from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from hostcreator.errors import CommandError, HostCreatorError
from hostcreator.run import run

pytestmark = pytest.mark.unit


def test_output_is_captured_and_stdin_is_closed():
    assert run(["sh", "-c", "cat; echo hi"], capture=True).stdout == "hi\n"


def test_input_and_environment_are_controlled(monkeypatch):
    monkeypatch.setenv("LEAKY", "1")
    result = run(["sh", "-c", "read x; echo $x ${LEAKY:-none} $FOO"], input="abc\n",
                 env={"FOO": "bar"}, capture=True)
    assert result.stdout == "abc none bar\n"


def test_failure_carries_argv_exit_code_and_tail():
    with pytest.raises(CommandError) as exc:
        run(["sh", "-c", "echo one >&2; echo two >&2; exit 3"])
    assert exc.value.argv == ["sh", "-c", "echo one >&2; echo two >&2; exit 3"]
    assert exc.value.returncode == 3
    assert exc.value.tail == ["one", "two"]
    assert str(exc.value) == "sh failed with exit code 3: two"


def test_killed_by_a_signal_is_named():
    with pytest.raises(CommandError, match="was killed by SIGKILL"):
        run(["sh", "-c", "kill -9 $$"])


def test_missing_command_has_a_hint():
    with pytest.raises(HostCreatorError, match="command not found: debootstrap-nope"):
        run(["debootstrap-nope"])


def test_interruption_stops_the_whole_process_group(tmp_path):
    pidfile = tmp_path / "pid"

    def interrupt():
        while not pidfile.exists() or not pidfile.read_text().strip():
            time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=interrupt, daemon=True).start()
    with pytest.raises(KeyboardInterrupt):
        run(["sh", "-c", f"sleep 300 & echo $! > {pidfile}; wait"])
    child = int(pidfile.read_text())
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    pytest.fail("the grandchild still runs")
