"""What the rows of ``tfdebias reproduce cp2rec`` are scored on: the unbiased test block
(AUC clustered by test user, log loss, AUC by item-exposure group), the biased valid split,
and the rows that train no network (popularity, logistic regression, the truth); plus two
measurements outside the table: ``headroom_check`` (the simulator's numpy checks) and
``linear_probe`` (what z and z' say about a latent, e.g. the promotion or the slot)."""

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



def headroom_check(config: str = "proxy_bias", data_seeds=(0, 1, 2)) -> dict:
    """The numpy checks (nothing trained with TensorFlow) behind the ``confounded_ctr``
    docstring: unbiased test AUC of simple estimators fit on the biased ``train`` vs on
    ``train_unbiased`` (same size, uniform logging policy), per data seed.

    Rows: ``popularity`` (item CTR), ``LR(NCF)`` (logistic regression on NCF's
    user/item features, the floor/skyline analogue), ``LR(all)`` (every input, proxies
    included), ``popularity / kappa`` (clicks re-weighted by the true examination
    1/kappa(position), Rel-style: the examination part of the bias removed),
    ``LR(NCF) IPS p`` (weights 1/propensity, the true exposure probability), ``LR(all) IPS
    p`` and ``LR(all) IPS p kappa`` (every input, weights 1/propensity and
    1/(propensity x examination): can re-weighting the biased log give a proxy-reading
    model what the uniform log gives it?), ``truth``.
    Returns ``{row: [auc per data seed]}`` and prints mean and spread.
    """
    from tfdebias.datasets.synthetic import confounded_ctr as sim
    from tfdebias.evaluation import baselines
    from tfdebias.evaluation import metrics as m

    out: dict[str, list] = {}
    add = lambda k, v: out.setdefault(k, []).append(float(v))  # noqa: E731
    for seed in data_seeds:
        params = {**sim.CONFIGS[config], "seed": int(seed)}
        splits, schema = sim.simulate(params), sim.schema(params)
        test, train, uni = splits["test"], splits["train"], splits["train_unbiased"]
        y = np.asarray(test["click"], np.float64)
        n_items = int(schema["item_id"].vocab_size)
        users, items = split_sides(schema)
        for tag, cols in (("biased", train), ("uniform", uni)):
            ctr = baselines.item_ctr(cols["item_id"], cols["click"], n_items)
            add(f"popularity {tag}", m.auc(y, ctr[test["item_id"]]))
            lr = baselines.logistic_regression(cols, schema, fields=users + items)
            add(f"LR(NCF) {tag}", m.auc(y, lr.predict(test)))
            add(f"LR(all) {tag}", m.auc(y, baselines.logistic_regression(cols, schema).predict(test)))
        if "examination" in train:
            kappa = np.asarray(train["examination"], np.float64)
            ctr = baselines.item_ctr(train["item_id"], np.asarray(train["click"], np.float64) / kappa, n_items)
            add("popularity / kappa biased", m.auc(y, ctr[test["item_id"]]))
        w = 1.0 / np.clip(np.asarray(train["propensity"], np.float64), PROPENSITY_CLIP, 1.0)
        lr = baselines.logistic_regression(train, schema, fields=users + items, sample_weight=w / w.mean())
        add("LR(NCF) IPS p biased", m.auc(y, lr.predict(test)))
        # the proxy-reading analogue: every input, re-weighted by the true exposure
        # probability, and by exposure x examination (the oracle rows' propensity)
        w_all = {"IPS p": w}
        if "examination" in train:
            w_all["IPS p kappa"] = w / np.asarray(train["examination"], np.float64)
        for tag, wt in w_all.items():
            lr = baselines.logistic_regression(train, schema, sample_weight=wt / wt.mean())
            add(f"LR(all) {tag} biased", m.auc(y, lr.predict(test)))
        add("truth", m.auc(y, test["relevance"]))
    for k, v in out.items():
        print(f"{k:28s} {np.mean(v):.4f} (min {np.min(v):.4f}, max {np.max(v):.4f})")
    return out


def linear_probe(model, columns: dict, targets: dict, *, batch_size: int = 16384, ridge: float = 1e-3,
                 test_fraction: float = 0.5, seed: int = 0) -> dict:
    """How well a linear read-out recovers each target (e.g. the simulator's ``promotion``
    w_i, the row's ``position``) from a CP2Rec model's z and from its purified z':
    held-out R^2 of ridge regression on the flattened embeddings, ``{"z/<t>": r2,
    "z'/<t>": r2}``. Rows are split at random into fit / held-out halves."""
    import keras

    from tfdebias.layers.feature_embedding import as_schema

    schema = as_schema(model.schema)
    names = [f.name for f in schema.inputs]
    n = len(next(iter(targets.values())))
    zs, zps = [], []
    for start in range(0, n, batch_size):
        feats = {k: columns[k][start:start + batch_size] for k in names}
        out = model.heads({k: keras.ops.convert_to_tensor(v) for k, v in feats.items()}, training=False)
        zs.append(np.asarray(out["z"]).reshape(len(feats[names[0]]), -1))
        zps.append(np.asarray(out["z_purified"]).reshape(len(feats[names[0]]), -1))
    rng = np.random.default_rng(seed)
    held = rng.random(n) < test_fraction
    res = {}
    for tag, x in (("z", np.concatenate(zs)), ("z'", np.concatenate(zps))):
        x = np.hstack([x, np.ones((n, 1))])
        gram = x[~held].T @ x[~held] + ridge * len(x) * np.eye(x.shape[1])
        for t, y in targets.items():
            y = np.asarray(y, np.float64)
            beta = np.linalg.solve(gram, x[~held].T @ y[~held])
            resid = y[held] - x[held] @ beta
            res[f"{tag}/{t}"] = float(1.0 - resid.var() / max(y[held].var(), 1e-12))
    return res
