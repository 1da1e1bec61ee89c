"""DADIN (paper 002): layers, the loss, the ablation switches, gradients, export, CLI."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfdebias import models
from tfdebias.layers import AttentionPooling, BiInteraction, GradientReversal
from tfdebias.methods import dadin as D
from tfdebias.schema import Feature, Schema

L = 5


def small_schema():
    return Schema([
        Feature("user_id", "categorical", vocab_size=30),
        Feature("user_age", "categorical", vocab_size=5),
        Feature("item_id", "categorical", vocab_size=40),
        Feature("item_category", "categorical", vocab_size=6),
        Feature("domain", "domain", vocab_size=2),
        Feature("history_source", "sequence", vocab_size=40, max_len=L, vocab="item_id"),
        Feature("history_target", "sequence", vocab_size=40, max_len=L, vocab="item_id"),
        Feature("day", "categorical", vocab_size=8),
        Feature("click", "label"),
    ])


def batch(n=32, seed=0):
    rng = np.random.default_rng(seed)
    hs = rng.integers(1, 25, (n, L))
    ht = rng.integers(25, 40, (n, L))
    hs[: n // 2, :2] = 0  # left padding
    ht[::3] = 0  # users without a target history (cold start)
    dom = (rng.random(n) < 0.5).astype("int64")
    return {"user_id": rng.integers(1, 30, n), "user_age": rng.integers(1, 5, n),
            "item_id": np.where(dom == 1, rng.integers(25, 40, n), rng.integers(1, 25, n)),
            "item_category": rng.integers(1, 6, n), "domain": dom,
            "history_source": hs, "history_target": ht, "day": rng.integers(1, 8, n),
            "click": (rng.random(n) < 0.3).astype("float32")}


def build(**kw):
    kw.setdefault("embedding_dim", 4)
    kw.setdefault("hidden_units", [8, 6])
    m = models.build("dadin", small_schema(), **kw)
    m(batch(4))
    return m


def n_trainable(model):
    return int(sum(np.prod(v.shape) for v in model.trainable_weights))


def names(model):
    return {v.path.split("/")[1] for v in model.trainable_weights}


# -- layers --------------------------------------------------------------------------


def test_grl_identity_forward_and_scaled_negated_gradient():
    grl = GradientReversal(scale=0.7)
    x = tf.constant([[1.0, -2.0, 3.0]])
    w = tf.constant([[2.0, 5.0, -1.0]])
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = grl(x)
        loss = tf.reduce_sum(w * y)
    np.testing.assert_array_equal(y.numpy(), x.numpy())
    np.testing.assert_allclose(tape.gradient(loss, x).numpy(), -0.7 * w.numpy(), rtol=1e-6)


def test_grl_schedule_is_danns_ramp():
    assert D.grl_schedule(0, 0) == 1.0
    np.testing.assert_allclose(float(D.grl_schedule(0, 100)), 0.0, atol=1e-7)
    np.testing.assert_allclose(float(D.grl_schedule(50, 100)), 2 / (1 + np.exp(-5)) - 1, rtol=1e-6)
    np.testing.assert_allclose(float(D.grl_schedule(500, 100)), 2 / (1 + np.exp(-10)) - 1, rtol=1e-6)


def test_item_attention_weights_sum_to_one_and_ignore_padding():
    rng = np.random.default_rng(0)
    att = AttentionPooling([4], activation="relu", normalize=True,
                           terms=("key", "query", "context", "product"))
    q, p = rng.normal(size=(3, 4)).astype("float32"), rng.normal(size=(3, 4)).astype("float32")
    keys = rng.normal(size=(3, 5, 4)).astype("float32")
    mask = np.array([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1], [0, 0, 0, 0, 0]], bool)
    pooled, w = att(q, keys, mask=mask, context=p, return_weights=True)
    w = w.numpy()
    np.testing.assert_allclose(w[:2].sum(axis=1), 1.0, rtol=1e-6)
    assert (w[~mask] == 0).all() and (w[0, 2:] > 0).all()
    np.testing.assert_array_equal(pooled.numpy()[2], 0.0)
    keys2 = keys.copy()
    keys2[~mask] = 100.0  # whatever sits under the padding changes nothing
    pooled2 = att(q, keys2, mask=mask, context=p)
    np.testing.assert_allclose(pooled2.numpy(), pooled.numpy(), rtol=1e-6)
    # the context (user profile p, Eq. (3)) does enter the score
    _, w3 = att(q, keys, mask=mask, context=p + 5.0, return_weights=True)
    assert not np.allclose(w3.numpy()[1], w[1])


def test_bi_interaction_with_field_weights_matches_reference():
    rng = np.random.default_rng(1)
    v = rng.normal(size=(2, 4, 3)).astype("float32")
    layer = BiInteraction(field_weights=True)
    layer(v)
    c = np.array([0.5, 2.0, -1.0, 1.5], "float32")
    layer.weight_per_field.assign(c)
    cv = v * c[None, :, None]
    ref = 0.5 * (cv.sum(1) ** 2 - (cv ** 2).sum(1))  # Eq. (8)
    pairwise = sum(cv[:, i] * cv[:, j] for i in range(4) for j in range(i + 1, 4))  # Eq. (7)
    np.testing.assert_allclose(layer(v).numpy(), ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ref, pairwise, rtol=1e-5, atol=1e-6)


def test_interest_attention_formula():
    rng = np.random.default_rng(2)
    f = rng.normal(size=(3, 4, 2)).astype("float32")
    layer = D.InterestAttention()
    out = layer(f).numpy()
    V, g, b = layer.V.numpy(), layer.g.numpy(), layer.b.numpy()
    hid = np.maximum(f.reshape(3, 8) @ V, 0).reshape(3, 3, 2)
    np.testing.assert_allclose(out, np.exp((hid * g[None]).sum(-1)) + b[None], rtol=1e-5)
    assert (out > 0).all()


# -- the loss ------------------------------------------------------------------------------


def _bce(y, z):
    p = 1 / (1 + np.exp(-z))
    return -(y * np.log(p) + (1 - y) * np.log(1 - p))


def test_loss_terms_match_numpy_reference():
    rng = np.random.default_rng(3)
    n = 40
    y, dom = (rng.random(n) < 0.3) * 1.0, (rng.random(n) < 0.5) * 1.0
    zy, zg, z1, z0 = (rng.normal(size=n) for _ in range(4))
    T, a = 0.4, 0.3
    t = D.dadin_loss_terms(y, zy, dom, zg, z1, z0, lambda_y=0.9, lambda_global=0.5,
                           lambda_intra=2.0, alpha=a, threshold=T)
    yh = 1 / (1 + np.exp(-zy))
    c1 = yh >= T
    assert 0 < c1.sum() < n
    ref = {"loss_y": _bce(y, zy).mean(), "loss_global": _bce(dom, zg).mean(),
           "loss_intra1": _bce(dom, z1)[c1].mean(), "loss_intra0": _bce(dom, z0)[~c1].mean()}
    for k, v in ref.items():
        np.testing.assert_allclose(float(t[k]), v, rtol=1e-5)
    total = 0.9 * ref["loss_y"] + 0.5 * ref["loss_global"] + 2.0 * (
        a * ref["loss_intra0"] + (1 - a) * ref["loss_intra1"])  # Eq. (22)
    np.testing.assert_allclose(float(t["loss"]), total, rtol=1e-5)
    # an empty class contributes nothing (all predictions below T)
    t2 = D.dadin_loss_terms(y, np.full(n, -9.0), dom, None, z1, z0, threshold=T)
    assert float(t2["loss_intra1"]) == 0.0 and float(t2["loss_global"]) == 0.0


# -- the model and its switches -------------------------------------------------------------


def test_call_returns_probabilities_and_intermediates():
    m = build()
    b = batch(16)
    y = m(b).numpy()
    assert y.shape == (16, 1) and ((y > 0) & (y < 1)).all()
    out = m.forward_all(b)
    np.testing.assert_allclose(out["h"].numpy(), (out["h_spec"] + out["h_da"]).numpy(), rtol=1e-6)
    assert out["h_spec"].shape == (16, 6) and out["interest_weights"].shape == (16, 3)
    assert not hasattr(m, "day") and "day" not in m.embed.tables  # not a DADIN input


def test_every_switch_removes_exactly_its_component():
    d, (h1, h2) = 4, (8, 6)
    full = build()
    base, parts = n_trainable(full), names(full)
    assert {"item_attention_target", "item_attention_source", "interest_attention",
            "bi_interaction", "dnn", "domain_agnostic", "domain_classifier",
            "domain_classifier_1", "domain_classifier_0"} <= parts
    att = 2 * ((4 * d * d + d) + (d + 1))  # W_j (4d -> d) + h_t, per history
    expected = {
        "dadin1": (-att, {"item_attention_target", "item_attention_source"}),
        "dadin2": (-(4 * d * 3 * d + 3 * d + 3), {"interest_attention"}),
        "dadin3": (-4 + 3 * d * h1, {"bi_interaction"}),  # the DNN reads 4d instead of d
        "dadin6": (-(h2 * h2 + h2), {"domain_agnostic"}),
        "dadin7": (-(h2 + 1), {"domain_classifier"}),
        "dadin8": (-2 * (h2 + 1), {"domain_classifier_1", "domain_classifier_0"}),
        "dadin9": (-3 * (h2 + 1), {"domain_classifier", "domain_classifier_1", "domain_classifier_0"}),
    }
    for variant, (delta, removed) in expected.items():
        m = build(**D.VARIANTS[variant])
        assert n_trainable(m) - base == delta, variant
        assert parts - names(m) == removed, variant
    # DADIN4: no DNN; h_spec is the d-wide bi-interaction vector
    m4 = build(**D.VARIANTS["dadin4"])
    assert parts - names(m4) == {"dnn"}
    assert m4.forward_all(batch(3))["h_spec"].shape == (3, d)
    m5 = build(**D.VARIANTS["dadin5"])
    assert parts - names(m5) == {"dnn", "bi_interaction"}
    assert m5.forward_all(batch(3))["h_spec"].shape == (3, 4 * d)
    # DADIN6: classifiers read h_spec and h = h_spec
    out6 = build(**D.VARIANTS["dadin6"]).forward_all(batch(3))
    np.testing.assert_array_equal(out6["h"].numpy(), out6["h_spec"].numpy())
    # DADIN9: no GRL at all, the loss is the CTR loss alone
    m9 = build(**D.VARIANTS["dadin9"])
    assert m9.grl is None
    t9 = m9.loss_terms(batch(8), batch(8)["click"], training=False)
    np.testing.assert_allclose(float(t9["loss"]), float(t9["loss_y"]), rtol=1e-6)


def test_item_attention_switch_means_mean_pooling():
    m = build(item_attention=False)
    b = batch(6)
    q, p, a, bb = m.fields(b)
    np.testing.assert_allclose(a.numpy(), m.embed.pooled(b, "history_target").numpy(), rtol=1e-6)


def test_domain_gradient_reaches_embeddings_reversed():
    m = build(intra_class_loss=False, grl_warmup_steps=0)
    b = batch(32)
    table = m.embed.table("item_id").variable  # the fused variable of every table
    clf = m.domain_classifier.kernel

    def grads():
        with tf.GradientTape() as tape:
            t = m.loss_terms(b, b["click"], training=False)  # no dropout: same forward
        g_emb, g_clf = tape.gradient(t["loss_global"], [table, clf])
        return tf.convert_to_tensor(g_emb).numpy(), g_clf.numpy()

    e_rev, c_rev = grads()
    m.grl.set_scale(-1.0)  # the same path without reversal
    e_plain, c_plain = grads()
    assert np.abs(e_plain).sum() > 0
    np.testing.assert_allclose(e_rev, -e_plain, rtol=1e-5, atol=1e-9)
    np.testing.assert_allclose(c_rev, c_plain, rtol=1e-6)  # the classifier itself is not reversed


@pytest.mark.slow
def test_fit_trains_with_its_own_loss_and_roundtrips_config():
    from tfdebias.optimizers import make_optimizer
    from tfdebias.training.engine import compile_model, uses_custom_loss

    m = build(grl_warmup_steps=10)
    assert uses_custom_loss(m)
    compile_model(m, make_optimizer("adam", 1e-2))
    b = batch(64, seed=5)
    x = {k: v for k, v in b.items() if k != "click"}
    hist = m.fit(x, b["click"], batch_size=16, epochs=2, verbose=0, validation_data=(x, b["click"]))
    assert {"loss", "loss_y", "loss_global", "auc", "val_auc"} <= set(hist.history)
    assert np.isfinite(hist.history["loss"]).all()
    assert 0.0 < m.grl.scale < 1.0  # the ramp moved
    clone = D.DADIN.from_config(m.get_config())
    clone(batch(2))
    assert n_trainable(clone) == n_trainable(m)


def test_export_serves_yhat_for_target_requests(tmp_path):
    from tfdebias.export.saved_model import export_saved_model

    m = build()
    path = export_saved_model(m, small_schema(), tmp_path / "sm")
    served = tf.saved_model.load(str(path)).signatures["serving_default"]
    b = batch(8)
    b["domain"][:] = 1
    inputs = {f.name: tf.constant(b[f.name]) for f in small_schema().inputs}
    got = served(**inputs)["prediction"].numpy()
    np.testing.assert_allclose(got, m(b).numpy()[:, 0], rtol=1e-5)


def test_bad_arguments():
    from tfdebias.errors import SchemaError, UsageError

    with pytest.raises(UsageError):
        build(alpha=1.5)
    with pytest.raises(UsageError):
        build(threshold=1.0)
    with pytest.raises(SchemaError):
        build(target_history="day")
    with pytest.raises(UsageError):
        D.variant_args("dadin10")
    assert D.variant_args("DADIN_3") == {"bi_interaction": False}


def test_reproduce_cli_bad_rows_exit_2(capsys):
    from tfdebias import cli

    assert cli.main(["reproduce", "dadin", "--rows", "DADIN42", "--out", "unused"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "DADIN42" in err[0]
    for bad in (["--epochs", "0"], ["--steps", "0"], ["--steps", "5", "--epochs", "1"],
                ["--patience", "2"],  # a fixed budget: steps or epochs, no early stopping
                ["--threshold", "1.5"], ["--threshold", "median"], ["--grl-scale", "0"],
                ["--grl-schedule", "cosine"], ["--condition", "both"]):
        with pytest.raises(SystemExit) as e:
            cli.main(["reproduce", "dadin", *bad])
        assert e.value.code == 2, bad


def test_search_space_is_registered():
    from tfdebias.tuning import get_space

    space = get_space("dadin")
    assert {"embedding_dim", "hidden_units", "learning_rate", "lambda_global", "lambda_intra",
            "alpha", "threshold"} <= set(space)


def test_intra_class_condition_decides_the_gradient_into_the_predictor():
    """Eq. (13)-(14) reverse the classifiers' gradient into y_hat; the authors' code,
    Rev(h_DA) * y_hat, passes it unreversed; "detached" (the default) passes none."""
    b = batch(32)
    grads = {}
    reference = build(global_domain_loss=False, grl_schedule="constant")
    for condition in ("paper", "authors", "detached"):
        m = build(global_domain_loss=False, grl_schedule="constant", condition=condition)
        for x, y in zip(m.weights, reference.weights):
            x.assign(y)
        with tf.GradientTape() as tape:
            t = m.loss_terms(b, b["click"], training=False)
            intra = t["loss_intra0"] + t["loss_intra1"]
        g = tape.gradient(intra, m.predictor_out.kernel)
        grads[condition] = np.zeros(m.predictor_out.kernel.shape) if g is None else g.numpy()
    assert np.abs(grads["paper"]).sum() > 0
    np.testing.assert_allclose(grads["paper"], -grads["authors"], rtol=1e-4, atol=1e-8)
    assert not np.any(grads["detached"])
    assert build(detach_condition=True).condition == "detached"


@pytest.mark.parametrize("epochs,n_batches", [(1, 3), (2, 5), (7, 4)])
def test_grl_weight_reaches_its_maximum_by_the_end_of_any_run(epochs, n_batches):
    from tfdebias.optimizers import make_optimizer
    from tfdebias.training.engine import compile_model

    m = build(grl_scale=0.3)
    compile_model(m, make_optimizer("adam", 1e-3))
    b = batch(16 * n_batches, seed=3)
    x = {k: v for k, v in b.items() if k != "click"}
    m.fit(x, b["click"], batch_size=16, epochs=epochs, verbose=0, shuffle=False)
    assert int(m.optimizer.iterations.numpy()) == epochs * n_batches
    assert m.grl.scale >= 0.999 * 0.3 and m.grl.scale <= 0.3
    # set_run_length fixes a run: its first step uses p = 1/2, its last p = 1
    m.set_run_length(2)
    start = int(m.optimizer.iterations.numpy())
    first = float(m.grl_weight(start))
    last = float(m.grl_weight(start + 1))
    np.testing.assert_allclose(first, 0.3 * (2 / (1 + np.exp(-5.0)) - 1), rtol=1e-5)
    np.testing.assert_allclose(last, 0.3 * (2 / (1 + np.exp(-10.0)) - 1), rtol=1e-5)


def test_constant_and_warmup_schedules():
    m = build(grl_schedule="constant", grl_scale=0.1)
    assert float(m.grl_weight(0)) == pytest.approx(0.1)
    m = build(grl_schedule="warmup", grl_warmup_steps=100)
    np.testing.assert_allclose(float(m.grl_weight(49)), 2 / (1 + np.exp(-5)) - 1, rtol=1e-5)
    assert build(grl_warmup_steps=0).grl_schedule == "constant"  # the literal Eq. (11)
    from tfdebias.errors import UsageError

    with pytest.raises(UsageError):
        build(grl_schedule="cosine")
    with pytest.raises(UsageError):
        build(condition="both")
    with pytest.raises(UsageError):
        build(threshold="mean")


def test_domain_median_threshold_puts_both_domains_in_both_classes():
    from tfdebias.methods.dadin.losses import DOMAIN_MEDIAN, intra_class_membership

    y_hat = np.array([0.30, 0.32, 0.34, 0.36, 0.38, 0.05, 0.06, 0.07, 0.08], "float32")
    dom = np.array([0, 0, 0, 0, 0, 1, 1, 1, 1], "float32")
    fixed = intra_class_membership(y_hat, dom, 0.2).numpy()
    assert fixed[dom == 0].all() and not fixed[dom == 1].any()  # T = 0.2 splits by domain
    med = intra_class_membership(y_hat, dom, DOMAIN_MEDIAN).numpy()
    np.testing.assert_array_equal(med, [0, 0, 1, 1, 1, 0, 0, 1, 1])
    only = intra_class_membership(y_hat[:5], dom[:5], DOMAIN_MEDIAN).numpy()  # one domain
    np.testing.assert_array_equal(only, [0, 0, 1, 1, 1])


def test_gradient_clipping_bounds_the_update():
    from tfdebias.optimizers import make_optimizer
    from tfdebias.training.engine import compile_model

    b = batch(16, seed=1)
    x = {k: v for k, v in b.items() if k != "click"}
    moved = {}
    for clip in (0.0, 1e-6):
        keras.utils.set_random_seed(0)
        m = build(clip_norm=clip)
        compile_model(m, make_optimizer("sgd", 1.0))
        before = [w.numpy().copy() for w in m.trainable_weights]
        m.fit(x, b["click"], batch_size=16, epochs=1, verbose=0)
        moved[clip] = np.sqrt(sum(((w.numpy() - v) ** 2).sum() for w, v in zip(m.trainable_weights, before)))
    assert moved[1e-6] <= 1.01e-6 < moved[0.0]
