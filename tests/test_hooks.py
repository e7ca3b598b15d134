from __future__ import annotations

import pytest

from hostcreator.build import hooks
from hostcreator.errors import CommandError

pytestmark = pytest.mark.unit


def make_hook(tmp_path, text, mode=0o755):
    path = tmp_path / "hooks" / hooks.POSTUNPACK
    path.parent.mkdir(exist_ok=True)
    path.write_text(text)
    path.chmod(mode)
    return path.parent


def test_hook_gets_arguments_environment_and_cwd(tmp_path):
    out = tmp_path / "out"
    root = tmp_path / "root"
    root.mkdir()
    hook_dir = make_hook(tmp_path, f"""#!/bin/sh
echo "$# $1 $2 $3" > {out}
echo "$HOSTCREATOR_NAME $HOSTCREATOR_ROOT $HOSTCREATOR_DISTR $HOSTCREATOR_DISTRIBUTION" >> {out}
echo "$HOSTCREATOR_HOOK $(pwd) ${{SECRET_THING:-unset}}" >> {out}
""")
    assert hooks.run_hook(hook_dir, hooks.POSTUNPACK, "web1", root, "trixie", "debian")
    assert out.read_text().splitlines() == [
        f"3 web1 {root} trixie",
        f"web1 {root} trixie debian",
        f"postunpack.sh {root} unset",
    ]


def test_failing_hook_raises_with_exit_code_and_stderr(tmp_path):
    hook_dir = make_hook(tmp_path, "#!/bin/sh\necho starting\necho 'disk quota gone' >&2\nexit 5\n")
    with pytest.raises(CommandError) as exc:
        hooks.run_hook(hook_dir, hooks.POSTUNPACK, "web1", tmp_path, "trixie", "debian")
    assert exc.value.returncode == 5
    assert "postunpack.sh failed with exit code 5: disk quota gone" in str(exc.value)


def test_missing_or_not_executable_hook_is_skipped(tmp_path):
    assert not hooks.run_hook(tmp_path, hooks.POSTCONFIG, "a", tmp_path, "trixie", "debian")
    hook_dir = make_hook(tmp_path, "#!/bin/sh\nexit 1\n", mode=0o644)
    assert not hooks.run_hook(hook_dir, hooks.POSTUNPACK, "a", tmp_path, "trixie", "debian")
