"""DAMCAR's training: the step budget (:class:`Budget`), the ranker, the label generator
and the retrievers, and :func:`run_seed`, which trains and scores every row (baselines,
DAMCAR, ablations, skyline) for one seed."""

from __future__ import annotations

import dataclasses
import time
from typing import Sequence

import keras
import numpy as np
import tensorflow as tf

from tfdebias.errors import DataError, UsageError
from tfdebias.evaluation import metrics as M
from tfdebias.methods.damcar.data import CascadeData, hybrid_columns, target_domain
from tfdebias.methods.damcar.losses import TARGET, modified_pseudo_labels
from tfdebias.methods.damcar.model import HybridRetrieval, LabelGenerator
from tfdebias.methods.damcar.protocol import (EvalSet, cascade_eval, eval_set, mean_metrics,
                                              retriever_scorer)
from tfdebias.models import predict


# =============================================================================================
# Training pieces
# =============================================================================================


@dataclasses.dataclass
class Budget:
    """Optimizer work shared by every model and variant: epochs, or a fixed number of
    optimizer steps (``*_steps``; they win over the epochs when set).

    Paper: AdaGrad, lr 1e-2, batch 512, (authors' code) 3 epochs on ~1M rows, i.e.
    ~6,000 steps. The ``cascade_exposure`` simulator's ``small`` config has ~11k
    training rows (21 steps per epoch), so we train more epochs and raise AdaGrad's
    rate to 5e-2: at 1e-2 the DeepFM ranker stays at test AUC 0.52 after 20 epochs
    (0.56 at 5e-2).

    With steps (``tfdebias reproduce damcar``, ``--stopping fixed``) every retriever row
    gets the same total of optimizer steps: a row that trains a label generator first
    (DAMCAR and its ablations) spends ``label_steps`` there and ``retrieval_steps`` on
    its retriever; every other row spends ``retrieval_steps + label_steps`` on its
    retriever (:meth:`retriever_steps`). The ranker (``ranker_steps``) is trained once
    per seed and shared by every row (the cascade's second stage, and DAMCAR's and KD's
    distillation target)."""

    ranker_epochs: int = 20
    label_epochs: int = 10
    retrieval_epochs: int = 20
    batch_size: int = 512
    learning_rate: float = 5e-2
    optimizer: str = "adagrad"
    ranker_steps: int | None = None
    label_steps: int | None = None
    retrieval_steps: int | None = None

    @property
    def fixed_steps(self) -> bool:
        return self.retrieval_steps is not None

    def retriever_steps(self, with_label_generator: bool) -> int | None:
        """The retriever's steps for a row (None: epochs), equalising the label generator."""
        if not self.fixed_steps:
            return None
        return self.retrieval_steps + (0 if with_label_generator else (self.label_steps or 0))

    def row_steps(self) -> int | None:
        """Optimizer steps every retriever row gets in total (label generator included)."""
        return self.retriever_steps(False)


def _dataset(columns, schema, label, batch_size, shuffle, seed, repeat=False):
    from tfdebias.data import make_dataset

    return make_dataset(columns, schema, batch_size=batch_size, shuffle=shuffle, seed=seed,
                        label=label, repeat=repeat, drop_remainder=False)


def _optimizer(budget: Budget):
    from tfdebias.optimizers import make_optimizer

    return make_optimizer(budget.optimizer, budget.learning_rate)


def _fit(model, ds, epoch_vars, *, epochs=None, steps=None, verbose=0):
    """``model.fit`` for ``epochs`` epochs, or for exactly ``steps`` optimizer steps: the
    full epochs, then the first batches of one more (the optimizer keeps its state)."""

    class _Epoch(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            for v in epoch_vars:
                v.assign(epoch)

    if steps is None:
        model.fit(ds, epochs=epochs, verbose=verbose, callbacks=[_Epoch()])
        return model
    if steps < 1:
        raise UsageError(f"a fixed budget needs >= 1 optimizer step, got {steps}")
    per_epoch = int(ds.cardinality())
    full, rest = divmod(int(steps), per_epoch)
    if full:
        model.fit(ds, epochs=full, verbose=verbose, callbacks=[_Epoch()])
    if rest:
        model.fit(ds.take(rest), initial_epoch=full, epochs=full + 1, verbose=verbose,
                  callbacks=[_Epoch()])
    return model


def train_ranker(data: CascadeData, kind: str = "deepfm", seed: int = 0,
                 budget: Budget = Budget(), verbose=0):
    """The pre-trained ranking model ``Rank`` (DeepFM or DCN) on the exposed train rows."""
    from tfdebias import models
    from tfdebias.training.engine import compile_model

    if kind not in ("deepfm", "dcn"):
        raise UsageError(f"ranker must be 'deepfm' or 'dcn', got {kind!r}")
    keras.utils.set_random_seed(seed)
    cols = {k: data.splits["train"][k] for k in data.user_names + data.item_names + [data.label]}
    ds = _dataset(cols, data.schema, data.label, budget.batch_size, True, seed)
    model = models.build(kind, data.schema, embedding_dim=32, hidden_units=(256, 128))
    model(next(iter(ds))[0])
    compile_model(model, _optimizer(budget))
    return _fit(model, ds, [ds.epoch], epochs=budget.ranker_epochs, steps=budget.ranker_steps,
                verbose=verbose)


def ranker_scores(ranker, features: dict) -> np.ndarray:
    return predict(ranker, features)


def train_label_generator(data: CascadeData, source: dict, source_y, target: dict, *,
                          lambda1=0.5, lambda2=0.2, alpha=0.99, seed=0,
                          budget: Budget = Budget(), verbose=0) -> LabelGenerator:
    """Fit the label generator on paired source / target batches (authors: the target
    set is tiled or truncated to the source size so batches pair up one to one);
    ``budget.label_steps`` optimizer steps, else ``budget.label_epochs`` epochs."""
    from tfdebias.training.engine import compile_model

    keras.utils.set_random_seed(seed)
    ns = len(source_y)
    nt = len(next(iter(target.values())))
    if nt == 0:
        raise DataError("the target domain is empty (no unexposed sample selected)")
    src = {**source, "_y": np.asarray(source_y, np.float32)}
    tgt_idx = np.random.default_rng(seed).permutation(np.resize(np.arange(nt), ns))
    tgt = {k: np.asarray(v)[tgt_idx] for k, v in target.items()}
    tgt["_y"] = np.zeros(ns, np.float32)
    s_ds = _dataset(src, data.schema, "_y", budget.batch_size, True, seed)
    t_ds = _dataset(tgt, data.schema, "_y", budget.batch_size, True, seed + 1)
    ds = tf.data.Dataset.zip((s_ds, t_ds))
    model = LabelGenerator(data.schema, embedding_dim=32, lambda1=lambda1, lambda2=lambda2,
                           alpha=alpha)
    sample = next(iter(s_ds))[0]
    model(sample)
    model.init_teacher()
    compile_model(model, _optimizer(budget))
    return _fit(model, ds, [s_ds.epoch, t_ds.epoch], epochs=budget.label_epochs,
                steps=budget.label_steps, verbose=verbose)


def train_retrieval(data: CascadeData, columns: dict, *, lambda3=0.0, adversarial=0.0,
                    temperature=5.0, seed=0, budget: Budget = Budget(), epochs=None,
                    steps=None, model: HybridRetrieval | None = None,
                    verbose=0) -> HybridRetrieval:
    """Fit (or continue fitting) a :class:`HybridRetrieval` on a hybrid training set
    ``columns`` (features + ``_target``, ``_rank``, ``_weight``, ``_domain``) for
    ``steps`` optimizer steps, else ``epochs`` (default ``budget.retrieval_epochs``)."""
    from tfdebias.training.engine import compile_model

    keras.utils.set_random_seed(seed)
    ds = _dataset(columns, data.schema, TARGET, budget.batch_size, True, seed)
    if model is None:
        model = HybridRetrieval(data.schema, lambda3=lambda3, adversarial=adversarial,
                                temperature=temperature, user_features=data.user_names,
                                item_features=data.item_names)
        model(next(iter(ds))[0])
    compile_model(model, _optimizer(budget))
    return _fit(model, ds, [ds.epoch], epochs=epochs or budget.retrieval_epochs, steps=steps,
                verbose=verbose)


# =============================================================================================
# The whole pipeline: baselines, DAMCAR, ablations
# =============================================================================================

METHODS = ("BC", "KD", "TL", "AR", "MUDA", "DAMCAR")
ABLATIONS = ("w/o TDG", "w/o EMA", "w/o MPL")


@dataclasses.dataclass
class Settings:
    radius: int = 25
    walks: int = 50
    lambda1: float = 0.5
    lambda2: float = 0.2
    lambda3: float = 0.3
    alpha: float = 0.99
    adversarial: float = 0.2  # AR's weight
    muda_threshold: float = 0.5
    temperature: float = 5.0
    ranker: str = "deepfm"
    # which head labels S_sam: "target" = Phi(E(x)) (Eq. (5) as printed, the default),
    # "source" = Phi(g(E(x))) (the authors' code)
    target_label_path: str = "target"



def _diagnostics(data: CascadeData, fn, target_pred) -> dict:
    """AUC of a scorer on the exposed test rows and on the oracle's unexposed rows, and
    its mean prediction on the target domain (how labels and ranker scores look)."""
    out = {"mean_on_target": float(np.mean(target_pred)) if len(target_pred) else None}
    for split in ("test", "oracle"):
        c = data.splits.get(split)
        if c is None or len(np.unique(c[data.label])) < 2:
            continue
        p = predict(fn, c, inputs=data.user_names + data.item_names)
        out[f"{split}_auc"] = round(float(M.auc(c[data.label], p)), 4)
    return out


#: the skyline row: BC's retriever and budget on the simulator's ``train_unbiased``
#: (uniform exposure, labels from the true model) instead of the exposed log
SKYLINE = "BC on uniform log"
#: rows that train a label generator before their retriever
WITH_LABEL_GENERATOR = ("DAMCAR", "w/o TDG", "w/o EMA", "w/o MPL")


def run_seed(data: CascadeData, seed: int, settings: Settings, budget: Budget,
             rows: Sequence[str] = METHODS + ABLATIONS, evaluate=True, verbose=0,
             keep_models=False, ranker=None, eval_on: EvalSet | None = None,
             on_row=None) -> dict:
    """Train the ranker (unless given), the target domain, the label generator(s) and
    every requested retrieval variant for one seed; returns ``{"metrics": {name:
    metrics}, "per_user": {name: per-user values}, "info": ..., ["models": ...]}``.

    ``rows`` may include :data:`SKYLINE` (BC's retriever on ``train_unbiased``).
    ``eval_on``: the :class:`EvalSet` to score on (default: built from the splits).
    ``on_row(name)`` is called after each row is trained and scored (progress).
    """
    s = settings
    tr = data.splits["train"]
    label = np.asarray(tr[data.label], np.float32)
    fe = {k: tr[k] for k in data.user_names + data.item_names}
    if ranker is None:
        ranker = train_ranker(data, s.ranker, seed, budget, verbose)
        if on_row:
            on_row("ranker")
    r_e = ranker_scores(ranker, fe)
    t0 = time.perf_counter()
    tu, ti, tstats = target_domain(data, s.radius, s.walks, seed)
    tdg_seconds = time.perf_counter() - t0
    ft = data.pairs(tu, ti)
    r_t = ranker_scores(ranker, ft) if len(tu) else np.zeros(0)
    results, per_user, models_out = {}, {}, {}
    info = {"target": tstats, "tdg_seconds": tdg_seconds}
    info["ranker"] = _diagnostics(data, ranker, r_t)
    generators = {}
    if evaluate and eval_on is None:
        eval_on = eval_set(data.splits, data.label, data.item_names)

    def labels_from(kind):
        """(pseudo source, pseudo target, target features, target ranker scores)."""
        if kind in generators:
            return generators[kind]
        if kind == "random":
            ru, ri, _ = target_domain(data, s.radius, s.walks, seed, random_sampling=True,
                                      like=(tu, ti))
            f_t = data.pairs(ru, ri)
            rt = ranker_scores(ranker, f_t)
        else:
            f_t, rt = ft, r_t
        lg = train_label_generator(
            data, fe, label, f_t, lambda1=0.0 if kind == "no_ema" else s.lambda1,
            lambda2=s.lambda2, alpha=s.alpha, seed=seed, budget=budget, verbose=verbose)
        tpath = s.target_label_path == "source"
        ps = predict(lambda b: lg.pseudo_labels(b, True), fe)
        pt = predict(lambda b: lg.pseudo_labels(b, tpath), f_t)
        info[f"label_generator_{kind}"] = _diagnostics(
            data, lambda b: lg.pseudo_labels(b, tpath), pt)
        generators[kind] = (ps, pt, f_t, rt, lg)
        return generators[kind]

    def fit(cols, name, **kw):
        kw.setdefault("steps", budget.retriever_steps(name in WITH_LABEL_GENERATOR))
        return train_retrieval(data, cols, seed=seed, budget=budget,
                               temperature=s.temperature, verbose=verbose, **kw)

    for name in rows:
        if name == "BC":
            m = fit(hybrid_columns(fe, label, r_e), name)
        elif name == SKYLINE:
            if "train_unbiased" not in data.splits:
                raise DataError("the skyline needs the simulator's `train_unbiased` split")
            tu_cols = data.splits["train_unbiased"]
            fu = {k: tu_cols[k] for k in data.user_names + data.item_names}
            yu = np.asarray(tu_cols[data.label], np.float32)
            m = fit(hybrid_columns(fu, yu, np.zeros(len(yu), np.float32)), name)
        elif name == "KD":
            m = fit(hybrid_columns(fe, r_e, r_e), name)
        elif name == "TL":
            total = budget.retriever_steps(False)
            first = None if total is None else max(1, total - total // 3)
            m = fit(hybrid_columns(fe, label, r_e), name, steps=first)
            m.freeze_user_tower(True)
            m = fit(hybrid_columns(ft, r_t, r_t), name, model=m,
                    epochs=max(1, budget.retrieval_epochs // 2),
                    steps=None if total is None else max(1, total - first))
        elif name == "AR":
            m = fit(hybrid_columns(fe, label, r_e, ft, None, r_t, weight_t=0.0), name,
                    adversarial=s.adversarial)
        elif name == "MUDA":
            m = fit(hybrid_columns(fe, label, r_e, ft, (r_t > s.muda_threshold), r_t), name)
        elif name in WITH_LABEL_GENERATOR:
            kind = {"w/o TDG": "random", "w/o EMA": "no_ema"}.get(name, "full")
            ps, pt, f_t, rt, lg = labels_from(kind)
            y_e = ps if name == "w/o MPL" else modified_pseudo_labels(label, True, ps)  # Eq. 12
            m = fit(hybrid_columns(fe, y_e, r_e, f_t, pt, rt), name, lambda3=s.lambda3)
            if name == "DAMCAR":
                models_out["label_generator"] = lg
        else:
            raise UsageError(f"unknown row {name!r}; expected {METHODS + ABLATIONS + (SKYLINE,)}")
        if evaluate:
            per_user[name] = cascade_eval(retriever_scorer(m, eval_on), ranker, eval_on)
            results[name] = mean_metrics(per_user[name])
        if keep_models:
            models_out[name] = m
        if on_row:
            on_row(name)
    info["target_features"] = ft
    out = {"metrics": results, "per_user": per_user, "info": info, "ranker": ranker}
    if keep_models:
        out["models"] = models_out
    return out
