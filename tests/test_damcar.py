"""DAMCAR (paper 001): label generator, EMA teacher, GRL, Eq. (12), the shared loss
functions, the cascade protocol and the retrieval export."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfdebias.methods import damcar as D
from tfdebias.schema import Feature, Schema

N_USERS, N_ITEMS = 12, 20


def schema():
    return Schema([
        Feature("user_id", "categorical", vocab_size=N_USERS),
        Feature("item_id", "categorical", vocab_size=N_ITEMS),
        Feature("item_visual", "vector", width=3),
        Feature("duration", "dense"),
        Feature("finish", "label"),
    ])


def batch(n=16, seed=0):
    rng = np.random.default_rng(seed)
    return {
        "user_id": rng.integers(1, N_USERS, n), "item_id": rng.integers(1, N_ITEMS, n),
        "item_visual": rng.normal(size=(n, 3)).astype("float32"),
        "duration": rng.uniform(size=n).astype("float32"),
    }, rng.integers(0, 2, n).astype("float32")


def generator(**kw):
    kw.setdefault("embedding_dim", 4)
    m = D.LabelGenerator(schema(), encoder_units=(8, 6), transform_units=(5, 6), **kw)
    m(batch()[0])
    m.init_teacher()
    return m


def test_ema_teacher_follows_eq_9_exactly():
    m = generator(alpha=0.9)
    rng = np.random.default_rng(0)
    for v in m.student.weights:
        v.assign(rng.normal(size=v.shape).astype(v.dtype))
    before_t = [np.array(v) for v in m.teacher.weights]
    stud = [np.array(v) for v in m.student.weights]
    m.update_teacher()
    for t0, s, t1 in zip(before_t, stud, m.teacher.weights):
        np.testing.assert_allclose(np.array(t1), 0.9 * t0 + 0.1 * s, rtol=1e-6, atol=1e-7)
    assert len(m.teacher.weights) == len(m.student.weights) > 0
    assert not m.teacher.trainable_variables  # the teacher gets no gradient


def test_train_step_applies_eq_9_after_each_optimizer_step():
    m = generator(alpha=0.99)
    m.compile(optimizer=keras.optimizers.SGD(0.5))
    (x, y), (tx, _) = batch(seed=1), batch(seed=2)
    t0 = [np.array(v) for v in m.teacher.weights]
    m.train_step(((x, y), tx))
    for a, s, t in zip(t0, m.student.weights, m.teacher.weights):
        np.testing.assert_allclose(np.array(t), 0.99 * a + 0.01 * np.array(s), rtol=1e-5, atol=1e-6)


def _grads(m, names):
    (x, y), (tx, _) = batch(seed=1), batch(seed=2)
    with tf.GradientTape() as tape:
        dom = D.label_generator_losses(m, x, y, tx, training=True)["dom"]
    vs = [v for v in m.student.trainable_variables if any(n in v.path for n in names)]
    return vs, tape.gradient(dom, vs)


def test_gradient_reversal_flips_the_domain_loss_gradient_for_the_encoder_only():
    m = generator()
    enc_vars, g_rev = _grads(m, ["encoder"])
    head_vars, h_rev = _grads(m, ["domain_head"])
    m.student.grl.set_scale(-1.0)  # gradient x (+1): plain backprop
    _, g_plain = _grads(m, ["encoder"])
    _, h_plain = _grads(m, ["domain_head"])
    assert enc_vars and head_vars
    for a, b in zip(g_rev, g_plain):
        np.testing.assert_allclose(np.array(a), -np.array(b), rtol=1e-5, atol=1e-7)
        assert np.abs(np.array(a)).sum() > 0
    for a, b in zip(h_rev, h_plain):  # the classifier itself minimises L_dom
        np.testing.assert_allclose(np.array(a), np.array(b), rtol=1e-5, atol=1e-7)


def test_only_source_samples_pass_through_g():
    m = generator(lambda1=1.0)
    (x, y), (tx, _) = batch(seed=1), batch(seed=2)
    g_vars = m.student.transform.trainable_variables
    with tf.GradientTape(persistent=True) as tape:
        net = m.student
        zt = net.encode(tx, True)
        yt, dt = net.heads(zt, False, True)
        target_only = tf.reduce_sum(yt) + tf.reduce_sum(dt)
        ys, ds = net.heads(net.encode(x, True), True, True)
        source_only = tf.reduce_sum(ys) + tf.reduce_sum(ds)
    assert all(g is None for g in tape.gradient(target_only, g_vars))
    assert all(g is not None for g in tape.gradient(source_only, g_vars))
    before_t = np.array(m.pseudo_labels(tx, source=False))
    before_s = np.array(m.pseudo_labels(x, source=True))
    for v in g_vars:
        v.assign(v * 3.0 + 0.1)
    np.testing.assert_allclose(np.array(m.pseudo_labels(tx, source=False)), before_t)
    assert not np.allclose(np.array(m.pseudo_labels(x, source=True)), before_s)


@pytest.mark.parametrize("path", ["source", "target"])
def test_label_generator_loss_terms_match_numpy(path):
    m = generator(lambda1=0.7, lambda2=0.3, target_label_path=path)
    (x, y), (tx, _) = batch(seed=3), batch(seed=4)
    losses = {k: float(v) for k, v in D.label_generator_losses(m, x, y, tx).items()}
    through_g = path == "source"  # Eq. (10) on the path that labels S_sam
    ps = np.array(m.pseudo_labels(x, source=True))
    pt = np.array(m.pseudo_labels(tx, source=through_g))
    yt = 1 / (1 + np.exp(-np.array(m.teacher.heads(m.teacher.encode(tx), through_g)[0])))

    def bce(t, p):
        return float(np.mean(-(t * np.log(p) + (1 - t) * np.log(1 - p))))

    assert losses["ce"] == pytest.approx(bce(y, ps), rel=1e-4)
    assert losses["sup"] == pytest.approx(bce(yt, pt), rel=1e-4)
    assert losses["total"] == pytest.approx(
        losses["ce"] + 0.7 * losses["sup"] - 0.3 * losses["dom"], rel=1e-5)
    assert losses["objective"] == pytest.approx(
        losses["ce"] + 0.7 * losses["sup"] + 0.3 * losses["dom"], rel=1e-5)
    # w/o EMA: no teacher term
    assert float(D.label_generator_losses(generator(lambda1=0.0), x, y, tx)["sup"]) == 0.0


def test_modified_pseudo_labels_are_one_on_exposed_positives():
    y = np.array([1, 0, 1, 0, 1])
    src = np.array([True, True, True, False, False])
    ps = np.array([0.2, 0.3, 0.9, 0.6, 0.1])
    np.testing.assert_allclose(D.modified_pseudo_labels(y, src, ps), [1, 0.3, 1, 0.6, 0.1])


def retriever(**kw):
    m = D.HybridRetrieval(schema(), embedding_dim=4, hidden_units=(8, 4),
                          user_features=["user_id"],
                          item_features=["item_id", "item_visual", "duration"], **kw)
    m(batch()[0])
    return m


def test_retrieval_losses_weights_mask_and_distillation():
    m = retriever(lambda3=0.4, adversarial=0.0)
    x, _ = batch(n=6, seed=5)
    target = np.array([1, 0, 1, 0.5, 0, 1], "float32")
    x = {**x, "_rank": np.linspace(0, 1, 6).astype("float32"),
         "_weight": np.array([1, 1, 1, 0, 0, 1], "float32")}
    losses = {k: float(v) for k, v in D.retrieval_losses(m, x, target).items()}
    p = np.array(m(x)).reshape(-1)
    keep = x["_weight"] > 0
    mpl = np.mean(-(target * np.log(p) + (1 - target) * np.log(1 - p))[keep])
    assert losses["mpl"] == pytest.approx(mpl, rel=1e-4)
    assert losses["con"] == pytest.approx(np.mean((x["_rank"] - p) ** 2), rel=1e-4)
    assert losses["total"] == pytest.approx(mpl + 0.4 * losses["con"], rel=1e-4)
    assert losses["adv"] == 0.0


def test_tl_freezes_the_user_tower():
    m = retriever()
    n_all = len(m.trainable_variables)
    m.freeze_user_tower(True)
    paths = [v.path for v in m.trainable_variables]
    assert len(paths) < n_all
    assert not any("user_mlp" in p or "table_user_id" in p for p in paths)
    assert any("item_mlp" in p for p in paths)


class _Stub:
    """A retriever with one-hot item vectors: user u scores item u at 1, item 7 at 0.5,
    item 4 at 0.25 and every other item at 0 (no ties in any top-2)."""

    class dssm:
        item_names = ["item_id"]

    def user_tower(self, f):
        u = tf.cast(f["user_id"], tf.int32)
        return (tf.one_hot(u, 8) + 0.5 * tf.one_hot(tf.fill(tf.shape(u), 7), 8)
                + 0.25 * tf.one_hot(tf.fill(tf.shape(u), 4), 8))

    def item_tower(self, f):
        return tf.one_hot(tf.cast(f["item_id"], tf.int32), 8)


def test_cascade_protocol_against_a_hand_computed_answer():
    splits = {
        "train": {"user_id": np.array([1, 2, 3]), "item_id": np.array([5, 6, 3]),
                  "finish": np.array([1.0, 0.0, 1.0])},
        "test": {"user_id": np.array([1, 2, 3]), "item_id": np.array([1, 2, 7]),
                 "finish": np.array([1.0, 1.0, 0.0])},
        "oracle": {"user_id": np.array([1, 3]), "item_id": np.array([4, 7]),
                   "finish": np.array([1.0, 1.0])},
    }

    def ranker(f):  # prefers higher item ids
        return tf.cast(tf.reshape(f["item_id"], [-1, 1]), tf.float32)

    out = D.cascade_protocol((_Stub(), ranker), splits, None,
                             {"retrieval_ks": (2,), "rank_ratio": 2, "seen": ("train",)})
    # relevant: user 1 {1, 4} (test + oracle), user 2 {2}, user 3 {7} (oracle only: the
    # exposed test row (3, 7) was not finished). Top-2: user 1 [1, 7], user 2 [2, 7],
    # user 3 [7, 4] (its own item 3 is masked: seen in train).
    assert out["retrieval/R@2"] == pytest.approx((0.5 + 1 + 1) / 3)
    assert out["retrieval/P@2"] == pytest.approx(0.5)
    assert out["retrieval/F@2"] == pytest.approx((0.5 + 2 / 3 + 2 / 3) / 3)
    # the ranker keeps the higher id of the two: 7, 7, 7 -> only user 3 hits
    for k in ("ranking/N@1", "ranking/M@1", "ranking/H@1"):
        assert out[k] == pytest.approx(1 / 3)
    with pytest.raises(Exception):
        D.cascade_protocol(_Stub(), splits, None)  # needs a (retriever, ranker) pair


def test_map_at_k_matches_brute_force():
    from tfdebias.evaluation.metrics import map_at_k

    rel = [{1, 3}, {2}, {9}]
    top = np.array([[1, 2, 3], [4, 2, 5], [6, 7, 8]])
    got = map_at_k(rel, top_ids=top, k=3)  # the cascade protocol's M@k
    expect = np.mean([(1 / 1 + 2 / 3) / 2, (1 / 2) / 1, 0.0])
    assert got == pytest.approx(expect)


def test_retrieval_export_serves_towers_and_retrieve(tmp_path):
    from tfdebias.export import export_saved_model

    m = retriever()
    ids = np.arange(1, N_ITEMS)
    rng = np.random.default_rng(0)
    items = {"item_id": ids, "item_visual": rng.normal(size=(len(ids), 3)).astype("float32"),
             "duration": rng.uniform(size=len(ids)).astype("float32")}
    m.attach_index(items, k=5)
    path = export_saved_model(m, m.schema, tmp_path / "retrieval")
    users = {"user_id": np.arange(1, 7)}
    scores, top = m.index(m.user_tower(users))
    loaded = tf.saved_model.load(str(path))
    got = loaded.signatures["retrieve"](user_id=tf.constant(users["user_id"]))
    brute = np.array(m.user_tower(users)) @ np.array(m.item_tower(items)).T
    best = -np.sort(-brute, 1)[:, :5]
    # the served and in-process top-5 hold the brute-force best scores in order; ids may
    # differ only where two items' scores tie to float precision (the graph's arithmetic
    # and Keras's round differently)
    for top_ids in (got["ids"].numpy(), np.array(top)):
        served = np.take_along_axis(brute, np.searchsorted(ids, top_ids), 1)
        np.testing.assert_allclose(served, best, atol=1e-5)
    np.testing.assert_allclose(got["scores"].numpy(), np.array(scores), atol=1e-5)
    np.testing.assert_allclose(np.array(scores), best, atol=1e-5)
    emb = loaded.signatures["item_tower"](**{k: tf.constant(v) for k, v in items.items()})
    np.testing.assert_allclose(emb["item_embedding"].numpy(), np.array(m.item_tower(items)),
                               atol=1e-5)


@pytest.mark.slow
def test_cascade_export_checks_ranker_and_retriever_in_clean_processes(tmp_path):
    from tfdebias import models

    m = retriever()
    ranker = models.build("deepfm", schema(), embedding_dim=4, hidden_units=(8,))
    x, _ = batch(n=10, seed=7)
    ranker(x)
    ids = np.arange(1, N_ITEMS)
    rng = np.random.default_rng(1)
    corpus = {"item_id": ids, "item_visual": rng.normal(size=(len(ids), 3)).astype("float32"),
              "duration": rng.uniform(size=len(ids)).astype("float32")}
    rep = D.export_cascade(m, ranker, schema(), corpus, tmp_path / "cascade", k=4, check_rows=x)
    assert rep["retrieve_check"]["ok"] and rep["ranker_check"]["ok"]
    assert (tmp_path / "cascade" / "ranker" / "saved_model.pb").exists()


def test_building_by_a_call_raises_no_keras_build_warning():
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        gen = generator()
        ret = D.HybridRetrieval(schema(), embedding_dim=4, hidden_units=(6,))
        ret(batch()[0])
    assert gen.teacher.built and gen.student.transform.built and ret.domain_head.built
    assert not [w for w in caught if "build()" in str(w.message)], [str(w.message) for w in caught]


def test_tfdebias_train_refuses_the_label_generator_before_any_work(tmp_path, capsys):
    from tfdebias.cli import main

    out = tmp_path / "r"
    assert main(["train", "--data", "cascade_exposure", "--model", "damcar_label_generator",
                 "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("tfdebias: error: model 'damcar_label_generator' cannot be "
                              "trained by `tfdebias train`: it trains on paired"), err[-3:]
    assert not list(tmp_path.iterdir())


def test_ada_network_round_trips_through_its_config():
    """The label generator's network is registered serializable: its config rebuilds it,
    and the rebuilt network computes the same heads from the same weights."""
    net = D.ADANetwork(schema(), embedding_dim=4, encoder_units=(8, 6), transform_units=(5, 6))
    x, _ = batch()
    y, d = net(x, source=True)
    clone = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(net))
    assert isinstance(clone, D.ADANetwork) and clone.get_config() == net.get_config()
    clone(x, source=True)
    clone.set_weights(net.get_weights())
    y2, d2 = clone(x, source=True)
    np.testing.assert_allclose(y2, y, atol=1e-6)
    np.testing.assert_allclose(d2, d, atol=1e-6)
