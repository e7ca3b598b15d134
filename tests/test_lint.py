"""The linters are part of the suite."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit
ROOT = Path(__file__).parent.parent


def test_ruff():
    result = subprocess.run([sys.executable, "-m", "ruff", "check", "hostcreator", "tests"],
                            cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy():
    result = subprocess.run([sys.executable, "-m", "mypy"], cwd=ROOT, capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_shell_scripts_parse():
    scripts = [*ROOT.glob("skel/root/bin/*.sh"), *ROOT.glob("hooks/*.sh"), ROOT / ".ci" / "run",
               ROOT / "setup.sh"]
    for script in scripts:
        result = subprocess.run(["sh", "-n", script], capture_output=True, text=True)
        assert result.returncode == 0, f"{script}: {result.stderr}"
