"""Fitting AMID, its variants and the plain backbones (Algorithm 1: ``L_c`` then ``L_r``
per pass) and the step budget every row of an evidence table shares."""

from __future__ import annotations

import math
import time

import keras
import numpy as np

from tfdebias.errors import UsageError
from tfdebias.methods.amid.data import make_dr_dataset
from tfdebias.methods.amid.model import AMID, build_amid


def fit_amid(model, train_columns, schema, *, unobserved_columns=None, epochs: int = 10,
             batch_size: int = 256, learning_rate: float = 1e-3, dr_lr_ratio: float = 0.1,
             seed: int = 0, pools=None, verbose=0, callbacks=(), steps: int | None = None,
             reuse_optimizer: bool = False):
    """Train a sequential backbone, AMID or one of its variants (Algorithm 1).

    Per epoch: one pass of ``L_c`` (Eq. 13; the plain BCE for a backbone) over the
    observed rows; then, for ``estimator in ("dr", "ips")``, one pass of ``L_r``
    (Eq. 15) over ``D`` = observed + unobserved rows with a second optimizer at
    ``learning_rate * dr_lr_ratio``. Negatives are redrawn every epoch.

    ``steps``: a fixed budget of optimizer steps instead of ``epochs``, counting the
    ``L_c`` and the ``L_r`` steps alike: the passes above repeat until exactly ``steps``
    updates were applied (the last pass cut short). So a backbone and an ``L_r`` row can
    be given the same number of updates (``tfdebias reproduce amid`` does).
    ``reuse_optimizer``: on a model an earlier ``fit_amid`` call compiled, keep its
    optimizer(s), and so its traced train steps, with their state reset to a fresh
    optimizer's (:func:`reset_optimizer`); the caller resets the weights. A reproduce
    run traces each row once instead of once per data seed.
    Returns a dict of per-pass histories, the wall time and ``steps`` (the updates
    applied, both optimizers), ``steps_c`` and ``steps_r`` (per phase).
    """
    from tfdebias import data as tdata
    from tfdebias.data import samplers

    bb = model.backbone if isinstance(model, AMID) else model
    if pools is None:
        splits = {"train": train_columns}
        if unobserved_columns is not None:
            splits["unobserved"] = unobserved_columns
        pools = samplers.domain_item_pools(splits, bb.histories)
    sampler = samplers.NegativeSampler(pools)
    train_ds = tdata.make_dataset(train_columns, schema, batch_size=batch_size, shuffle=True, seed=seed)
    train_ds = samplers.add_negatives(train_ds, sampler, seed=seed)
    dr = isinstance(model, AMID) and model.estimator in ("dr", "ips") and unobserved_columns is not None
    if dr:
        dr_ds = make_dr_dataset(train_columns, unobserved_columns, schema, sampler,
                                batch_size=batch_size, seed=seed + 1)
        dr_epoch = dr_ds.epoch
    reuse = reuse_optimizer and getattr(model, "optimizer", None) is not None and (
        not dr or getattr(model, "dr_optimizer", None) is not None)
    if not reuse:
        build_amid(model, next(iter(train_ds))[0])
    if isinstance(model, AMID):
        model.set_user_bank(train_columns, seed=seed)
    if reuse:  # the compiled steps stay (traced once); the optimizers start afresh
        for opt, lr in ((model.optimizer, learning_rate), (model.dr_optimizer if dr else None,
                                                           learning_rate * dr_lr_ratio)):
            if opt is not None:
                reset_optimizer(opt, lr)
    else:
        model.compile(optimizer=keras.optimizers.Adam(learning_rate))
        model.optimizer.build(model.trainable_variables)
        if dr:
            model.dr_optimizer = keras.optimizers.Adam(learning_rate * dr_lr_ratio)
            model.dr_optimizer.build(model.trainable_variables)
    n_c = math.ceil(len(train_columns[bb.item_feature]) / batch_size)  # L_c steps per pass
    n_r = math.ceil((len(train_columns[bb.item_feature]) + len(unobserved_columns[bb.item_feature]))
                    / batch_size) if dr else 0  # L_r steps per pass
    if steps is None:
        steps = epochs * (n_c + n_r)
    if steps < 1:
        raise UsageError(f"fit_amid: steps must be >= 1, got {steps}")
    history: dict[str, list] = {}
    done = {"c": 0, "r": 0}
    t0 = time.time()
    epoch = 0
    while done["c"] + done["r"] < steps:
        if isinstance(model, AMID):
            model.set_phase(1)
        train_ds.epoch.assign(epoch)
        n = min(n_c, steps - done["c"] - done["r"])
        h = model.fit(train_ds, epochs=epoch + 1, initial_epoch=epoch, verbose=verbose,
                      steps_per_epoch=n, callbacks=list(callbacks))
        done["c"] += n
        for k, v in h.history.items():
            history.setdefault(f"c/{k}", []).extend(v)
        n = min(n_r, steps - done["c"] - done["r"])
        if dr and n > 0:
            model.set_phase(2)
            dr_epoch.assign(epoch)
            h = model.fit(dr_ds, epochs=epoch + 1, initial_epoch=epoch, verbose=verbose,
                          steps_per_epoch=n)
            done["r"] += n
            for k, v in h.history.items():
                history.setdefault(f"r/{k}", []).extend(v)
        epoch += 1
    if isinstance(model, AMID):
        model.set_phase(1)
    applied = int(model.optimizer.iterations.numpy())
    if dr:
        applied += int(model.dr_optimizer.iterations.numpy())
    return {"history": history, "train_seconds": time.time() - t0, "steps": applied,
            "steps_c": done["c"], "steps_r": done["r"], "passes": epoch}


def reset_optimizer(optimizer, learning_rate: float) -> None:
    """A built Keras optimizer back to its state before the first step: ``iterations``
    and every slot (Adam's moments) zero, the learning rate ``learning_rate``."""
    lr = optimizer._learning_rate
    for v in optimizer.variables:
        if v is lr:
            v.assign(learning_rate)
        else:
            v.assign(np.zeros(v.shape, v.dtype))


def step_budget(splits, epochs: int, batch_size: int) -> int:
    """Optimizer steps every row of a table gets: ``epochs`` passes of Algorithm 1, i.e.
    per pass ``ceil(|train| / bs)`` ``L_c`` steps plus ``ceil(|train + unobserved| / bs)``
    ``L_r`` steps (what an IPS/DR row takes in ``epochs`` epochs). The backbone-only
    rows take the same number of ``L_c`` steps (about 3 passes over `train` per epoch at
    K_u 25%)."""
    n = len(splits["train"]["item_id"])
    n_d = n + len(splits["unobserved"]["item_id"]) if "unobserved" in splits else n
    return epochs * (math.ceil(n / batch_size) + math.ceil(n_d / batch_size))
