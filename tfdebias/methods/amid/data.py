"""AMID's data from the splits: the ``L_r`` stream over observed + unobserved rows and
the training-negative pools of a draw."""

from __future__ import annotations

import numpy as np


def make_dr_dataset(train_columns, unobserved_columns, schema, sampler, *, batch_size: int = 256,
                    seed: int = 1, truth=(), repeat: bool = False):
    """The ``L_r`` stream over ``D`` = observed + unobserved rows, shuffled per epoch, with
    two fresh negatives per row (``neg_item_id``; ``neg_item_id_2`` stands in for an
    unobserved row's unknown positive); ``repeat``: epoch after epoch without end (what
    :func:`~tfdebias.methods.amid.train.fit_amid` iterates); ``truth``: the truth columns
    the model reads (a positive control's interest features). ``.epoch`` is the variable
    to set each epoch."""
    from tfdebias import data as tdata
    from tfdebias.data import samplers

    both = {k: np.concatenate([train_columns[k], unobserved_columns[k]])
            for k in train_columns if k in unobserved_columns}
    ds = tdata.make_dataset(both, schema, batch_size=batch_size, shuffle=True, seed=seed,
                            repeat=repeat, truth=list(truth))
    epoch = ds.epoch
    ds = samplers.add_negatives(ds, sampler, seed=seed + 7, count=2).map(split_negatives)
    ds.epoch = epoch
    return ds


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
