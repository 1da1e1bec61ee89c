"""Evaluation protocols: a trained model and data in, a flat dict of named metrics out.

A protocol is a function ``protocol(model, splits, schema, config) -> {name: float}``
registered under a name; a run's ``config.protocol`` picks it. Metric names are
``"<split>/<metric>"`` (``"test/auc"``), so one results table can hold any protocol.
Methods register their own protocols (cascade retrieval, sampled-negative ranking).
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from tfdebias import plugins
from tfdebias.errors import UsageError

PROTOCOLS: dict[str, Callable] = {}


def register(name: str):
    def deco(fn):
        PROTOCOLS[name] = fn
        return fn

    return deco


def get(name: str) -> Callable:
    if name not in PROTOCOLS:
        plugins.load()  # method packages register their protocols
    if name not in PROTOCOLS:
        raise UsageError(f"unknown evaluation protocol {name!r}; expected one of {sorted(PROTOCOLS)}")
    return PROTOCOLS[name]


def scored_splits(splits: dict, schema, exclude=("train",)) -> list[str]:
    """Splits that carry the label and are not training data, in a stable order."""
    order = {"valid": 0, "test": 1}
    label = schema.label.name
    names = [s for s in splits if s not in exclude and label in splits[s]
             and len(np.unique(splits[s][label])) > 1]
    return sorted(names, key=lambda s: (order.get(s, 2), s))


@register("ctr")
def ctr_protocol(model, splits: dict, schema, config=None, *, batch_size: int = 8192) -> dict:
    """AUC and log loss of the model's click probability on every labelled split.

    On the simulators ``valid`` is biased (logged exposures) and ``test`` is unbiased,
    so the gap between them is the bias the method removes.
    """
    from tfdebias.evaluation import metrics as m
    from tfdebias.models import predict

    label = schema.label.name
    out: dict[str, float] = {}
    for split in scored_splits(splits, schema):
        cols = splits[split]
        p = predict(model, cols, batch_size=batch_size)
        y = np.asarray(cols[label], np.float64)
        out[f"{split}/auc"] = float(m.auc(y, p))
        out[f"{split}/logloss"] = float(m.logloss(y, p))
    return out
