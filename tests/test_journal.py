"""The build journal as data, and what the commands make of it."""

from __future__ import annotations

import json

import pytest
from conftest import run_cli

from hostcreator import config
from hostcreator.errors import BrokenJournal
from hostcreator.state import journal
from hostcreator.state.journal import Journal, Stage, Status


@pytest.mark.unit
def test_saved_journal_reads_back_the_same(tmp_path):
    record = Journal("web1", "debian", "trixie", tmp_path / "web1-disk01.img")
    record.begin_run(123, {"SIZE": "8"}, resumed=False)
    record.begin(Stage.DISK)
    record.end(Stage.DISK)
    record.loop = tmp_path / "loop7"
    journal.save(tmp_path, record)
    again = journal.load(tmp_path, "web1")
    assert again == record
    assert again.next_stage() is Stage.PARTITIONS
    assert again.done == [Stage.DISK] and isinstance(again.done[0], Stage)
    assert journal.names(tmp_path) == ["web1"]
    assert not list(tmp_path.glob("*.tmp"))


@pytest.mark.unit
def test_the_pipeline_runs_every_stage_once_in_order():
    from hostcreator.build import pipeline

    assert [step.stage for step in pipeline.STEPS] == list(Stage)


@pytest.mark.unit
def test_a_stage_no_longer_known_is_dropped_from_a_journal(tmp_path):
    # A journal of another version may name a stage this one lacks.
    data = Journal("web1", "debian", "trixie", tmp_path).to_json()
    data.update(done=["disk", "gone"], stage="gone")
    record = Journal.from_json(json.loads(json.dumps(data)))
    assert record.done == [Stage.DISK] and record.stage is None
    assert record.next_stage() is Stage.PARTITIONS
    assert Stage.named("install") is Stage.INSTALL and f"{Stage.INSTALL}" == "install"


@pytest.mark.unit
@pytest.mark.parametrize("status,stage,done,error,says", [
    (Status.RUNNING, "install", ["disk"], None, "was killed in stage install (PID 9"),
    (Status.FAILED, "install", ["disk"], "boom", "failed in stage install: boom"),
    (Status.FAILED, "disk", ["disk"], "x", "failed right after stage disk: x"),
    (Status.FAILED, None, [], "x", "failed before its first stage: x"),
    (Status.INTERRUPTED, "bootstrap", [], "interrupted by SIGINT",
     "was interrupted in stage bootstrap: interrupted by SIGINT"),
])
def test_describe_tells_how_a_build_stopped(tmp_path, status, stage, done, error, says):
    record = Journal("web1", "debian", "trixie", tmp_path, status=status, stage=stage,
                     done=done, error=error, pid=9)
    assert says in record.describe()
    assert not record.finished


@pytest.mark.unit
def test_settings_keep_no_password_of_a_url(testenv):
    cfg = config.load(testenv.config, {"APT_PROXY": "http://me:s3cret@proxy:3128",
                             "MIRROR": "http://mirror.invalid/debian"}, environ={})
    settings = journal.settings_of(cfg)
    assert settings["APT_PROXY"] == "http://me:***@proxy:3128"
    assert settings["MIRROR"] == "http://mirror.invalid/debian"
    assert "s3cret" not in json.dumps(settings)


@pytest.mark.unit
@pytest.mark.parametrize("text,why", [
    ("{not json", "Expecting property name"),
    ("[]", "a JSON list, not an object"),
    ('{"name": "web1", "distribution": "debian", "suite": "trixie"}', "no 'disk'"),
    ('{"name": "web1", "distribution": "debian", "suite": "trixie", "disk": 5}',
     "'disk' is a JSON int"),
    ('{"name": "web2", "distribution": "debian", "suite": "trixie", "disk": "/d"}',
     "it is the journal of 'web2'"),
    ('{"name": "web1", "distribution": "debian", "suite": "trixie", "disk": "/d\\u0000x"}',
     "'disk' is no absolute path: '/d\\x00x'"),
    ('{"name": "web1", "distribution": "debian", "suite": "trixie", "disk": "/d", '
     '"status": "done"}', "unknown status 'done'"),
    ('{"name": "web1", "distribution": "debian", "suite": "trixie", "disk": "/d", '
     '"done": [1]}', "'done' or 'runs' holds other things"),
    ("\udcff", "invalid"),
])
def test_an_unreadable_journal_is_an_error_saying_why(tmp_path, text, why):
    (tmp_path / "web1.json").write_bytes(text.encode(errors="surrogateescape"))
    with pytest.raises(BrokenJournal) as exc:
        journal.load(tmp_path, "web1")
    assert exc.value.message.startswith(f"the build journal {tmp_path}/web1.json cannot be "
                                        "read: "), exc.value.message
    assert why in exc.value.message
    assert exc.value.exit_code == 6
    assert exc.value.hint == "hostcreator cleanup web1 sets it aside (renamed, kept)"


@pytest.mark.unit
def test_a_journal_that_is_a_directory_is_broken_too(tmp_path):
    (tmp_path / "web1.json").mkdir()
    with pytest.raises(BrokenJournal, match=r"web1\.json is a directory, not a file"):
        journal.load(tmp_path, "web1")


@pytest.mark.unit
def test_resume_and_restart_exclude_each_other(testenv):
    result = run_cli("create-debian", "web1", "--resume", "--restart", "--config",
                     str(testenv.config))
    assert result.returncode == 2
    assert "--resume and --restart exclude each other" in result.stderr


@pytest.mark.root
def test_nothing_to_resume_without_a_journal_or_after_a_finished_build(testenv):
    conf = testenv.config
    result = run_cli("create-debian", "web1", "--resume", "--config", str(conf))
    assert result.returncode == 2, result.stderr
    assert "nothing to resume for web1: it has no build journal" in result.stderr
    record = Journal("web1", "debian", "trixie", testenv.image("web1"))
    record.stop(Status.FINISHED)
    journal.save(testenv.journal_dir, record)
    result = run_cli("create-debian", "web1", "--resume", "--config", str(conf))
    assert result.returncode == 2 and "its build finished at" in result.stderr
    assert not testenv.image_dir.exists()


@pytest.mark.root
def test_an_unfinished_build_of_the_other_distribution_or_disk_is_refused(testenv, tmp_path):
    conf = testenv.config
    record = Journal("web1", "ubuntu", "resolute", testenv.image("web1"),
                     status=Status.FAILED, stage="install", done=["disk"])
    journal.save(testenv.journal_dir, record)
    result = run_cli("create-debian", "web1", "--config", str(conf))
    assert result.returncode == 2 and "web1 has an unfinished ubuntu build" in result.stderr
    assert "create-ubuntu web1 --resume" in result.stderr
    record.distribution, record.suite = "debian", "trixie"
    record.disk = tmp_path / "elsewhere.img"
    journal.save(testenv.journal_dir, record)
    result = run_cli("create-debian", "web1", "--resume", "--config", str(conf))
    assert result.returncode == 2, result.stderr
    assert f"was on {tmp_path}/elsewhere.img" in result.stderr
    record.disk = testenv.image("web1")
    journal.save(testenv.journal_dir, record)
    result = run_cli("create-debian", "web1", "--config", str(conf))
    assert result.returncode == 6, result.stderr
    assert "the build of web1 did not finish: it failed in stage install" in result.stderr
    result = run_cli("create-debian", "web1", "--resume", "--config", str(conf))
    assert result.returncode == 2 and "is gone: nothing to resume" in result.stderr
