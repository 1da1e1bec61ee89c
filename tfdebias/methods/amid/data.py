"""AMID's data from the splits: the ``L_r`` stream over observed + unobserved rows and
the training-negative pools of a draw."""

from __future__ import annotations

import numpy as np


def make_dr_dataset(train_columns, unobserved_columns, schema, sampler, *, batch_size: int = 256,
                    seed: int = 1, truth=(), repeat: bool = False,
                    histories=("history_a", "history_b")):
    """The ``L_r`` stream over ``D`` = observed + unobserved rows, shuffled per epoch, with
    two fresh negatives per row (``neg_item_id``; ``neg_item_id_2`` stands in for an
    unobserved row's unknown positive); ``repeat``: epoch after epoch without end (what
    :func:`~tfdebias.methods.amid.train.fit_amid` iterates); ``truth``: the truth columns
    the model reads (a positive control's interest features). Neither negative is an item
    of the row's own sequence (:func:`exclude_own_items`, ``histories`` the domains'
    sequence columns). ``.epoch`` is the variable to set each epoch."""
    from tfdebias import data as tdata
    from tfdebias.data import samplers

    both = {k: np.concatenate([train_columns[k], unobserved_columns[k]])
            for k in train_columns if k in unobserved_columns}
    ds = tdata.make_dataset(both, schema, batch_size=batch_size, shuffle=True, seed=seed,
                            repeat=repeat, truth=list(truth))
    epoch = ds.epoch
    ds = samplers.add_negatives(ds, sampler, seed=seed + 7, count=2).map(split_negatives)
    ds.epoch = epoch
    return exclude_own_items(ds, sampler, seed=seed + 7, names=("neg_item_id", "neg_item_id_2"),
                             histories=histories)


#: at most this many redraws of the negatives that hit the row's own sequence (a draw hits
#: with probability about |sequence| / |domain pool|, 2 % on the simulator: a batch is
#: usually clean after 2-3 rounds)
EXCLUDE_ROUNDS = 64


def exclude_own_items(ds, sampler, *, seed: int = 0, names=("neg_item_id",),
                      histories=("history_a", "history_b"), item: str = "item_id",
                      domain: str = "domain", rounds: int = EXCLUDE_ROUNDS):
    """Redraw every training negative in ``names`` ((B,) or (B, K) columns) that is an item
    of the row's own sequence: its target-domain history and its target. The authors'
    code draws a training negative from ``item_pool - set(seq)`` (``dataset_seq.py``,
    ``neg_items_set``), and the evaluation negatives (Sec. 5.1, "items the user never
    interacted with") exclude them too; a negative drawn from the whole pool teaches the
    model to push down the items of the user's own history (the repeats a sequential
    model learns to copy), which no evaluation ever ranks as a negative.

    Each round (until none hits, at most ``rounds``) redraws the offending entries from
    ``sampler`` (the target's domain pool, never the target) with a stateless key
    (``seed``, the batch's items, its index, the round): deterministic like
    :func:`tfdebias.data.samplers.add_negatives`. After
    ``rounds`` rounds an entry that still hits (a pool the sequence nearly covers) is
    kept. ``.epoch`` of ``ds`` is kept."""
    import tensorflow as tf

    epoch = getattr(ds, "epoch", None)

    def fix(i, batch):
        feats = dict(batch[0])
        hist = tf.stack([tf.cast(feats[h], tf.int64) for h in histories], axis=1)  # (B, D, T)
        dom = tf.reshape(tf.cast(feats[domain], tf.int64), [-1])
        target = tf.reshape(tf.cast(feats[item], tf.int64), [-1])
        own = tf.gather(hist, dom, axis=1, batch_dims=1)  # (B, T), 0 = padding
        seen = tf.concat([own, target[:, None]], axis=1)  # (B, T + 1)
        weights = 2 * tf.range(tf.size(target, out_type=tf.int64), dtype=tf.int64) + 1
        fingerprint = tf.math.floormod(tf.reduce_sum(target * weights), 1_000_003)
        for n, name in enumerate(names):
            if name not in feats:
                continue
            neg = tf.cast(feats[name], tf.int64)
            flat = tf.reshape(neg, [tf.shape(target)[0], -1])  # (B, K)
            k = tf.shape(flat)[1]
            pos_k = tf.reshape(tf.repeat(target[:, None], k, axis=1), [-1])
            dom_k = tf.reshape(tf.repeat(dom[:, None], k, axis=1), [-1])

            def hits(x):
                return tf.reduce_any(tf.equal(x[:, :, None], seen[:, None, :]), axis=2)

            def redraw(r, x, n=n):
                key = tf.stack([tf.constant(seed, tf.int64) * 1000 + 500 + 10 * n,
                                (fingerprint * 1_000_000 + i) * 1000 + r])
                fresh = tf.reshape(sampler.sample(pos_k, dom_k, key), tf.shape(x))
                return r + 1, tf.where(hits(x), fresh, x)

            _, flat = tf.while_loop(
                lambda r, x: (r < rounds) & tf.reduce_any(hits(x)), redraw,
                (tf.constant(0, tf.int64), flat))
            feats[name] = tf.cast(tf.reshape(flat, tf.shape(neg)), batch[0][name].dtype)
        return (feats,) + tuple(batch[1:])

    out = ds.enumerate().map(fix)
    if epoch is not None:
        out.epoch = epoch
    return out


def split_negatives(features, *rest):
    """The two negatives of ``add_negatives(count=2)`` as ``neg_item_id`` and
    ``neg_item_id_2`` (a ``Dataset.map`` function)."""
    negs = features["neg_item_id"]
    features = dict(features)
    features["neg_item_id"] = negs[:, 0]
    features["neg_item_id_2"] = negs[:, 1]
    return (features,) + rest


def samplers_pools(splits):
    """Training-negative pools of a draw: the items of every level-0 row (`train` and
    `unobserved`; `train_unbiased` is a subset of them), the same for every row."""
    from tfdebias.data import samplers

    level0 = {k: splits[k] for k in ("train", "unobserved") if k in splits}
    return samplers.domain_item_pools(level0, ["history_a", "history_b"])
