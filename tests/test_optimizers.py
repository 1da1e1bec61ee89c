"""LazyAdam / SparseAdagrad: sparse updates equal the dense algorithm where they should.

The reference is Keras' dense optimizer fed the *densified* gradient
(``tf.convert_to_tensor(IndexedSlices)``, which sums duplicate ids): that is the
mathematical Adam / AdaGrad update of the gradient the model defines.
"""

import json
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfdebias.errors import UsageError
from tfdebias.optimizers import (
    DEFAULT_CTR_OPTIMIZER,
    OPTIMIZERS,
    LazyAdam,
    SparseAdagrad,
    distinct_slices,
    make_optimizer,
)

VOCAB, DIM = 12, 3
TOUCHED = [1, 5, 7]
UNTOUCHED = [i for i in range(VOCAB) if i not in TOUCHED]


def _table():
    return np.random.RandomState(0).randn(VOCAB, DIM).astype("float32")


def _apply(opt, steps, *, dense_grad=False, ids=(1, 5, 1, 7, 5, 1), jit=False, seed=1):
    """Run ``steps`` updates of one embedding table; return (table, slots...)."""
    var = keras.Variable(_table())
    opt.build([var])
    ids = np.asarray(ids, "int64")

    @tf.function(jit_compile=jit)
    def step(values):
        grad = tf.IndexedSlices(values, tf.constant(ids), tf.constant([VOCAB, DIM], "int64"))
        if dense_grad:
            grad = tf.convert_to_tensor(grad)
        opt.apply([grad], [var])

    rng = np.random.RandomState(seed)
    for _ in range(steps):
        step(rng.randn(len(ids), DIM).astype("float32"))
    slots = [v.numpy() for v in opt.variables if len(v.shape) == 2]
    return [var.numpy()] + slots


@pytest.mark.parametrize("steps", [1, 4])
@pytest.mark.parametrize("amsgrad", [False, True])
def test_lazy_adam_equals_dense_adam_on_touched_rows(steps, amsgrad):
    # The same rows (with duplicates) are touched every step, so lazy Adam must equal
    # dense Adam on them at every step, slots included.
    dense = _apply(keras.optimizers.Adam(0.1, amsgrad=amsgrad), steps, dense_grad=True)
    lazy = _apply(LazyAdam(0.1, amsgrad=amsgrad), steps)
    assert len(dense) == len(lazy) == (4 if amsgrad else 3)
    for d, s in zip(dense, lazy):
        np.testing.assert_allclose(s[TOUCHED], d[TOUCHED], rtol=1e-6, atol=1e-7)


def test_lazy_adam_leaves_untouched_rows_and_slots_alone():
    table, m, v = _apply(LazyAdam(0.1), 3)
    np.testing.assert_array_equal(table[UNTOUCHED], _table()[UNTOUCHED])
    assert not m[UNTOUCHED].any() and not v[UNTOUCHED].any()
    assert (table[TOUCHED] != _table()[TOUCHED]).all()
    assert m[TOUCHED].any() and v[TOUCHED].all()


def test_lazy_adam_sums_duplicate_ids_before_squaring():
    # Id 1 appears three times: v must hold (1 - beta_2) * (g_a + g_b + g_c)**2.
    ids = (1, 1, 1)
    values = np.random.RandomState(1).randn(3, DIM).astype("float32")
    _, _, v = _apply(LazyAdam(0.1), 1, ids=ids)
    expected = (1 - 0.999) * values.sum(0) ** 2
    np.testing.assert_allclose(v[1], expected, rtol=1e-5)
    # Keras 3's own Adam squares each duplicate separately on IndexedSlices; this is
    # why the reference above is densified first. If Keras fixes this, fine.
    _, _, v_keras = _apply(keras.optimizers.Adam(0.1), 1, ids=ids)
    assert not np.allclose(v_keras[1], expected, rtol=1e-3)


@pytest.mark.parametrize("make", [LazyAdam, SparseAdagrad])
def test_distinct_slices_skip_the_dedup_and_update_the_same(make):
    # A gradient whose rows a lookup already summed per id (distinct_slices) must update
    # exactly as the raw gradient with one row per occurrence; a gradient built from
    # it (here: the sum of two) loses the promise and is deduplicated again.
    ids = np.array([1, 5, 1, 7, 5, 1], "int64")
    values = np.random.RandomState(2).randn(len(ids), DIM).astype("float32")
    unique, position = np.unique(ids, return_inverse=True)
    summed = np.zeros((len(unique), DIM), "float32")
    np.add.at(summed, position, values)
    shape = tf.constant([VOCAB, DIM], "int64")
    results = []
    for grad in (tf.IndexedSlices(tf.constant(values), tf.constant(ids), shape),
                 distinct_slices(tf.constant(summed), tf.constant(unique), shape)):
        var, opt = keras.Variable(_table()), make(0.1)
        opt.build([var])
        opt.apply([grad], [var])
        results.append(var.numpy())
    np.testing.assert_allclose(results[1], results[0], rtol=1e-6, atol=1e-7)
    doubled = distinct_slices(tf.constant(summed), tf.constant(unique), shape)
    doubled = tf.IndexedSlices(tf.concat([doubled.values, doubled.values], 0),
                               tf.concat([doubled.indices, doubled.indices], 0), shape)
    var, opt = keras.Variable(_table()), make(0.1)
    opt.build([var])
    opt.apply([doubled], [var])
    twice = keras.Variable(_table())
    opt2 = make(0.1)
    opt2.build([twice])
    opt2.apply([distinct_slices(tf.constant(2 * summed), tf.constant(unique), shape)], [twice])
    np.testing.assert_allclose(var.numpy(), twice.numpy(), rtol=1e-6, atol=1e-7)

    # ... and the promise is what saves the work: no `unique` in the traced update
    def unique_ops(grad_fn):
        var, opt = keras.Variable(_table()), make(0.1)
        opt.build([var])
        graph = tf.function(lambda: opt.apply([grad_fn()], [var])).get_concrete_function().graph
        return sum(op.type == "Unique" for op in graph.get_operations())

    assert unique_ops(lambda: distinct_slices(tf.constant(summed), tf.constant(unique), shape)) == 0
    assert unique_ops(lambda: tf.IndexedSlices(tf.constant(values), tf.constant(ids), shape)) == 1


def test_lazy_adam_differs_from_adam_only_on_absent_rows():
    # Step 1 touches rows {1, 5}, step 2 touches {7}: dense Adam keeps moving 1 and 5
    # on their momentum in step 2, lazy Adam does not.
    var_d, var_l = keras.Variable(_table()), keras.Variable(_table())
    dense, lazy = keras.optimizers.Adam(0.1), LazyAdam(0.1)
    dense.build([var_d])
    lazy.build([var_l])
    for ids in ([1, 5], [7]):
        g = tf.IndexedSlices(tf.ones((len(ids), DIM)), tf.constant(ids, "int64"),
                             tf.constant([VOCAB, DIM], "int64"))
        dense.apply([tf.convert_to_tensor(g)], [var_d])
        lazy.apply([g], [var_l])
        if ids == [1, 5]:
            after_first = var_l.numpy().copy()
    np.testing.assert_array_equal(var_l.numpy()[[1, 5]], after_first[[1, 5]])
    assert not np.allclose(var_d.numpy()[[1, 5]], after_first[[1, 5]])
    np.testing.assert_allclose(var_l.numpy()[7], var_d.numpy()[7], rtol=1e-6)


def test_lazy_adam_two_steps_in_one_graph():
    # LazyAdam computes the bias-correction scalars once per update pass; two
    # apply() calls traced into one tf.function must still use steps 1 and 2.
    def grad(ids, scale):
        return tf.IndexedSlices(tf.fill((len(ids), DIM), scale), tf.constant(ids, "int64"),
                                tf.constant([VOCAB, DIM], "int64"))

    var_one, var_two = keras.Variable(_table()), keras.Variable(_table())
    one_graph, two_graphs = LazyAdam(0.1), LazyAdam(0.1)
    one_graph.build([var_one])
    two_graphs.build([var_two])

    @tf.function
    def both():
        one_graph.apply([grad([1, 2], 1.0)], [var_one])
        one_graph.apply([grad([2, 3], -2.0)], [var_one])

    both()
    tf.function(lambda: two_graphs.apply([grad([1, 2], 1.0)], [var_two]))()
    tf.function(lambda: two_graphs.apply([grad([2, 3], -2.0)], [var_two]))()
    assert int(one_graph.iterations) == int(two_graphs.iterations) == 2
    np.testing.assert_allclose(var_one.numpy(), var_two.numpy(), rtol=1e-6)


def test_lazy_adam_dense_gradient_is_keras_adam():
    rng = np.random.RandomState(2)
    w0 = rng.randn(4, 5).astype("float32")
    grads = [rng.randn(4, 5).astype("float32") for _ in range(3)]
    out = []
    for opt in (keras.optimizers.Adam(0.01), LazyAdam(0.01)):
        w = keras.Variable(w0)
        for g in grads:
            opt.apply([tf.constant(g)], [w])
        out.append(w.numpy())
    np.testing.assert_array_equal(out[0], out[1])


def test_lazy_adam_under_xla_matches_eager_graph():
    plain = _apply(LazyAdam(0.1), 3)
    jitted = _apply(LazyAdam(0.1), 3, jit=True)
    for a, b in zip(plain, jitted):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("steps", [1, 3])
def test_sparse_adagrad_equals_dense_adagrad(steps):
    dense = _apply(keras.optimizers.Adagrad(0.1), steps, dense_grad=True)
    sparse = _apply(SparseAdagrad(0.1), steps)
    for d, s in zip(dense, sparse):  # all rows: AdaGrad ignores zero-gradient rows
        np.testing.assert_allclose(s, d, rtol=1e-6, atol=1e-7)


def _tiny_model(seed=0):
    keras.utils.set_random_seed(seed)
    ids = keras.Input((2,), dtype="int32")
    x = keras.layers.Flatten()(keras.layers.Embedding(VOCAB, DIM, name="emb")(ids))
    x = keras.layers.Dense(4, activation="relu", name="hidden")(x)
    return keras.Model(ids, keras.layers.Dense(1, name="out")(x))


def _data():
    # Ids 0, 3 and 11 never occur; 1 and 2 occur many times in each batch.
    rng = np.random.RandomState(3)
    x = rng.choice([1, 2, 4, 5, 6, 7, 8, 9, 10], size=(32, 2)).astype("int32")
    return x, rng.randint(0, 2, (32, 1)).astype("float32")


@pytest.mark.parametrize("jit", [False, True])
def test_lazy_adam_in_model_fit(jit):
    x, y = _data()
    model = _tiny_model()
    table0 = model.get_layer("emb").embeddings.numpy()
    model.compile(LazyAdam(0.05), "binary_crossentropy", jit_compile=jit)
    history = model.fit(x, y, batch_size=8, epochs=3, shuffle=False, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    table = model.get_layer("emb").embeddings.numpy()
    np.testing.assert_array_equal(table[[0, 3, 11]], table0[[0, 3, 11]])
    assert (table[[1, 2]] != table0[[1, 2]]).all()
    # One step on one batch with no duplicates: identical to Keras Adam everywhere.
    xs = np.array([[1, 2], [4, 5]], "int32")
    ys = np.array([[1.0], [0.0]], "float32")
    results = []
    for opt in (keras.optimizers.Adam(0.05), LazyAdam(0.05)):
        m = _tiny_model()
        m.compile(opt, "binary_crossentropy", jit_compile=jit)
        m.fit(xs, ys, batch_size=2, epochs=1, verbose=0)
        results.append([w.numpy() for w in m.weights])
    for a, b in zip(*results):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-8)


def test_get_config_round_trip_and_saved_model(tmp_path):
    opt = LazyAdam(0.01, beta_1=0.8, amsgrad=True, clipnorm=1.0)
    config = keras.optimizers.serialize(opt)
    clone = keras.optimizers.deserialize(json.loads(json.dumps(config)))
    assert type(clone) is LazyAdam
    assert clone.get_config() == opt.get_config()
    ada = keras.optimizers.deserialize(keras.optimizers.serialize(SparseAdagrad(0.2)))
    assert type(ada) is SparseAdagrad and float(ada.learning_rate) == pytest.approx(0.2)

    x, y = _data()
    model = _tiny_model()
    model.compile(LazyAdam(0.05), "binary_crossentropy")
    model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    assert type(loaded.optimizer) is LazyAdam
    for a, b in zip(model.optimizer.variables, loaded.optimizer.variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    # Training on continues identically from the restored state.
    model.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
    loaded.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
    for a, b in zip(model.weights, loaded.weights):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-6, atol=1e-8)


def test_make_optimizer():
    assert type(make_optimizer("adam", 0.01)) is keras.optimizers.Adam
    assert type(make_optimizer("lazy_adam")) is LazyAdam
    assert type(make_optimizer("Lazy-Adam")) is LazyAdam
    assert type(make_optimizer("adagrad")) is SparseAdagrad
    assert type(make_optimizer("sgd", 0.1)) is keras.optimizers.SGD
    assert DEFAULT_CTR_OPTIMIZER in OPTIMIZERS
    assert float(make_optimizer("lazy_adam", 0.25).learning_rate) == pytest.approx(0.25)
    with pytest.raises(UsageError, match="unknown optimizer 'adamw'"):
        make_optimizer("adamw")
    with pytest.raises(UsageError, match="learning_rate"):
        make_optimizer("adam", 0.0)
    with pytest.raises(UsageError, match="lazy_adam"):
        make_optimizer("lazy_adam", 1e-3, no_such_argument=1)


_MIRRORED = textwrap.dedent(
    """
    import json, sys
    import numpy as np, tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras
    sys.path.insert(0, sys.argv[1])
    from test_optimizers import _tiny_model, _data
    from tfdebias.optimizers import LazyAdam

    x, y = _data()
    def train(strategy):
        with strategy.scope():
            model = _tiny_model()
            model.compile(LazyAdam(0.05), "binary_crossentropy")
        ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(8)
        model.fit(ds, epochs=2, verbose=0)
        return [w.numpy() for w in model.weights], model
    def copies_agree(model):
        # Every replica's copy of every weight and optimizer slot is the same.
        variables = list(model.weights) + list(model.optimizer.variables)
        return all(
            all(np.array_equal(c.numpy(), parts[0].numpy()) for c in parts)
            for parts in (getattr(v.value, "values", (v.value,)) for v in variables)
        )
    single, _ = train(tf.distribute.get_strategy())
    mirrored, model = train(tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]))
    emb0 = _tiny_model().get_layer("emb").embeddings.numpy()
    print(json.dumps({
        "replicas": model.distribute_strategy.num_replicas_in_sync,
        "copies_agree": copies_agree(model),
        "max_diff": max(float(np.abs(a - b).max()) for a, b in zip(single, mirrored)),
        "untouched_same": bool((mirrored[0][[0, 3, 11]] == emb0[[0, 3, 11]]).all()),
        "touched_moved": bool((mirrored[0][[1, 2]] != emb0[[1, 2]]).all()),
    }))
    """
)


@pytest.mark.slow
def test_lazy_adam_under_mirrored_strategy(tmp_path):
    # Logical devices must be set before TensorFlow initialises, so this runs in a
    # fresh process and leaves this one (and the other test files) untouched.
    script = tmp_path / "mirrored.py"
    script.write_text(_MIRRORED)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", KERAS_BACKEND="tensorflow")
    proc = subprocess.run(
        [sys.executable, str(script), os.path.dirname(__file__)],
        capture_output=True, text=True, timeout=300, env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["replicas"] == 2
    assert result["copies_agree"]
    assert result["untouched_same"] and result["touched_moved"]
    # Same global batches, gradients summed over replicas: same training.
    assert result["max_diff"] < 1e-5, result
