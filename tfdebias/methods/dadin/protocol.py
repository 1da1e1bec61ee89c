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
