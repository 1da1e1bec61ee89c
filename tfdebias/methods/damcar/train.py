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
    ~6,000 steps. We use Adam at 1e-3 for every model alike: at the evidence budget
    (~1,000 steps per row) AdaGrad (5e-2) leaves the DSSM at a popularity-like
    solution. Measured on ``cascade_exposure/communities`` (BC, 1,000 steps, seed 0):
    R@100 of the never-shown positives 0.048 with AdaGrad (0.050 after 3,000 steps at
    temperature 1) vs 0.100 with Adam; recall of each user's true top-50 unexposed items
    0.18 vs 0.69; the DeepFM ranker's test AUC 0.655 vs 0.743 (500 steps).

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
    learning_rate: float = 1e-3
    optimizer: str = "adam"
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


def _dataset(columns, schema, label, batch_size, shuffle, seed, repeat=False, data=None):
    """``make_dataset`` of ``columns``; with ``data`` (a :class:`CascadeData`) the item
    features that ``columns`` lacks (rows given as ids) are gathered per batch from the
    item table (:func:`with_item_features`)."""
    from tfdebias.data import make_dataset

    ds = make_dataset(columns, schema, batch_size=batch_size, shuffle=shuffle, seed=seed,
                      label=label, repeat=repeat, drop_remainder=False)
    return ds if data is None else with_item_features(ds, data, columns)


def with_item_features(ds, data: CascadeData, columns):
    """``ds`` (batches of ``columns``) with the item features that ``columns`` lacks
    gathered per batch from ``data``'s item table by the batch's item ids: the batches
    of the same rows given with every feature, without a per-row copy of the item
    features (a 512-d embedding per exposed and target-domain row). Keeps ``ds.epoch``."""
    missing = data.missing_item_features(columns)
    if not missing:
        return ds
    epoch = getattr(ds, "epoch", None)
    data.expand_batch({"item_id": tf.zeros([0], tf.int64)}, missing)  # the tables, eagerly
    out = ds.map(lambda x, *rest: (data.expand_batch(x, missing), *rest)).prefetch(2)
    if epoch is not None:
        out.epoch = epoch
    return out


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
                 budget: Budget = Budget(), verbose=0, *, l2: float = 1e-5,
                 early_stopping: bool = True, patience: int = 3, checks: int = 10,
                 max_valid_rows: int = 20_000):
    """The pre-trained ranking model ``Rank`` (DeepFM or DCN) on the exposed train rows.

    ``l2`` penalises looked-up embedding rows and the DNN kernels (authors: 1e-5 on the
    embeddings). With a step budget (``budget.ranker_steps``) and ``early_stopping``
    (default) the ranker trains in ``checks`` chunks on a repeating shuffled stream,
    scores the log loss of (up to ``max_valid_rows``) valid rows after each chunk, stops
    after ``patience`` chunks without improvement and keeps the best weights: the
    ranker is both the cascade's second stage and the distillation target, so it should
    not be the over- or under-fitted model of an arbitrary step count."""
    from tfdebias import models
    from tfdebias.data import make_dataset
    from tfdebias.training.engine import compile_model

    if kind not in ("deepfm", "dcn"):
        raise UsageError(f"ranker must be 'deepfm' or 'dcn', got {kind!r}")
    keras.utils.set_random_seed(seed)
    # the train rows as ids when their item features are the item table's (gathered per
    # batch); else their own columns
    cols = {**data.rows("train"), data.label: data.splits["train"][data.label]}
    names = list(cols)
    model = models.build(kind, data.schema, embedding_dim=32, hidden_units=(256, 128),
                         embedding_l2=l2, dnn_l2=l2)
    valid = data.splits.get("valid")
    steps = budget.ranker_steps
    if not early_stopping or steps is None or valid is None or len(valid[data.label]) == 0:
        ds = _dataset(cols, data.schema, data.label, budget.batch_size, True, seed, data=data)
        model(next(iter(ds))[0])
        compile_model(model, _optimizer(budget))
        return _fit(model, ds, [ds.epoch], epochs=budget.ranker_epochs, steps=steps,
                    verbose=verbose)
    ds = with_item_features(make_dataset(cols, data.schema, batch_size=budget.batch_size,
                                         shuffle=True, seed=seed, label=data.label,
                                         repeat=True, drop_remainder=False), data, cols)
    nv = len(valid[data.label])
    pick = np.sort(np.random.default_rng(seed).permutation(nv)[:max_valid_rows])
    vcols = {k: np.asarray(valid[k])[pick] for k in names}
    v_ds = _dataset(vcols, data.schema, data.label, 4096, False, seed, data=data)
    model(next(iter(ds))[0])
    compile_model(model, _optimizer(budget))
    chunk = max(1, int(steps) // max(int(checks), 1))
    stop = keras.callbacks.EarlyStopping(monitor="val_loss", patience=int(patience),
                                         restore_best_weights=True)
    model.fit(ds, steps_per_epoch=chunk, epochs=max(1, int(steps) // chunk),
              validation_data=v_ds, callbacks=[stop], verbose=verbose)
    model.early_stopping = {"best_epoch": int(stop.best_epoch),
                            "stopped_epoch": int(stop.stopped_epoch),
                            "steps_per_check": chunk,
                            "best_val_loss": round(float(stop.best), 5)}
    return model


def ranker_scores(ranker, features: dict, data: CascadeData | None = None) -> np.ndarray:
    """The ranker's score of every row of ``features``; with ``data``, rows may be given
    as ids (:meth:`CascadeData.ids`): the item features are gathered per batch."""
    return predict(ranker, features) if data is None else data.predict(ranker, features)


def auto_alpha(steps: int | None, alpha_max: float = 0.99, memory: float = 10.0) -> float:
    """EMA rate for a run of ``steps`` optimizer steps: ``min(alpha_max, 1 - memory /
    steps)`` (at least 0.5), so ``alpha^steps <= exp(-memory)``: the teacher keeps no
    trace of its random initial weights by the end, and averages about the last
    ``steps / memory`` student states. The paper's 0.99 fits its ~6k steps."""
    if not steps:
        return float(alpha_max)
    return float(max(0.5, min(alpha_max, 1.0 - memory / float(steps))))


def train_label_generator(data: CascadeData, source: dict, source_y, target: dict, *,
                          lambda1=0.5, lambda2=0.2, alpha=0.99, seed=0,
                          budget: Budget = Budget(), verbose=0, warmup: bool = True,
                          ema_ramp: bool = True, target_label_path: str = "source",
                          domain_through_g: bool = False,
                          domain_target_term: bool = True,
                          domain_normalize: bool = True) -> LabelGenerator:
    """Fit the label generator on paired source / target batches (authors: the target
    set is tiled or truncated to the source size so batches pair up one to one);
    ``budget.label_steps`` optimizer steps, else ``budget.label_epochs`` epochs.

    ``alpha=None`` picks the EMA rate from the step count (:func:`auto_alpha`);
    ``warmup`` warms the reversal scale up over the whole run (Ganin's schedule,
    :func:`~tfdebias.methods.damcar.model.grl_schedule`). The other options are
    :class:`LabelGenerator`'s. ``source`` and ``target`` may give their rows as ids
    (:meth:`CascadeData.ids`, :meth:`CascadeData.rows`): the item features are then
    gathered per batch from ``data``'s item table."""
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
    s_ds = _dataset(src, data.schema, "_y", budget.batch_size, True, seed, data=data)
    t_ds = _dataset(tgt, data.schema, "_y", budget.batch_size, True, seed + 1, data=data)
    ds = tf.data.Dataset.zip((s_ds, t_ds))
    total = budget.label_steps or budget.label_epochs * int(s_ds.cardinality())
    model = LabelGenerator(data.schema, embedding_dim=32, lambda1=lambda1, lambda2=lambda2,
                           alpha=auto_alpha(total) if alpha is None else alpha,
                           warmup_steps=total if warmup else 0, ema_ramp=ema_ramp,
                           target_label_path=target_label_path,
                           domain_through_g=domain_through_g,
                           domain_target_term=domain_target_term,
                           domain_normalize=domain_normalize)
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
    ``steps`` optimizer steps, else ``epochs`` (default ``budget.retrieval_epochs``).
    Rows given as ids (no item features in ``columns``) get theirs per batch from
    ``data``'s item table."""
    from tfdebias.training.engine import compile_model

    keras.utils.set_random_seed(seed)
    ds = _dataset(columns, data.schema, TARGET, budget.batch_size, True, seed, data=data)
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
#: BC's retriever on ``S_exp u S_sam`` with every ``S_sam`` row labelled 0 (unexposed =
#: negative: the practice the paper argues against); same rows as DAMCAR, no labels
SSAM_ZERO = "S_sam as 0"
#: DAMCAR's hybrid training with a perfect label generator: every pseudo-label (source
#: negatives and ``S_sam``) replaced by the simulator's true P(finish) — the ceiling of
#: what better pseudo-labels can buy (needs ``truth``)
ORACLE = "Oracle labels"


@dataclasses.dataclass
class Settings:
    """What a run trains (see the package docstring for each choice and its reason).

    ``alpha=None``: the EMA rate from the label generator's step count (``auto_alpha``);
    ``grl_warmup``: Ganin's warm-up of the reversal scale over the label generator's
    steps; ``ema_ramp``: mean teacher's ``min(alpha, 1 - 1/(t+1))``;
    ``target_label_path``: ``"source"`` = ``Phi(g(E(x)))`` for target rows (the path
    Eq. (6) trains; the authors' code), ``"target"`` = ``Phi(E(x))`` (Eq. (5) as
    printed); ``domain_through_g``: Eq. (7) on ``g(z)`` for both domains;
    ``domain_target_term=False``: the authors' code's Eq. (8) (target term lost);
    ``keep_exposed_labels``: Eq. (12) keeps the observed 0 of exposed negatives instead
    of their pseudo-labels (an option; the paper relabels them). ``temperature``: the
    DSSM's cosine scale. The authors use 1; measured on
    ``cascade_exposure/communities`` (BC, 1,000 Adam steps, seed 0) it caps the logits at
    ``b +- 1`` and costs recall: R@100 of the never-shown positives 0.076 at 1 vs 0.100
    at 5 (0.100 at 10), of the true top-50 0.44 vs 0.69; so 5 (``--temperature 1``
    gives the authors')."""

    radius: int = 25
    walks: int = 50
    lambda1: float = 0.5
    lambda2: float = 0.2
    lambda3: float = 0.3
    alpha: float | None = None
    adversarial: float = 0.2  # AR's weight
    muda_threshold: float = 0.5
    temperature: float = 5.0
    ranker: str = "deepfm"
    target_label_path: str = "source"
    grl_warmup: bool = True
    ema_ramp: bool = True
    domain_through_g: bool = False
    domain_target_term: bool = True
    # Eq. (12) relabels every exposed row that is not a positive with its pseudo-label
    # (the paper); True keeps the observed 0 there and pseudo-labels S_sam only
    keep_exposed_labels: bool = False


def item_rule_aucs(data: CascadeData) -> dict:
    """Test AUC of item-only rules the ranker must beat: shorter first (``duration``,
    where the data has it) and the item's finish rate on the train rows (smoothed)."""
    te, tr = data.splits["test"], data.splits["train"]
    y = np.asarray(te[data.label])
    if len(np.unique(y)) < 2:
        return {}
    out = {}
    if "duration" in te:
        out["duration"] = round(float(M.auc(y, -np.asarray(te["duration"], np.float64))), 4)
    ids = np.asarray(tr["item_id"], np.int64)
    n = np.bincount(ids, minlength=data.n_items).astype(np.float64)
    k = np.bincount(ids, weights=np.asarray(tr[data.label], np.float64), minlength=data.n_items)
    prior = float(np.mean(tr[data.label]))
    rate = (k + 10 * prior) / (n + 10)
    out["item_finish_rate"] = round(float(M.auc(y, rate[np.asarray(te["item_id"], np.int64)])),
                                    4)
    return out


def soft_auc(relevance, score) -> float:
    """AUC of ``score`` against labels drawn from ``relevance`` (a true probability), in
    expectation: every row counts as a positive with weight ``relevance`` and as a
    negative with weight ``1 - relevance`` (the expected AUC over label draws, up to the
    ``O(1/n)`` self-pairs)."""
    r = np.clip(np.asarray(relevance, np.float64).reshape(-1), 0.0, 1.0)
    sc = np.asarray(score, np.float64).reshape(-1)
    if len(r) == 0:
        return float("nan")
    return float(M.auc(np.concatenate([np.ones_like(r), np.zeros_like(r)]),
                       np.concatenate([sc, sc]), sample_weight=np.concatenate([r, 1.0 - r])))


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
WITH_LABEL_GENERATOR = ("DAMCAR", "w/o TDG", "w/o EMA", "w/o MPL", ORACLE)


def run_seed(data: CascadeData, seed: int, settings: Settings, budget: Budget,
             rows: Sequence[str] = METHODS + ABLATIONS, evaluate=True, verbose=0,
             keep_models=False, ranker=None, eval_on: EvalSet | None = None,
             on_row=None, truth=None) -> dict:
    """Train the ranker (unless given), the target domain, the label generator(s) and
    every requested retrieval variant for one seed; returns ``{"metrics": {name:
    metrics}, "per_user": {name: per-user values}, "info": ..., ["models": ...]}``.

    ``rows`` may include :data:`SKYLINE` (BC's retriever on ``train_unbiased``),
    :data:`SSAM_ZERO` and :data:`ORACLE`; ``truth(user_ids, item_ids)`` (1-based, the true
    P(finish), e.g. a simulator's ``truth(params).relevance``) labels the oracle row and
    scores every pseudo-label's AUC against the truth on ``S_sam`` (``info``).
    ``eval_on``: the :class:`EvalSet` to score on (default: built from the splits).
    ``on_row(name)`` is called after each row is trained and scored (progress).
    ``info["target_features"]``: the target domain ``S_sam`` as model rows (ids alone when
    ``data.rows_match_items``: score them with ``data.predict``).
    """
    s = settings
    tr = data.splits["train"]
    label = np.asarray(tr[data.label], np.float32)
    # rows as (user, item) ids, their item features gathered per batch from the item
    # table, when the splits' item features are the table's (else per-row columns)
    fe = data.rows("train")
    pairs = data.ids if data.rows_match_items else data.pairs
    if ranker is None:
        ranker = train_ranker(data, s.ranker, seed, budget, verbose)
        if on_row:
            on_row("ranker")
    r_e = ranker_scores(ranker, fe, data)
    t0 = time.perf_counter()
    tu, ti, tstats = target_domain(data, s.radius, s.walks, seed)
    tdg_seconds = time.perf_counter() - t0
    ft = pairs(tu, ti)
    r_t = ranker_scores(ranker, ft, data) if len(tu) else np.zeros(0)
    results, per_user, models_out = {}, {}, {}
    info = {"target": tstats, "tdg_seconds": tdg_seconds}
    info["ranker"] = _diagnostics(data, ranker, r_t)
    if getattr(ranker, "early_stopping", None):
        info["ranker"]["early_stopping"] = ranker.early_stopping
    info["ranker"]["item_rule_test_auc"] = item_rule_aucs(data)
    rel_t = None if truth is None or not len(tu) else np.asarray(truth(tu, ti), np.float64)
    if rel_t is not None:
        info["target"]["true_relevance_mean"] = round(float(rel_t.mean()), 4)
        info["ranker"]["target_truth_auc"] = round(soft_auc(rel_t, r_t), 4)
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
            f_t = pairs(ru, ri)
            rt = ranker_scores(ranker, f_t, data)
        else:
            f_t, rt = ft, r_t
        lg = train_label_generator(
            data, fe, label, f_t, lambda1=0.0 if kind == "no_ema" else s.lambda1,
            lambda2=s.lambda2, alpha=s.alpha, seed=seed, budget=budget, verbose=verbose,
            warmup=s.grl_warmup, ema_ramp=s.ema_ramp, target_label_path=s.target_label_path,
            domain_through_g=s.domain_through_g, domain_target_term=s.domain_target_term)
        tpath = s.target_label_path == "source"
        ps = data.predict(lambda b: lg.pseudo_labels(b, True), fe)
        pt = data.predict(lambda b: lg.pseudo_labels(b, tpath), f_t)
        diag = _diagnostics(data, lambda b: lg.pseudo_labels(b, tpath), pt)
        diag["alpha"] = round(lg.alpha, 4)
        if truth is not None and len(pt):
            rel = rel_t if kind != "random" else np.asarray(truth(ru, ri), np.float64)
            diag["target_truth_auc"] = round(soft_auc(rel, pt), 4)
        info[f"label_generator_{kind}"] = diag
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
            fu = data.rows("train_unbiased")
            yu = np.asarray(data.splits["train_unbiased"][data.label], np.float32)
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
        elif name == SSAM_ZERO:
            m = fit(hybrid_columns(fe, label, r_e, ft, np.zeros(len(r_t), np.float32), r_t),
                    name)
        elif name == ORACLE:
            if truth is None:
                raise DataError(f"the {ORACLE!r} row needs the true relevance (a simulator)")
            rel_e = np.asarray(truth(tr["user_id"], tr["item_id"]), np.float64)
            y_e = modified_pseudo_labels(label, True, rel_e)  # Eq. (12), perfect labels
            m = fit(hybrid_columns(fe, y_e, r_e, ft, rel_t, r_t), name, lambda3=s.lambda3)
        elif name == "MUDA":
            m = fit(hybrid_columns(fe, label, r_e, ft, (r_t > s.muda_threshold), r_t), name)
        elif name in WITH_LABEL_GENERATOR:
            kind = {"w/o TDG": "random", "w/o EMA": "no_ema"}.get(name, "full")
            ps, pt, f_t, rt, lg = labels_from(kind)
            y_e = ps if name == "w/o MPL" else modified_pseudo_labels(label, True, ps)  # Eq. 12
            if s.keep_exposed_labels and name != "w/o MPL":
                y_e = label
            m = fit(hybrid_columns(fe, y_e, r_e, f_t, pt, rt), name, lambda3=s.lambda3)
            if name == "DAMCAR":
                models_out["label_generator"] = lg
        else:
            raise UsageError(f"unknown row {name!r}; expected "
                             f"{METHODS + ABLATIONS + (SKYLINE, SSAM_ZERO, ORACLE)}")
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
