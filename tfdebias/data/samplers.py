"""Negative samplers for sequential next-item recommendation (vectorised).

* :func:`domain_item_pools` - the items of each domain (from the histories and targets
  of the given splits);
* :func:`user_positives` - every item a user interacted with, in any split, as a
  0-padded (n_users, L) matrix;
* :func:`evaluation_negatives` - the sampled-negative ranking protocol of AMID Sec. 5.1
  ("we randomly select 999 negative items (i.e., items that the user has not interacted
  with) and combine them with 1 positive item"): for each row, ``n_neg`` distinct items
  of the row's target domain, **never one of the user's positives**, drawn without
  replacement by the random-keys trick (uniform keys, the user's positives pushed to
  +inf, the ``n_neg`` smallest kept). The draw depends only on ``(seed, rows)``, so it
  is fixed across models. When a domain has fewer than ``n_neg`` eligible items for
  some row (the small simulator configs have 600-800 items per domain) every row gets
  ``min(n_neg, fewest eligible)`` negatives and the count is reported.
* :class:`NegativeSampler` / :func:`add_negatives` - the training sampler: one negative
  per positive, uniform over the positive's domain and never the positive itself
  (as in the authors' code, 1 negative per positive, resampled every epoch), drawn in
  the ``tf.data`` pipeline with a stateless key ``(seed, epoch, batch)``.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from tfdebias.data.pipeline import PARALLEL_BATCHES
from tfdebias.errors import DataError, UsageError


def _histories(columns: Mapping, histories: Sequence[str]):
    return [np.asarray(columns[h], np.int64) for h in histories]


def domain_item_pools(splits: Mapping[str, Mapping], histories: Sequence[str],
                      item: str = "item_id", domain: str = "domain") -> list[np.ndarray]:
    """Sorted unique item ids of each domain: history ``i`` holds domain ``i``'s items,
    and a target of domain ``i`` is one of them."""
    pools = [[] for _ in histories]
    for cols in splits.values():
        for i, h in enumerate(_histories(cols, histories)):
            pools[i].append(h[h > 0])
            if item in cols and domain in cols:
                sel = np.asarray(cols[domain]) == i
                pools[i].append(np.asarray(cols[item], np.int64)[sel])
    out = [np.unique(np.concatenate(p)) if p else np.zeros(0, np.int64) for p in pools]
    out = [p[p > 0] for p in out]
    if any(len(p) < 2 for p in out):
        raise DataError(f"a domain has fewer than 2 items: pool sizes {[len(p) for p in out]}")
    return out


def user_positives(splits: Mapping[str, Mapping], histories: Sequence[str], n_users: int,
                   user: str = "user_id", item: str = "item_id") -> np.ndarray:
    """(n_users, L) int64: every item each user interacted with (histories and targets
    of every split), 0-padded; row ``u`` is user id ``u``."""
    us, its = [], []
    for cols in splits.values():
        uid = np.asarray(cols[user], np.int64)
        for h in _histories(cols, histories):
            us.append(np.repeat(uid, h.shape[1]))
            its.append(h.reshape(-1))
        if item in cols:
            us.append(uid)
            its.append(np.asarray(cols[item], np.int64))
    u, it = np.concatenate(us), np.concatenate(its)
    keep = it > 0
    pairs = np.unique(np.stack([u[keep], it[keep]], 1), axis=0)
    counts = np.bincount(pairs[:, 0], minlength=n_users)
    width = max(1, int(counts.max(initial=0)))
    out = np.zeros((n_users, width), np.int64)
    start = np.concatenate([[0], np.cumsum(counts)[:-1]])
    col = np.arange(len(pairs)) - start[pairs[:, 0]]
    out[pairs[:, 0], col] = pairs[:, 1]
    return out


def evaluation_negatives(columns: Mapping, pools: Sequence[np.ndarray], positives: np.ndarray,
                         n_neg: int = 999, seed: int = 0, user: str = "user_id",
                         domain: str = "domain", chunk: int = 512) -> np.ndarray:
    """(rows, n) negatives per row (see the module docstring); ``n <= n_neg``.

    Deterministic in ``(seed, columns)``: the same array for every model."""
    if n_neg < 1:
        raise UsageError(f"n_neg must be >= 1, got {n_neg}")
    uid = np.asarray(columns[user], np.int64)
    dom = np.asarray(columns[domain], np.int64)
    n_items = int(max(p.max() for p in pools)) + 1
    pos_width = positives.shape[1]
    # fewest eligible items of any row (pool minus the user's positives in it)
    in_pool = [np.zeros(n_items + 1, bool) for _ in pools]
    for i, p in enumerate(pools):
        in_pool[i][p] = True
    pos_rows = positives[uid]  # (R, L)
    n_elig = np.empty(len(uid), np.int64)
    for i, p in enumerate(pools):
        sel = dom == i
        hit = in_pool[i][np.minimum(pos_rows[sel], n_items)] & (pos_rows[sel] > 0)
        n_elig[sel] = len(p) - hit.sum(1)
    n = int(min(n_neg, n_elig.min(initial=n_neg)))
    out = np.zeros((len(uid), n), np.int64)
    for i, p in enumerate(pools):
        rows = np.nonzero(dom == i)[0]
        lookup = np.full(n_items + 1, -1, np.int64)
        lookup[p] = np.arange(len(p))
        for c, start in enumerate(range(0, len(rows), chunk)):
            r = rows[start:start + chunk]
            rng = np.random.default_rng([seed, i, c])
            keys = rng.random((len(r), len(p)))
            idx = lookup[np.minimum(positives[uid[r]], n_items)]  # (r, L) pool index or -1
            rr = np.repeat(np.arange(len(r)), pos_width)
            ii = idx.reshape(-1)
            ok = ii >= 0
            keys[rr[ok], ii[ok]] = np.inf
            pick = np.argpartition(keys, n - 1, axis=1)[:, :n] if n < len(p) else \
                np.argsort(keys, axis=1)[:, :n]
            out[r] = p[pick]
    return out


class NegativeSampler:
    """Training negatives: uniform over the positive's domain pool, never the positive.

    ``pools`` are the sorted item ids of each domain; ``sample(pos, domain, key)`` maps
    (B,) positives to (B,) negatives with a stateless key (shape [2] int64)."""

    def __init__(self, pools: Sequence[np.ndarray]):
        import tensorflow as tf

        pools = [np.asarray(p, np.int64) for p in pools]
        n_items = int(max(p.max() for p in pools)) + 1
        index = np.full(n_items, -1, np.int64)
        for p in pools:
            index[p] = np.arange(len(p))
        self.n_items = n_items
        self.flat = tf.constant(np.concatenate(pools))
        self.start = tf.constant(np.cumsum([0] + [len(p) for p in pools[:-1]]), tf.int64)
        self.size = tf.constant([len(p) for p in pools], tf.int64)
        self.index = tf.constant(index)

    def sample(self, pos, domain, key):
        import tensorflow as tf

        pos = tf.cast(pos, tf.int64)
        domain = tf.cast(domain, tf.int64)
        size = tf.gather(self.size, domain)
        start = tf.gather(self.start, domain)
        at = tf.gather(self.index, tf.clip_by_value(pos, 0, self.n_items - 1))
        u = tf.random.stateless_uniform(tf.shape(pos), seed=key, dtype=tf.float32)
        # a uniform draw over the pool's other size-1 items (or all size if pos is absent)
        k = tf.where(at >= 0, size - 1, size)
        r = tf.minimum(tf.cast(u * tf.cast(k, tf.float32), tf.int64), k - 1)
        idx = tf.where(at >= 0, (at + 1 + r) % size, r)
        return tf.gather(self.flat, start + idx)


def add_negatives(ds, sampler: NegativeSampler, seed: int = 0, item: str = "item_id",
                  domain: str = "domain", name: str = "neg_item_id", count: int = 1,
                  one_draw: bool = False):
    """Map a ``make_dataset`` stream to one with ``features[name]`` (B,) (or (B, count))
    negatives, drawn with the key ``(seed, fingerprint of the batch's items, batch
    index)``: a reshuffled epoch gets new negatives, a replayed epoch (a resumed run) the
    same ones, and no shared counter is read while batches are made. ``one_draw``: the
    (B, count) negatives in one vectorised draw (one key) instead of one draw per column
    (the columns' keys): the same distribution, other values, far fewer ops for a large
    ``count``."""
    import tensorflow as tf

    epoch = getattr(ds, "epoch", None)

    def add(i, batch):
        feats = dict(batch[0])
        ids = tf.reshape(tf.cast(feats[item], tf.int64), [-1])
        weights = 2 * tf.range(tf.size(ids, out_type=tf.int64), dtype=tf.int64) + 1
        fingerprint = tf.math.floormod(tf.reduce_sum(ids * weights), 1_000_003)
        if one_draw:
            key = tf.stack([tf.constant(seed, tf.int64) * 1000, fingerprint * 1_000_000 + i])
            pos = tf.repeat(tf.reshape(feats[item], [-1, 1]), count, axis=1)
            dom = tf.repeat(tf.reshape(feats[domain], [-1, 1]), count, axis=1)
            feats[name] = sampler.sample(pos, dom, key)
            return (feats,) + tuple(batch[1:])
        negs = []
        for c in range(count):
            key = tf.stack([tf.constant(seed, tf.int64) * 1000 + c, fingerprint * 1_000_000 + i])
            negs.append(sampler.sample(feats[item], feats[domain], key))
        feats[name] = negs[0] if count == 1 else tf.stack(negs, axis=1)
        return (feats,) + tuple(batch[1:])

    # as many at once as the stream's own stages: fixed unless it is autotuned
    parallel = PARALLEL_BATCHES if ds.options().autotune.enabled is False else tf.data.AUTOTUNE
    out = ds.enumerate().map(add, num_parallel_calls=parallel, deterministic=True)
    if epoch is not None:
        out.epoch = epoch
    return out
