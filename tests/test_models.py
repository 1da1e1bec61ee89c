"""Backbones: build from a schema, fit, round-trip their config, run on another schema."""

import numpy as np
import pytest
import tensorflow as tf
import keras

from tfdebias import models
from tfdebias.errors import SchemaError, UsageError
from tfdebias.models.base import Backbone, split_sides
from tfdebias.schema import Feature, Schema

ALL = ["dcn", "deepfm", "dssm", "fm", "lr", "mlp", "ncf", "wide_deep"]
SMALL = dict(embedding_dim=4, hidden_units=(8,))  # small: tracing time grows with layers

SCHEMA_A = Schema(
    [
        Feature("user_id", "categorical", vocab_size=20),
        Feature("item_id", "categorical", vocab_size=30),
        Feature("item_category", "categorical", vocab_size=5),
        Feature("user_history", "sequence", vocab_size=30, max_len=4, vocab="item_id"),
        Feature("user_age", "dense"),
        Feature("item_visual", "vector", width=3),
        Feature("hour", "categorical", vocab_size=24),
        Feature("domain", "domain", vocab_size=2),
        Feature("popularity", "proxy"),
        Feature("click", "label"),
        Feature("propensity", "exposure"),
        Feature("relevance", "truth"),
    ]
)
# Same roles, other names, sizes and counts: a second data set.
SCHEMA_B = Schema(
    [
        Feature("user_id", "categorical", vocab_size=50),
        Feature("user_gender", "categorical", vocab_size=3),
        Feature("item_id", "categorical", vocab_size=80),
        Feature("item_author", "categorical", vocab_size=40),
        Feature("item_brand", "categorical", vocab_size=9),
        Feature("clicked_items", "sequence", vocab_size=80, max_len=7, vocab="item_id"),
        Feature("item_price", "dense"),
        Feature("user_text", "vector", width=5),
        Feature("scene", "domain", vocab_size=2),
        Feature("author_group", "proxy", vocab_size=6),
        Feature("watch", "label"),
        Feature("p_watch", "exposure"),
    ]
)


def make_batch(schema, n, seed=0):
    rng = np.random.default_rng(seed)
    out = {}
    for f in schema:
        if f.dtype == "int64":
            out[f.name] = rng.integers(0, f.vocab_size, size=(n,) + f.shape)
        else:
            out[f.name] = rng.random((n,) + f.shape).astype("float32")
    out[schema.label.name] = (out[schema.label.name] < 0.3).astype("float32")
    out["row_id"] = np.arange(n)  # a key no model knows: ignored
    return out


DATA_A = make_batch(SCHEMA_A, 256)
DATA_B = make_batch(SCHEMA_B, 32, seed=1)


def build(name, schema):
    kwargs = {} if name in ("lr", "fm") else dict(hidden_units=SMALL["hidden_units"])
    if name == "dcn":
        kwargs["num_cross_layers"] = 1
    return models.build(name, schema, embedding_dim=SMALL["embedding_dim"], **kwargs)


# -- registry -------------------------------------------------------------------------
def test_registry_lists_every_model():
    assert set(ALL) <= set(models.available())
    assert models.get("Wide-Deep") is models.MODELS["wide_deep"]
    for name in ALL:
        assert issubclass(models.MODELS[name], Backbone)


def test_build_errors_are_usage_errors():
    with pytest.raises(UsageError, match=r"unknown model 'deepffm'.*deepfm.*wide_deep"):
        models.build("deepffm", SCHEMA_A)
    with pytest.raises(UsageError, match="hidden_unit"):
        models.build("deepfm", SCHEMA_A, hidden_unit=(8,))


# -- every model ----------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("name", ALL)
def test_model_fits_roundtrips_and_runs_on_another_schema(name):
    model = build(name, SCHEMA_A)
    model.compile(optimizer="adam", loss="binary_crossentropy")
    history = model.fit(DATA_A, DATA_A["click"], batch_size=64, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])

    probs = model(DATA_A).numpy()
    assert probs.shape == (256, 1)
    assert np.all((probs > 0) & (probs < 1))
    logits = model.logits(DATA_A).numpy()
    assert logits.shape == (256,)
    np.testing.assert_allclose(probs[:, 0], 1 / (1 + np.exp(-logits)), rtol=1e-5, atol=1e-6)
    if name == "lr":
        with pytest.raises(UsageError):
            model.representation(DATA_A)
    else:
        rep = model.representation(DATA_A)
        assert rep.shape[0] == 256 and len(rep.shape) == 2

    # get_config -> from_config: same architecture, same predictions with the same weights
    config = model.get_config()
    assert config["schema"] == SCHEMA_A.to_dict()
    clone = type(model).from_config(config)
    clone(DATA_A)
    clone.set_weights(model.get_weights())
    np.testing.assert_allclose(clone(DATA_A).numpy(), probs, rtol=1e-6, atol=1e-7)
    assert clone.get_config() == config

    # the same code builds and runs on a data set with other names, sizes and counts
    other = build(name, SCHEMA_B)
    out = other(DATA_B).numpy()
    assert out.shape == (32, 1) and np.all((out > 0) & (out < 1))


def test_non_default_arguments_survive_the_config():
    model = models.build(
        "dcn", SCHEMA_A, embedding_dim=3, num_cross_layers=1, projection_dim=2,
        hidden_units=(5,), dropout=0.2, batch_norm=True, embedding_l2=1e-4,
    )
    clone = models.MODELS["dcn"].from_config(model.get_config())
    assert clone.get_config() == model.get_config()
    assert clone.embedding_dim == 3 and len(clone.cross.crosses) == 1
    assert clone.cross.crosses[0].projection_dim == 2


def test_keras_save_and_load(tmp_path):
    model = build("deepfm", SCHEMA_A)
    probs = model(DATA_A).numpy()
    path = tmp_path / "deepfm.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert type(loaded) is type(model)
    np.testing.assert_allclose(loaded(DATA_A).numpy(), probs, rtol=1e-6)


def test_embedding_gradients_are_sparse_and_tables_shared():
    model = build("deepfm", SCHEMA_A)
    with tf.GradientTape() as tape:
        loss = keras.losses.binary_crossentropy(DATA_A["click"][:, None], model(DATA_A))
    grads = tape.gradient(loss, model.trainable_variables)
    ours = {id(v) for v in model.embed.trainable_variables}
    tables = [(v, g) for v, g in zip(model.trainable_variables, grads) if id(v) in ours]
    # one fused variable each for the embeddings and the first-order weights (both in the
    # embedding layer, which the linear part shares), holding a table each for user_id,
    # item_id (shared with the history), item_category, hour, domain
    assert sorted(v.path.split("/")[-1] for v, _ in tables) == ["embeddings", "first_order"]
    assert all(isinstance(g, tf.IndexedSlices) for _, g in tables)
    embed = model.embed
    assert model.linear.embedding is embed and model.linear.id_weights is None
    assert sorted(embed.tables) == ["domain", "hour", "item_category", "item_id", "user_id"]
    rows = sum(t.input_dim for t in embed.tables.values())
    assert tuple(embed.embeddings.shape) == (rows, SMALL["embedding_dim"])
    assert tuple(embed.first_order_weights.shape) == (rows, 1)
    assert embed.table("user_history") is embed.table("item_id")
    assert len(model.trainable_variables) == len({id(v) for v in model.trainable_variables})


@pytest.mark.parametrize("name", ["deepfm", "fm", "wide_deep", "nfm"])
def test_train_step_finds_distinct_ids_once_per_batch(name):
    # Keras' own train step, traced: the embedding layer's single `unique` serves the
    # embeddings and the first-order weights, and LazyAdam (which would run one per
    # variable) receives the gradients already summed per id.
    from tfdebias.optimizers import LazyAdam

    model = build(name, SCHEMA_A)
    model.compile(LazyAdam(1e-3), "binary_crossentropy")
    x = {k: tf.constant(v) for k, v in DATA_A.items()}
    graph = tf.function(model.train_step).get_concrete_function(
        (x, tf.constant(DATA_A["click"]))).graph

    assert sum(op.type == "Unique" for op in graph.get_operations()) == 1


def test_deepfm_sums_linear_fm_and_deep_parts():
    model = build("deepfm", SCHEMA_A)
    embedded = model.embed(DATA_A)
    fields = embedded["fields"].numpy()
    pairwise = 0.5 * ((fields.sum(1) ** 2) - (fields**2).sum(1)).sum(1)
    deep = model.head(model.representation(DATA_A)).numpy()[:, 0]
    linear = model.linear(DATA_A).numpy()[:, 0]
    np.testing.assert_allclose(
        model.logits(DATA_A).numpy(), linear + pairwise + deep, rtol=1e-4, atol=1e-5
    )


# -- two-tower and user/item sides -----------------------------------------------------------
def test_split_sides_by_name_and_explicitly():
    user, item = split_sides(SCHEMA_A)
    assert user == ["user_id", "user_history", "user_age"]
    assert item == ["item_id", "item_category", "item_visual"]
    user, item = split_sides(SCHEMA_B)
    assert user == ["user_id", "user_gender", "clicked_items", "user_text"]
    assert item == ["item_id", "item_author", "item_brand", "item_price"]
    user, item = split_sides(SCHEMA_A, user_features=["user_id", "hour"], item_features=["item_id"])
    assert (user, item) == (["user_id", "hour"], ["item_id"])
    no_items = Schema([Feature("user_id", "categorical", vocab_size=3),
                       Feature("video", "categorical", vocab_size=3)])
    with pytest.raises(SchemaError, match="item_features"):
        split_sides(no_items)
    model = models.build("ncf", no_items, embedding_dim=2, hidden_units=(4,),
                         item_features=["video"])
    assert model({"user_id": np.array([1]), "video": np.array([2])}).shape == (1, 1)
    with pytest.raises(SchemaError):
        split_sides(SCHEMA_A, user_features=["item_id"], item_features=["item_id"])


def test_ncf_and_dssm_read_only_their_sides():
    user_item_only = {k: DATA_A[k] for k in ("user_id", "user_history", "user_age",
                                             "item_id", "item_category", "item_visual")}
    for name in ("ncf", "dssm"):
        model = build(name, SCHEMA_A)
        np.testing.assert_allclose(model(user_item_only).numpy(), model(DATA_A).numpy())


def test_dssm_towers_cosine_and_retrieval():
    model = build("dssm", SCHEMA_A)
    model.bias.assign(0.25)
    user = model.user_tower(DATA_A).numpy()
    item = model.item_tower(DATA_A).numpy()
    np.testing.assert_allclose(np.linalg.norm(user, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(item, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(
        model.logits(DATA_A).numpy(), 5.0 * (user * item).sum(1) + 0.25, rtol=1e-5, atol=1e-5
    )
    # the user tower does not look at item features
    changed = dict(DATA_A, item_id=np.ones_like(DATA_A["item_id"]))
    np.testing.assert_allclose(model.user_tower(changed).numpy(), user)

    catalogue = {"item_id": np.arange(1, 30), "item_category": np.arange(1, 30) % 5,
                 "item_visual": np.random.default_rng(2).random((29, 3)).astype("float32")}
    retrieval = model.retrieval(catalogue, k=3)
    scores, ids = retrieval(model.user_tower(DATA_A)[:4])
    brute = model.user_tower(DATA_A).numpy()[:4] @ model.item_tower(catalogue).numpy().T
    np.testing.assert_allclose(scores.numpy(), -np.sort(-brute, axis=1)[:, :3], rtol=1e-5)
    np.testing.assert_array_equal(ids.numpy(), np.argsort(-brute, axis=1)[:, :3] + 1)


def test_a_backbone_may_implement_only_logits():
    class Constant(Backbone):
        def logits(self, features, training=False):
            return tf.zeros((tf.shape(features["user_id"])[0],))

    model = Constant(SCHEMA_A)
    np.testing.assert_allclose(model(DATA_A).numpy(), 0.5)
    with pytest.raises(UsageError):
        model.representation(DATA_A)


def test_predict_equals_calling_the_model_across_batch_boundaries():
    from tfdebias.models import predict

    model = build("deepfm", SCHEMA_A)
    direct = model(DATA_A, training=False).numpy()[:, 0]
    inputs = [f.name for f in SCHEMA_A.inputs]
    for compiled in (False, True):
        got = predict(model, DATA_A, inputs=inputs, batch_size=100, compiled=compiled)  # 256 rows
        assert got.shape == (256,) and got.dtype == np.float64
        np.testing.assert_allclose(got, direct, rtol=1e-5, atol=1e-6)
    assert predict(model, {k: v[:0] for k, v in DATA_A.items()}, inputs=inputs).shape == (0,)
