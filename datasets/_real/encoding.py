"""Vocabularies and ids: raw ids remapped to ``1..V`` (0 is padding and unknown, as
everywhere in tfdebias), id lists packed into fixed-width right-aligned matrices, and the
vectorised per-user joins and splits the builders need."""

from __future__ import annotations

from typing import Sequence

import numpy as np


# -- packing lists ---------------------------------------------------------------------------


def pad_lists(values: np.ndarray, parent: np.ndarray, n_rows: int, max_len: int, *,
              keep: str = "last", align: str = "right") -> np.ndarray:
    """``[n_rows, max_len]`` int64 matrix of each row's list, 0-padded.

    ``keep="last"`` keeps the last ``max_len`` elements of a longer list (``"first"``:
    the first ones); ``align="right"`` puts the last kept element in the last column
    (the tfdebias convention for histories: most recent last).
    """
    out = np.zeros((n_rows, max_len), np.int64)
    if len(values) == 0:
        return out
    counts = np.bincount(parent, minlength=n_rows)
    starts = np.cumsum(counts) - counts
    pos = np.arange(len(values)) - starts[parent]
    if keep == "last":
        from_end = counts[parent] - 1 - pos
        ok = from_end < max_len
        col = (max_len - 1 - from_end) if align == "right" else (np.minimum(counts[parent], max_len) - 1 - from_end)
    else:
        ok = pos < max_len
        col = pos + (max_len - np.minimum(counts[parent], max_len)) if align == "right" else pos
    out[parent[ok], col[ok]] = values[ok]
    return out


def right_align(m: np.ndarray) -> np.ndarray:
    """Left-aligned, 0-padded id lists -> right-aligned (the tfdebias sequence convention:
    the last element in the last column)."""
    counts = (m > 0).sum(axis=1)
    shift = m.shape[1] - counts
    cols = (np.arange(m.shape[1])[None, :] - shift[:, None]) % m.shape[1]
    return np.take_along_axis(m, cols, axis=1) * (np.arange(m.shape[1])[None, :] >= shift[:, None])


# -- ids -----------------------------------------------------------------------------------



def encode_ids(values, *, missing=None) -> tuple[np.ndarray, int, np.ndarray]:
    """Map raw ids to ``1..V`` in sorted order of the raw values; 0 stays for
    ``missing`` (and NaN). Returns ``(ids int64, vocab_size = V + 1, raw vocabulary)``.

    Works on any numpy array (ints, floats, strings); N-D arrays are mapped elementwise.
    """
    v = np.asarray(values)
    shape = v.shape
    flat = v.reshape(-1)
    skip = np.zeros(len(flat), bool)
    if flat.dtype.kind == "f":
        skip |= np.isnan(flat)
    if missing is not None:
        skip |= flat == missing
    vocab, inv = np.unique(flat[~skip], return_inverse=True)
    ids = np.zeros(len(flat), np.int64)
    ids[~skip] = inv + 1
    return ids.reshape(shape), len(vocab) + 1, vocab


def lookup_ids(values, vocab: np.ndarray, *, missing=None) -> np.ndarray:
    """Ids ``1..V`` of ``values`` in a sorted raw ``vocab`` (from :func:`encode_ids`);
    values outside the vocabulary (and ``missing``) map to 0."""
    v = np.asarray(values)
    if len(vocab) == 0:
        return np.zeros(v.shape, np.int64)
    pos = np.searchsorted(vocab, v)
    pos = np.minimum(pos, len(vocab) - 1)
    hit = vocab[pos] == v
    if missing is not None:
        hit &= v != missing
    return np.where(hit, pos + 1, 0).astype(np.int64)


def log1p_nonneg(x) -> np.ndarray:
    """``log(1 + max(x, 0))`` as float32, NaN -> 0 (count statistics)."""
    x = np.nan_to_num(np.asarray(x, np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    return np.log1p(np.maximum(x, 0.0)).astype(np.float32)


def rank_within_groups(groups_sorted: np.ndarray) -> np.ndarray:
    """Position of each element within its run of equal values (input sorted by group)."""
    n = len(groups_sorted)
    idx = np.arange(n)
    if n == 0:
        return idx
    start = np.r_[True, groups_sorted[1:] != groups_sorted[:-1]]
    return idx - np.maximum.accumulate(np.where(start, idx, 0))


def chronological_split(user: np.ndarray, order_key: Sequence[np.ndarray],
                        fractions: Sequence[float]) -> np.ndarray:
    """Per-user chronological split: the split index (0, 1, ...) of every row.

    Rows are ordered by ``order_key`` (``np.lexsort`` keys, last = primary) within
    each user; a user's first ``round(f0 * n)`` rows go to split 0, up to
    ``round((f0 + f1) * n)`` to split 1, the rest to the last split (DAMCAR's 6:2:2,
    official_code_notes.md §2.4; the same rounding as the ``cascade_exposure``
    simulator).
    """
    order = np.lexsort(tuple(order_key) + (user,))
    u = user[order]
    rank = rank_within_groups(u)
    inv = np.unique(u, return_inverse=True)[1]
    n = np.bincount(inv)[inv]
    bounds = np.cumsum(fractions)[:-1]
    split_sorted = np.zeros(len(u), np.int64)
    for b in bounds:  # one pass per boundary, not per row
        split_sorted += rank >= np.round(b * n)
    out = np.empty(len(u), np.int64)
    out[order] = split_sorted
    return out


def history_before(
    user: np.ndarray,
    time: np.ndarray,
    ev_user: np.ndarray,
    ev_time: np.ndarray,
    ev_item: np.ndarray,
    max_len: int,
    *,
    strict: bool = True,
) -> np.ndarray:
    """Each row's last ``max_len`` events of the same user strictly before its time.

    ``[n_rows, max_len]`` int64, right-aligned (most recent last), 0-padded. Events are
    e.g. a domain's clicks; ties in time keep event order. Vectorised with one sort and
    one ``searchsorted``.
    """
    n = len(user)
    out = np.zeros((n, max_len), np.int64)
    if len(ev_user) == 0 or n == 0:
        return out
    order = np.lexsort((ev_time, ev_user))
    eu, et, ei = ev_user[order], ev_time[order], ev_item[order]
    ukeys, ustart = np.unique(eu, return_index=True)
    uend = np.r_[ustart[1:], len(eu)]
    pos = np.minimum(np.searchsorted(ukeys, user), len(ukeys) - 1)
    has = ukeys[pos] == user
    lo, hi = ustart[pos], uend[pos]
    # One sorted int64 key (user block, time rank) for events and queries alike, so a
    # single searchsorted counts each row's earlier events of its user.
    times, t_rank = np.unique(np.concatenate([et, time]), return_inverse=True)
    span = np.int64(len(times) + 1)
    block = np.repeat(np.arange(len(ukeys), dtype=np.int64), uend - ustart)
    keyed = block * span + t_rank[: len(et)]
    q = pos.astype(np.int64) * span + t_rank[len(et):]
    k = np.searchsorted(keyed, q, side="left" if strict else "right")
    k = np.clip(k, lo, hi)
    idx = k[:, None] - max_len + np.arange(max_len)[None, :]
    ok = has[:, None] & (idx >= lo[:, None]) & (idx < k[:, None])
    out[ok] = ei[np.where(ok, idx, 0)][ok]
    return out


def asof_index(user: np.ndarray, time: np.ndarray, ev_user: np.ndarray, ev_time: np.ndarray) -> np.ndarray:
    """For each row, the index of the same user's latest event at or before its time (-1
    if none): an as-of join, vectorised with one sort and one ``searchsorted``."""
    n = len(user)
    out = np.full(n, -1, np.int64)
    if len(ev_user) == 0 or n == 0:
        return out
    order = np.lexsort((np.arange(len(ev_user)), ev_time, ev_user))
    eu, et = ev_user[order], ev_time[order]
    ukeys, ustart = np.unique(eu, return_index=True)
    pos = np.minimum(np.searchsorted(ukeys, user), len(ukeys) - 1)
    has = ukeys[pos] == user
    times, t_rank = np.unique(np.concatenate([et, time]), return_inverse=True)
    span = np.int64(len(times) + 1)
    block = np.repeat(np.arange(len(ukeys), dtype=np.int64), np.diff(np.r_[ustart, len(eu)]))
    keyed = block * span + t_rank[: len(et)]
    k = np.searchsorted(keyed, pos.astype(np.int64) * span + t_rank[len(et):], side="right") - 1
    ok = has & (k >= ustart[pos])
    out[ok] = order[k[ok]]
    return out
