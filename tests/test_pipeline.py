"""make_dataset: every batch is exactly the rows its definition names, for columns of
every dtype and shape, with weights, drop_remainder, repeat and the epoch variable,
with tf.data's autotuning off (the default) or on."""

import numpy as np
import pytest
import tensorflow as tf

from tfdebias.data import make_dataset
from tfdebias.errors import DataError, UsageError
from tfdebias.schema import Feature, Schema

N = 103
SCHEMA = Schema([
    Feature("user", "categorical", vocab_size=50), Feature("item", "categorical", vocab_size=70),
    Feature("price", "dense"), Feature("hist", "sequence", vocab_size=70, max_len=4),
    Feature("vec", "vector", width=3), Feature("label", "label"),
])


def columns(n=N, seed=0):
    rng = np.random.default_rng(seed)
    return {
        "user": rng.integers(0, 50, n), "item": rng.integers(0, 70, n),
        "slot": rng.integers(0, 9, n).astype(np.int32),       # another dtype, one column
        "price": rng.random(n).astype(np.float32),
        "pop": rng.random(n).astype(np.float32),               # not a model input: kept
        "hist": rng.integers(0, 70, (n, 4)), "prev": rng.integers(0, 70, (n, 4)),
        "vec": rng.random((n, 3)).astype(np.float32),
        "label": rng.integers(0, 2, n).astype(np.float32),
    }


def expected_order(n, shuffle, seed, epoch):
    if not shuffle:
        return np.arange(n)
    key = tf.constant([seed, epoch], tf.int64)
    return tf.random.experimental.stateless_shuffle(tf.range(n, dtype=tf.int64), seed=key).numpy()


def check_epoch(ds, cols, order, batch_size, drop_remainder=False, weights=None):
    stops = len(order) - len(order) % batch_size if drop_remainder else len(order)
    got = ds if isinstance(ds, list) else list(ds.as_numpy_iterator())
    assert len(got) == -(-stops // batch_size)
    for i, batch in enumerate(got):
        feats, y = batch[0], batch[1]
        idx = order[i * batch_size:min((i + 1) * batch_size, stops)]
        assert list(feats) == [k for k in cols if k != "label"]  # every column, in order
        for k, v in feats.items():
            assert v.dtype == cols[k].dtype and v.shape == (len(idx),) + cols[k].shape[1:], k
            np.testing.assert_array_equal(v, cols[k][idx], err_msg=k)
        np.testing.assert_array_equal(y, cols["label"][idx])
        if weights is not None:
            np.testing.assert_array_equal(batch[2], weights[idx].astype(np.float32))


@pytest.mark.parametrize("batch_size", [1, 10, 103, 500])
@pytest.mark.parametrize("shuffle", [False, True])
def test_batches_are_the_rows_of_the_order(batch_size, shuffle):
    cols = columns()
    ds = make_dataset(cols, SCHEMA, batch_size=batch_size, shuffle=shuffle, seed=7)
    check_epoch(ds, cols, expected_order(N, shuffle, 7, 0), batch_size)
    assert ds.cardinality().numpy() == -(-N // batch_size)


def test_every_pass_reshuffles_without_a_callback():
    """Plain `model.fit` (a new iterator per epoch, no tfdebias callback) and any `.map()`
    on the stream see a new order each epoch; repeat's rounds too."""
    cols = columns()
    ds = make_dataset(cols, SCHEMA, batch_size=16, shuffle=True, seed=3)
    for e in range(3):
        check_epoch(ds, cols, expected_order(N, True, 3, e), 16)
    mapped = make_dataset(cols, SCHEMA, batch_size=16, shuffle=True, seed=3).map(lambda *b: b)
    for e in range(2):
        check_epoch(mapped, cols, expected_order(N, True, 3, e), 16)
    rep = make_dataset(cols, SCHEMA, batch_size=10, shuffle=True, seed=2, repeat=True, drop_remainder=True)
    got = list(rep.take(20).as_numpy_iterator())
    check_epoch(got[:10], cols, expected_order(N, True, 2, 0), 10, drop_remainder=True)
    check_epoch(got[10:], cols, expected_order(N, True, 2, 1), 10, drop_remainder=True)


def test_plain_keras_fit_reshuffles_every_epoch():
    import keras

    cols = columns()
    seen = []

    class Record(keras.Model):
        def __init__(self):
            super().__init__()
            self.dense = keras.layers.Dense(1)

        def call(self, feats):
            return self.dense(tf.reshape(tf.cast(feats["user"], "float32"), [-1, 1]))

        def train_step(self, data):
            tf.py_function(lambda u: seen.append(u.numpy().copy()), [data[0]["user"]], [])
            return {"seen": tf.constant(0.0)}

    model = Record()
    model.compile(optimizer="sgd", run_eagerly=True)
    model.fit(make_dataset(cols, SCHEMA, batch_size=N, shuffle=True, seed=9), epochs=2, verbose=0)
    assert len(seen) == 2 and not np.array_equal(seen[0], seen[1])


def test_epoch_variable_sets_the_permutation():
    cols = columns()
    ds = make_dataset(cols, SCHEMA, batch_size=16, shuffle=True, seed=3)
    first = np.concatenate([b[0]["user"] for b in ds.as_numpy_iterator()])
    ds.epoch.assign(4)
    fourth = list(ds.as_numpy_iterator())
    ds.epoch.assign(4)
    check_epoch(ds, cols, expected_order(N, True, 3, 4), 16)
    assert not np.array_equal(first, np.concatenate([b[0]["user"] for b in fourth]))


def test_weights_drop_remainder_and_repeat():
    cols = columns()
    w = np.linspace(0.5, 2.0, N)
    ds = make_dataset(cols, SCHEMA, batch_size=10, weight=w, drop_remainder=True)
    check_epoch(ds, cols, np.arange(N), 10, drop_remainder=True, weights=w)
    ds = make_dataset(cols, SCHEMA, batch_size=10, weight="price", drop_remainder=True,
                      repeat=True, shuffle=True, seed=1)
    got = list(ds.take(25).as_numpy_iterator())  # 10 full batches per epoch
    assert all(len(b[1]) == 10 for b in got)
    check_epoch(got[:10], cols, expected_order(N, True, 1, 0), 10, drop_remainder=True,
                weights=cols["price"])


def test_empty_split_and_bad_arguments():
    cols = {k: v[:0] for k, v in columns().items()}
    assert list(make_dataset(cols, SCHEMA, batch_size=8)) == []
    with pytest.raises(UsageError, match="batch_size"):
        make_dataset(columns(), SCHEMA, batch_size=0)
    with pytest.raises(DataError, match="no label column"):
        make_dataset({k: v for k, v in columns().items() if k != "label"}, SCHEMA)
    with pytest.raises(DataError, match="sample weights"):
        make_dataset(columns(), SCHEMA, weight=np.ones(N - 1))


def test_autotuning_is_off_unless_asked_and_changes_no_batch():
    cols = columns()
    fixed = make_dataset(cols, SCHEMA, batch_size=16, shuffle=True, seed=5)
    tuned = make_dataset(cols, SCHEMA, batch_size=16, shuffle=True, seed=5, autotune=True)
    assert fixed.options().autotune.enabled is False
    assert fixed.map(lambda *batch: batch).options().autotune.enabled is False  # inherited
    assert tuned.options().autotune.enabled is True
    for ds in (fixed, tuned):
        check_epoch(ds, cols, expected_order(N, True, 5, 0), 16)


def test_truth_columns_stay_out_of_model_inputs_unless_named(data_dir):
    """A simulator's ground truth (true relevance, the latent confounder) never reaches a
    model through the batches by accident."""
    from tfdebias import data

    splits, schema = data.load("confounded_ctr", ["valid"])
    truth = set(schema.names("truth"))
    assert {"relevance", "confounder"} <= truth
    feats, _ = next(iter(make_dataset(splits["valid"], schema, batch_size=64)))
    assert not truth & set(feats) and "user_id" in feats and "propensity" in feats
    feats, _ = next(iter(make_dataset(splits["valid"], schema, batch_size=64, truth=["relevance"])))
    assert "relevance" in feats and "confounder" not in feats
    with pytest.raises(UsageError, match="not truth columns"):
        make_dataset(splits["valid"], schema, truth=["user_id"])
