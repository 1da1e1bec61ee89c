"""AMID's evaluation (Sec. 5.1): each test row's positive ranked against sampled
negatives the user never interacted with; the ``"ranking"`` protocol and the per-row
NDCG/HR scores of the evidence table, per domain and user group."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import tensorflow as tf

from tfdebias.evaluation import protocols

#: display names of the two domains (AMID's Cloth/Sport, Phone/Elec)
DOMAIN_NAMES = ("A", "B")
_NEGATIVES: dict = {}


def clear_candidates() -> None:
    """Forget the cached candidates of :func:`ranking_candidates` (keyed by array id: a
    new draw must never reuse them)."""
    _NEGATIVES.clear()


def ranking_candidates(splits, histories, split: str, *, n_neg: int = 999, seed: int = 0,
                       user: str = "user_id", n_users: int | None = None):
    """(rows, 1 + n) candidates of ``split``: the positive at column 0, then the seeded
    negatives of :func:`tfdebias.data.samplers.evaluation_negatives` (cached per split
    array, so every model of a process ranks the same candidates)."""
    from tfdebias.data import samplers

    cols = splits[split]
    key = (id(cols["item_id"]), tuple(histories), n_neg, seed)
    if key not in _NEGATIVES:
        pools = samplers.domain_item_pools(splits, histories)
        n_users = n_users or int(max(np.max(c[user]) for c in splits.values())) + 1
        positives = samplers.user_positives(splits, histories, n_users, user=user)
        negs = samplers.evaluation_negatives(cols, pools, positives, n_neg=n_neg, seed=seed, user=user)
        _NEGATIVES[key] = np.concatenate([np.asarray(cols["item_id"], np.int64)[:, None], negs], 1)
    return _NEGATIVES[key]


def score_candidate_matrix(model, columns, candidates, *, batch_size: int = 256) -> np.ndarray:
    """``model.score_candidates`` over every row, in batches of ``batch_size`` users
    (one compiled call per batch scores ``batch_size x C`` pairs)."""
    names = list(model.histories) + [model.domain_feature or "item_id", "item_id"] + \
        list(getattr(model, "interest_features", []))
    n = len(candidates)
    pad = (-n) % batch_size  # pad to whole batches: one trace serves every batch
    feats = {k: np.concatenate([np.asarray(columns[k]), np.repeat(np.asarray(columns[k])[:1], pad, 0)])
             for k in dict.fromkeys(names)}
    cand = np.concatenate([candidates, np.repeat(candidates[:1], pad, 0)])
    ds = tf.data.Dataset.from_tensor_slices((feats, cand)).batch(batch_size)
    fn = getattr(model, "_score_fn", None)
    if fn is None:
        fn = tf.function(lambda f, c: model.score_candidates(f, c, training=False))
        object.__setattr__(model, "_score_fn", fn)
    return np.concatenate([fn(f, c).numpy() for f, c in ds], axis=0)[:n]


@protocols.register("ranking")
def ranking_protocol(model, splits, schema, config=None, *, n_neg: int = 999, seed: int = 0,
                     k: int = 10, split_names: Sequence[str] = ("valid", "test"),
                     batch_size: int = 256) -> dict:
    """AMID Sec. 5.1: each row's positive ranked against ``n_neg`` sampled negatives the
    user never interacted with; NDCG@k and HR@k per domain (``"<split>/<A|B>/ndcg@10"``)
    and over all rows. Pessimistic ties (a tie never helps the positive, as the
    code's ``- 1e-7``)."""
    from tfdebias.evaluation import metrics as m

    out: dict[str, float] = {}
    n_users = schema["user_id"].vocab_size if "user_id" in schema else None
    for split in split_names:
        if split not in splits:
            continue
        cand = ranking_candidates(splits, model.histories, split, n_neg=n_neg, seed=seed,
                                  n_users=n_users)
        scores = score_candidate_matrix(model, splits[split], cand, batch_size=batch_size)
        dom = np.asarray(splits[split][model.domain_feature]) if model.domain_feature else \
            np.zeros(len(cand), np.int64)
        for z, name in enumerate(DOMAIN_NAMES[: len(model.histories)]):
            sel = dom == z
            if sel.any():
                out[f"{split}/{name}/ndcg@{k}"] = float(m.ndcg_at_k(None, scores[sel], k=k))
                out[f"{split}/{name}/hr@{k}"] = float(m.hit_rate_at_k(None, scores[sel], k=k))
        out[f"{split}/ndcg@{k}"] = float(m.ndcg_at_k(None, scores, k=k))
        out[f"{split}/hr@{k}"] = float(m.hit_rate_at_k(None, scores, k=k))
        out[f"{split}/n_negatives"] = float(cand.shape[1] - 1)
    return out

#: the user groups AMID's claims are about (test rows; `overlap`/`observed` columns)
GROUPS = ("overlapping", "observed_non_overlapping", "unobserved_non_overlapping")


def user_groups(columns) -> dict[str, np.ndarray]:
    """Masks of the test rows of each group in :data:`GROUPS`."""
    overlap = np.asarray(columns["overlap"]) > 0.5
    observed = np.asarray(columns["observed"]) > 0.5
    return {"overlapping": overlap, "observed_non_overlapping": ~overlap & observed,
            "unobserved_non_overlapping": ~overlap & ~observed}


def ranking_evidence(scores: np.ndarray, columns, *, k: int = 10):
    """``(metrics, scores)`` of one model on the test rows: NDCG@k and HR@k over all rows,
    per domain (``test/A/ndcg@10``), per user group (``test/ndcg@10/overlapping``) and per
    domain and user group (``test/A/ndcg@10/unobserved_non_overlapping``); ``scores`` hold the per-row values as
    :func:`tfdebias.evaluation.evidence.row_mean` with the user id as the unit."""
    from tfdebias.evaluation.evidence import row_mean
    from tfdebias.evaluation.metrics import hit_at_rank, ndcg_at_rank, sampled_rank

    rank = sampled_rank(scores)  # pessimistic ties: a tie never helps the positive
    values = {f"ndcg@{k}": ndcg_at_rank(rank, k), f"hr@{k}": hit_at_rank(rank, k)}
    units = np.asarray(columns["user_id"], np.int64)
    dom = np.asarray(columns["domain"], np.int64)
    groups = user_groups(columns) if {"overlap", "observed"} <= set(columns) else {}
    masks = {"test": np.ones(len(rank), bool)}
    for g, gm in groups.items():
        masks[f"test/@/{g}"] = gm
    for z, zname in enumerate(DOMAIN_NAMES):
        masks[f"test/{zname}"] = dom == z
        for g, gm in groups.items():
            masks[f"test/{zname}/@/{g}"] = (dom == z) & gm
    metrics, out = {}, {}
    for prefix, sel in masks.items():
        if not sel.any():
            continue
        for name, v in values.items():
            key = prefix.replace("@", name) if "/@/" in prefix else f"{prefix}/{name}"
            out[key] = row_mean(v[sel], units[sel])
            metrics[key] = float(v[sel].mean())
    metrics["test/n_negatives"] = float(scores.shape[1] - 1)
    return metrics, out
