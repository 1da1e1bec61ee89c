"""kill -9 in epoch 3 of 5, rerun the same command: the run resumes from its last
finished epoch and ends with the unkilled run's metrics (the bound is 1e-3; the resume
is exact: weights, optimizer, dropout RNG and early-stopping state are restored).

The run trains with dropout and a learning rate at which validation AUC peaks before
epoch 3, so both the RNG and the early-stopping best weights must survive the kill.
"""

import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest

# `tfdebias ...` with an optional self-kill: TFDEBIAS_TEST_KILL_AT="EPOCH:BATCH" (0-based)
# sends SIGKILL to this process after that batch (or the first one reported after it). Without it, it is the plain CLI.
DRIVER = textwrap.dedent("""
    import os, signal, sys
    kill = os.environ.get("TFDEBIAS_TEST_KILL_AT")
    if kill:
        import keras
        from tfdebias.training import engine
        at_epoch, at_batch = map(int, kill.split(":"))

        class _Kill(keras.callbacks.Callback):
            def on_epoch_begin(self, epoch, logs=None):
                self.epoch = epoch

            def on_train_batch_end(self, batch, logs=None):
                # >=: with several steps per call Keras reports every 8th batch only
                if self.epoch == at_epoch and batch >= at_batch:
                    os.kill(os.getpid(), signal.SIGKILL)

        _fit = engine.fit
        engine.fit = lambda *a, callbacks=(), **k: _fit(*a, callbacks=[*callbacks, _Kill()], **k)
    from tfdebias.cli import main
    sys.exit(main(sys.argv[1:]))
""")


def _train_cmd(out):
    return [sys.executable, "-c", DRIVER, "train", "--data", "confounded_ctr", "--model", "deepfm",
            "--epochs", "5", "--batch-size", "1024", "--lr", "0.02", "--seed", "3",
            "--model-arg", "embedding_dim=8", "--model-arg", "dropout=0.3", "--out", str(out)]


def _start(cmd, env):
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)


def _finish(procs, timeout=480):
    outs = []
    try:
        for p in procs:
            outs.append(p.communicate(timeout=timeout)[0])
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
    return outs


@pytest.mark.slow
def test_kill_9_in_epoch_3_resumes_and_matches(data_dir, tmp_path):
    from tfdebias import data as tdata
    from tfdebias.training import read_json

    tdata.prepare("confounded_ctr", data_dir=data_dir)
    env = {**os.environ, "TFDEBIAS_DATA_DIR": data_dir, "TF_CPP_MIN_LOG_LEVEL": "2"}
    ref, run = tmp_path / "unkilled", tmp_path / "killed"

    # The reference and the run to be killed, side by side.
    p_ref = _start(_train_cmd(ref), env)
    p_kill = _start(_train_cmd(run), {**env, "TFDEBIAS_TEST_KILL_AT": "2:5"})
    out_ref, out_kill = _finish([p_ref, p_kill])
    assert p_ref.returncode == 0, out_ref[-3000:]
    assert p_kill.returncode == -signal.SIGKILL, out_kill[-3000:]

    # Killed: nothing at the run's name; the unfinished run holds two finished epochs.
    partial = tmp_path / "killed.partial"
    assert not run.exists() and partial.is_dir()
    assert sorted(p.name for p in (partial / "backup").iterdir()) == ["epoch-000002"]
    assert len((partial / "history.csv").read_text().splitlines()) == 1 + 2

    # The same command again: resumes with epoch 3 (at most one epoch lost) and finishes.
    (out_resume,) = _finish([_start(_train_cmd(run), env)])
    assert "Resuming" in out_resume, out_resume[-3000:]
    assert "Epoch 3/5" in out_resume and "Epoch 1/5" not in out_resume and "Epoch 2/5" not in out_resume
    assert run.is_dir() and not partial.exists()

    a, b = read_json(ref / "metrics.json"), read_json(run / "metrics.json")
    scored = [k for k in a if "/" in k]
    assert {"valid/auc", "test/auc", "valid/logloss", "test/logloss"} <= set(scored)
    for k in scored:
        assert b[k] == pytest.approx(a[k], abs=1e-3), k
    assert a["epochs_trained"] == b["epochs_trained"] == 5
    hist_a = (ref / "history.csv").read_text().splitlines()
    hist_b = (run / "history.csv").read_text().splitlines()
    assert len(hist_a) == len(hist_b) == 1 + 5
    # The unkilled run's best epoch came before the kill, so its early-stopping state
    # (and best weights) had to survive it for the metrics to agree.
    cols = hist_a[0].split(",")
    val_auc = [float(r.split(",")[cols.index("val_auc")]) for r in hist_a[1:]]
    assert int(np.argmax(val_auc)) < 2, val_auc
    assert hist_a == hist_b
