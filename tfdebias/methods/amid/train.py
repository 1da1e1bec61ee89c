"""Fitting AMID, its variants and the plain backbones (Algorithm 1: ``L_c`` then ``L_r``
per pass) and the step budget every row of an evidence table shares."""

from __future__ import annotations

import math
import time

import keras
import numpy as np

from tfdebias.errors import UsageError
from tfdebias.methods.amid.data import exclude_own_items, make_dr_dataset
from tfdebias.methods.amid.model import AMID, build_amid


#: what ``fit_amid(steps=...)`` counts: every update of both optimizers, or the ``L_c``
#: updates only (``tfdebias reproduce amid --budget``)
BUDGET_COUNTS = ("all", "lc")


def fit_amid(model, train_columns, schema, *, unobserved_columns=None, epochs: int = 10,
             batch_size: int = 256, learning_rate: float = 1e-3, dr_lr_ratio: float = 0.1,
             seed: int = 0, pools=None, verbose=0, callbacks=(), steps: int | None = None,
             reuse_optimizer: bool = False, valid=None, n_checks: int = 10, count: str = "all"):
    """Train a sequential backbone, AMID or one of its variants (Algorithm 1).

    Per epoch: one pass of ``L_c`` (Eq. 13; the plain BCE for a backbone) over the
    observed rows; then, for ``estimator in ("dr", "ips")``, one pass of ``L_r``
    (Eq. 15) over ``D`` = observed + unobserved rows with a second optimizer at
    ``learning_rate * dr_lr_ratio``. Negatives are redrawn every epoch.

    ``steps``: a fixed budget of optimizer steps instead of ``epochs``, counting the
    ``L_c`` and the ``L_r`` steps alike: the passes above repeat until exactly ``steps``
    updates were applied (the last pass cut short). So a backbone and an ``L_r`` row can
    be given the same number of updates (``tfdebias reproduce amid`` does).
    ``count="lc"``: ``steps`` counts the ``L_c`` updates only and every pass keeps its
    whole ``L_r`` pass on top (the last ``L_c`` pass cut short): an ``L_r`` row then gets
    as many ``L_c`` updates as a backbone given the same ``steps``, and more updates in
    all (``tfdebias reproduce amid --budget lc``, a diagnostic of the budget's share).
    ``reuse_optimizer``: on a model an earlier ``fit_amid`` call compiled, keep its
    optimizer(s), and so its traced train steps, with their state reset to a fresh
    optimizer's (:func:`reset_optimizer`); the caller resets the weights. A reproduce
    run traces each row once instead of once per data seed.
    ``valid``: ``(columns, candidates)`` of validation rows (their positive at column 0 of
    ``candidates``): about ``n_checks`` times during training (at the end of a pass) their
    NDCG@10 is measured and the weights of the best check are kept and restored at the
    end (early stopping on validation, as a choice of checkpoint: every row still takes
    all ``steps``, so every row of a table takes the same number of updates).
    Returns a dict of per-pass histories, the wall time and ``steps`` (the updates
    applied, both optimizers), ``steps_c`` and ``steps_r`` (per phase), and with
    ``valid`` the checks (``valid_ndcg``, ``valid_steps``) and ``best_step``.
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
    truth = [f for f in getattr(model, "interest_features", []) if f in train_columns]
    train_ds = tdata.make_dataset(train_columns, schema, batch_size=batch_size, shuffle=True,
                                  seed=seed, repeat=True, truth=truth)
    train_ds = samplers.add_negatives(train_ds, sampler, seed=seed)
    if isinstance(model, AMID) and model.position_loss and not model.position_negatives:
        # one negative per position (the BCE next-item loss)
        train_ds = samplers.add_negatives(train_ds, sampler, seed=seed + 13, name="neg_positions",
                                          count=bb.max_len)
    if isinstance(model, AMID) and model.position_negatives:  # the sampled softmax's K
        train_ds = samplers.add_negatives(train_ds, sampler, seed=seed + 17, name="neg_softmax",
                                          count=model.position_negatives, one_draw=True)
    # never an item of the row's own sequence (the authors' ``item_pool - set(seq)``)
    train_ds = exclude_own_items(train_ds, sampler, seed=seed,
                                 names=("neg_item_id", "neg_positions", "neg_softmax"),
                                 histories=bb.histories, item=bb.item_feature,
                                 domain=bb.domain_feature or "domain")
    dr = isinstance(model, AMID) and model.estimator in ("dr", "ips") and unobserved_columns is not None
    if dr:
        dr_ds = make_dr_dataset(train_columns, unobserved_columns, schema, sampler,
                                batch_size=batch_size, seed=seed + 1, truth=truth, repeat=True,
                                histories=bb.histories)
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
        object.__setattr__(model, "_amid_steps", {})
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
    if count not in BUDGET_COUNTS:
        raise UsageError(f"fit_amid: count must be one of {BUDGET_COUNTS}, got {count!r}")
    lc_only = count == "lc"
    # the updates the run will apply in all (both optimizers)
    planned = steps + math.ceil(steps / n_c) * n_r if lc_only else steps
    history: dict[str, list] = {}
    done = {"c": 0, "r": 0}
    t0 = time.time()
    epoch = 0
    checks = {"valid_ndcg": [], "valid_steps": []}
    best = (-math.inf, None, 0)
    every = max(1, planned // max(int(n_checks), 1))
    next_check = every
    it_c = iter(train_ds)
    it_r = iter(dr_ds) if dr else None
    while done["c"] + done["r"] < planned:
        n = min(n_c, steps - done["c"] if lc_only else planned - done["c"] - done["r"])
        _run(model, "c", 1, it_c, n, history)
        done["c"] += n
        n = min(n_r, planned - done["c"] - done["r"])
        if dr and n > 0:
            _run(model, "r", 2, it_r, n, history)
            done["r"] += n
        epoch += 1
        total = done["c"] + done["r"]
        for cb in callbacks:
            cb.on_epoch_end(epoch - 1, {k: v[-1] for k, v in history.items()})
        if valid is not None and (total >= next_check or total >= planned):
            score = validation_ndcg(model, *valid)
            checks["valid_ndcg"].append(score)
            checks["valid_steps"].append(total)
            if score > best[0]:
                best = (score, model.get_weights(), total)
            next_check = (total // every + 1) * every
    if valid is not None and best[1] is not None:
        model.set_weights(best[1])
    applied = int(model.optimizer.iterations.numpy())
    if dr:
        applied += int(model.dr_optimizer.iterations.numpy())
    out = {"history": history, "train_seconds": time.time() - t0, "steps": applied,
           "steps_c": done["c"], "steps_r": done["r"], "passes": epoch}
    if valid is not None:
        out.update(checks, best_step=best[2])
    return out


def _train_step(model, phase: int):
    """The compiled update of one phase (``L_c`` = 1, ``L_r`` = 2; a plain backbone has
    phase 1 only), traced once per model and kept on it."""
    import tensorflow as tf

    steps = model.__dict__.setdefault("_amid_steps", {})
    if phase not in steps:
        amid = isinstance(model, AMID)
        variables = model.phase_variables(phase) if amid else model.trainable_variables
        opt = model.dr_optimizer if phase == 2 else model.optimizer

        @tf.function
        def step(features):
            with tf.GradientTape() as tape:
                terms = (model.loss_terms(features, phase=phase, training=True) if amid
                         else model.loss_terms(features, training=True))
            grads = tape.gradient(terms["loss"], variables)
            opt.apply_gradients([(g, v) for g, v in zip(grads, variables) if g is not None])
            return terms

        steps[phase] = step
    return steps[phase]


def _run(model, tag: str, phase: int, iterator, n: int, history: dict) -> None:
    """``n`` updates of ``phase`` from ``iterator``; the pass means of the loss terms go
    to ``history["<tag>/<term>"]``."""
    step = _train_step(model, phase)
    sums: dict = {}
    for _ in range(n):
        terms = step(next(iterator)[0])
        for k, v in terms.items():
            sums[k] = sums.get(k, 0.0) + v
    for k, v in sums.items():
        history.setdefault(f"{tag}/{k}", []).append(float(v) / n)


def validation_ndcg(model, columns, candidates, k: int = 10) -> float:
    """NDCG@k of ``columns``' rows, their positive at column 0 of ``candidates``."""
    from tfdebias.evaluation.metrics import ndcg_at_rank, sampled_rank
    from tfdebias.methods.amid.protocol import score_candidate_matrix

    return float(np.mean(ndcg_at_rank(sampled_rank(score_candidate_matrix(model, columns, candidates)), k)))


def check_group_rates(rates, where: str = "") -> None:
    """Refuse a MIM run whose interest groups collapsed: a group rate of 0 (no sampled
    user's message reaches anyone) or 1 (every user gets every message) makes MIM a
    constant; raises :class:`~tfdebias.errors.DataError` naming the rates."""
    from tfdebias.errors import DataError

    bad = [float(r) for r in rates if not 0.0 < float(r) < 1.0]
    if bad:
        raise DataError(f"{where}MIM group rate {bad[0]:g} (rates {[round(float(r), 3) for r in rates]}): "
                        "the interest groups collapsed (0: nobody in a group, 1: everybody), "
                        "MIM passes no user-specific message; change --threshold or group by "
                        "size (--group-size)")


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
