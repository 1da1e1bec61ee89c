"""The training engine: one function from a config to a finished run directory.

:func:`train` loads a data set through :mod:`tfdebias.data`, builds a model from the
registry by name, fits it with Keras (early stopping with best-weight restore, resume
after a kill, TensorBoard logs, progress bars), scores it with an evaluation protocol and
writes a run directory (:mod:`tfdebias.training.run_dir`).

Models whose loss is not a plain ``compile(loss=...)`` (every debiasing method) override
``compute_loss`` or ``train_step``; :func:`compile_model` compiles them without a loss.

Example:

>>> cfg = TrainConfig(data="confounded_ctr", model="deepfm", epochs=3)   # doctest: +SKIP
>>> result = train(cfg, "runs/deepfm")                                   # doctest: +SKIP
>>> result.metrics["test/auc"]                                           # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any


from tfdebias import plugins
from tfdebias.atomic import write_json
from tfdebias.errors import DataError, SchemaError, UsageError
from tfdebias.precision import check as check_precision
from tfdebias.precision import policy_scope
from tfdebias.training import run_dir as rd


@dataclasses.dataclass
class TrainConfig:
    """Everything needed to rerun a training run; saved as the run's ``config.json``."""

    data: str = "confounded_ctr"
    model: str = "deepfm"
    model_args: dict[str, Any] = dataclasses.field(default_factory=dict)
    epochs: int = 20
    batch_size: int = 1024
    learning_rate: float = 1e-3
    optimizer: str = "lazy_adam"
    patience: int = 5
    monitor: str = "val_auc"
    seed: int = 0
    strategy: str = "auto"
    protocol: str = "ctr"
    train_split: str = "train"
    valid_split: str = "valid"
    weight: str | None = None
    #: training steps per ``tf.function`` call (Keras ``steps_per_execution``): fewer
    #: Python round trips per step; callbacks and the progress bar see every 8th step
    #: (``benchmarks/ctr_throughput.py``: 1.5x the throughput of 1 on its DeepFM);
    #: 1 under a multi-replica strategy (Keras 3.15 fails there with more)
    steps_per_execution: int = 8
    #: ``"float32"`` or ``"mixed_bfloat16"`` (bfloat16 compute, float32 variables and
    #: loss; backbones only): see :mod:`tfdebias.precision`
    precision: str = "float32"

    def __post_init__(self):
        for k in ("epochs", "batch_size", "patience", "steps_per_execution"):
            v = getattr(self, k)
            if not isinstance(v, int) or v < (0 if k == "patience" else 1):
                raise UsageError(f"{k} must be a positive integer, got {v!r}")
        if not (isinstance(self.learning_rate, (int, float)) and self.learning_rate > 0):
            raise UsageError(f"learning_rate must be > 0, got {self.learning_rate!r}")
        check_precision(self.precision)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise UsageError(f"unknown config keys {unknown}; expected some of {sorted(known)}")
        return cls(**d)


@dataclasses.dataclass
class TrainResult:
    run_dir: Path
    metrics: dict[str, float]
    model: Any
    history: dict[str, list[float]]
    resumed: bool = False


# -- building blocks ----------------------------------------------------------------


def uses_custom_loss(model) -> bool:
    """True when the model (an instance or a class) computes its own loss (a method),
    not ``compile(loss=...)``."""
    import keras

    cls = model if isinstance(model, type) else type(model)
    return any(
        getattr(cls, name) is not getattr(keras.Model, name)
        for name in ("compute_loss", "train_step")
    )


def check_trainable(name: str, precision: str = "float32"):
    """The model class registered as ``name``, if this engine can train it (one split's
    batches through ``fit``) in ``precision``; :class:`UsageError` naming the
    alternative otherwise (a model with its own loss trains in float32 only)."""
    plugins.load()  # method packages register their models
    from tfdebias import models

    cls = models.get(name)
    if getattr(cls, "engine_unsupported", None):
        raise UsageError(f"model {cls.model_name!r} cannot be trained by `tfdebias train`: "
                         f"{cls.engine_unsupported}")
    _check_precision_for(cls, precision)
    return cls


def _check_precision_for(cls, precision: str):
    """:class:`UsageError` unless model class ``cls`` can be built in ``precision``
    (a model that computes its own loss takes only ``"float32"``)."""
    from tfdebias import models

    check_precision(precision)
    if precision != "float32" and uses_custom_loss(cls):
        plain = [n for n in models.available() if not uses_custom_loss(models.get(n))]
        raise UsageError(
            f"model {cls.model_name!r} computes its own loss and trains in float32 only; "
            f"precision={precision!r} is for the models trained with the engine's loss: "
            f"{', '.join(plain)}")


def compile_model(model, optimizer, *, jit_compile="auto", steps_per_execution: int = 1):
    """Compile with binary cross-entropy and AUC, or without a loss for methods.

    Under a multi-replica strategy (the one in scope) ``steps_per_execution`` is 1:
    Keras 3.15 cannot run several steps per call there (the optimizer's update inside
    the step loop fails with an unfed placeholder).
    """
    import keras
    import tensorflow as tf

    if tf.distribute.get_strategy().num_replicas_in_sync > 1:
        steps_per_execution = 1
    loss = {} if uses_custom_loss(model) else dict(
        loss=keras.losses.BinaryCrossentropy(), metrics=[keras.metrics.AUC(name="auc")])
    model.compile(optimizer=optimizer, jit_compile=jit_compile,
                  steps_per_execution=steps_per_execution, **loss)
    return model


def build_model(name: str, schema, model_args: dict, sample_features: dict,
                precision: str = "float32"):
    """Build a registered model and all its sub-layers (before the optimizer is built,
    or ``apply_gradients`` rejects variables it has not seen), under the dtype policy
    ``precision`` names (:mod:`tfdebias.precision`; a model that computes its own loss
    takes only ``"float32"``)."""
    from tfdebias import models

    _check_precision_for(models.get(name), precision)
    with policy_scope(precision):
        model = models.build(name, schema, **model_args)
        model(sample_features, training=False)
    return model


def prepare_splits(config: TrainConfig, splits: dict, schema) -> dict:
    """Let the model class derive columns from the training split before batching.

    A model class may define ``prepare_splits(splits, schema, train_split=...)`` (a
    classmethod) returning the splits with extra columns, e.g. CP2Rec's estimated
    propensities (``tfdebias.methods.cp2rec``); other models get ``splits`` unchanged.
    """
    plugins.load()  # method packages register their models
    from tfdebias import models

    hook = getattr(models.get(config.model), "prepare_splits", None)
    if hook is None:
        return splits
    return hook(splits, schema, train_split=config.train_split)


class SetEpoch:
    """Keras callback: tell epoch-aware datasets which epoch starts (for exact resume)."""

    def __new__(cls, variables):
        import keras

        class _SetEpoch(keras.callbacks.Callback):
            def __init__(self, variables):
                super().__init__()
                self.variables = [v for v in variables if v is not None]

            def on_epoch_begin(self, epoch, logs=None):
                for v in self.variables:
                    v.assign(epoch)

        return _SetEpoch(variables)


def _monitor_mode(monitor: str) -> str:
    return "max" if any(k in monitor for k in ("auc", "ndcg", "recall", "hit", "mrr")) else "min"


def fit(model, train_ds, valid_ds, config: TrainConfig, run: rd.RunDir | None = None,
        *, verbose="auto", callbacks=(), initial_epoch: int = 0):
    """``model.fit`` with the engine's callbacks; returns the Keras ``History``."""
    import keras

    from tfdebias.training.resume import EpochBackup

    cbs = [SetEpoch([getattr(train_ds, "epoch", None)]), keras.callbacks.TerminateOnNaN()]
    early = None
    if valid_ds is not None and config.patience > 0:
        early = keras.callbacks.EarlyStopping(
            monitor=config.monitor, mode=_monitor_mode(config.monitor),
            patience=config.patience, restore_best_weights=True)
        cbs.append(early)
    backup = None
    if run is not None:
        # One atomic snapshot per epoch (weights, optimizer, RNG, early-stopping state,
        # history.csv): a killed run resumes exactly (tfdebias.training.resume).
        backup = EpochBackup(run.backup_dir, run.path(rd.HISTORY), early_stopping=early)
        cbs += [
            backup,
            keras.callbacks.TensorBoard(str(run.logs_dir), write_graph=False, profile_batch=0),
        ]
    cbs += list(callbacks)
    history = model.fit(train_ds, validation_data=valid_ds, epochs=config.epochs,
                        callbacks=cbs, verbose=verbose, initial_epoch=initial_epoch,
                        shuffle=False)  # the dataset shuffles itself, epoch-aware
    if backup is not None:
        history.history = backup.full_history()  # the epochs before a resume included
    return history


# -- the whole run ------------------------------------------------------------------


def train(config: TrainConfig, out: str | Path | None = None, *, data_dir: str | None = None,
          manual_dir: str | None = None, overwrite: bool = False, verbose="auto",
          plots: bool = True) -> TrainResult:
    """Train ``config.model`` on ``config.data`` and write a run directory at ``out``.

    Sizes TensorFlow's CPU thread pools first (:mod:`tfdebias.training.threads`,
    policy ``"auto"``) unless an earlier call in the process already decided them.
    """
    from tfdebias.training.threads import configure_cpu_threads

    configure_cpu_threads("auto")
    import keras

    from tfdebias import data as tdata
    from tfdebias.evaluation import protocols
    from tfdebias.optimizers import make_optimizer
    from tfdebias.training.strategy import get_strategy

    protocol = protocols.get(config.protocol)
    # Fails before any work on a model this engine cannot train; imports every model
    # module before seeding (importing keras_rs' embedding module draws from Python's
    # RNG, which would otherwise make the initial weights depend on the import order).
    check_trainable(config.model, config.precision)
    keras.utils.set_random_seed(config.seed)
    splits, schema = tdata.load(config.data, data_dir=data_dir, manual_dir=manual_dir)
    for s in (config.train_split, config.valid_split):
        if s not in splits:
            raise UsageError(f"data set {config.data!r} has no split {s!r}; it has {sorted(splits)}")
    splits = prepare_splits(config, splits, schema)

    out = Path(out) if out is not None else Path("runs") / f"{config.data.replace('/', '_')}-{config.model}-s{config.seed}"
    rd.check_out_path(out)
    if out.exists() and not overwrite:  # fail before any work
        raise UsageError(f"run directory {out} already exists; choose another --out or pass --overwrite")
    strategy = get_strategy(config.strategy)
    train_ds = tdata.make_dataset(splits[config.train_split], schema, batch_size=config.batch_size,
                                  shuffle=True, seed=config.seed, weight=config.weight)
    valid_ds = tdata.make_dataset(splits[config.valid_split], schema, batch_size=8192)
    sample = next(iter(valid_ds))[0]
    # Everything that can fail on bad input (model name, arguments, schema) fails here,
    # before the run directory exists.
    with strategy.scope():
        model = build_model(config.model, schema, config.model_args, sample, config.precision)
        compile_model(model, make_optimizer(config.optimizer, config.learning_rate),
                      steps_per_execution=config.steps_per_execution)
    run, resumed = rd.RunDir.start(out, config.to_dict(), overwrite=overwrite)
    if resumed:
        print(f"Resuming the unfinished run in {run.work}")
    t0 = time.time()
    history = fit(model, train_ds, valid_ds, config, run, verbose=verbose)
    train_seconds = time.time() - t0
    model.save_weights(str(run.path(rd.WEIGHTS)))

    metrics = protocol(model, splits, schema, config)
    metrics["train_seconds"] = round(train_seconds, 3)
    metrics["epochs_trained"] = len(history.history.get("loss", []))
    write_json(run.path(rd.METRICS), metrics)
    if plots:
        from tfdebias.evaluation import plots as tplots

        tplots.plot_learning_curves(run.path(rd.HISTORY), run.plots_dir / "learning_curves.png")
        tplots.plot_run_calibration(model, splits, schema, run.plots_dir / "calibration.png")
    final = run.finish()
    return TrainResult(final, metrics, model, dict(history.history), resumed)


def load_run(path: str | Path, *, data_dir: str | None = None):
    """Rebuild the model of a finished run with its weights; returns (model, config, schema)."""
    from tfdebias import data as tdata

    path = rd.open_finished(path)
    raw = rd.read_json(path / rd.CONFIG)
    if not isinstance(raw, dict):
        raise DataError("holds no JSON object", path=path / rd.CONFIG, expected="a run's config")
    try:
        config = TrainConfig.from_dict(raw)
    except (TypeError, ValueError, UsageError) as e:
        raise DataError(f"is not a valid run config: {e}", path=path / rd.CONFIG) from None
    builder = tdata.prepare(config.data, data_dir=data_dir)
    schema = tdata.load_schema(builder)
    sample_cols = tdata.read_split(builder, config.valid_split)
    sample = next(iter(tdata.make_dataset(sample_cols, schema, batch_size=4)))[0]
    model = build_model(config.model, schema, config.model_args, sample, config.precision)
    try:
        model.load_weights(str(path / rd.WEIGHTS))
    except OSError:  # h5py: empty, truncated or not HDF5 at all
        raise DataError("cannot be read as Keras weights (empty, truncated or not HDF5)",
                        path=path / rd.WEIGHTS, expected="the weights file tfdebias train wrote") from None
    except ValueError as e:
        raise SchemaError(
            f"{path / rd.WEIGHTS} does not fit the model that {path / rd.CONFIG} describes "
            f"({config.model} on {config.data}): {str(e).splitlines()[0]}") from None
    return model, config, schema


def evaluate_run(path: str | Path, *, data_dir: str | None = None) -> dict[str, float]:
    """Re-score a finished run with its protocol; rewrites its ``metrics.json``."""
    from tfdebias import data as tdata
    from tfdebias.evaluation import protocols

    model, config, schema = load_run(path, data_dir=data_dir)
    splits, _ = tdata.load(config.data, data_dir=data_dir)
    metrics = protocols.get(config.protocol)(model, splits, schema, config)
    old = rd.read_json(Path(path) / rd.METRICS) if (Path(path) / rd.METRICS).exists() else {}
    for k in ("train_seconds", "epochs_trained"):
        if k in old:
            metrics[k] = old[k]
    write_json(Path(path) / rd.METRICS, metrics)
    return metrics
