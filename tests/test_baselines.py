"""Simple baselines: item-kNN against a brute-force reference, LR and popularity."""

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from tfdebias.errors import UsageError
from tfdebias.evaluation import baselines
from tfdebias.schema import Feature, Schema


def test_item_knn_matches_brute_force_cosine():
    rng = np.random.default_rng(0)
    users = rng.integers(0, 40, 400)
    items = rng.integers(1, 25, 400)
    knn = baselines.ItemKNN(users, items, n_items=25, k=5, shrink=2.0)
    x = np.zeros((40, 25))
    x[users, items] = 1.0
    co = x.T @ x
    np.fill_diagonal(co, 0)
    norm = np.sqrt(x.sum(0))
    sim = co / (norm[:, None] * norm[None, :] + 2.0)
    for i in range(25):  # keep each item's 5 strongest neighbours (ties broken alike: none here)
        drop = np.argsort(-sim[i], kind="stable")[5:]
        sim[i, drop] = 0.0
    hist = np.array([[0, 0, 3], [5, 7, 9]])
    want = np.stack([sim[3], sim[5] + sim[7] + sim[9]])
    np.testing.assert_allclose(knn.score(hist), want, atol=1e-12)
    np.testing.assert_allclose(knn.score_pairs(hist, [4, 11]), want[[0, 1], [4, 11]], atol=1e-12)


def test_popularity_and_item_ctr():
    items = np.array([1, 1, 2, 3, 3, 3])
    clicks = np.array([1, 0, 1, 0, 0, 0])
    assert baselines.popularity(items, 4).tolist() == [0, 2, 1, 3]
    ctr = baselines.item_ctr(items, clicks, 4, prior_strength=0.0 + 1e-12)
    assert ctr[1] == pytest.approx(0.5) and ctr[2] == pytest.approx(1.0) and ctr[3] == pytest.approx(0.0)
    with pytest.raises(UsageError, match="item ids"):
        baselines.popularity([5], 4)


def test_logistic_regression_reads_only_model_inputs():
    rng = np.random.default_rng(1)
    n = 3000
    schema = Schema([Feature("user_id", "categorical", vocab_size=50), Feature("x", "dense"),
                     Feature("click", "label"), Feature("relevance", "truth")])
    user = rng.integers(1, 50, n)
    x = rng.standard_normal(n).astype(np.float32)
    logit = 1.5 * x + (user % 2) - 0.5
    click = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.float32)
    cols = {"user_id": user, "x": x, "click": click, "relevance": click}  # the truth leaks the label
    lr = baselines.logistic_regression(cols, schema)
    assert lr.fields == ["user_id", "x"]
    auc = roc_auc_score(click, lr.predict(cols))
    truth_auc = roc_auc_score(click, logit)
    assert truth_auc - 0.03 < auc < 0.99  # learns the signal, not the leaked truth
