"""What the rows of ``tfdebias reproduce cp2rec`` are scored on: the unbiased test block
(AUC clustered by test user, log loss, AUC by item-exposure group), the biased valid split,
and the rows that train no network (popularity, logistic regression, the truth)."""

from __future__ import annotations

import numpy as np

from tfdebias.methods.cp2rec.data import PROPENSITY_CLIP, PROPENSITY_HAT, user_item
from tfdebias.models.base import split_sides

POPULARITY = "popularity (item CTR)"
LOGISTIC = "LR ({b} features)"
TRUTH = "truth (relevance)"
#: test-item groups by their exposure in the log (the paper's claim is about exposure bias)
GROUPS = ("exposed-light", "exposed-heavy")


def evaluation_design(splits: dict, schema) -> dict:
    """What every row of one data seed is scored on: labels, the test units (test
    users, numbered 0..n-1 the same way for every row) and the item groups
    ``exposed-light`` / ``exposed-heavy`` (test items whose logged shows in ``train``
    are at most / above the median over the test items)."""
    user, item = user_item(schema)
    test, train = splits["test"], splits["train"]
    _, units = np.unique(np.asarray(test[user]), return_inverse=True)
    n_items = int(max(np.max(train[item]), np.max(test[item]))) + 1
    shows = np.bincount(np.asarray(train[item], np.int64), minlength=n_items)
    test_items = np.asarray(test[item], np.int64)
    median = float(np.median(shows[np.unique(test_items)]))
    heavy = shows[test_items] > median
    return {"y": np.asarray(test[schema.label.name], np.float64), "units": units.astype(np.int64),
            "groups": {"exposed-light": ~heavy, "exposed-heavy": heavy}, "median_shows": median}


def score_predictions(design: dict, p) -> tuple[dict, dict]:
    """``(metrics, scores)`` of test predictions ``p``: ``test/auc`` (headline, rows
    clustered by test user), ``test/logloss`` and ``test/auc/<group>``."""
    from tfdebias.evaluation.evidence import ctr_scores

    scores = ctr_scores(design["y"], p, design["units"], {g: design["groups"][g] for g in GROUPS})
    return {k: v.point() for k, v in scores.items()}, scores


def valid_metrics(valid: dict, p, label: str) -> dict:
    from tfdebias.evaluation import metrics as m
    from tfdebias.evaluation.evidence import snips_logloss

    y = np.asarray(valid[label], np.float64)
    return {"valid/auc": float(m.auc(y, p)),
            "valid/snips_logloss": snips_logloss(y, p, np.clip(valid[PROPENSITY_HAT], PROPENSITY_CLIP, 1.0))}


def simple_rows(splits: dict, schema, backbone: str, design: dict) -> list[tuple[str, str, dict, dict]]:
    """``(label, role, metrics, scores)`` of the rows that train no network: the item's
    smoothed CTR in ``train`` (popularity), logistic regression on the backbone's own
    input features, and the true relevance (the truth ceiling, context only)."""
    from tfdebias.evaluation import baselines

    label = schema.label.name
    _, item = user_item(schema)
    train, valid, test = splits["train"], splits["valid"], splits["test"]
    if backbone == "ncf":
        users, items = split_sides(schema)
        fields = users + items
    else:  # DCN reads every input
        fields = [f.name for f in schema.inputs]
    n_items = int(max(np.max(c[item]) for c in (train, valid, test))) + 1
    ctr = baselines.item_ctr(train[item], train[label], n_items)
    lr = baselines.logistic_regression(train, schema, fields=fields)
    out = []
    for name, role, predict in (
            (POPULARITY, "simple", lambda c: ctr[np.asarray(c[item], np.int64)]),
            (LOGISTIC.format(b=backbone.upper()), "simple", lr.predict),
    ):
        metrics, scores = score_predictions(design, predict(test))
        metrics.update(valid_metrics(valid, predict(valid), label))
        out.append((name, role, metrics, scores))
    if "relevance" in test:
        metrics, scores = score_predictions(design, test["relevance"])
        metrics.update(valid_metrics(valid, valid["relevance"], label))
        out.append((TRUTH, "truth", metrics, scores))
    return out

