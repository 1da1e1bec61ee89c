"""The multi-worker loop: per-worker sharding, checkpoint resume, and two real worker
processes on 127.0.0.1 that end with the weights of a one-process Mirrored run.

Tolerance: two workers with one CPU replica each and one process with two logical CPU
devices run the same per-replica batches through the same ``train_step``; only the
all-reduce differs (gRPC ring vs. one device), which may change float32 sums in the last
bit. We require |w_multi - w_mirrored| <= 1e-5 for every weight (observed: ~1e-7).
"""

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from tfdebias.schema import Feature, Schema

WEIGHT_ATOL = 1e-5
SCHEMA = Schema([Feature("user_id", "categorical", vocab_size=50),
                 Feature("item_id", "categorical", vocab_size=40),
                 Feature("price", "dense"), Feature("click", "label")])


def _columns(n, seed):
    rng = np.random.default_rng(seed)
    u, i = rng.integers(1, 50, n), rng.integers(1, 40, n)
    p = rng.random(n).astype("float32")
    y = (rng.random(n) < 1 / (1 + np.exp(-(np.sin(u) + np.cos(i) + p - 1)))).astype("float32")
    return {"user_id": u, "item_id": i, "price": p, "click": y}


class _Ctx:
    def __init__(self, replicas, pipelines, pid):
        self.num_replicas_in_sync, self.num_input_pipelines, self.input_pipeline_id = replicas, pipelines, pid


def test_sharding_gives_each_worker_its_replicas_slices():
    from tfdebias.training.distributed import shard_dataset

    cols = {k: v for k, v in _columns(103, 0).items()}
    cols["row"] = np.arange(103)

    def rows(ctx, epoch=1):
        ds = shard_dataset(cols, SCHEMA, global_batch_size=10, epoch=epoch, seed=3, input_context=ctx)
        return [b[0]["row"].numpy() for b in ds]

    one = rows(_Ctx(2, 1, 0))            # one process, two devices: slices alternate
    w0, w1 = rows(_Ctx(2, 2, 0)), rows(_Ctx(2, 2, 1))  # two workers, one device each
    assert len(one) == 20 and len(w0) == len(w1) == 10  # 103 // 10 global batches
    assert all(len(b) == 5 for b in one + w0 + w1)
    for s in range(10):
        np.testing.assert_array_equal(one[2 * s], w0[s])
        np.testing.assert_array_equal(one[2 * s + 1], w1[s])
    seen = np.concatenate(w0 + w1)
    assert len(set(seen)) == 100  # no row twice in an epoch; the remainder is dropped
    # the epoch's order depends only on (seed, epoch)
    assert all((a == b).all() for a, b in zip(rows(_Ctx(2, 2, 0)), w0))
    assert not all((a == b).all() for a, b in zip(rows(_Ctx(2, 2, 0), epoch=2), w0))
    with pytest.raises(Exception, match="not divisible"):
        shard_dataset(cols, SCHEMA, global_batch_size=9, epoch=0, input_context=_Ctx(2, 2, 0))


def test_checkpoint_resume_continues_exactly(tmp_path):
    """A run killed after epoch 2 of 3 and restarted ends with the unbroken run's weights
    (dropout included: the seed generators are in the checkpoint)."""
    import keras
    import tensorflow as tf

    from tfdebias.optimizers import make_optimizer
    from tfdebias.training.distributed import fit_distributed
    from tfdebias.training.engine import TrainConfig, build_model, compile_model

    train, valid = _columns(640, 1), _columns(200, 2)
    cfg = TrainConfig(data="x", model="deepfm", epochs=3, batch_size=64, patience=2,
                      learning_rate=1e-2, model_args={"embedding_dim": 4, "hidden_units": [8],
                                                       "dropout": 0.2})
    strategy = tf.distribute.get_strategy()

    def build():
        keras.utils.set_random_seed(0)
        m = build_model("deepfm", SCHEMA, cfg.model_args, {k: v[:2] for k, v in valid.items()})
        compile_model(m, make_optimizer("lazy_adam", cfg.learning_rate), jit_compile=False)
        return m

    def run(ckpt, on_epoch_end=None):
        m = build()
        h = fit_distributed(m, strategy, train, SCHEMA, cfg, valid_columns=valid,
                            checkpoint_dir=ckpt, verbose=0, on_epoch_end=on_epoch_end)
        return m, h

    # Keras' first model in a process draws its dropout seed from a different point of
    # Python's RNG than later ones (the same in every process); build one first so the
    # three runs below start alike, as three fresh processes would.
    build()
    ref, ref_hist = run(tmp_path / "a")

    class Killed(Exception):
        pass

    def die(epoch, logs):
        if epoch == 1:
            raise Killed

    with pytest.raises(Killed):
        run(tmp_path / "b", die)
    resumed, hist = run(tmp_path / "b")
    for a, b in zip(ref.get_weights(), resumed.get_weights()):
        np.testing.assert_allclose(a, b, atol=1e-6)
    assert len(hist["val_auc"]) == len(ref_hist["val_auc"])
    np.testing.assert_allclose(hist["val_auc"], ref_hist["val_auc"], atol=1e-6)


# -- two worker processes vs. one Mirrored process ---------------------------------------


def _free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


MIRRORED = textwrap.dedent("""
    import sys
    from tfdebias.training.strategy import split_cpu
    split_cpu(2)
    import tensorflow as tf
    from tfdebias.training.engine import TrainConfig
    from tfdebias.training.distributed import train_multi_worker
    cfg = TrainConfig(**__import__("json").loads(sys.argv[2]))
    devices = [d.name for d in tf.config.list_logical_devices("CPU")]
    assert len(devices) == 2, devices
    r = train_multi_worker(cfg, sys.argv[1], strategy=tf.distribute.MirroredStrategy(devices))
    print("REPLICAS", r.metrics["num_replicas"])
""")


def _h5_weights(path):
    import h5py

    out = {}
    with h5py.File(path, "r") as f:
        def visit(name, obj):
            if isinstance(obj, h5py.Dataset) and not name.startswith("optimizer"):
                out[name] = np.asarray(obj)
        f.visititems(visit)
    return out


@pytest.mark.slow
def test_two_workers_match_a_mirrored_run(data_dir, tmp_path):
    from tfdebias import data as tdata
    from tfdebias.training import read_json
    from tfdebias.training.engine import TrainConfig

    tdata.prepare("confounded_ctr", data_dir=data_dir)  # once, before three processes read it
    cfg = TrainConfig(data="confounded_ctr", model="deepfm", epochs=2, batch_size=2048,
                      learning_rate=1e-2, model_args={"embedding_dim": 8, "hidden_units": [16]})
    env = {**os.environ, "TFDEBIAS_DATA_DIR": data_dir, "TF_CPP_MIN_LOG_LEVEL": "2",
           "OMP_NUM_THREADS": "1", "TF_NUM_INTRAOP_THREADS": "1", "TF_NUM_INTEROP_THREADS": "2"}
    ports = _free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    multi = tmp_path / "multi"
    cmd = [sys.executable, "-m", "tfdebias.cli", "train", "--data", "confounded_ctr",
           "--model", "deepfm", "--epochs", "2", "--batch-size", "2048", "--lr", "0.01",
           "--model-arg", "embedding_dim=8", "--model-arg", "hidden_units=[16]",
           "--strategy", "multi-worker", "--out", str(multi)]
    procs = []
    try:
        for i in range(2):
            tf_config = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}})
            procs.append(subprocess.Popen(cmd, env={**env, "TF_CONFIG": tf_config},
                                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                          text=True, start_new_session=True))
        cfg_json = json.dumps({k: v for k, v in cfg.to_dict().items()})
        procs.append(subprocess.Popen([sys.executable, "-c", MIRRORED, str(tmp_path / "mirrored"),
                                       cfg_json], env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True, start_new_session=True))
        deadline = time.time() + 480  # generous: the suite may share 2 cores with other jobs
        outs = []
        for p in procs:
            outs.append(p.communicate(timeout=max(1, deadline - time.time()))[0])
    finally:
        for p in procs:  # always clean up, whatever happened
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
    for p, out in zip(procs, outs):
        assert p.returncode == 0, out[-3000:]
    assert "REPLICAS 2" in outs[2]
    assert "(chief)" in outs[0] and "(chief)" not in outs[1]

    m = read_json(multi / "metrics.json")
    r = read_json(tmp_path / "mirrored" / "metrics.json")
    assert m["num_replicas"] == r["num_replicas"] == 2 and m["epochs_trained"] == 2
    assert not (tmp_path / "multi.partial").exists()
    a, b = _h5_weights(multi / "model.weights.h5"), _h5_weights(tmp_path / "mirrored" / "model.weights.h5")
    assert a.keys() == b.keys() and len(a) > 4
    for k in a:
        np.testing.assert_allclose(a[k], b[k], atol=WEIGHT_ATOL, err_msg=k)
    for k in ("valid/auc", "test/auc"):
        assert m[k] == pytest.approx(r[k], abs=1e-5)
