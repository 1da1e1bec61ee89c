"""``tfdebias tune``: a keras-tuner search over a registered space, resumable, ending in
a normal run directory.

* :class:`SpaceHyperModel` turns a space (:mod:`tfdebias.tuning.spaces`) into a
  ``keras_tuner.HyperModel``: ``build(hp)`` builds and compiles the registered model
  exactly as the engine does, ``fit(hp, model, ...)`` builds the data pipeline with the
  trial's batch size (why ``fit`` is overridden) and trains with the engine's
  :func:`~tfdebias.training.engine.fit` (early stopping with ``config.patience``,
  default 5, on ``config.monitor``, default ``val_auc``, which is also the objective).
* Tuners: ``bayesian`` (Gaussian-process Bayesian optimisation; the closest keras-tuner
  has to the Optuna TPE searches the papers ran), ``random``, ``grid`` and ``hyperband``.
* Resumable: the tuner state lives in ``DIR/search`` (keras-tuner, ``overwrite=False``);
  rerunning the same command reloads it, keeps the finished trials, reruns a trial that
  was cut short and runs only what is missing up to ``--max-trials``. Its JSON files
  are written atomically here (keras-tuner writes them in place). ``DIR/tune.json``
  records what was searched; a rerun with another method, data set, tuner or space is
  refused unless ``--overwrite``.
* The best trial becomes ``DIR/best`` (or ``--out``): ``config.json`` (a
  :class:`~tfdebias.training.TrainConfig` with the best values), ``model.weights.h5``
  (the best epoch of the best trial), ``history.csv``, ``metrics.json`` from the
  evaluation protocol, and ``tuning.json``; ``tfdebias evaluate`` and ``tfdebias
  export`` take it like any run.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import shutil
from pathlib import Path

from tfdebias.errors import UsageError
from tfdebias.atomic import jsonable, write_json, write_text
from tfdebias.training import run_dir as rd
from tfdebias.tuning import spaces as sp

TUNERS = ("bayesian", "random", "grid", "hyperband")
SEARCH = "search"
TUNE_JSON = "tune.json"
BEST = "best"
TRIAL_HISTORY = "history.json"


def _kt():
    try:
        import keras_tuner
    except ImportError:
        raise UsageError("tfdebias tune needs keras-tuner: pip install 'tfdebias[tune]'") from None
    return keras_tuner


def trial_config(base, values: dict):
    """The :class:`TrainConfig` of one trial: ``base`` with the trial's values."""
    cfg_over, model_args = sp.split_values(values)
    return dataclasses.replace(base, **cfg_over, model_args={**base.model_args, **model_args})


def sample_features(schema, n: int = 4) -> dict:
    """A batch of zeros (id 0 = padding) with every non-label column of ``schema``, to
    build a model's variables without reading data."""
    import numpy as np

    return {f.name: np.zeros((n, *f.shape), f.dtype) for f in schema if f.name != schema.label.name}


def make_hypermodel(space: dict, base, splits: dict, schema, *, verbose=0):
    """A ``keras_tuner.HyperModel`` for ``space`` on the loaded data (see the module docstring)."""
    kt = _kt()

    class SpaceHyperModel(kt.HyperModel):
        """``build`` declares the space and builds the model; ``fit`` makes the pipeline
        with the trial's batch size and trains with the engine."""

        def __init__(self):
            super().__init__(name=base.model)
            self.space, self.base, self.splits, self.schema = space, base, splits, schema

        def config(self, hp):
            return trial_config(self.base, sp.declare(hp, self.space))

        def build(self, hp):
            import keras

            from tfdebias.optimizers import make_optimizer
            from tfdebias.training.engine import build_model, compile_model

            cfg = self.config(hp)
            keras.utils.set_random_seed(cfg.seed)
            model = build_model(cfg.model, self.schema, cfg.model_args, sample_features(self.schema))
            compile_model(model, make_optimizer(cfg.optimizer, cfg.learning_rate))
            return model

        def fit(self, hp, model, *args, callbacks=None, epochs=None, initial_epoch=0, **kwargs):
            from tfdebias import data as tdata
            from tfdebias.training.engine import fit

            cfg = self.config(hp)
            if epochs is not None:  # hyperband's budget for this round
                cfg = dataclasses.replace(cfg, epochs=int(epochs))
            train_ds = tdata.make_dataset(self.splits[cfg.train_split], self.schema,
                                          batch_size=cfg.batch_size, shuffle=True, seed=cfg.seed,
                                          weight=cfg.weight)
            valid_ds = tdata.make_dataset(self.splits[cfg.valid_split], self.schema, batch_size=8192)
            callbacks = list(callbacks or [])
            history = fit(model, train_ds, valid_ds, cfg, None, verbose=verbose,
                          callbacks=callbacks, initial_epoch=int(initial_epoch or 0))
            # keras-tuner keeps only the best epoch's metrics; keep every epoch's for the
            # best run's history.csv.
            tcb = next((cb for cb in callbacks if hasattr(cb, "trial") and hasattr(cb, "tuner")), None)
            if tcb is not None:
                trial_dir = Path(tcb.tuner.get_trial_dir(tcb.trial.trial_id))
                write_json(trial_dir / TRIAL_HISTORY,
                              {k: [float(x) for x in v] for k, v in history.history.items()})
            return history

    return SpaceHyperModel()


@contextlib.contextmanager
def atomic_tuner_writes():
    """Make keras-tuner's JSON writes (oracle.json, trial.json) atomic while searching,
    so a kill never leaves a half-written state file behind."""
    from keras_tuner.src import utils as kt_utils

    original = kt_utils.save_json

    def save_json(path, obj):
        text = json.dumps(obj)
        path = str(path)
        if "://" in path:  # remote file systems: keras-tuner's own writer
            return original(path, obj)
        write_text(path, text)
        return text

    kt_utils.save_json = save_json
    try:
        yield
    finally:
        kt_utils.save_json = original


def make_tuner(kind: str, hypermodel, base, directory, *, max_trials: int, space: dict):
    kt = _kt()
    from tfdebias.training.engine import _monitor_mode

    if kind not in TUNERS:
        raise UsageError(f"unknown tuner {kind!r}; expected one of {TUNERS}")
    objective = kt.Objective(base.monitor, direction=_monitor_mode(base.monitor))
    common = dict(hypermodel=hypermodel, objective=objective, directory=str(directory),
                  project_name=SEARCH, overwrite=False, seed=base.seed)
    if kind == "hyperband":
        tuner = kt.Hyperband(max_epochs=base.epochs, factor=3, **common)
        tuner.oracle.max_trials = max_trials  # the base oracle stops creating trials here
        return tuner
    if kind == "grid":
        sp.check_grid(space)
        return kt.GridSearch(max_trials=max_trials, **common)
    if kind == "random":
        return kt.RandomSearch(max_trials=max_trials, **common)
    return kt.BayesianOptimization(max_trials=max_trials, **common)


def _search_record(method, base, kind, space) -> dict:
    cfg = base.to_dict()
    return {"method": method, "tuner": kind, "space": space, "config": cfg}


@dataclasses.dataclass
class TuneResult:
    run_dir: Path                 # the best trial as a run directory
    metrics: dict
    best_values: dict
    best_score: float
    trials_completed: int
    trials_run_now: int


def tune(method: str, base, directory, *, tuner: str = "bayesian", max_trials: int = 10,
         out=None, data_dir: str | None = None, manual_dir: str | None = None,
         overwrite: bool = False, verbose=0, space: dict | None = None) -> TuneResult:
    """Search ``method``'s registered space on ``base.data``; write the best run.

    Args:
      base: a :class:`TrainConfig` for everything not searched (data, epochs, patience,
        monitor, seed, protocol); its ``model`` is ``method``.
      directory: the search folder (``DIR/search`` keras-tuner state, ``DIR/tune.json``).
      out: where the best run directory goes (default ``DIR/best``).
      overwrite: discard an existing search in ``directory`` and start afresh.
      space: search this space instead of the one registered for ``method``.
    """
    from tfdebias import data as tdata
    from tfdebias import plugins
    from tfdebias.evaluation import protocols
    from tfdebias.training.engine import check_trainable, prepare_splits

    plugins.load()  # imports draw from Python's RNG: before seeding

    check_trainable(method)  # a model the engine cannot fit is refused before any work
    space = sp.get_space(method) if space is None else sp._validate(method, dict(space))
    if base.model != method:
        base = dataclasses.replace(base, model=method)
    protocol = protocols.get(base.protocol)
    directory = Path(directory).absolute()
    out = Path(out).absolute() if out is not None else directory / BEST
    record = _search_record(method, base, tuner, space)
    record_path = directory / TUNE_JSON
    if record_path.exists() and not overwrite:
        old = rd.read_json(record_path)
        if old != json.loads(json.dumps(record, default=jsonable)):
            diff = sorted(k for k in set(old) | set(record) if old.get(k) != json.loads(
                json.dumps(record.get(k), default=jsonable)))
            raise UsageError(f"{directory} holds a search with other settings ({', '.join(diff)}); "
                             "use another --dir, or --overwrite to start afresh")
    if overwrite and (directory / SEARCH).exists():
        shutil.rmtree(directory / SEARCH)
    directory.mkdir(parents=True, exist_ok=True)
    write_json(record_path, record)

    splits, schema = tdata.load(base.data, data_dir=data_dir, manual_dir=manual_dir)

    for s in (base.train_split, base.valid_split):
        if s not in splits:
            raise UsageError(f"data set {base.data!r} has no split {s!r}; it has {sorted(splits)}")
    splits = prepare_splits(base, splits, schema)  # model-derived columns (CP2Rec's propensities)
    hypermodel = make_hypermodel(space, base, splits, schema, verbose=verbose)
    with atomic_tuner_writes():
        kt_tuner = make_tuner(tuner, hypermodel, base, directory, max_trials=max_trials, space=space)
        before = _completed(kt_tuner)
        report_trials(kt_tuner, max_trials, len(before), base.monitor)
        kt_tuner.search(verbose=1 if verbose else 0)
        after = _completed(kt_tuner)
    best = kt_tuner.oracle.get_best_trials(1)
    if not best:
        raise UsageError(f"no trial of the search in {directory} finished; see the log above")
    best = best[0]
    done = out / "tuning.json"
    if not (after - before) and done.exists() and (out / rd.METRICS).exists() \
            and rd.read_json(done).get("best_trial") == best.trial_id:
        # Nothing new since the best run was written: keep it.
        metrics = rd.read_json(out / rd.METRICS)
        values = rd.read_json(done)["best_values"]
        return TuneResult(out, metrics, values, float(best.score), len(after), 0)
    result = write_best_run(kt_tuner, best, base, splits, schema, protocol, out, record)
    return TuneResult(result[0], result[1], result[2], float(best.score), len(after), len(after - before))


def report_trials(kt_tuner, max_trials: int, done: int, objective: str, stream=None) -> None:
    """Print ``[trial/total] trial ID: OBJECTIVE 0.7123 (best 0.7210)  elapsed, about ... left``
    on standard error as each trial ends (trials finished before a resume count as done)."""
    import sys

    from tfdebias.progress import Progress

    progress = Progress(max_trials, stream=stream or sys.stderr, done=done)
    on_trial_end = kt_tuner.on_trial_end

    def report(trial):
        on_trial_end(trial)
        best = kt_tuner.oracle.get_best_trials(1)
        score = "failed" if trial.score is None else f"{objective} {trial.score:.4f}"
        best_txt = f" (best {best[0].score:.4f})" if best and best[0].score is not None else ""
        progress.step(f"trial {trial.trial_id}: {score}{best_txt}")

    kt_tuner.on_trial_end = report


def _completed(kt_tuner) -> set:
    from keras_tuner.src.engine import trial as trial_module

    return {t.trial_id for t in kt_tuner.oracle.trials.values()
            if t.status == trial_module.TrialStatus.COMPLETED}


def write_best_run(kt_tuner, best, base, splits, schema, protocol, out: Path, record: dict):
    """Turn the best trial into a run directory (atomically, via ``<out>.partial``)."""
    import keras

    from tfdebias.training.engine import build_model

    values = {k: sp.decode(v) for k, v in best.hyperparameters.values.items()
              if not k.startswith("tuner/")}
    cfg = trial_config(base, values)
    run, _ = rd.RunDir.start(out, cfg.to_dict(), overwrite=True)
    keras.utils.set_random_seed(cfg.seed)
    model = build_model(cfg.model, schema, cfg.model_args, sample_features(schema))
    ckpt = kt_tuner._get_checkpoint_fname(best.trial_id)
    model.load_weights(ckpt)
    model.save_weights(str(run.path(rd.WEIGHTS)))
    hist_path = Path(kt_tuner.get_trial_dir(best.trial_id)) / TRIAL_HISTORY
    history = rd.read_json(hist_path) if hist_path.exists() else {}
    names = sorted(k for k, v in history.items() if v)
    n = max((len(history[k]) for k in names), default=0)
    lines = [",".join(["epoch"] + names)]
    for i in range(n):
        lines.append(",".join([str(i)] + [repr(history[k][i]) if i < len(history[k]) else "" for k in names]))
    run.path(rd.HISTORY).write_text("\n".join(lines) + "\n")
    metrics = protocol(model, splits, schema, cfg)
    metrics["epochs_trained"] = n
    write_json(run.path(rd.METRICS), metrics)
    trials = [{"trial_id": t.trial_id, "status": t.status, "score": t.score,
               "values": {k: sp.decode(v) for k, v in t.hyperparameters.values.items()}}
              for t in kt_tuner.oracle.trials.values()]
    write_json(run.path("tuning.json"), {
        **record, "best_trial": best.trial_id, "best_score": best.score, "best_values": values,
        "objective": base.monitor, "trials": trials})
    final = run.finish()
    return final, metrics, values
