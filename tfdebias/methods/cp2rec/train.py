"""Training one row of ``tfdebias reproduce cp2rec`` with the engine's pieces: a fixed
budget or early stopping on the self-normalised IPS log loss of the biased valid split."""

from __future__ import annotations

import time

import keras
import numpy as np

from tfdebias.layers.feature_embedding import as_schema
from tfdebias.methods.cp2rec.data import PROPENSITY_CLIP, PROPENSITY_HAT
from tfdebias.models import predict

#: rows per model call when a split is scored with :func:`tfdebias.models.predict`
PREDICT_BATCH = 16384


class SnipsStopping(keras.callbacks.Callback):
    """Early stopping on :func:`tfdebias.evaluation.evidence.snips_logloss` of a
    validation split: the log loss reweighted by 1/propensity and self-normalised, so
    rows the logging policy rarely shows count more. Restores the best epoch's weights."""

    def __init__(self, columns: dict, propensity, schema, patience: int, batch_size: int = PREDICT_BATCH):
        super().__init__()
        self.schema = as_schema(schema)
        self.columns, self.label, self.patience, self.batch_size = (
            columns, self.schema.label.name, int(patience), batch_size)
        self.propensity = np.clip(np.asarray(propensity, np.float64), PROPENSITY_CLIP, 1.0)
        self.history: list[float] = []
        self.best, self.best_epoch, self.best_weights, self._wait = np.inf, 0, None, 0

    def on_epoch_end(self, epoch, logs=None):
        from tfdebias.evaluation.evidence import snips_logloss

        loss = snips_logloss(self.columns[self.label],
                             predict(self.model, self.columns, inputs=[f.name for f in self.schema.inputs],
                                     batch_size=self.batch_size),
                             self.propensity)
        self.history.append(loss)
        if loss < self.best:
            self.best, self.best_epoch, self._wait = loss, epoch + 1, 0
            self.best_weights = self.model.get_weights()
        else:
            self._wait += 1
            if self._wait >= self.patience:
                self.model.stop_training = True

    def on_train_end(self, logs=None):
        if self.best_weights is not None:
            self.model.set_weights(self.best_weights)


def train_row(model_name: str, model_args: dict, train_cols: dict, schema, *, seed: int, epochs: int,
              batch_size: int, learning_rate: float, valid_cols: dict | None = None,
              stopping: str = "fixed", patience: int = 1, data: str = ""):
    """Train one row with the engine's pieces; returns ``(model, info)``.

    ``stopping="fixed"``: exactly ``epochs`` passes over ``train_cols``, i.e.
    ``epochs * ceil(rows / batch_size)`` optimizer steps, no validation. ``"snips"``:
    at most that, stopped by :class:`SnipsStopping` on ``valid_cols`` (its
    ``propensity_hat`` column) and rolled back to the best epoch. ``info`` holds
    ``steps`` (optimizer steps of the kept weights), ``epochs_trained`` (kept),
    ``epochs_run``, ``train_seconds`` and with snips ``valid/snips_best``.
    """
    from tfdebias import data as tdata
    from tfdebias.optimizers import make_optimizer
    from tfdebias.training.engine import TrainConfig, build_model, compile_model, fit

    keras.utils.set_random_seed(seed)
    cfg = TrainConfig(data=data or "data", model=model_name, model_args=model_args, epochs=epochs,
                      batch_size=batch_size, learning_rate=learning_rate, optimizer="adam",
                      patience=0, seed=seed)
    train_ds = tdata.make_dataset(train_cols, schema, batch_size=batch_size, shuffle=True, seed=seed)
    sample = {k: v[:2] for k, v in train_cols.items() if k != schema.label.name}
    model = build_model(model_name, schema, model_args, sample)
    compile_model(model, make_optimizer("adam", learning_rate), jit_compile=False,
                  steps_per_execution=cfg.steps_per_execution)
    callbacks = []
    if stopping == "snips":
        callbacks.append(SnipsStopping(valid_cols, valid_cols[PROPENSITY_HAT], schema, patience))
    t0 = time.time()
    hist = fit(model, train_ds, None, cfg, verbose=0, callbacks=callbacks)
    per_epoch = -(-len(train_cols[schema.label.name]) // batch_size)
    ran = len(hist.history.get("loss", []))
    kept = callbacks[0].best_epoch if callbacks else ran
    info = {"steps": kept * per_epoch, "epochs_trained": kept, "epochs_run": ran,
            "train_seconds": round(time.time() - t0, 2)}
    if callbacks:
        info["valid/snips_best"] = float(callbacks[0].best)
    return model, info
