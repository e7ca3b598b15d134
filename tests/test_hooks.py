from __future__ import annotations

import pytest

from hostcreator.build import hooks
from hostcreator.errors import CommandError, InvalidInput

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


def test_directory_scripts_run_in_name_order_after_the_single_script(tmp_path):
    out = tmp_path / "out"
    hook_dir = make_hook(tmp_path, f'#!/bin/sh\necho "single $1 $HOSTCREATOR_HOOK" >> {out}\n')
    parts = hooks.parts_dir(hook_dir, hooks.POSTUNPACK)
    assert parts == hook_dir / "postunpack.d"
    parts.mkdir()
    for name in ("20-b", "10-a", "30-c"):
        (parts / name).write_text(f'#!/bin/sh\necho "{name} $# $1 $3 $HOSTCREATOR_HOOK" >> {out}\n')
        (parts / name).chmod(0o755)
    (parts / "15-off").write_text(f"#!/bin/sh\necho off >> {out}\n")  # not executable
    ran = hooks.run_hook(hook_dir, hooks.POSTUNPACK, "web1", tmp_path, "trixie", "debian")
    assert ran == [hook_dir / "postunpack.sh", parts / "10-a", parts / "20-b", parts / "30-c"]
    assert out.read_text().splitlines() == [
        "single web1 postunpack.sh", "10-a 3 web1 trixie postunpack.sh",
        "20-b 3 web1 trixie postunpack.sh", "30-c 3 web1 trixie postunpack.sh"]
    plan = hooks.scripts(hook_dir, hooks.POSTUNPACK)
    assert [(s.path.name, s.runs, s.note) for s in plan][2] == ("15-off", False, "not executable")


def test_a_failing_directory_script_stops_the_rest_naming_it(tmp_path):
    out = tmp_path / "out"
    parts = tmp_path / "hooks" / "postconfig.d"
    parts.mkdir(parents=True)
    for name, code in (("10-fails", 3), ("20-never", 0)):
        (parts / name).write_text(f"#!/bin/sh\necho {name} >> {out}\necho broken >&2\n"
                                  f"exit {code}\n")
        (parts / name).chmod(0o755)
    with pytest.raises(CommandError) as exc:
        hooks.run_hook(parts.parent, hooks.POSTCONFIG, "web1", tmp_path, "trixie", "debian")
    assert exc.value.returncode == 3
    assert f"hook {parts / '10-fails'} failed with exit code 3: broken" in str(exc.value)
    assert out.read_text() == "10-fails\n"


@pytest.mark.parametrize("make,message", [
    (lambda d: (d / "postconfig.d" / "10-sub").mkdir(parents=True),
     "postconfig.d/10-sub is a directory, not a hook script"),
    (lambda d: (d / "postunpack.d").write_text(""), "postunpack.d is not a directory"),
    (lambda d: (d / "postunpack.sh").mkdir(), "postunpack.sh is a directory"),
])
def test_a_hook_entry_that_is_not_a_script_is_bad_input(tmp_path, make, message):
    make(tmp_path)
    with pytest.raises(InvalidInput, match=message):
        hooks.check(tmp_path)
    assert hooks.check(tmp_path / "nothing-here") is None
