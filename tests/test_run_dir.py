import pytest

from tfdebias.errors import UsageError
from tfdebias.atomic import write_json
from tfdebias.training.run_dir import RunDir, open_finished, read_json


def test_run_is_partial_until_finished(tmp_path):
    run, resumed = RunDir.start(tmp_path / "r", {"a": 1})
    assert not resumed and run.work.exists() and not run.final.exists()
    write_json(run.path("model.weights.h5"), {})
    final = run.finish()
    assert final == tmp_path / "r" and not run.work.exists()
    assert read_json(final / "config.json") == {"a": 1}
    assert open_finished(final) == final


def test_existing_run_refused_without_overwrite(tmp_path):
    run, _ = RunDir.start(tmp_path / "r", {"a": 1})
    run.finish()
    with pytest.raises(UsageError, match="already exists"):
        RunDir.start(tmp_path / "r", {"a": 1})
    RunDir.start(tmp_path / "r", {"a": 1}, overwrite=True)


def test_resume_only_with_same_config(tmp_path):
    run, _ = RunDir.start(tmp_path / "r", {"a": 1})
    run.backup_dir.mkdir()
    _, resumed = RunDir.start(tmp_path / "r", {"a": 1})
    assert resumed
    _, resumed = RunDir.start(tmp_path / "r", {"a": 2})
    assert not resumed and not (tmp_path / "r.partial" / "backup").exists()


def test_open_unfinished_points_at_partial(tmp_path):
    RunDir.start(tmp_path / "r", {"a": 1})
    with pytest.raises(UsageError, match="unfinished"):
        open_finished(tmp_path / "r")
