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



def _residualise(fit: dict, cols: dict, names, on) -> dict:
    """``cols`` with each of ``names`` minus its least-squares fit (with an intercept) on
    the columns ``on``, the fit made on the rows ``fit`` (the biased ``train``): the
    proxies' part along ``on`` removed, the same linear map on every split."""
    design = lambda c: np.column_stack(  # noqa: E731
        [np.ones(len(c[on[0]]))] + [np.asarray(c[o], np.float64) for o in on])
    x_fit, x = design(fit), design(cols)
    out = dict(cols)
    for n in names:
        beta = np.linalg.lstsq(x_fit, np.asarray(fit[n], np.float64), rcond=None)[0]
        out[n] = np.asarray(cols[n], np.float64) - x @ beta
    return out


def _purifier_rows(train: dict, test: dict, schema, add, y) -> None:
    """The ``proxy_shift`` rows of :func:`headroom_check`: LR on every input, fit on the
    biased ``train``, with the proxies' promotion component removed, by the truth
    (oracle) or by the span of the proxy that encodes the policy alone (non-oracle)."""
    from tfdebias.datasets.synthetic import confounded_ctr as sim
    from tfdebias.evaluation import baselines
    from tfdebias.evaluation import metrics as m
    from tfdebias.schema import Feature, Schema

    stats = [f for f in sim.PROXY_SHIFT_STATS if f in train]
    inputs = [f.name for f in schema.inputs]
    # the truth w_i as an extra dense input (oracle), held at its train mean at test
    w_schema = Schema(list(schema) + [Feature("promotion_input", "dense")])

    def with_w(cols, held=None):
        w = np.asarray(cols["promotion"], np.float64)
        return {**cols, "promotion_input": w if held is None else np.full(len(w), held)}

    w_mean = float(np.mean(train["promotion"]))
    tr, te = (_residualise(train, c, stats, ["promotion"]) for c in (train, test))
    add("LR(all) oracle: proxies resid. on w", m.auc(y, baselines.logistic_regression(tr, schema).predict(te)))
    lr = baselines.logistic_regression(with_w(tr), w_schema, fields=inputs + ["promotion_input"])
    add("LR(all) oracle: resid. + w held", m.auc(y, lr.predict(with_w(te, w_mean))))
    for tag, span in (("policy span", list(sim.PROXY_SHIFT_POLICY_STATS)),
                      ("wide span", ["log_show_cnt", "mean_position"])):
        others = [f for f in stats if f not in span]
        tr, te = (_residualise(train, c, others, span) for c in (train, test))
        lr = baselines.logistic_regression(tr, schema, fields=[f for f in inputs if f not in span])
        add(f"LR(all) {tag} dropped", m.auc(y, lr.predict(te)))
        lr = baselines.logistic_regression(tr, schema)
        held = {**te, **{f: np.full(len(y), float(np.mean(tr[f]))) for f in span}}
        add(f"LR(all) {tag} held", m.auc(y, lr.predict(held)))


def headroom_check(config: str = "proxy_bias", data_seeds=(0, 1, 2), purifiers: bool | None = None,
                   overrides: dict | None = None) -> dict:
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

    ``purifiers`` (default: on for the ``proxy_shift`` scenario) adds the purifier rows,
    each LR on every input fit on the biased ``train``: ``oracle: proxies resid. on w``
    (every item statistic minus its least-squares fit on the true promotion w_i, w not
    read), ``oracle: resid. + w held`` (those residuals plus w_i itself read in training,
    w held at its train mean at test: the promotion's effect goes to one slope that is
    then removed), ``policy span dropped`` / ``held`` (the same two with the span of
    ``PROXY_SHIFT_POLICY_STATS``, the proxy that encodes the policy alone, in place of the
    truth: a purifier a method could run), ``wide span dropped`` / ``held`` (the span of
    ``log_show_cnt`` and ``mean_position``: a span that also holds appeal), and
    ``coverage`` (not an AUC: mean logged ``train`` shows of the test items over the
    mean of all items). ``overrides`` updates the config's parameters (e.g.
    ``{"badge_lift": 0.0}``: ``proxy_shift`` without its badge).
    Returns ``{row: [auc per data seed]}`` and prints mean and spread.
    """
    from tfdebias.datasets.synthetic import confounded_ctr as sim
    from tfdebias.evaluation import baselines
    from tfdebias.evaluation import metrics as m

    out: dict[str, list] = {}
    add = lambda k, v: out.setdefault(k, []).append(float(v))  # noqa: E731
    if purifiers is None:
        purifiers = sim.CONFIGS[config].get("scenario") == "proxy_shift"
    for seed in data_seeds:
        params = {**sim.CONFIGS[config], **(overrides or {}), "seed": int(seed)}
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
        if purifiers:
            _purifier_rows(train, test, schema, add, y)
            shows = np.bincount(np.asarray(train["item_id"], np.int64), minlength=n_items)
            add("coverage", shows[np.unique(test["item_id"])].mean() / shows[1:].mean())
        add("truth", m.auc(y, test["relevance"]))
    for k, v in out.items():
        print(f"{k:36s} {np.mean(v):.4f} (min {np.min(v):.4f}, max {np.max(v):.4f})")
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
