"""The command line: help, the happy path through train/evaluate, and bad input → exit 2
with one clear line and nothing half-written."""

import json
import os
import subprocess
import sys

import pytest

from tfdebias.cli import main


@pytest.mark.parametrize("cmd", [[], ["train"], ["evaluate"], ["datasets"], ["quickstart"],
                                 ["reproduce"]])
def test_help(cmd, capsys):
    with pytest.raises(SystemExit) as e:
        main([*cmd, "--help"])
    assert e.value.code == 0
    assert "usage: tfdebias" in capsys.readouterr().out


def assert_one_line_error(capsys, pattern):
    """One error line, last on stderr (progress output may precede it), no traceback."""
    err = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in err if line.startswith("tfdebias: error: ")]
    assert len(errors) == 1 and err[-1] == errors[0], err[-5:]
    assert pattern in errors[0], errors[0]
    assert not any("Traceback" in line for line in err)


def test_unknown_dataset(tmp_path, data_dir, capsys):
    out = tmp_path / "r"
    assert main(["train", "--data", "nope", "--model", "deepfm", "--out", str(out)]) == 2
    assert_one_line_error(capsys, "unknown data set 'nope'")
    assert not list(tmp_path.iterdir())


def test_unknown_model_leaves_nothing(tmp_path, data_dir, capsys):
    out = tmp_path / "r"
    assert main(["train", "--data", "confounded_ctr", "--model", "nope", "--out", str(out)]) == 2
    assert_one_line_error(capsys, "unknown model 'nope'")
    assert not list(tmp_path.iterdir())


def test_bad_model_argument(tmp_path, data_dir, capsys):
    out = tmp_path / "r"
    rc = main(["train", "--data", "confounded_ctr", "--model", "deepfm", "--out", str(out),
               "--model-arg", "no_such_arg=3"])
    assert rc == 2
    assert_one_line_error(capsys, "no_such_arg")
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("args,pattern", [
    (["--epochs", "0"], "expected an integer >= 1, got 0"),
    (["--lr", "-1"], "positive number"),
    (["--model-arg", "novalue"], "KEY=VALUE"),
])
def test_bad_arguments_exit_2(args, pattern, capsys):
    with pytest.raises(SystemExit) as e:
        main(["train", "--data", "confounded_ctr", "--model", "deepfm", *args])
    assert e.value.code == 2
    assert pattern in capsys.readouterr().err


def test_evaluate_missing_run(tmp_path, capsys):
    assert main(["evaluate", str(tmp_path / "missing")]) == 2
    assert_one_line_error(capsys, "does not exist")


@pytest.mark.slow
def test_train_evaluate_and_mismatched_config(tmp_path, data_dir, capsys):
    out = tmp_path / "lr"
    train = ["train", "--data", "confounded_ctr", "--model", "lr", "--epochs", "1",
             "--out", str(out), "--data-dir", data_dir]
    assert main(train) == 0
    printed = capsys.readouterr().out
    metrics = json.loads((out / "metrics.json").read_text())
    assert f"| test | {metrics['test/auc']:.4f} |" in printed  # the table shows the run's metrics
    assert main(["evaluate", str(out), "--data-dir", data_dir]) == 0
    assert f"| valid | {metrics['valid/auc']:.4f} |" in capsys.readouterr().out
    # A finished run refuses to be overwritten silently.
    assert main(train) == 2
    assert_one_line_error(capsys, "already exists")
    # A config.json that no longer matches the weights (or the schema): one clear error.
    cfg = (out / "config.json").read_text().replace('"model": "lr"', '"model": "deepfm"')
    (out / "config.json").write_text(cfg)
    assert main(["evaluate", str(out), "--data-dir", data_dir]) == 2
    assert_one_line_error(capsys, "does not fit")
    (out / "config.json").write_text(cfg.replace('"model": "deepfm"', '"model": "lr"'))
    damaged_run_dirs_exit_2(out, data_dir)


def damaged_run_dirs_exit_2(out, data_dir):
    """A run directory whose files were damaged: one line naming the file, exit 2."""
    import contextlib
    import io

    def evaluate():
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            rc = main(["evaluate", str(out), "--data-dir", data_dir])
        lines = err.getvalue().strip().splitlines()
        assert rc == 2 and len(lines) == 1 and lines[0].startswith("tfdebias: error: "), lines
        return lines[0]

    weights = (out / "model.weights.h5").read_bytes()
    config = (out / "config.json").read_text()
    (out / "model.weights.h5").write_bytes(b"")
    assert "model.weights.h5: cannot be read as Keras weights" in evaluate()
    (out / "model.weights.h5").write_bytes(weights[: len(weights) // 2])
    assert "model.weights.h5: cannot be read as Keras weights" in evaluate()
    (out / "model.weights.h5").write_bytes(weights)
    (out / "config.json").write_text(config[:-10])
    assert "config.json, line" in evaluate() and "malformed JSON" in evaluate()
    (out / "config.json").write_text(config.replace('"epochs": 1', '"epochs": -1'))
    assert "config.json: is not a valid run config" in evaluate()
    (out / "config.json").write_text(config)


def test_out_under_a_regular_file_exits_2(tmp_path, capsys):
    afile = tmp_path / "afile"
    afile.write_text("x")
    assert main(["train", "--data", "confounded_ctr", "--model", "lr", "--out", str(afile / "run")]) == 2
    assert_one_line_error(capsys, "is a file, not a directory")
    assert main(["reproduce", "cp2rec", "--quick", "--out", str(afile / "r")]) == 2
    assert_one_line_error(capsys, "is a file, not a directory")
    assert afile.read_text() == "x" and sorted(p.name for p in tmp_path.iterdir()) == ["afile"]


def test_datasets_list_and_prepare(data_dir, capsys):
    assert main(["datasets", "list"]) == 0
    out = capsys.readouterr().out
    for name in ("confounded_ctr", "cross_domain_ctr", "cascade_exposure", "cross_domain_sequences"):
        assert name in out
    assert main(["datasets", "prepare", "confounded_ctr", "--data-dir", data_dir]) == 0
    assert "train" in capsys.readouterr().out
    assert main(["datasets", "prepare", "nope", "--data-dir", data_dir]) == 2


@pytest.mark.slow
def test_datasets_list_prints_only_its_own_lines():
    """TensorFlow's start-up chatter (oneDNN, CUDA probes, cuInit errors) stays hidden
    unless asked for with --verbose."""
    from tfdebias import data

    env = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL",)}
    r = subprocess.run([sys.executable, "-m", "tfdebias.cli", "datasets", "list"], capture_output=True,
                       text=True, timeout=600, env=env)
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""
    lines = r.stdout.strip().splitlines()
    assert [line.split()[0] for line in lines] == data.available()
    assert not any("TFDS builder" in line or "module docstring" in line for line in lines)
    loud = subprocess.run([sys.executable, "-m", "tfdebias.cli", "--verbose", "datasets", "list"],
                          capture_output=True, text=True, timeout=600, env=env)
    assert loud.returncode == 0 and loud.stderr  # the same chatter is there when asked for
