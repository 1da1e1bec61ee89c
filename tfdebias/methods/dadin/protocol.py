"""DADIN's evaluation: the ``cross_domain`` protocol (Sec. 4.2: AUC and log loss on the
target-domain ``valid``/``test`` splits, plus the cold-start users' rows) and
:func:`evidence_scores`, the scores of the evidence table."""

from __future__ import annotations


def _cross_domain_protocol(model, splits: dict, schema, config=None, *, batch_size: int = 8192) -> dict:
    """AUC and log loss on the target-domain ``valid``/``test`` splits (Sec. 4.2), plus
    ``test/auc_cold`` / ``test/logloss_cold`` on the rows of cold-start users (the
    simulator's ``cold_start`` truth: no target row in train)."""
    import numpy as np

    from tfdebias.evaluation import metrics as m
    from tfdebias.evaluation.protocols import ctr_protocol
    from tfdebias.models import predict

    out = ctr_protocol(model, splits, schema, config, batch_size=batch_size)
    test = splits.get("test")
    label = schema.label.name
    if test is not None and "cold_start" in test:
        cold = np.asarray(test["cold_start"]) > 0.5
        y = np.asarray(test[label], np.float64)[cold]
        if cold.any() and 0 < y.mean() < 1:
            p = predict(model, {k: v[cold] for k, v in test.items()}, batch_size=batch_size)
            out["test/auc_cold"] = float(m.auc(y, p))
            out["test/logloss_cold"] = float(m.logloss(y, p))
    return out


def _register_protocol():
    from tfdebias.evaluation.protocols import PROTOCOLS, register as register_protocol

    if "cross_domain" not in PROTOCOLS:
        register_protocol("cross_domain")(_cross_domain_protocol)


_register_protocol()


def evidence_scores(test: dict, prob, label: str = "click") -> dict:
    """Evidence scores of predicted click probabilities on the target-domain test split:
    ``test/auc`` and ``test/logloss`` over all rows, and ``test/auc/cold`` /
    ``test/auc/warm`` over the rows of cold-start (no target row in train) and warm
    users. Units = test user ids, so a bootstrap replicate draws whole users."""
    import numpy as np

    from tfdebias.evaluation.evidence import ctr_scores

    y = np.asarray(test[label], np.float64).reshape(-1)
    groups = {}
    if "cold_start" in test:
        cold = np.asarray(test["cold_start"]) > 0.5
        groups = {g: m for g, m in (("cold", cold), ("warm", ~cold)) if m.any() and 0 < y[m].mean() < 1}
    return ctr_scores(y, prob, test["user_id"], groups)


def representations(model, columns: dict, *, batch_size: int = 4096) -> dict:
    """``h_da``, ``h`` (n, width) and the global domain logit ``d_global`` (n,; absent
    where the model has no global classifier) of DADIN ``model`` on ``columns``, in
    batches, without dropout."""
    import numpy as np

    n = len(next(iter(columns.values())))
    parts: dict = {"h_da": [], "h": [], "d_global": []}
    for start in range(0, n, batch_size):  # batches, not rows
        out = model.forward_all({k: v[start:start + batch_size] for k, v in columns.items()},
                                training=False)
        for k in parts:
            if out[k] is not None:
                parts[k].append(np.asarray(out[k], np.float64))
    return {k: np.concatenate(v) for k, v in parts.items() if v}


def domain_probe_auc(x, domain, *, seed: int = 0, l2: float = 1e-3, steps: int = 25) -> float:
    """Linear separability of the domains in a representation: the held-out AUC (fit on
    a random half, scored on the other) of an L2-regularised logistic regression of
    ``domain`` (0/1) on ``x`` (n, k), fitted by Newton steps on standardised columns.
    0.5 = no linear domain information, 1 = the domain can be read off ``x``."""
    import numpy as np

    from tfdebias.evaluation.metrics import auc

    x = np.asarray(x, np.float64).reshape(len(domain), -1)
    dom = np.asarray(domain, np.float64).reshape(-1)
    fit = np.random.default_rng([seed, 0x70726F6265]).random(len(dom)) < 0.5  # own stream
    if len(np.unique(dom[fit])) < 2 or len(np.unique(dom[~fit])) < 2:
        raise ValueError("domain_probe_auc needs both domains in both halves")
    mu, sd = x[fit].mean(0), x[fit].std(0)
    xs = np.c_[np.ones(len(x)), (x - mu) / np.where(sd > 1e-9, sd, 1.0)]
    beta = np.zeros(xs.shape[1])
    ridge = l2 * np.eye(len(beta))
    for _ in range(steps):  # Newton steps, each one vectorised
        prob = 1.0 / (1.0 + np.exp(-np.clip(xs[fit] @ beta, -30, 30)))
        grad = xs[fit].T @ (prob - dom[fit]) + ridge @ beta
        hess = (xs[fit] * (prob * (1 - prob))[:, None]).T @ xs[fit] + ridge
        beta -= np.linalg.solve(hess, grad)
    return float(auc(dom[~fit], xs[~fit] @ beta))


def domain_diagnostics(model, train: dict, schema, *, n: int = 4000, seed: int = 0) -> dict:
    """How much domain information DADIN ``model`` keeps, on ``n`` random source and ``n``
    target rows of ``train``: ``probe/h_da`` and ``probe/h`` (:func:`domain_probe_auc` of
    the domain-agnostic part and of the predictor's input), and ``loss/domain``, the
    global domain classifier's cross-entropy (``ln 2`` when it cannot tell the domains
    apart; only where the model trains one, ``lambda_global > 0``)."""
    import numpy as np

    dom_name = schema.by_role("domain")[0].name
    dom = np.asarray(train[dom_name])
    rng = np.random.default_rng(seed)
    idx = np.concatenate([rng.choice(np.flatnonzero(dom == d), min(n, int((dom == d).sum())),
                                     replace=False) for d in (0, 1)])
    cols = {k: v[idx] for k, v in train.items() if k != schema.label.name}
    rep = representations(model, cols)
    d = dom[idx].astype(np.float64)
    out = {"probe/h_da": domain_probe_auc(rep["h_da"], d, seed=seed),
           "probe/h": domain_probe_auc(rep["h"], d, seed=seed)}
    if "d_global" in rep and model.loss_args["lambda_global"] > 0:
        z = rep["d_global"]
        out["loss/domain"] = float(np.mean(np.maximum(z, 0) - z * d + np.log1p(np.exp(-np.abs(z)))))
    return out
