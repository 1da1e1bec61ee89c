"""Metrics against sklearn and brute-force numpy references, ties included."""

import math

import numpy as np
import pytest
from sklearn.metrics import log_loss, ndcg_score, roc_auc_score

from tfdebias.errors import UsageError
from tfdebias.evaluation import metrics as M

RANKING = {
    "recall": M.recall_at_k,
    "precision": M.precision_at_k,
    "f1": M.f1_at_k,
    "ndcg": M.ndcg_at_k,
    "mrr": M.mrr_at_k,
    "hit": M.hit_rate_at_k,
    "map": M.map_at_k,
}


# -- brute-force references: one row at a time, Python sorting -------------------------
def ref_row(rel, score, k, ties="pessimistic"):
    """All ranking metrics of one query, by sorting (score desc, then tie rule)."""
    n = len(rel)
    if ties == "pessimistic":
        key = lambda j: (-score[j], rel[j], j)  # noqa: E731
    elif ties == "optimistic":
        key = lambda j: (-score[j], -rel[j], j)  # noqa: E731
    else:
        key = lambda j: (-score[j], j)  # noqa: E731
    ranked = sorted(range(n), key=key)[:k]
    kk = min(k, n)
    n_rel = sum(1 for r in rel if r > 0)
    hits = [rel[j] > 0 for j in ranked]
    p, r = sum(hits) / kk, sum(hits) / n_rel
    dcg = sum((2 ** rel[j] - 1) / math.log2(i + 2) for i, j in enumerate(ranked))
    ideal = sorted(rel, reverse=True)[:k]
    idcg = sum((2 ** g - 1) / math.log2(i + 2) for i, g in enumerate(ideal))
    first = next((i for i, h in enumerate(hits) if h), None)
    return {
        "recall": r,
        "precision": p,
        "f1": 2 * p * r / (p + r) if p + r else 0.0,
        "ndcg": dcg / idcg,
        "mrr": 0.0 if first is None else 1.0 / (first + 1),
        "hit": float(any(hits)),
        "map": sum(sum(hits[:i + 1]) / (i + 1) for i, h in enumerate(hits) if h) / min(n_rel, kk),
    }


def ref_mean(name, rel, score, k, ties="pessimistic"):
    rows = [ref_row(r, s, k, ties)[name] for r, s in zip(rel, score) if np.any(r > 0)]
    return float(np.mean(rows))


def tied_data(seed, n_queries=40, n_items=12, graded=False):
    rng = np.random.default_rng(seed)
    score = rng.integers(0, 4, size=(n_queries, n_items)).astype(float)  # many ties
    rel = (rng.random((n_queries, n_items)) < 0.25).astype(float)
    if graded:
        rel *= rng.integers(1, 4, size=rel.shape)
    rel[0] = 0.0  # one query without relevant items: left out
    return rel, score


# -- classification ---------------------------------------------------------------------
@pytest.mark.parametrize("seed", [0, 1])
def test_auc_equals_sklearn_with_ties_and_weights(seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, 500)
    p = rng.integers(0, 10, 500) / 10.0  # heavy ties
    w = rng.random(500)
    assert M.auc(y, p) == pytest.approx(roc_auc_score(y, p), abs=1e-12)
    assert M.auc(y, p, sample_weight=w) == pytest.approx(
        roc_auc_score(y, p, sample_weight=w), abs=1e-12
    )
    q = rng.random(500)
    assert M.auc(y, q) == pytest.approx(roc_auc_score(y, q), abs=1e-12)


def test_auc_edge_cases():
    assert M.auc([0, 1], [0.3, 0.3]) == 0.5  # a tie is half a win
    assert M.auc([1, 0], [0.9, 0.1]) == 1.0
    assert math.isnan(M.auc([1, 1], [0.2, 0.3]))
    with pytest.raises(UsageError):
        M.auc([0, 2], [0.1, 0.2])


def test_logloss_equals_sklearn():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 300)
    p = rng.uniform(0.01, 0.99, 300)
    w = rng.random(300)
    assert M.logloss(y, p) == pytest.approx(log_loss(y, p), rel=1e-10)
    assert M.logloss(y, p, sample_weight=w) == pytest.approx(
        log_loss(y, p, sample_weight=w), rel=1e-10
    )
    # clipped: a confident mistake costs -log(eps), not infinity
    assert M.logloss([1], [0.0], eps=1e-7) == pytest.approx(-math.log(1e-7))
    # (B, 1) predictions are accepted
    assert M.logloss(y, p[:, None]) == pytest.approx(log_loss(y, p), rel=1e-10)


# -- ranking: score matrix --------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(RANKING))
@pytest.mark.parametrize("k", [1, 5, 20])
def test_ranking_with_ties_matches_brute_force(name, k):
    rel, score = tied_data(seed=k)
    expected = ref_mean(name, rel, score, k)
    # the mean and the per-query values agree with the reference
    assert RANKING[name](rel, score, k=k) == pytest.approx(expected, abs=1e-6)
    per_query = RANKING[name](rel, score, k=k, per_query=True)
    assert np.isnan(per_query[0])
    assert np.nanmean(per_query) == pytest.approx(expected, abs=1e-12)


KERAS_RS = {"recall": "RecallAtK", "precision": "PrecisionAtK", "ndcg": "NDCG",
            "mrr": "MeanReciprocalRank", "map": "MeanAveragePrecision"}


@pytest.mark.parametrize("name", sorted(KERAS_RS))
@pytest.mark.parametrize("k", [1, 5])
def test_ranking_matches_keras_rs_without_ties(name, k):
    """keras_rs' ranking metrics are the independent check of the one implementation
    (distinct scores: keras_rs breaks ties its own way)."""
    import keras_rs

    rng = np.random.default_rng(k)
    rel, _ = tied_data(seed=k)
    score = rng.random(rel.shape)
    keep = rel.any(axis=1)  # keras_rs counts a query without relevant items as 0
    metric = getattr(keras_rs.metrics, KERAS_RS[name])(k=k)
    metric.update_state(rel[keep].astype(np.float32), score[keep].astype(np.float32))
    ours = RANKING[name](rel, score, k=k, per_query=True)[keep]
    if name == "map":  # keras_rs divides by R, MAP@k (ours, DAMCAR's) by min(R, k)
        n_rel = (rel[keep] > 0).sum(axis=1)
        ours = ours * np.minimum(n_rel, k) / n_rel
    assert ours.mean() == pytest.approx(float(metric.result()), abs=1e-5)


def test_per_row_metrics_from_a_rank():
    score = np.array([[0.9, 0.1, 0.2], [0.1, 0.9, 0.5], [0.5, 0.5, 0.1]])
    rank = M.sampled_rank(score)
    assert rank.tolist() == [0, 2, 1]  # the tie counts against the positive
    np.testing.assert_allclose(M.ndcg_at_rank(rank, k=2), [1.0, 0.0, 1 / np.log2(3)])
    np.testing.assert_allclose(M.hit_at_rank(rank, k=2), [1.0, 0.0, 1.0])
    assert M.ndcg_at_rank(rank, k=2).mean() == pytest.approx(M.ndcg_at_k(None, score, k=2))
    assert M.hit_at_rank(rank, k=2).mean() == pytest.approx(M.hit_rate_at_k(None, score, k=2))


@pytest.mark.parametrize("ties", ["optimistic", "first"])
def test_other_tie_rules(ties):
    rel, score = tied_data(seed=7)
    for name in ("ndcg", "recall", "mrr"):
        expected = ref_mean(name, rel, score, 5, ties)
        assert RANKING[name](rel, score, k=5, ties=ties) == pytest.approx(expected, abs=1e-6)
    pessimistic = M.ndcg_at_k(rel, score, k=5)
    assert M.ndcg_at_k(rel, score, k=5, ties="optimistic") > pessimistic


def test_graded_ndcg_matches_reference_and_sklearn():
    rel, score = tied_data(seed=11, graded=True)
    assert M.ndcg_at_k(rel, score, k=5) == pytest.approx(ref_mean("ndcg", rel, score, 5), abs=1e-6)
    # without ties, sklearn's ndcg_score with gains 2^rel - 1 is the same number
    rng = np.random.default_rng(11)
    distinct = rng.random(score.shape)
    keep = rel.sum(axis=1) > 0
    expected = ndcg_score(2.0 ** rel[keep] - 1.0, distinct[keep], k=5)
    assert M.ndcg_at_k(rel, distinct, k=5) == pytest.approx(expected, abs=1e-6)
    assert np.nanmean(M.ndcg_at_k(rel, distinct, k=5, per_query=True)) == pytest.approx(
        expected, abs=1e-12
    )


def test_constant_scores_are_ranked_last_pessimistically():
    rel = np.array([[0, 0, 1, 0]], float)
    score = np.zeros((1, 4))
    assert M.hit_rate_at_k(rel, score, k=3) == 0.0
    assert M.hit_rate_at_k(rel, score, k=3, ties="optimistic") == 1.0
    assert M.mrr_at_k(rel, score, k=4) == pytest.approx(0.25)


# -- ranking: sampled candidates (positive at column 0) ---------------------------------------
@pytest.mark.parametrize("name", ["hit", "ndcg", "mrr", "recall"])
def test_sampled_candidates_pessimistic(name):
    rng = np.random.default_rng(5)
    score = rng.integers(0, 5, size=(60, 1 + 20)).astype(float)
    onehot = np.zeros_like(score)
    onehot[:, 0] = 1.0
    for k in (1, 10):
        expected = ref_mean(name, onehot, score, k)
        assert RANKING[name](None, score, k=k) == pytest.approx(expected, abs=1e-12)
        assert RANKING[name](onehot, score, k=k) == pytest.approx(expected, abs=1e-6)


def test_sampled_rank_counts_ties_against_the_positive():
    score = np.array([[0.5, 0.5, 0.1, 0.9], [0.7, 0.1, 0.2, 0.3]])
    np.testing.assert_array_equal(M.sampled_rank(score), [2, 0])
    np.testing.assert_array_equal(M.sampled_rank(score, ties="optimistic"), [1, 0])
    assert M.hit_rate_at_k(None, score, k=2) == 0.5
    assert M.hit_rate_at_k(None, score, k=3) == 1.0


# -- ranking: top-k ids vs relevant id sets -------------------------------------------------
def test_top_ids_form_equals_score_matrix_form():
    rng = np.random.default_rng(9)
    n_users, n_items = 30, 50
    score = rng.random((n_users, n_items))
    score[:, 0] = -np.inf  # id 0 is padding: never retrieved
    rel = (rng.random((n_users, n_items)) < 0.1).astype(float)
    rel[:, 0] = 0.0
    rel[1] = 0.0
    top_ids = np.argsort(-score, axis=1)[:, :10]
    relevant_sets = [set(np.flatnonzero(r).tolist()) for r in rel]
    padded = np.zeros((n_users, n_items), np.int64)
    for u, s in enumerate(relevant_sets):
        padded[u, : len(s)] = sorted(s)
    import tensorflow as tf

    ragged = tf.ragged.constant([sorted(s) for s in relevant_sets], dtype=tf.int64)
    for name, fn in RANKING.items():
        expected = fn(rel, score, k=10, per_query=True)
        for relevant in (relevant_sets, padded, ragged):
            got = fn(relevant, top_ids=top_ids, k=10, per_query=True)
            np.testing.assert_allclose(got, expected, atol=1e-12, err_msg=name)


def test_top_ids_duplicates_and_padding():
    # relevant ids given twice count once; padding 0 in top_ids is never a hit
    got = M.recall_at_k([[4, 4, 5]], top_ids=np.array([[4, 0, 0]]), k=3)
    assert got == pytest.approx(0.5)
    assert M.precision_at_k([[0, 4]], top_ids=np.array([[0, 4, 9]]), k=3) == pytest.approx(1 / 3)


def test_f1_global_average():
    rel, score = tied_data(seed=2)
    p = M.precision_at_k(rel, score, k=5)
    r = M.recall_at_k(rel, score, k=5)
    assert M.f1_at_k(rel, score, k=5, average="global") == pytest.approx(2 * p * r / (p + r))


def test_bad_arguments():
    with pytest.raises(UsageError):
        M.recall_at_k(np.ones((2, 3)), np.ones((2, 4)))
    with pytest.raises(UsageError):
        M.ndcg_at_k(np.ones((2, 3)), np.ones((2, 3)), k=0)
    with pytest.raises(UsageError):
        M.mrr_at_k(np.ones((2, 3)), np.ones((2, 3)), ties="random")
    with pytest.raises(UsageError):
        M.hit_rate_at_k([{1}], top_ids=np.array([[1], [2]]))
