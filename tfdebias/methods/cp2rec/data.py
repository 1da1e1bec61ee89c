"""The propensity columns CP2Rec's unbiased losses read, computed from the splits (numpy)."""

from __future__ import annotations

import numpy as np

from tfdebias.errors import UsageError
from tfdebias.layers.feature_embedding import as_schema
from tfdebias.models.base import split_sides

#: the column :func:`add_propensity` writes: the estimated P(exposed and examined) of the
#: row, ``p_hat = n_u n_i / N x kappa_hat(position)`` (``propensity="estimated"``)
PROPENSITY_HAT = "propensity_hat"
#: the paper's independence estimate ``n_u n_i / N`` alone (``propensity="independence"``)
INDEPENDENCE_HAT = "propensity_hat_independence"
#: the true counterpart of ``propensity_hat``: the simulator's exposure probability times
#: its true examination probability where it ships one (``propensity="oracle"``)
PROPENSITY_ORACLE = "propensity_oracle"
#: the truth column of a simulator's examination probability kappa(position)
EXAMINATION = "examination"
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


def estimate_examination(train_columns, *, item="item_id", position="position", label="click",
                         iters: int = 30) -> np.ndarray:
    """``kappa_hat[k]``, the examination curve of display position ``k`` (index = position
    id, ``kappa_hat[1] = 1``), fit on the logged rows with the position-based click model
    ``P(click) = kappa_k * rho_i`` (Richardson et al. 2007; Chuklin et al. 2015, PBM).

    Alternating closed-form updates (iterative proportional fitting: the fixed point of
    the maximum-likelihood equations when clicks are treated as Poisson counts with rate
    ``kappa_k rho_i``): ``kappa_k = clicks_k / sum_{rows at k} rho_i``, ``rho_i =
    clicks_i / sum_{rows of i} kappa_k``, each a ``bincount``; the loop runs over the
    ``iters`` updates, never over rows. Items identify kappa through the spread of their
    own positions in the log; positions with no logged clicks get the curve's minimum.
    """
    it = np.asarray(train_columns[item], np.int64)
    pos = np.asarray(train_columns[position], np.int64)
    y = np.asarray(train_columns[label], np.float64)
    n_pos, n_it = int(pos.max(initial=1)) + 1, int(it.max(initial=0)) + 1
    clicks_k = np.bincount(pos, weights=y, minlength=n_pos)
    clicks_i = np.bincount(it, weights=y, minlength=n_it)
    kappa = np.ones(n_pos)
    for _ in range(iters):
        rho = clicks_i / np.maximum(np.bincount(it, weights=kappa[pos], minlength=n_it), 1e-12)
        kappa = clicks_k / np.maximum(np.bincount(pos, weights=rho[it], minlength=n_pos), 1e-12)
        top = kappa[1] if n_pos > 1 and kappa[1] > 0 else max(kappa.max(), 1e-12)
        kappa = kappa / top
    seen = kappa > 0
    kappa[~seen] = kappa[seen].min() if seen.any() else 1.0
    return np.minimum(kappa, 1.0)


def rel_propensity(train_columns, columns, *, item="item_id", label="click", power=0.5):
    """Rel-MF's propensity (Saito et al. 2020, Sec. 5): relative item popularity among
    the positives, ``theta_i = (clicks_i / max_j clicks_j) ** 0.5``."""
    ti = np.asarray(train_columns[item], np.int64)
    i = np.asarray(columns[item], np.int64)
    clicks = np.bincount(ti, weights=np.asarray(train_columns[label], np.float64),
                         minlength=int(max(ti.max(initial=0), i.max(initial=0))) + 1)
    return ((clicks[i] / max(clicks.max(), 1.0)) ** power).astype(np.float32)


def add_propensity(splits: dict, schema, train_split: str = "train") -> dict:
    """Every split with the propensity columns CP2Rec's unbiased losses read, all fit on
    ``train_split``; returns new dicts, the arrays of ``splits`` are shared:

    * ``propensity_hat_independence``: :func:`estimate_propensity`, ``n_u n_i / N``
      (the paper's estimate; an exposure model of the user and item alone);
    * ``propensity_hat``: that exposure estimate times the examination curve
      ``kappa_hat(position)`` (:func:`estimate_examination`) where the schema has a
      ``position`` proxy, so the weight sees exposure *and* position; else equal to the
      independence estimate;
    * ``propensity_oracle`` (where the split has the schema's exposure column): the true
      exposure probability, times the true ``examination`` column where there is one;
    * ``rel_propensity_hat``: Rel-MF's item-popularity estimate (:func:`rel_propensity`).
    """
    if train_split not in splits:
        raise UsageError(f"no split {train_split!r} to estimate propensities from; splits are {sorted(splits)}")
    schema = as_schema(schema)
    user, item = user_item(schema)
    train = splits[train_split]
    position = "position" if "position" in [f.name for f in schema.proxies] and "position" in train else None
    kappa = estimate_examination(train, item=item, label=schema.label.name) if position else None
    exposure = schema.exposure.name if schema.exposure is not None else None
    out = {}
    for name, cols in splits.items():
        cols = dict(cols)
        if user in cols and item in cols:
            indep = estimate_propensity(train, cols, user=user, item=item)
            cols[INDEPENDENCE_HAT] = indep
            if kappa is not None and position in cols:
                pos = np.clip(np.asarray(cols[position], np.int64), 0, len(kappa) - 1)
                cols[PROPENSITY_HAT] = (indep * kappa[pos]).astype(np.float32)
            else:
                cols[PROPENSITY_HAT] = indep
            cols[REL_PROPENSITY_HAT] = rel_propensity(train, cols, item=item, label=schema.label.name)
        if exposure and exposure in cols:
            oracle = np.asarray(cols[exposure], np.float64)
            if EXAMINATION in cols:
                oracle = oracle * np.asarray(cols[EXAMINATION], np.float64)
            cols[PROPENSITY_ORACLE] = oracle.astype(np.float32)
        out[name] = cols
    return out
