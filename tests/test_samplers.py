"""The negative samplers: evaluation negatives never hit a user's positives, are fixed by
the seed and stay in the row's domain; training negatives are never the positive and are
redrawn every epoch."""

import numpy as np
import pytest
import tensorflow as tf

from tfdebias.data import samplers
from tfdebias.datasets.synthetic import cross_domain_sequences as cds

PARAMS = dict(n_users=300, n_items_a=60, n_items_b=50, dim=8, max_len=8)
H = ["history_a", "history_b"]


@pytest.fixture(scope="module")
def data():
    return cds.simulate(PARAMS), cds.schema(PARAMS)


def test_pools_are_the_domains(data):
    splits, _ = data
    pools = samplers.domain_item_pools(splits, H)
    assert pools[0].min() >= 1 and pools[0].max() <= 60
    assert pools[1].min() >= 61 and pools[1].max() <= 110


def test_evaluation_negatives_never_hit_positives(data):
    splits, _ = data
    pools = samplers.domain_item_pools(splits, H)
    pos = samplers.user_positives(splits, H, n_users=301)
    test = splits["test"]
    negs = samplers.evaluation_negatives(test, pools, pos, n_neg=30, seed=3)
    assert negs.shape == (len(test["user_id"]), 30)
    for r in range(len(negs)):  # brute-force reference
        u = test["user_id"][r]
        seen = set(np.concatenate([c["history_a"][c["user_id"] == u].ravel() for c in splits.values()]))
        seen |= set(np.concatenate([c["history_b"][c["user_id"] == u].ravel() for c in splits.values()]))
        seen |= set(np.concatenate([c["item_id"][c["user_id"] == u] for c in splits.values()]))
        assert not (set(negs[r]) & seen)
        assert len(set(negs[r])) == 30  # without replacement
        assert np.isin(negs[r], pools[test["domain"][r]]).all()


def test_evaluation_negatives_fixed_by_seed(data):
    splits, _ = data
    pools = samplers.domain_item_pools(splits, H)
    pos = samplers.user_positives(splits, H, n_users=301)
    a = samplers.evaluation_negatives(splits["test"], pools, pos, n_neg=20, seed=1)
    b = samplers.evaluation_negatives(splits["test"], pools, pos, n_neg=20, seed=1)
    c = samplers.evaluation_negatives(splits["test"], pools, pos, n_neg=20, seed=2)
    np.testing.assert_array_equal(a, b)
    assert (a != c).any()


def test_evaluation_negatives_shrink_to_the_pool(data):
    splits, _ = data
    pools = samplers.domain_item_pools(splits, H)
    pos = samplers.user_positives(splits, H, n_users=301)
    negs = samplers.evaluation_negatives(splits["test"], pools, pos, n_neg=999, seed=0)
    assert negs.shape[1] < 50  # a 50-item domain cannot give 999 distinct negatives


def test_training_sampler_never_the_positive_and_resampled_per_epoch(data):
    from tfdebias import data as tdata

    splits, schema = data
    pools = samplers.domain_item_pools(splits, H)
    sampler = samplers.NegativeSampler(pools)
    pos = tf.constant(np.repeat(pools[1][:3], 2000))
    neg = sampler.sample(pos, tf.ones_like(pos), tf.constant([0, 1], tf.int64)).numpy()
    assert (neg != pos.numpy()).all() and np.isin(neg, pools[1]).all()
    # uniform over the other items of the pool
    counts = np.bincount(neg, minlength=111)[pools[1]]
    assert counts.min() > 0
    ds = tdata.make_dataset(splits["train"], schema, batch_size=64, shuffle=True, seed=0)
    ds = samplers.add_negatives(ds, sampler, seed=0)
    e0 = np.concatenate([b[0]["neg_item_id"].numpy() for b in ds])
    e1 = np.concatenate([b[0]["neg_item_id"].numpy() for b in ds])  # the next epoch: new draws
    ds.epoch.assign(0)  # replaying epoch 0 (a resumed run) draws the same negatives
    e0b = np.concatenate([b[0]["neg_item_id"].numpy() for b in ds])
    np.testing.assert_array_equal(e0, e0b)
    assert (e0 != e1).mean() > 0.5
