"""Layers: each does the arithmetic its paper says, and round-trips its config."""

import numpy as np
import pytest
import tensorflow as tf
import keras

from tfdebias.errors import SchemaError
from tfdebias.layers import (
    MLP,
    AttentionPooling,
    BiInteraction,
    CrossNetwork,
    FeatureEmbedding,
    FeatureLinear,
    FMInteraction,
    GradientReversal,
)
from tfdebias.schema import Feature, Schema

SCHEMA = Schema(
    [
        Feature("user_id", "categorical", vocab_size=7),
        Feature("item_id", "categorical", vocab_size=11),
        Feature("history", "sequence", vocab_size=11, max_len=4, vocab="item_id"),
        Feature("age", "dense"),
        Feature("visual", "vector", width=3),
        Feature("domain", "domain", vocab_size=2),
        Feature("pop", "proxy"),
        Feature("brand", "proxy", vocab_size=5),
        Feature("click", "label"),
        Feature("propensity", "exposure"),
        Feature("relevance", "truth"),
    ]
)


def batch(n=5, seed=0):
    rng = np.random.default_rng(seed)
    out = {}
    for f in SCHEMA:
        if f.dtype == "int64":  # scalar ids from 1 (0 is padding/unknown)
            low = 0 if f.role in ("sequence", "domain") else 1
            out[f.name] = rng.integers(low, f.vocab_size, size=(n,) + f.shape)
        else:
            out[f.name] = rng.random((n,) + f.shape).astype("float32")
    out["history"][0] = [3, 5, 0, 0]
    out["history"][1] = 0  # all padding
    out["something_else"] = np.zeros((n,), "float32")
    return out


def roundtrip(layer):
    config = layer.get_config()
    clone = type(layer).from_config(config)
    assert clone.get_config() == config
    return clone


# -- gradient reversal ----------------------------------------------------------------
@pytest.mark.parametrize("scale", [1.0, 0.3])
def test_gradient_reversal_identity_forward_negated_backward(scale):
    grl = GradientReversal(scale=scale)
    x = tf.constant([[1.0, -2.0], [3.0, 0.5]])
    upstream = tf.constant([[0.5, 2.0], [-1.0, 4.0]])
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = grl(x)
        loss = tf.reduce_sum(y * upstream)
    np.testing.assert_array_equal(y.numpy(), x.numpy())
    np.testing.assert_allclose(tape.gradient(loss, x).numpy(), -scale * upstream.numpy())
    assert roundtrip(grl).scale == pytest.approx(scale)


def test_gradient_reversal_scale_can_change_inside_a_traced_function():
    grl = GradientReversal(scale=1.0)
    x = tf.constant([2.0])

    @tf.function
    def grad():
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = tf.reduce_sum(grl(x))
        return tape.gradient(y, x)

    assert grad().numpy()[0] == pytest.approx(-1.0)
    grl.set_scale(0.25)
    assert grad().numpy()[0] == pytest.approx(-0.25)


# -- FM pieces ------------------------------------------------------------------------------
def test_bi_interaction_equals_reference_and_pairwise_sum():
    rng = np.random.default_rng(1)
    v = rng.normal(size=(4, 5, 3)).astype("float32")
    ref = 0.5 * (v.sum(axis=1) ** 2 - (v**2).sum(axis=1))
    pairwise = sum(v[:, i] * v[:, j] for i in range(5) for j in range(i + 1, 5))
    out = BiInteraction()(v).numpy()
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out, pairwise, rtol=1e-5, atol=1e-5)
    fm = FMInteraction()(v).numpy()
    assert fm.shape == (4, 1)
    np.testing.assert_allclose(fm[:, 0], pairwise.sum(axis=1), rtol=1e-5, atol=1e-5)


def test_bi_interaction_field_weights():
    v = np.random.default_rng(2).normal(size=(2, 3, 4)).astype("float32")
    layer = BiInteraction(field_weights=True)
    layer(v)
    layer.weight_per_field.assign([2.0, 0.0, 1.0])
    w = np.array([2.0, 0.0, 1.0], "float32")[None, :, None]
    np.testing.assert_allclose(layer(v).numpy(), (w * v)[:, 0] * (w * v)[:, 2], rtol=1e-5)
    assert roundtrip(layer).field_weights


# -- cross network, MLP -----------------------------------------------------------------------
def test_cross_network_follows_the_cross_formula():
    x0 = np.random.default_rng(3).normal(size=(4, 6)).astype("float32")
    net = CrossNetwork(num_layers=2)
    out = net(x0).numpy()
    x = x0
    for cross in net.crosses:
        kernel, bias = (w.numpy() for w in cross.dense.weights)
        x = x0 * (x @ kernel + bias) + x
    np.testing.assert_allclose(out, x, rtol=1e-4, atol=1e-5)
    assert roundtrip(CrossNetwork(num_layers=2, projection_dim=2)).projection_dim == 2


def test_mlp_shapes_dropout_and_batch_norm():
    x = np.random.default_rng(4).normal(size=(8, 5)).astype("float32")
    mlp = MLP([6, 3], dropout=0.5, batch_norm=True)
    assert tuple(mlp(x, training=False).shape) == (8, 3)
    # dropout is active only in training
    np.testing.assert_allclose(mlp(x, training=False).numpy(), mlp(x, training=False).numpy())
    assert not np.allclose(mlp(x, training=True).numpy(), mlp(x, training=False).numpy())
    clone = roundtrip(mlp)
    assert clone.hidden_units == [6, 3] and clone.batch_norm
    np.testing.assert_array_equal(MLP([])(x).numpy(), x)


# -- attention pooling -----------------------------------------------------------------------
def test_attention_weights_sum_to_one_and_padding_gets_zero():
    rng = np.random.default_rng(5)
    q = rng.normal(size=(3, 4)).astype("float32")
    keys = rng.normal(size=(3, 5, 4)).astype("float32")
    mask = np.array([[1, 1, 1, 0, 0], [1, 0, 0, 0, 0], [0, 0, 0, 0, 0]], bool)
    att = AttentionPooling([8, 4], normalize=True)
    pooled, w = att(q, keys, mask=mask, return_weights=True)
    w = w.numpy()
    np.testing.assert_allclose(w[:2].sum(axis=1), 1.0, rtol=1e-6)
    assert (w[~mask] == 0.0).all()  # exactly zero, not merely small
    expected = np.einsum("bl,bld->bd", w, keys)
    np.testing.assert_allclose(pooled.numpy(), expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(pooled.numpy()[2], 0.0)  # all padding -> zeros
    # padding keys do not influence the result
    keys2 = keys.copy()
    keys2[~mask] = 100.0
    again = att(q, keys2, mask=mask).numpy()
    np.testing.assert_allclose(again, pooled.numpy(), rtol=1e-5, atol=1e-6)


def test_attention_raw_din_weights_are_masked_not_normalised():
    rng = np.random.default_rng(6)
    q = rng.normal(size=(2, 4)).astype("float32")
    keys = rng.normal(size=(2, 3, 4)).astype("float32")
    mask = np.array([[1, 1, 0], [1, 1, 1]], bool)
    att = AttentionPooling([8], normalize=False)
    _, w = att(q, keys, mask=mask, return_weights=True)
    w = w.numpy()
    assert w[0, 2] == 0.0
    assert not np.allclose(w[1].sum(), 1.0)
    clone = roundtrip(att)
    assert not clone.normalize and clone.hidden_units == [8]


# -- feature embedding ------------------------------------------------------------------------
def test_feature_embedding_shapes_and_ignores_non_inputs():
    embed = FeatureEmbedding(SCHEMA, embedding_dim=4)
    out = embed(batch())
    # fields: user_id, item_id, history (pooled), domain, brand (categorical proxy)
    assert embed.field_names() == ["user_id", "item_id", "history", "domain", "brand"]
    assert tuple(out["fields"].shape) == (5, 5, 4)
    # dense: age, pop (dense proxy), visual (3)
    assert embed.dense_names() == ["age", "pop", "visual"]
    assert tuple(out["dense"].shape) == (5, 5)
    assert sorted(embed.tables) == ["brand", "domain", "item_id", "user_id"]


def test_feature_embedding_shares_the_item_table_and_ignores_padding():
    embed = FeatureEmbedding(SCHEMA, embedding_dim=4)
    feats = batch()
    out = embed(feats)
    table = embed.table("item_id").embeddings.numpy()
    assert embed.table("history") is embed.table("item_id")
    item_field = out["fields"][:, 1].numpy()
    np.testing.assert_allclose(item_field, table[feats["item_id"]], rtol=1e-6)
    hist = out["fields"][:, 2].numpy()
    np.testing.assert_allclose(hist[0], (table[3] + table[5]) / 2, rtol=1e-6)  # mean of 2, not 4
    np.testing.assert_array_equal(hist[1], 0.0)  # all padding
    emb, mask = embed.sequence(feats, "history")
    assert tuple(emb.shape) == (5, 4, 4)
    np.testing.assert_array_equal(mask.numpy()[0], [True, True, False, False])
    np.testing.assert_array_equal(emb.numpy()[0, 2:], 0.0)

    # history and candidate ids hit the same variable, and the gradient is sparse
    with tf.GradientTape() as tape:
        out = embed(feats)
        loss = tf.reduce_sum(out["fields"][:, 1]) + tf.reduce_sum(out["fields"][:, 2])
    assert len(embed.trainable_variables) == 1  # all tables in one fused variable
    (grad,) = tape.gradient(loss, embed.trainable_variables)
    assert isinstance(grad, tf.IndexedSlices)  # sparse: only the looked-up rows
    item = embed.table("item_id")
    dense = tf.convert_to_tensor(grad).numpy()
    moved = set(np.flatnonzero(np.abs(dense).sum(axis=1)) - item.offset)
    assert moved <= set(range(item.input_dim))  # only item rows get a non-zero gradient
    assert {3, 5} <= moved and set(feats["item_id"].tolist()) <= moved
    assert np.all(dense[item.offset] == 0.0)  # padding id 0 gets no gradient from history


def test_feature_embedding_fused_tables_do_not_overlap_and_check_ids():
    embed = FeatureEmbedding(SCHEMA, embedding_dim=4)
    feats = batch()
    embed(feats)
    spans = sorted((t.offset, t.offset + t.input_dim) for t in embed.tables.values())
    assert spans[0][0] == 0 and all(a[1] == b[0] for a, b in zip(spans, spans[1:]))
    assert spans[-1][1] == embed.embeddings.shape[0] == embed.total_rows
    for name in ("user_id", "domain", "brand"):  # each field reads its own table's rows
        rows = embed.table(name).embeddings.numpy()[feats[name]]
        np.testing.assert_array_equal(embed.lookup(feats, name).numpy(), rows)
    # an id past its table's vocabulary must fail, not read the next table's rows
    bad = dict(feats, user_id=np.full_like(feats["user_id"], SCHEMA["user_id"].vocab_size))
    with pytest.raises(tf.errors.InvalidArgumentError, match="not below its table's size"):
        embed(bad)
    with pytest.raises(tf.errors.InvalidArgumentError, match="not below its table's size"):
        embed(dict(feats, brand=-np.ones_like(feats["brand"])))


def test_feature_embedding_freeze_stops_only_the_frozen_tables():
    embed = FeatureEmbedding(SCHEMA, embedding_dim=4)
    feats = batch()
    embed(feats)
    embed.freeze(["user_id"])
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(embed(feats)["fields"])
    (grad,) = tape.gradient(loss, embed.trainable_variables)
    dense = tf.convert_to_tensor(grad).numpy()
    user, item = embed.table("user_id"), embed.table("item_id")
    assert np.all(dense[user.offset:user.offset + user.input_dim] == 0.0)
    assert np.abs(dense[item.offset:item.offset + item.input_dim]).sum() > 0
    user_rows = set(range(user.offset, user.offset + user.input_dim))
    assert not user_rows & set(grad.indices.numpy().tolist())  # no row, not even a zero one
    embed.freeze(["user_id"], frozen=False)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(embed(feats)["fields"])
    (grad,) = tape.gradient(loss, embed.trainable_variables)
    assert user_rows & set(grad.indices.numpy().tolist())


def test_feature_embedding_subsets():
    embed = FeatureEmbedding(SCHEMA, embedding_dim=4)
    feats = batch()
    proxies = embed(feats, roles=["proxy"])
    assert embed.field_names(roles=["proxy"]) == ["brand"]
    assert tuple(proxies["fields"].shape) == (5, 1, 4)
    assert tuple(proxies["dense"].shape) == (5, 1)
    rest = embed(feats, exclude=["pop", "brand"])
    assert tuple(rest["fields"].shape) == (5, 4, 4)
    assert tuple(rest["dense"].shape) == (5, 4)
    only = FeatureEmbedding(SCHEMA, 4, include=["user_id", "age"])
    assert sorted(only.tables) == ["user_id"]
    out = only({"user_id": feats["user_id"], "age": feats["age"]})  # other keys not needed
    assert tuple(out["fields"].shape) == (5, 1, 4) and tuple(out["dense"].shape) == (5, 1)
    empty = embed(feats, include=["age"])
    assert tuple(empty["fields"].shape) == (5, 0, 4)
    with pytest.raises(SchemaError, match="nope"):
        embed(feats, include=["nope"])
    with pytest.raises(SchemaError, match="click"):
        FeatureEmbedding(SCHEMA, 4, include=["click"])  # a label is not an input


def test_feature_embedding_l2_penalises_looked_up_rows_and_stays_sparse():
    embed = FeatureEmbedding(SCHEMA, embedding_dim=4, include=["item_id"], l2=0.5)
    feats = batch()
    with tf.GradientTape() as tape:
        out = embed(feats)
        penalty = tf.add_n(embed.losses)
    rows = embed.table("item_id").embeddings.numpy()[feats["item_id"]]
    assert penalty.numpy() == pytest.approx(0.5 * np.mean(np.sum(rows**2, axis=1)), rel=1e-5)
    grad = tape.gradient(penalty, embed.trainable_variables)[0]
    assert isinstance(grad, tf.IndexedSlices)
    assert out["fields"].shape[1] == 1


def test_feature_embedding_and_linear_config_roundtrip():
    embed = FeatureEmbedding(SCHEMA, embedding_dim=3, exclude=["visual"], l2=0.1)
    clone = roundtrip(embed)
    assert clone.schema == SCHEMA and clone.field_names() == embed.field_names()
    clone = keras.layers.deserialize(keras.layers.serialize(embed))
    assert clone.dense_names() == ["age", "pop"]
    linear = FeatureLinear(SCHEMA, roles=["categorical"])
    out = linear(batch())
    assert tuple(out.shape) == (5, 1)
    assert roundtrip(linear).roles == ["categorical"]


def test_feature_linear_is_the_lr_formula():
    linear = FeatureLinear(SCHEMA)
    feats = batch()
    linear(feats)
    rng = np.random.default_rng(8)
    for v in linear.weights:
        v.assign(rng.normal(size=v.shape).astype("float32"))
    w = {t: layer.embeddings.numpy()[:, 0] for t, layer in linear.id_weights.tables.items()}
    hist = feats["history"]
    hist_mean = (w["item_id"][hist] * (hist > 0)).sum(1) / np.maximum((hist > 0).sum(1), 1)
    dense = np.concatenate([feats["age"][:, None], feats["pop"][:, None], feats["visual"]], 1)
    expected = (
        w["user_id"][feats["user_id"]] + w["item_id"][feats["item_id"]] + hist_mean
        + w["domain"][feats["domain"]] + w["brand"][feats["brand"]]
        + dense @ linear.dense_weights.kernel.numpy()[:, 0] + linear.bias.numpy()[0]
    )
    np.testing.assert_allclose(linear(feats).numpy()[:, 0], expected, rtol=1e-5, atol=1e-6)


def _reference_gradient(rows, ids, upstream):
    """Dense gradient of sum(table[ids] * upstream) w.r.t. the table (numpy)."""
    grad = np.zeros((rows, upstream.shape[-1]), upstream.dtype)
    np.add.at(grad, ids.reshape(-1), upstream.reshape(-1, upstream.shape[-1]))
    return grad


@pytest.mark.parametrize("traced", [False, True])
def test_feature_embedding_gradient_has_one_summed_row_per_distinct_id(traced):
    embed = FeatureEmbedding(SCHEMA, embedding_dim=4, include=["user_id", "item_id"],
                             first_order=True)
    feats = batch(n=9)
    feats["user_id"][:4] = 2  # repeated ids: their rows must be summed, once
    feats["item_id"][3:7] = 5
    rng = np.random.default_rng(9)
    up_e = rng.normal(size=(9, 2, 4)).astype("float32")
    up_w = rng.normal(size=(9, 2, 1)).astype("float32")

    def grads():
        with tf.GradientTape() as tape:
            out = embed(feats)
            loss = tf.reduce_sum(out["fields"] * up_e) + tf.reduce_sum(out["first_order"] * up_w)
        return tape.gradient(loss, [embed.embeddings, embed.first_order_weights])

    g_e, g_w = tf.function(grads)() if traced else grads()
    user, item = embed.table("user_id"), embed.table("item_id")
    ids = np.stack([feats["user_id"] + user.offset, feats["item_id"] + item.offset], axis=1)
    for g, up, width in ((g_e, up_e, 4), (g_w, up_w, 1)):
        assert isinstance(g, tf.IndexedSlices)
        indices = g.indices.numpy()
        assert len(np.unique(indices)) == len(indices) == len(np.unique(ids))  # distinct
        np.testing.assert_allclose(tf.convert_to_tensor(g).numpy(),
                                   _reference_gradient(embed.total_rows, ids, up),
                                   rtol=1e-5, atol=1e-6)
        assert tuple(g.dense_shape.numpy()) == (embed.total_rows, width)


def test_feature_embedding_first_order_weights_share_the_lookup():
    embed = FeatureEmbedding(SCHEMA, embedding_dim=4, first_order=True)
    feats = batch()
    out = embed(feats)
    assert tuple(out["first_order"].shape) == (5, 5, 1)  # one weight per field
    assert tuple(embed.first_order_weights.shape) == (embed.total_rows, 1)
    w = np.random.default_rng(3).normal(size=(embed.total_rows, 1)).astype("float32")
    embed.first_order_weights.assign(w)
    fo = embed(feats)["first_order"].numpy()[..., 0]
    item = embed.table("item_id")
    np.testing.assert_allclose(fo[:, 1], w[feats["item_id"] + item.offset, 0], rtol=1e-6)
    np.testing.assert_allclose(fo[0, 2], w[[3 + item.offset, 5 + item.offset], 0].mean(), rtol=1e-6)
    assert fo[1, 2] == 0.0  # all-padding history
    assert roundtrip(embed).first_order
    assert "first_order" not in FeatureEmbedding(SCHEMA, 4)(feats)


def test_feature_linear_on_a_shared_embedding_equals_its_own_lookup():
    feats = batch()
    own = FeatureLinear(SCHEMA)
    own(feats)
    embed = FeatureEmbedding(SCHEMA, embedding_dim=4, first_order=True)
    shared = FeatureLinear(SCHEMA, embedding=embed)
    embedded = embed(feats)
    shared(feats, embedded)
    assert shared.id_weights is None and shared.embedding is embed
    rng = np.random.default_rng(4)
    for v in own.weights:
        v.assign(rng.normal(size=v.shape).astype("float32"))
    embed.first_order_weights.assign(own.id_weights.embeddings)
    shared.dense_weights.kernel.assign(own.dense_weights.kernel)
    shared.bias.assign(own.bias)
    np.testing.assert_allclose(shared(feats, embed(feats)).numpy(), own(feats).numpy(), rtol=1e-5)
    np.testing.assert_allclose(shared(feats).numpy(), own(feats).numpy(), rtol=1e-5)
    # the shared layer owns no id weights: the embedding's are tracked once, by their owner
    assert len(shared.weights) == 2
    with pytest.raises(SchemaError, match="first_order=True"):
        FeatureLinear(SCHEMA, embedding=FeatureEmbedding(SCHEMA, 4))
    with pytest.raises(SchemaError, match="features are"):
        FeatureLinear(SCHEMA, roles=["categorical"], embedding=embed)


def test_bi_interaction_closed_form_gradient_equals_autodiff():
    rng = np.random.default_rng(11)
    v = tf.constant(rng.normal(size=(4, 5, 3)).astype("float32"))
    up = tf.constant(rng.normal(size=(4, 3)).astype("float32"))
    layer = BiInteraction(field_weights=True)
    layer(v)
    layer.weight_per_field.assign(rng.normal(size=(5,)).astype("float32"))
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(v)
        ours = tf.reduce_sum(layer(v) * up)
        w = layer.weight_per_field[None, :, None] * v  # the same layer by autodiff
        ref = tf.reduce_sum(0.5 * (tf.reduce_sum(w, 1) ** 2 - tf.reduce_sum(w**2, 1)) * up)
    np.testing.assert_allclose(ours.numpy(), ref.numpy(), rtol=1e-5)
    for a, b in zip(tape.gradient(ours, [v, layer.weight_per_field]),
                    tape.gradient(ref, [v, layer.weight_per_field])):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-4, atol=1e-5)
