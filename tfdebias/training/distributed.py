"""Multi-worker training: a distributed loop around the model's own ``train_step``.

Keras 3 ``fit()`` does not run under ``tf.distribute.MultiWorkerMirroredStrategy``
(keras-team/keras#20585), so :func:`fit_distributed` is the loop that does. It is
deliberately small:

* **One step, no second loss.** Each replica runs ``model.train_step(batch)`` inside
  ``strategy.run`` -- exactly what Keras' own ``fit`` does under ``MirroredStrategy``.
  A backbone's loss is its compiled loss (``train_step`` -> ``compute_loss``); a method
  that overrides ``compute_loss`` or ``train_step`` is trained by the same code. The
  convention for methods (docs/distributed.md): compute the loss of the *per-replica*
  batch as a mean over that batch and pass it through
  ``keras.src.losses.loss.scale_loss_for_distribution`` -- which ``Model.compute_loss``
  already does -- and apply gradients with ``self.optimizer.apply_gradients``, which
  sums them over all replicas of all workers. Never call ``tf.distribute`` APIs inside
  a step.
* **A standalone optimizer**: the model is compiled (under the strategy's scope) with
  ``tfdebias.optimizers.make_optimizer(config.optimizer, config.learning_rate)``; that
  optimizer is built before the first step and checkpointed with the model.
* **Per-worker sharding** (:func:`shard_dataset`): the order of epoch ``e`` is the same
  ``stateless_shuffle(seed, e)`` permutation the single-process pipeline uses; it is cut
  into global batches of ``config.batch_size`` rows (the remainder of an epoch is
  dropped so every replica gets the same number of equally sized batches), each global
  batch into one slice per replica, and input pipeline ``p`` (one per worker) reads only
  the slices of its own replicas. Two workers with one device each therefore see exactly
  the batches that one process with two devices sees, so their weights agree
  (tests/test_distributed.py).
* **Checkpoints** (``tf.train.CheckpointManager``): model, optimizer, epoch counter and
  early-stopping state, saved by every worker at the end of every epoch (the chief into
  the run directory, the others into a temporary folder, as TensorFlow requires). A
  restarted cluster restores the chief's latest checkpoint and continues with the next
  epoch; the run directory must therefore sit on storage every worker can read.
* **Validation and early stopping** on every worker identically: the served prediction
  on the whole validation split (``val_auc`` or ``val_loss`` = log loss), so all workers
  stop at the same epoch without talking to each other. The best weights are kept and
  restored at the end, like the engine's ``EarlyStopping(restore_best_weights=True)``.

:func:`train_multi_worker` wraps the loop into the engine's contract (a config in, a
finished run directory out); ``tfdebias train ... --strategy multi-worker`` calls it on
every worker with ``TF_CONFIG`` set.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from tfdebias.errors import UsageError
from tfdebias.atomic import save_npz, write_json
from tfdebias.evaluation import metrics
from tfdebias.models.predict import predict
from tfdebias.training import run_dir as rd

CHECKPOINTS = "checkpoints"
BEST_WEIGHTS = "best.weights.npz"
HISTORY_JSON = "history.json"


# -- cluster --------------------------------------------------------------------------


def worker_info(strategy) -> tuple[str, int, bool]:
    """``(task_type, task_id, is_chief)`` of this process (a chief for one process)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    task_type = getattr(resolver, "task_type", None) or "worker"
    task_id = int(getattr(resolver, "task_id", None) or 0)
    cluster = resolver.cluster_spec().as_dict() if resolver is not None else {}
    if "chief" in cluster:
        is_chief = task_type == "chief"
    else:
        is_chief = task_type == "worker" and task_id == 0
    return task_type, task_id, is_chief


def barrier(strategy) -> None:
    """Wait until every worker gets here (one tiny all-reduce)."""
    import tensorflow as tf

    if strategy.num_replicas_in_sync > 1:
        strategy.reduce(tf.distribute.ReduceOp.SUM,
                        strategy.run(lambda: tf.constant(1.0)), axis=None)


@contextlib.contextmanager
def file_lock(path):
    """An exclusive ``flock`` on ``path`` (workers sharing a data directory prepare
    a data set one at a time; the second finds it prepared)."""
    import fcntl

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


# -- data -----------------------------------------------------------------------------


def shard_dataset(columns: dict, schema, *, global_batch_size: int, epoch: int, seed: int = 0,
                  input_context=None, shuffle: bool = True, label: str | None = None,
                  weight: str | None = None):
    """The per-replica batches input pipeline ``input_context`` feeds in epoch ``epoch``.

    The epoch's row order is ``stateless_shuffle(range(n), seed=(seed, epoch))`` (the
    permutation :func:`tfdebias.data.make_dataset` uses), cut into
    ``n // global_batch_size`` global batches. Global batch ``s`` is split into
    ``num_replicas`` consecutive slices; replica ``r`` trains on slice ``r``. Pipeline
    ``p`` of ``P`` owns replicas ``p*R .. p*R+R-1`` (``R = num_replicas / P``) and yields
    their slices in replica order, step after step, which is the order
    ``distribute_datasets_from_function`` hands elements to a worker's devices.
    """
    import tensorflow as tf

    from tfdebias.errors import DataError

    label = label or schema.label.name
    n = int(columns[label].shape[0])
    replicas = input_context.num_replicas_in_sync if input_context is not None else 1
    pipelines = input_context.num_input_pipelines if input_context is not None else 1
    pid = input_context.input_pipeline_id if input_context is not None else 0
    if global_batch_size % replicas:
        raise UsageError(f"batch_size {global_batch_size} is not divisible by the "
                         f"{replicas} replicas")
    if replicas % pipelines:
        raise UsageError(f"{replicas} replicas do not split evenly over {pipelines} workers")
    per_replica, local = global_batch_size // replicas, replicas // pipelines
    steps = n // global_batch_size
    if steps == 0:
        raise DataError(f"the training split has {n} rows, fewer than one batch of {global_batch_size}")
    feats = {k: tf.convert_to_tensor(v) for k, v in columns.items() if k != label}
    y = tf.cast(tf.convert_to_tensor(columns[label]), tf.float32)
    w = tf.cast(tf.convert_to_tensor(columns[weight]), tf.float32) if weight else None
    order = tf.range(n, dtype=tf.int64)
    if shuffle:
        order = tf.random.experimental.stateless_shuffle(
            order, seed=tf.constant([seed, epoch], tf.int64))
    idx = tf.reshape(order[: steps * global_batch_size], (steps, replicas, per_replica))
    idx = tf.reshape(idx[:, pid * local:(pid + 1) * local], (steps * local, per_replica))

    def gather(i):
        out = ({k: tf.gather(v, i) for k, v in feats.items()}, tf.gather(y, i))
        return out + (tf.gather(w, i),) if w is not None else out

    ds = tf.data.Dataset.from_tensor_slices(idx).map(gather)
    return ds.prefetch(2)


def steps_per_epoch(n_rows: int, global_batch_size: int) -> int:
    return n_rows // global_batch_size


# -- validation -----------------------------------------------------------------------

def validation_logs(model, columns: dict, schema) -> dict:
    """``{"val_auc", "val_loss"}`` of the served prediction on ``columns``."""
    y = columns[schema.label.name]
    p = predict(model, columns, inputs=[f.name for f in schema.inputs if f.name in columns],
                compiled=True)
    return {"val_auc": metrics.auc(y, p), "val_loss": metrics.logloss(y, p)}


# -- the loop -------------------------------------------------------------------------


def _better(mode: str, a: float, b: float) -> bool:
    if np.isnan(a):
        return False
    return np.isnan(b) or (a > b if mode == "max" else a < b)


def fit_distributed(model, strategy, train_columns: dict, schema, config, *,
                    valid_columns: dict | None = None, checkpoint_dir=None,
                    is_chief: bool = True, verbose: int = 1,
                    on_epoch_end=None) -> dict:
    """Train ``model`` (built and compiled under ``strategy.scope()``) for
    ``config.epochs`` epochs; returns the history ``{metric: [value per epoch]}``.

    Args:
      checkpoint_dir: the chief's checkpoint folder. Every worker restores the latest
        checkpoint found there (resume) and saves after every epoch (non-chief workers
        into a temporary folder they delete). ``None``: no checkpoints.
      on_epoch_end: ``fn(epoch, logs)`` called after each epoch's checkpoint (tests use
        it to kill a worker mid-run).

    Early stopping follows ``config.patience`` and ``config.monitor`` (``val_auc`` or
    ``val_loss``) when ``valid_columns`` is given; the best weights are restored.
    """
    import tensorflow as tf

    from tfdebias.training.engine import _monitor_mode

    monitor = config.monitor
    if valid_columns is not None and config.patience > 0 and monitor not in ("val_auc", "val_loss"):
        raise UsageError(f"the multi-worker loop monitors val_auc or val_loss, not {monitor!r}")
    mode = _monitor_mode(monitor)
    label = schema.label.name
    n = len(train_columns[label])
    gbs = config.batch_size
    steps = steps_per_epoch(n, gbs)

    optimizer = model.optimizer
    with strategy.scope():
        if not optimizer.built:
            optimizer.build(model.trainable_variables)
    state = {
        "epoch": tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch"),
        "best": tf.Variable(np.nan, dtype=tf.float64, trainable=False, name="best"),
        "wait": tf.Variable(0, dtype=tf.int64, trainable=False, name="wait"),
        "best_epoch": tf.Variable(-1, dtype=tf.int64, trainable=False, name="best_epoch"),
    }
    from tfdebias.training.resume import _seed_generators

    # The dropout RNG (seed-generator states) is not among the model's tracked
    # variables; without it a resumed run draws other masks.
    rng = [sg.state for sg in _seed_generators(model)]
    ckpt = tf.train.Checkpoint(model=model, optimizer=optimizer, rng=rng, **state)
    manager, scratch = None, None
    if checkpoint_dir is not None:
        checkpoint_dir = Path(checkpoint_dir)
        latest = tf.train.latest_checkpoint(str(checkpoint_dir))
        if latest:
            ckpt.restore(latest).expect_partial()
        write_dir = checkpoint_dir
        if not is_chief:
            scratch = Path(tempfile.mkdtemp(prefix="tfdebias-worker-ckpt-"))
            write_dir = scratch
        write_dir.mkdir(parents=True, exist_ok=True)
        manager = tf.train.CheckpointManager(ckpt, str(write_dir), max_to_keep=2)

    best_weights = None
    start = int(state["epoch"].numpy())
    if start > 0 and valid_columns is not None and 0 < config.patience <= int(state["wait"].numpy()):
        start = config.epochs  # it had stopped early before the restart: train no further
    if start > 0 and int(state["best_epoch"].numpy()) >= 0 and checkpoint_dir is not None:
        path = checkpoint_dir / BEST_WEIGHTS
        if path.exists():
            with np.load(path) as z:
                best_weights = [z[f"arr_{i}"] for i in range(len(z.files))]
    # Host tensors once; every epoch's input pipelines slice them.
    train_tensors = {k: tf.convert_to_tensor(v) for k, v in train_columns.items()}
    history: dict[str, list[float]] = {}
    if start > 0 and checkpoint_dir is not None and (checkpoint_dir / HISTORY_JSON).exists():
        # Epochs before the checkpoint; a later epoch recorded before a kill is redone.
        for row in rd.read_json(checkpoint_dir / HISTORY_JSON)[:start]:
            for k, v in row.items():
                history.setdefault(k, []).append(v)
    if start > 0 and verbose:
        print(f"Resuming from the checkpoint of epoch {start} in {checkpoint_dir}", flush=True)

    @tf.function
    def train_steps(iterator):
        # One global batch: every replica runs the model's own train_step.
        strategy.run(model.train_step, args=(next(iterator),))

    try:
        for epoch in range(start, config.epochs):
            t0 = time.time()
            dist = strategy.distribute_datasets_from_function(
                lambda ctx, e=epoch: shard_dataset(train_tensors, schema, global_batch_size=gbs,
                                                   epoch=e, seed=config.seed, input_context=ctx,
                                                   weight=config.weight))
            model.reset_metrics()
            it = iter(dist)
            for _ in range(steps):
                train_steps(it)
            logs = {k: float(v) for k, v in model.get_metrics_result().items()}
            if valid_columns is not None:
                logs.update(validation_logs(model, valid_columns, schema))
            stop = False
            if valid_columns is not None and config.patience > 0 and monitor in logs:
                current, best = logs[monitor], float(state["best"].numpy())
                if _better(mode, current, best):
                    state["best"].assign(current)
                    state["best_epoch"].assign(epoch)
                    state["wait"].assign(0)
                    best_weights = [np.array(w) for w in model.get_weights()]
                    if is_chief and checkpoint_dir is not None:
                        save_npz(checkpoint_dir / BEST_WEIGHTS, {f"arr_{i}": w for i, w in enumerate(best_weights)})
                else:
                    state["wait"].assign_add(1)
                    stop = int(state["wait"].numpy()) >= config.patience
            state["epoch"].assign(epoch + 1)
            for k, v in logs.items():
                history.setdefault(k, []).append(v)
            if is_chief and checkpoint_dir is not None:
                rows = [{k: history[k][i] for k in history if i < len(history[k])}
                        for i in range(epoch + 1)]
                write_json(checkpoint_dir / HISTORY_JSON, rows)
            if manager is not None:
                manager.save(checkpoint_number=epoch + 1)
            if verbose:
                shown = " - ".join(f"{k}: {v:.4f}" for k, v in logs.items())
                print(f"Epoch {epoch + 1}/{config.epochs} - {time.time() - t0:.1f}s - {shown}",
                      flush=True)
            if on_epoch_end is not None:
                on_epoch_end(epoch, logs)
            if stop:
                if verbose:
                    print(f"Epoch {epoch + 1}: early stopping", flush=True)
                break
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
    if best_weights is not None:
        model.set_weights(best_weights)
    return history


# -- the whole run --------------------------------------------------------------------


def train_multi_worker(config, out=None, *, data_dir: str | None = None,
                       manual_dir: str | None = None, overwrite: bool = False,
                       strategy=None, verbose: int = 1, on_epoch_end=None):
    """``tfdebias train ... --strategy multi-worker``: run on every worker of ``TF_CONFIG``.

    Every worker loads the data (one at a time per data directory), builds the model
    under ``MultiWorkerMirroredStrategy`` and runs :func:`fit_distributed`. The chief
    writes the run directory (``<out>.partial`` while training, with the checkpoints;
    renamed to ``<out>`` when done) exactly as :func:`tfdebias.training.train` does:
    ``config.json``, ``history.csv``, ``model.weights.h5`` and ``metrics.json`` from the
    evaluation protocol. ``strategy`` overrides the strategy (tests pass a
    ``MirroredStrategy`` for the single-process reference).

    Returns a :class:`tfdebias.training.TrainResult`; on a non-chief worker its
    ``metrics`` are empty and ``run_dir`` is where the chief writes.
    """
    import keras
    import tensorflow as tf

    from tfdebias import data as tdata
    from tfdebias.evaluation import protocols
    from tfdebias.optimizers import make_optimizer
    from tfdebias.training.engine import (TrainResult, build_model, check_trainable,
                                          compile_model, prepare_splits)
    from tfdebias.training.strategy import get_strategy

    if strategy is None:
        strategy = get_strategy("multi-worker")
    task_type, task_id, is_chief = worker_info(strategy)
    protocol = protocols.get(config.protocol)
    # before seeding: it imports every model module, and importing keras_rs draws from
    # Python's RNG (as in tfdebias.training.train)
    check_trainable(config.model, config.precision)
    keras.utils.set_random_seed(config.seed)
    lock_dir = Path(data_dir or tdata.default_data_dir())
    with file_lock(lock_dir / ".tfdebias-prepare.lock"):
        splits, schema = tdata.load(config.data, data_dir=data_dir, manual_dir=manual_dir)
    for s in (config.train_split, config.valid_split):
        if s not in splits:
            raise UsageError(f"data set {config.data!r} has no split {s!r}; it has {sorted(splits)}")
    splits = prepare_splits(config, splits, schema)
    out = Path(out) if out is not None else Path("runs") / (
        f"{config.data.replace('/', '_')}-{config.model}-s{config.seed}")
    run, resumed = None, False
    if is_chief:
        run, resumed = rd.RunDir.start(out, config.to_dict(), overwrite=overwrite)
    # Nobody reads the chief's checkpoints before it has decided to resume or start afresh.
    barrier(strategy)
    ckpt_dir = rd.RunDir(out).work / CHECKPOINTS
    sample = {k: v[:4] for k, v in splits[config.valid_split].items() if k != schema.label.name}
    with strategy.scope():
        model = build_model(config.model, schema, config.model_args, sample, config.precision)
        compile_model(model, make_optimizer(config.optimizer, config.learning_rate), jit_compile=False)
    if verbose:
        print(f"[{task_type} {task_id}{' (chief)' if is_chief else ''}] "
              f"{strategy.num_replicas_in_sync} replicas, global batch {config.batch_size}",
              flush=True)
    t0 = time.time()
    history = fit_distributed(model, strategy, splits[config.train_split], schema, config,
                              valid_columns=splits[config.valid_split], checkpoint_dir=ckpt_dir,
                              is_chief=is_chief, verbose=verbose, on_epoch_end=on_epoch_end)
    train_seconds = time.time() - t0
    barrier(strategy)
    if not is_chief:
        return TrainResult(out.absolute(), {}, model, history, resumed)

    # The chief scores a plain (undistributed) copy with the engine's protocol.
    weights = model.get_weights()
    with tf.distribute.get_strategy().scope():
        plain = build_model(config.model, schema, config.model_args, sample, config.precision)
        plain.set_weights(weights)
    plain.save_weights(str(run.path(rd.WEIGHTS)))
    _write_history(run.path(rd.HISTORY), history)
    metrics = protocol(plain, splits, schema, config)
    metrics["train_seconds"] = round(train_seconds, 3)
    metrics["epochs_trained"] = _count_rows(run.path(rd.HISTORY))
    metrics["num_replicas"] = strategy.num_replicas_in_sync
    write_json(run.path(rd.METRICS), metrics)
    shutil.rmtree(run.path(CHECKPOINTS), ignore_errors=True)
    final = run.finish()
    return TrainResult(final, metrics, plain, history, resumed)


def _write_history(path: Path, history: dict) -> None:
    """``history.csv`` with one row per epoch (the engine's CSVLogger layout)."""
    keys = sorted(history)
    n = len(next(iter(history.values()))) if history else 0
    with open(path, "w") as f:
        f.write(",".join(["epoch"] + keys) + "\n")
        for i in range(n):
            f.write(",".join([str(i)] + [repr(history[k][i]) for k in keys]) + "\n")


def _count_rows(path: Path) -> int:
    if not path.exists():
        return 0
    with open(path) as f:
        return max(0, sum(1 for _ in f) - 1)
