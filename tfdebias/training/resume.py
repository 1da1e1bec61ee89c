"""Exact resume after a kill: one atomic snapshot of the whole training state per epoch.

Keras' ``BackupAndRestore`` restores the weights, the optimizer and the epoch, but a
resumed run still differed from an unbroken one with the same seed:

* ``EarlyStopping(restore_best_weights=True)`` forgets its best epoch, its patience
  counter and its best weights, so a run killed after its best epoch ended with the
  weights of a worse one (and could train past the point the unbroken run stopped);
* the dropout RNG (every ``keras.random.SeedGenerator``'s state) is not in
  ``model.weights.h5``, so masks after the resume differed;
* ``history.csv`` (``CSVLogger``) and the weights were written separately, so a kill
  between them lost or duplicated an epoch's row; the weights file itself was written in
  place, so a kill during the write could leave it unreadable.

:class:`EpochBackup` replaces ``BackupAndRestore`` and ``CSVLogger``. At the end of every
epoch it writes ``backup/.epoch-K.*.tmp/`` with

* ``model.weights.h5``: weights and optimizer state (Keras ``save_weights``);
* ``rng.npz``: the state of every seed generator of the model (and Keras' global one);
* ``best.npz``: the early-stopping callback's best weights, when it has some;
* ``state.json``: the epoch count ``K``, the early-stopping state (best value, patience
  counter, best epoch, stop flag) and every epoch's logs so far,

renames it to ``backup/epoch-K`` (a directory rename is atomic) and only then deletes
older snapshots and rewrites ``history.csv`` (atomically) from the logs. On restart it
loads the newest complete snapshot and tells ``fit`` to continue with epoch ``K``. The
data pipeline's epoch-aware shuffle (the order of epoch ``e`` depends only on
``(seed, e)``) supplies the same batches, so the resumed run repeats the unbroken run's
arithmetic: a kill costs at most the epoch in progress and changes no result
(tests/test_resilience.py kills a run with ``SIGKILL`` in epoch 3 of 5).
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np

from tfdebias.atomic import jsonable, staging_dir, write_text
from tfdebias.training import run_dir as rd

_SNAP = re.compile(r"^epoch-(\d+)$")


def _seed_generators(model) -> list:
    """Every ``SeedGenerator`` the model owns, in a stable order, plus the global one."""
    from keras.src.backend.common import global_state

    out, seen = [], set()
    for layer in model._flatten_layers(include_self=True, recursive=True):
        for sg in getattr(layer, "_seed_generators", []) or []:
            if id(sg) not in seen:
                seen.add(id(sg))
                out.append(sg)
    g = global_state.get_global_attribute("global_seed_generator")
    if g is not None and id(g) not in seen:
        out.append(g)
    return out


def latest_snapshot(backup_dir) -> Path | None:
    """The newest complete ``epoch-K`` snapshot in ``backup_dir`` (or ``None``)."""
    d = Path(backup_dir)
    if not d.is_dir():
        return None
    snaps = [(int(m.group(1)), p) for p in d.iterdir()
             if (m := _SNAP.match(p.name)) and (p / "state.json").exists()]
    return max(snaps)[1] if snaps else None


def _callback_base():
    import keras

    return keras.callbacks.Callback


class EpochBackup(_callback_base()):
    """Atomic per-epoch snapshots of everything a resumed run needs (module docstring).

    Args:
      backup_dir: folder for the snapshots (``<run>.partial/backup``).
      history_path: ``history.csv``, rewritten from the snapshot after each epoch.
      early_stopping: the run's ``keras.callbacks.EarlyStopping`` (or ``None``); its
        state is saved and restored with the weights. Put this callback *after* it in
        the callback list, so the snapshot holds the epoch's early-stopping decision.
    """

    def __init__(self, backup_dir, history_path=None, early_stopping=None):
        super().__init__()
        self.backup_dir = Path(backup_dir)
        self.history_path = Path(history_path) if history_path is not None else None
        self.early_stopping = early_stopping
        self.rows: list[dict] = []
        self.resumed_from: int | None = None
        self._es_state = None

    # -- restore ----------------------------------------------------------------------
    def on_train_begin(self, logs=None):
        snap = latest_snapshot(self.backup_dir)
        self.rows = []
        if snap is None:
            return
        model = self.model
        if model.optimizer is not None and not model.optimizer.built:
            model.optimizer.build(model.trainable_variables)
        model.load_weights(str(snap / rd.WEIGHTS))
        state = rd.read_json(snap / "state.json")
        sgs = _seed_generators(model)
        with np.load(snap / "rng.npz") as z:
            if len(z.files) == len(sgs):
                for i, sg in enumerate(sgs):
                    sg.state.assign(z[f"arr_{i}"])
        self.rows = state["rows"]
        epochs = int(state["epoch"])
        es = state.get("early_stopping")
        if es is not None and self.early_stopping is not None:
            best_weights = None
            if (snap / "best.npz").exists():
                with np.load(snap / "best.npz") as z:
                    best_weights = [z[f"arr_{i}"] for i in range(len(z.files))]
            self._es_state = (es, best_weights)
            self._apply_es_state()
            total = int((self.params or {}).get("epochs") or epochs)
            if es.get("stopped"):
                epochs = max(epochs, total)  # it had stopped early: train no further
            if epochs >= total and best_weights is not None and self.early_stopping.restore_best_weights:
                # Nothing left to train: end with the best weights, as EarlyStopping would.
                model.set_weights(best_weights)
        model._initial_epoch = epochs
        self.resumed_from = epochs
        self._write_history()

    def _apply_es_state(self):
        if self._es_state is None:
            return
        es, best_weights = self._es_state
        cb = self.early_stopping
        cb.best = es["best"]
        cb.wait = int(es["wait"])
        cb.best_epoch = int(es["best_epoch"])
        cb.stopped_epoch = int(es["stopped_epoch"])
        cb.best_weights = best_weights

    def on_epoch_begin(self, epoch, logs=None):
        # EarlyStopping.on_train_begin resets its state; if it ran after ours, apply
        # the restored state again before the first resumed epoch.
        if self._es_state is not None:
            self._apply_es_state()
            self._es_state = None

    # -- save -------------------------------------------------------------------------
    def on_epoch_end(self, epoch, logs=None):
        row = {"epoch": int(epoch)}
        row.update({k: float(v) for k, v in (logs or {}).items() if np.isscalar(v) or np.ndim(v) == 0})
        self.rows = [r for r in self.rows if r["epoch"] < epoch] + [row]
        self._snapshot(epoch + 1)
        self._write_history()

    def _snapshot(self, epochs_done: int) -> None:
        model = self.model
        self.backup_dir.mkdir(parents=True, exist_ok=True)
        final = self.backup_dir / f"epoch-{epochs_done:06d}"
        with staging_dir(final) as tmp:
            model.save_weights(str(tmp / rd.WEIGHTS))
            np.savez(tmp / "rng.npz", *[np.asarray(sg.state.numpy()) for sg in _seed_generators(model)])
            es_state = None
            cb = self.early_stopping
            if cb is not None:
                best = cb.best
                es_state = {
                    "best": None if best is None else float(best),
                    "wait": int(cb.wait), "best_epoch": int(cb.best_epoch),
                    "stopped_epoch": int(cb.stopped_epoch),
                    "stopped": bool(getattr(model, "stop_training", False)),
                }
                if cb.best_weights is not None:
                    np.savez(tmp / "best.npz", *[np.asarray(w) for w in cb.best_weights])
            state = {"epoch": epochs_done, "early_stopping": es_state, "rows": self.rows}
            with open(tmp / "state.json", "w") as f:
                json.dump(state, f, default=jsonable)
        for p in self.backup_dir.iterdir():
            if p != final and (_SNAP.match(p.name) or p.name.startswith(".epoch-")):
                shutil.rmtree(p, ignore_errors=True)

    def _write_history(self) -> None:
        if self.history_path is None:
            return
        keys = sorted({k for r in self.rows for k in r if k != "epoch"})
        lines = [",".join(["epoch"] + keys)]
        for r in self.rows:
            lines.append(",".join([str(r["epoch"])] + [repr(r[k]) if k in r else "" for k in keys]))
        write_text(self.history_path, "\n".join(lines) + "\n")

    def full_history(self) -> dict[str, list[float]]:
        """Every epoch's logs, those before the resume included (``History.history`` form)."""
        keys = sorted({k for r in self.rows for k in r if k != "epoch"})
        return {k: [r.get(k, float("nan")) for r in self.rows] for k in keys}
