"""DAMCAR's data preparation from the splits (numpy): scaled features and the item table
(:class:`CascadeData`), the target domain ``S_sam`` (:func:`target_domain`, Eq. (1)-(3)),
the hybrid training set (:func:`hybrid_columns`) and batches."""

from __future__ import annotations

import dataclasses

import numpy as np

from tfdebias.errors import DataError
from tfdebias.methods.damcar.losses import DOMAIN, ITEM, RANK, TARGET, USER, WEIGHT


# =============================================================================================
# Data: item table, scaling, pair features
# =============================================================================================


@dataclasses.dataclass
class CascadeData:
    """Splits with dense scalars scaled (:func:`prepare_cascade`), the item table and the
    feature sides. ``scaling[name] = (log, lo, hi)``: what was applied to a dense input
    (``log1p`` first when ``log``, then ``(v - lo) / (hi - lo)``), so a client can
    reproduce it."""

    splits: dict
    schema: object  # the model schema: user + item features + label
    label: str
    user_names: list
    item_names: list
    items: dict  # item feature name -> (n_item_ids, ...) array indexed by item id
    present: np.ndarray  # item ids that occur in the data
    n_users: int
    n_items: int
    weight_column: str | None
    scaling: dict = dataclasses.field(default_factory=dict)

    def pairs(self, users, items) -> dict:
        """Model features of (user, item) pairs (ids as in the data, 1-based)."""
        users = np.asarray(users, np.int64)
        items = np.asarray(items, np.int64)
        out = {n: self.items[n][items] for n in self.item_names}
        out[USER] = users
        return out

    def corpus(self) -> dict:
        return {n: self.items[n][self.present] for n in self.item_names}


def item_side_names(columns: dict, schema, user_names) -> list[str]:
    """Model inputs that are a function of the item (constant within an item id)."""
    ids = np.asarray(columns[ITEM]).reshape(-1)
    order = np.argsort(ids, kind="stable")
    sid = ids[order]
    same = sid[1:] == sid[:-1]
    out = []
    for f in schema.inputs:
        if f.name in user_names:
            continue
        if f.name == ITEM:
            out.append(f.name)
            continue
        v = np.asarray(columns[f.name]).reshape(len(ids), -1)[order]
        if np.all(v[1:][same] == v[:-1][same]):
            out.append(f.name)
    return out


def prepare_cascade(splits: dict, schema, log_scale: bool = True) -> CascadeData:
    """Scale dense scalars with the train split's range, build the item table.

    With ``log_scale`` (default) a non-negative dense input (a duration in seconds:
    log-normal, heavy-tailed) is ``log1p``-transformed before the min-max scaling, so
    its values spread over [0, 1] instead of crowding near 0 (the authors min-max scale
    the raw value; ``log_scale=False``)."""
    for need in (USER, ITEM):
        if need not in schema:
            raise DataError(f"DAMCAR needs {USER!r} and {ITEM!r} features; the data set has "
                            f"{[f.name for f in schema.inputs]}")
    for need in ("train", "valid", "test"):
        if need not in splits:
            raise DataError(f"DAMCAR needs train/valid/test splits; got {sorted(splits)}")
    label = schema.label.name
    user_names = [USER]
    item_names = item_side_names(splits["train"], schema, user_names)
    splits = {k: dict(v) for k, v in splits.items()}
    scaling = {}
    for f in schema.by_role("dense"):
        if f.name not in item_names:
            continue
        raw = np.asarray(splits["train"][f.name], np.float64)
        use_log = bool(log_scale) and len(raw) > 0 and float(np.min(raw)) >= 0.0
        tf_ = np.log1p if use_log else (lambda v: v)
        lo, hi = float(np.min(tf_(raw))), float(np.max(tf_(raw)))
        scaling[f.name] = (use_log, lo, hi)
        for cols in splits.values():
            v = tf_(np.maximum(np.asarray(cols[f.name], np.float64), 0.0)) if use_log else \
                np.asarray(cols[f.name], np.float64)
            cols[f.name] = ((v - lo) / max(hi - lo, 1e-9)).astype(np.float32)
    n_ids = schema[ITEM].vocab_size
    items = {}
    for n in item_names:
        f = schema[n]
        items[n] = np.zeros((n_ids, *f.shape), np.dtype(f.dtype))
    seen = np.zeros(n_ids, bool)
    for cols in splits.values():
        ids = np.asarray(cols[ITEM], np.int64)
        seen[ids] = True
        for n in item_names:
            items[n][ids] = cols[n]
    items[ITEM] = np.arange(n_ids, dtype=np.int64)
    model_schema = schema.select(user_names + item_names + [label])
    weight = "play_seconds" if "play_seconds" in splits["train"] else None
    return CascadeData(splits, model_schema, label, user_names, item_names, items,
                       np.nonzero(seen)[0], schema[USER].vocab_size, n_ids, weight, scaling)


def hybrid_columns(features_e: dict, target_e, rank_e, features_t: dict | None = None,
                   target_t=None, rank_t=None, weight_t: float = 1.0) -> dict:
    """The training set ``S_T = S_exp u S_sam`` as columns (Eq. (12)-(17))."""
    ne = len(target_e)
    cols = {k: np.asarray(v) for k, v in features_e.items()}
    cols[TARGET] = np.asarray(target_e, np.float32)
    cols[RANK] = np.asarray(rank_e, np.float32)
    cols[WEIGHT] = np.ones(ne, np.float32)
    cols[DOMAIN] = np.ones(ne, np.float32)
    if features_t is None:
        return cols
    nt = len(rank_t)
    tt = np.zeros(nt, np.float32) if target_t is None else np.asarray(target_t, np.float32)
    add = {k: np.asarray(features_t[k]) for k in features_e}
    add[TARGET] = tt
    add[RANK] = np.asarray(rank_t, np.float32)
    add[WEIGHT] = np.full(nt, weight_t, np.float32)
    add[DOMAIN] = np.zeros(nt, np.float32)
    return {k: np.concatenate([cols[k], add[k]]) for k in cols}


def target_domain(data: CascadeData, radius, walks, seed, random_sampling=False,
                  like: tuple | None = None):
    """``S_sam`` (1-based ids): Eq. (1)-(3) on the train exposures, watch time as
    ``v_ui``; train and valid exposures are never chosen. ``random_sampling``: the
    w/o TDG ablation, as many random unexposed items per user as ``like`` has."""
    from tfdebias.data import random_walk as rw

    tr = data.splits["train"]
    u0 = np.asarray(tr[USER], np.int64) - 1
    i0 = np.asarray(tr[ITEM], np.int64) - 1
    w = np.asarray(tr[data.weight_column], np.float64) if data.weight_column else \
        np.asarray(tr[data.label], np.float64) + 0.1
    nu, ni = data.n_users - 1, data.n_items - 1
    logged = np.unique(np.concatenate([
        (np.asarray(data.splits[s][USER], np.int64) - 1) * ni
        + np.asarray(data.splits[s][ITEM], np.int64) - 1 for s in ("train", "valid")]))
    if random_sampling:
        per_user = np.bincount(np.asarray(like[0]) - 1, minlength=nu)
        tu, ti = rw.random_unexposed(nu, ni, per_user, logged, seed)
        return tu + 1, ti + 1, {"target_pairs": int(len(tu))}
    tu, ti, stats = rw.generate_target_domain(u0, i0, w, nu, ni, radius=radius, walks=walks,
                                              seed=seed, exclude_keys=logged)
    return tu + 1, ti + 1, stats
