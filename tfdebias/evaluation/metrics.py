"""Metrics: plain, vectorised functions of numpy arrays (or eager tensors).

Classification (one score per row):

* :func:`auc` - ROC AUC with ties counted as half (= ``sklearn.metrics.roc_auc_score``,
  also with ``sample_weight``);
* :func:`logloss` - mean binary cross-entropy, predictions clipped to
  ``[eps, 1 - eps]`` (= ``sklearn.metrics.log_loss`` for unclipped predictions).

Ranking (``@k``; each returns the mean over queries, or per-query values with
``per_query=True``). Three ways to give the ranking:

1. **score matrix**: ``y_true`` (U, N) relevance of each candidate (0 = not relevant,
   graded values allowed), ``y_score`` (U, N) model scores. Full-catalogue retrieval is
   this case with N = number of items (column j = item j).
2. **sampled candidates**: ``y_true=None``, ``y_score`` (U, 1 + N): one positive at
   column 0, N sampled negatives after it.
3. **top-k ids**: ``y_true`` = the relevant ids of each query (a sequence of U
   collections, a 0-padded (U, M) int array, or a ``tf.RaggedTensor``),
   ``top_ids`` (U, K) the retrieved ids best first (0 = padding, never relevant).

Ties (cases 1 and 2): ``ties="pessimistic"`` (default) ranks, among equal scores, the
less relevant candidates first, so a tie never helps: a model that scores everything
alike gets the worst rank, not a lucky one. ``"optimistic"`` is the reverse; ``"first"``
keeps column order. Queries without any relevant item are left out of the mean (their
per-query value is NaN).

Definitions, with ``rel_i`` the relevance at rank i (1-based) of the top ``k`` and
``R`` the number of relevant candidates of the query:

=================  ===============================================================
``recall_at_k``    #relevant in top-k / R
``precision_at_k`` #relevant in top-k / min(k, N)
``f1_at_k``        2 P R / (P + R) per query (``average="query"``), or of the mean
                   P and R (``average="global"``)
``ndcg_at_k``      sum_i (2^rel_i - 1) / log2(i + 1), divided by the same for the
                   ideal order (binary relevance: the usual 1 / log2(i + 1) gain)
``mrr_at_k``       1 / rank of the first relevant item in the top-k, else 0
``hit_rate_at_k``  1 if any relevant item is in the top-k

``map_at_k``       sum_i P@i rel_i / min(R, k)
=================  ===============================================================

Each metric has one implementation: the ranking is turned into a (queries, k) gain
matrix once, and every metric is a vectorised reduction of it, so per-query values (the
evidence tables' resampling units) and means come from the same code. The tests hold it
to a brute-force reference and to ``keras_rs.metrics`` (``RecallAtK``, ``PrecisionAtK``,
``NDCG``, ``MeanReciprocalRank``, ``MeanAveragePrecision``) on score matrices.

For the sampled-candidates protocol the rank of the positive is often wanted per row
(:func:`sampled_rank`); :func:`ndcg_at_rank` and :func:`hit_at_rank` turn such ranks
into per-row NDCG@k and HR@k.

Example:

>>> import numpy as np
>>> auc([0, 0, 1, 1], [0.1, 0.5, 0.5, 0.9])
0.875
>>> hit_rate_at_k(None, np.array([[0.5, 0.5, 0.1], [0.9, 0.2, 0.3]]), k=1)  # tie loses
0.5
>>> recall_at_k([{3, 4}, {7}], top_ids=np.array([[3, 9], [1, 2]]), k=2)
0.25
"""

from __future__ import annotations

import itertools

import numpy as np

from tfdebias.errors import UsageError

TIES = ("pessimistic", "optimistic", "first")


# -- classification -----------------------------------------------------------------
def _binary_labels(y_true, name="y_true"):
    y = np.asarray(y_true, dtype=np.float64).reshape(-1)
    if not np.isin(y, (0.0, 1.0)).all():
        raise UsageError(f"{name} must be 0/1 labels, got values {np.unique(y)[:5].tolist()}...")
    return y


def _weights(sample_weight, n):
    if sample_weight is None:
        return np.ones(n)
    w = np.asarray(sample_weight, dtype=np.float64).reshape(-1)
    if w.shape[0] != n:
        raise UsageError(f"sample_weight has {w.shape[0]} values for {n} rows")
    return w


def auc(y_true, y_score, sample_weight=None) -> float:
    """Area under the ROC curve; a tied positive-negative pair counts 1/2.

    ``AUC = sum_{i pos, j neg} w_i w_j (1[s_i > s_j] + 1/2 1[s_i = s_j]) / (W_pos W_neg)``,
    computed in O(n log n) over the distinct score values. NaN if only one class.
    """
    y = _binary_labels(y_true)
    s = np.asarray(y_score, dtype=np.float64).reshape(-1)
    if s.shape != y.shape:
        raise UsageError(f"y_true has {y.size} values, y_score {s.size}")
    w = _weights(sample_weight, y.size)
    values, group = np.unique(s, return_inverse=True)  # ascending distinct scores
    pos = np.bincount(group, weights=w * y, minlength=values.size)
    neg = np.bincount(group, weights=w * (1.0 - y), minlength=values.size)
    total_pos, total_neg = pos.sum(), neg.sum()
    if total_pos <= 0 or total_neg <= 0:
        return float("nan")
    neg_below = np.cumsum(neg) - neg
    return float(np.sum(pos * (neg_below + 0.5 * neg)) / (total_pos * total_neg))


def logloss(y_true, y_pred, sample_weight=None, eps: float = 1e-7) -> float:
    """Mean binary cross-entropy ``-[y log p + (1-y) log(1-p)]``, ``p`` clipped to
    ``[eps, 1 - eps]``; weighted mean with ``sample_weight``."""
    y = _binary_labels(y_true)
    p = np.clip(np.asarray(y_pred, dtype=np.float64).reshape(-1), eps, 1.0 - eps)
    if p.shape != y.shape:
        raise UsageError(f"y_true has {y.size} values, y_pred {p.size}")
    w = _weights(sample_weight, y.size)
    losses = -(y * np.log(p) + (1.0 - y) * np.log1p(-p))
    return float(np.sum(w * losses) / np.sum(w))


# -- ranking: turning inputs into ranked relevance ---------------------------------------
def _check_k(k):
    if not isinstance(k, (int, np.integer)) or k < 1:
        raise UsageError(f"k must be a positive integer, got {k!r}")
    return int(k)


def _check_ties(ties):
    if ties not in TIES:
        raise UsageError(f"ties={ties!r}; expected one of {TIES}")


def tie_broken_order(y_score, y_true, ties: str = "pessimistic"):
    """Column indices of each row, best first, ties broken as ``ties`` says: (U, N)."""
    _check_ties(ties)
    s = np.asarray(y_score, dtype=np.float64)
    if ties == "first":
        return np.argsort(-s, axis=1, kind="stable")
    rel = np.asarray(y_true, dtype=np.float64)
    # Stable sort by relevance first (ascending = pessimistic), then by score: equal
    # scores keep the relevance order.
    first = np.argsort(rel if ties == "pessimistic" else -rel, axis=1, kind="stable")
    then = np.argsort(-np.take_along_axis(s, first, axis=1), axis=1, kind="stable")
    return np.take_along_axis(first, then, axis=1)


def _ranked_from_matrix(y_true, y_score, k, ties):
    rel = np.asarray(y_true, dtype=np.float64)
    s = np.asarray(y_score, dtype=np.float64)
    if rel.ndim != 2 or rel.shape != s.shape:
        raise UsageError(
            f"y_true and y_score must both be (queries, candidates); got {rel.shape} and {s.shape}"
        )
    k = min(k, rel.shape[1])
    top = tie_broken_order(s, rel, ties)[:, :k]
    gains = np.take_along_axis(rel, top, axis=1)
    ideal = -np.sort(-rel, axis=1)[:, :k]
    return gains, (rel > 0).sum(axis=1), ideal, k


def sampled_rank(y_score, ties: str = "pessimistic"):
    """0-based rank of the positive at column 0 among its row's candidates: (U,).

    Pessimistic: every negative scoring ``>=`` the positive is ranked above it."""
    _check_ties(ties)
    s = np.asarray(y_score, dtype=np.float64)
    if s.ndim != 2 or s.shape[1] < 1:
        raise UsageError(f"y_score must be (queries, 1 + negatives); got {s.shape}")
    pos, neg = s[:, :1], s[:, 1:]
    beats = neg >= pos if ties == "pessimistic" else neg > pos
    return beats.sum(axis=1)


def _ranked_from_sampled(y_score, k, ties):
    s = np.asarray(y_score)
    rank = sampled_rank(s, ties)
    k = min(k, s.shape[1])
    gains = (rank[:, None] == np.arange(k)[None, :]).astype(np.float64)
    ideal = np.zeros_like(gains)
    ideal[:, 0] = 1.0
    return gains, np.ones(s.shape[0], dtype=np.int64), ideal, k


def _flatten_ids(relevant, n_queries):
    """(query index, id) pairs of the relevant sets, id 0 dropped."""
    if hasattr(relevant, "flat_values") and hasattr(relevant, "row_lengths"):  # tf.RaggedTensor
        lengths = np.asarray(relevant.row_lengths())
        flat = np.asarray(relevant.flat_values)
    elif isinstance(relevant, np.ndarray) and relevant.ndim == 2:
        lengths = np.full(relevant.shape[0], relevant.shape[1])
        flat = relevant.reshape(-1)
    else:
        relevant = list(relevant)
        lengths = np.fromiter(map(len, relevant), dtype=np.int64, count=len(relevant))
        flat = np.fromiter(itertools.chain.from_iterable(relevant), dtype=np.int64,
                           count=int(lengths.sum()))
    if lengths.shape[0] != n_queries:
        raise UsageError(f"{lengths.shape[0]} relevant sets for {n_queries} rows of top_ids")
    query = np.repeat(np.arange(n_queries), lengths)
    flat = flat.astype(np.int64)
    keep = flat != 0
    return query[keep], flat[keep]


def _ranked_from_ids(relevant, top_ids, k):
    top = np.asarray(top_ids, dtype=np.int64)
    if top.ndim != 2:
        raise UsageError(f"top_ids must be (queries, K); got shape {top.shape}")
    n, k = top.shape[0], min(k, top.shape[1])
    top = top[:, :k]
    query, ids = _flatten_ids(relevant, n)
    base = int(max(top.max(initial=0), ids.max(initial=0))) + 1
    relevant_keys = np.unique(query * base + ids)  # de-duplicated (query, id) pairs
    n_relevant = np.bincount(relevant_keys // base, minlength=n)
    top_keys = np.arange(n)[:, None] * base + top
    gains = (np.isin(top_keys, relevant_keys) & (top != 0)).astype(np.float64)
    ideal = (np.arange(k)[None, :] < n_relevant[:, None]).astype(np.float64)
    return gains, n_relevant, ideal, k


def _ranked(y_true, y_score, k, top_ids, ties):
    k = _check_k(k)
    _check_ties(ties)
    if top_ids is not None:
        if y_score is not None:
            raise UsageError("give either y_score or top_ids, not both")
        return _ranked_from_ids(y_true, top_ids, k)
    if y_score is None:
        raise UsageError("give y_score (a score matrix) or top_ids")
    if y_true is None:
        return _ranked_from_sampled(y_score, k, ties)
    return _ranked_from_matrix(y_true, y_score, k, ties)


def _finish(values, n_relevant, per_query):
    values = np.where(n_relevant > 0, values, np.nan)
    if per_query:
        return values
    if not np.any(n_relevant > 0):
        return float("nan")
    return float(np.nanmean(values))


def _discounts(k):
    return 1.0 / np.log2(np.arange(2, k + 2, dtype=np.float64))


# -- ranking metrics ------------------------------------------------------------------
def recall_at_k(y_true, y_score=None, k: int = 10, *, top_ids=None,
                ties: str = "pessimistic", per_query: bool = False):
    """#relevant in the top-k / #relevant. See the module doc for the input forms."""
    gains, n_rel, _, _ = _ranked(y_true, y_score, k, top_ids, ties)
    hits = (gains > 0).sum(axis=1)
    return _finish(hits / np.maximum(n_rel, 1), n_rel, per_query)


def precision_at_k(y_true, y_score=None, k: int = 10, *, top_ids=None,
                   ties: str = "pessimistic", per_query: bool = False):
    """#relevant in the top-k / min(k, #candidates)."""
    gains, n_rel, _, k_eff = _ranked(y_true, y_score, k, top_ids, ties)
    return _finish((gains > 0).sum(axis=1) / k_eff, n_rel, per_query)


def f1_at_k(y_true, y_score=None, k: int = 10, *, top_ids=None, ties: str = "pessimistic",
            per_query: bool = False, average: str = "query"):
    """Harmonic mean of precision@k and recall@k: per query, then averaged
    (``average="query"``), or of the averaged precision and recall (``"global"``)."""
    if average not in ("query", "global"):
        raise UsageError(f"average={average!r}; expected 'query' or 'global'")
    gains, n_rel, _, k_eff = _ranked(y_true, y_score, k, top_ids, ties)
    hits = (gains > 0).sum(axis=1)
    p, r = hits / k_eff, hits / np.maximum(n_rel, 1)
    if average == "global" and not per_query:
        p, r = _finish(p, n_rel, False), _finish(r, n_rel, False)
        return float(2 * p * r / (p + r)) if p + r > 0 else 0.0
    f1 = np.divide(2 * p * r, p + r, out=np.zeros_like(p), where=(p + r) > 0)
    return _finish(f1, n_rel, per_query)


def ndcg_at_k(y_true, y_score=None, k: int = 10, *, top_ids=None,
              ties: str = "pessimistic", per_query: bool = False):
    """Normalised DCG with gain ``2^rel - 1`` and discount ``1 / log2(rank + 1)``."""
    gains, n_rel, ideal, k_eff = _ranked(y_true, y_score, k, top_ids, ties)
    disc = _discounts(k_eff)
    dcg = ((2.0 ** gains - 1.0) * disc).sum(axis=1)
    idcg = ((2.0 ** ideal - 1.0) * disc).sum(axis=1)
    return _finish(np.divide(dcg, idcg, out=np.zeros_like(dcg), where=idcg > 0), n_rel, per_query)


def mrr_at_k(y_true, y_score=None, k: int = 10, *, top_ids=None,
             ties: str = "pessimistic", per_query: bool = False):
    """1 / rank of the first relevant item within the top-k (0 if none)."""
    gains, n_rel, _, k_eff = _ranked(y_true, y_score, k, top_ids, ties)
    rr = ((gains > 0) / np.arange(1, k_eff + 1)[None, :]).max(axis=1, initial=0.0)
    return _finish(rr, n_rel, per_query)


def hit_rate_at_k(y_true, y_score=None, k: int = 10, *, top_ids=None,
                  ties: str = "pessimistic", per_query: bool = False):
    """1 if any relevant item is in the top-k. With ``y_true=None`` (one positive at
    column 0 of each row of ``y_score``, the sampled-negatives protocol) this is
    HR@k = 1[rank of the positive < k], ties counted against the positive."""
    gains, n_rel, _, _ = _ranked(y_true, y_score, k, top_ids, ties)
    return _finish((gains > 0).any(axis=1).astype(np.float64), n_rel, per_query)


def map_at_k(y_true, y_score=None, k: int = 10, *, top_ids=None,
             ties: str = "pessimistic", per_query: bool = False):
    """Average precision in the top-k: ``sum_i P@i rel_i / min(R, k)`` (binary relevance)."""
    gains, n_rel, _, k_eff = _ranked(y_true, y_score, k, top_ids, ties)
    hits = (gains > 0).astype(np.float64)
    precision = np.cumsum(hits, axis=1) / np.arange(1, k_eff + 1)[None, :]
    ap = (precision * hits).sum(axis=1) / np.maximum(np.minimum(n_rel, k_eff), 1)
    return _finish(ap, n_rel, per_query)


def ndcg_at_rank(rank, k: int = 10) -> np.ndarray:
    """Per-row NDCG@k of one relevant item at 0-based ``rank`` (e.g. from
    :func:`sampled_rank`): ``1 / log2(rank + 2)`` inside the top-k, else 0."""
    rank = np.asarray(rank, dtype=np.float64)
    return np.where(rank < _check_k(k), 1.0 / np.log2(rank + 2.0), 0.0)


def hit_at_rank(rank, k: int = 10) -> np.ndarray:
    """Per-row HR@k of one relevant item at 0-based ``rank``: 1 inside the top-k, else 0."""
    return (np.asarray(rank) < _check_k(k)).astype(np.float64)


__all__ = [
    "TIES",
    "auc",
    "f1_at_k",
    "hit_at_rank",
    "hit_rate_at_k",
    "logloss",
    "map_at_k",
    "mrr_at_k",
    "ndcg_at_rank",
    "ndcg_at_k",
    "precision_at_k",
    "recall_at_k",
    "sampled_rank",
    "tie_broken_order",
]
