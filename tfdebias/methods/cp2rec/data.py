"""The propensity columns CP2Rec's unbiased losses read, computed from the splits (numpy)."""

from __future__ import annotations

import numpy as np

from tfdebias.errors import UsageError
from tfdebias.layers.feature_embedding import as_schema
from tfdebias.models.base import split_sides

#: the column :func:`add_propensity` writes (estimated P(logged) of the row)
PROPENSITY_HAT = "propensity_hat"
#: the column Rel reads: Rel-MF's own item-popularity estimate (see rel_propensity)
REL_PROPENSITY_HAT = "rel_propensity_hat"
#: lower clip of propensities (CP2Rec's default ``propensity_clip``; IPS weights <= 50),
#: also used for the self-normalised IPS validation loss of ``tfdebias reproduce cp2rec``
PROPENSITY_CLIP = 0.02


def user_item(schema):
    """The first user-side and item-side feature names of ``schema``."""
    users, items = split_sides(schema)
    return users[0], items[0]


def estimate_propensity(train_columns, columns, *, user="user_id", item="item_id"):
    """``p_hat_ui = n_u n_i / N``: the rank-one (independence) logging-policy model
    fit on the logged training rows; calibrated (it sums to N over all pairs).

    Item popularity captures the item-level exposure (KuaiRec's popularity bias, the
    simulator's confounder q_i) and the user count the user's activity; what no
    feature reveals (the pair-level interest) it cannot. Vectorised (``bincount``).
    """
    tu = np.asarray(train_columns[user], np.int64)
    ti = np.asarray(train_columns[item], np.int64)
    u = np.asarray(columns[user], np.int64)
    i = np.asarray(columns[item], np.int64)
    cu = np.bincount(tu, minlength=int(max(tu.max(initial=0), u.max(initial=0))) + 1)
    ci = np.bincount(ti, minlength=int(max(ti.max(initial=0), i.max(initial=0))) + 1)
    p = cu[u].astype(np.float64) * ci[i] / max(len(tu), 1)
    return np.minimum(p, 1.0).astype(np.float32)


def rel_propensity(train_columns, columns, *, item="item_id", label="click", power=0.5):
    """Rel-MF's propensity (Saito et al. 2020, Sec. 5): relative item popularity among
    the positives, ``theta_i = (clicks_i / max_j clicks_j) ** 0.5``."""
    ti = np.asarray(train_columns[item], np.int64)
    i = np.asarray(columns[item], np.int64)
    clicks = np.bincount(ti, weights=np.asarray(train_columns[label], np.float64),
                         minlength=int(max(ti.max(initial=0), i.max(initial=0))) + 1)
    return ((clicks[i] / max(clicks.max(), 1.0)) ** power).astype(np.float32)


def add_propensity(splits: dict, schema, train_split: str = "train") -> dict:
    """Every split with a ``propensity_hat`` column (:func:`estimate_propensity` fit on
    ``train_split``) and Rel's ``rel_propensity_hat`` (:func:`rel_propensity`); returns
    new dicts, the arrays of ``splits`` are shared."""
    if train_split not in splits:
        raise UsageError(f"no split {train_split!r} to estimate propensities from; splits are {sorted(splits)}")
    schema = as_schema(schema)
    user, item = user_item(schema)
    train = splits[train_split]
    out = {}
    for name, cols in splits.items():
        cols = dict(cols)
        if user in cols and item in cols:
            cols[PROPENSITY_HAT] = estimate_propensity(train, cols, user=user, item=item)
            cols[REL_PROPENSITY_HAT] = rel_propensity(train, cols, item=item, label=schema.label.name)
        out[name] = cols
    return out
