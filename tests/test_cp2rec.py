"""CP2Rec: the purifiers, CLUB, the IPS loss, gradient flow, export of y_U, the CLI."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfdebias.methods import cp2rec
from tfdebias.schema import Feature, Schema

SCHEMA = Schema([
    Feature("user_id", "categorical", vocab_size=21),
    Feature("item_id", "categorical", vocab_size=31),
    Feature("item_category", "categorical", vocab_size=5),
    Feature("item_ctr", "proxy"),
    Feature("log_show_cnt", "proxy"),
    Feature("position", "proxy", vocab_size=6),
    Feature("click", "label"),
    Feature("propensity", "exposure"),
])


def batch(n=64, seed=0):
    rng = np.random.default_rng(seed)
    cols = {
        "user_id": rng.integers(1, 21, n), "item_id": rng.integers(1, 31, n),
        "item_category": rng.integers(1, 5, n),
        "item_ctr": rng.random(n).astype("float32"),
        "log_show_cnt": rng.normal(3, 1, n).astype("float32"),
        "position": rng.integers(1, 6, n),
        "click": rng.integers(0, 2, n).astype("float32"),
        "propensity": rng.uniform(0.05, 0.9, n).astype("float32"),
    }
    cols[cp2rec.PROPENSITY_HAT] = cp2rec.estimate_propensity(cols, cols)
    cols[cp2rec.REL_PROPENSITY_HAT] = cp2rec.rel_propensity(cols, cols)
    return cols


def features(cols):
    return {k: tf.constant(v) for k, v in cols.items() if k != "click"}


# -- Eq. (4)-(6) ------------------------------------------------------------------------


def test_projection_is_orthogonal_to_the_proxy():
    rng = np.random.default_rng(1)
    z, c = rng.normal(size=(32, 5, 10)), rng.normal(size=(32, 1, 10))
    zp = np.asarray(cp2rec.project_out(z, c))
    assert np.abs(np.sum(zp * c, -1)).max() < 1e-5
    # and only the component along c was removed
    resid = z - zp
    cos = np.abs(np.sum(resid * c, -1)) / (np.linalg.norm(resid, axis=-1) * np.linalg.norm(c, axis=-1))
    np.testing.assert_allclose(cos, 1.0, atol=1e-6)
    zp32 = np.asarray(cp2rec.project_out(z.astype("float32"), c.astype("float32")))
    cos32 = np.sum(zp32 * c, -1) / (np.linalg.norm(zp32, axis=-1) * np.linalg.norm(c, axis=-1))
    assert np.abs(cos32).max() < 1e-5


def test_cos_loss_zero_for_orthogonal_one_for_parallel():
    z = np.array([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0]])
    ortho = np.array([[0.0, 3.0, 0.0], [0.0, 0.0, -1.0]])
    assert float(cp2rec.cosine_orthogonality_loss(z, ortho)) == pytest.approx(0.0, abs=1e-6)
    assert float(cp2rec.cosine_orthogonality_loss(z, 5 * z)) == pytest.approx(1.0, abs=1e-6)
    assert float(cp2rec.cosine_orthogonality_loss(z, -z)) == pytest.approx(1.0, abs=1e-6)
    half = np.array([[1.0, 1.0, 0.0], [0.0, 1.0, 1.0]])  # 45 degrees: cos = 1/sqrt(2)
    assert float(cp2rec.cosine_orthogonality_loss(z, half)) == pytest.approx(2 ** -0.5, abs=1e-6)


# -- Eq. (8): CLUB ---------------------------------------------------------------------------


def test_club_bound_with_the_true_conditional():
    rng = np.random.default_rng(2)
    n, rho = 4000, 0.8
    z = rng.normal(size=(n, 3))
    c_ind = rng.normal(size=(n, 3))
    c_dep = rho * z + np.sqrt(1 - rho ** 2) * rng.normal(size=(n, 3))
    zeros = np.zeros((n, 3))
    mi_ind = float(cp2rec.club_mutual_information(zeros, zeros, c_ind))
    mi_dep = float(cp2rec.club_mutual_information(rho * z, np.full((n, 3), np.log(1 - rho ** 2)), c_dep))
    assert abs(mi_ind) < 0.05
    true_mi = -1.5 * np.log(1 - rho ** 2)  # 3 dims
    assert mi_dep > 0.9 * true_mi  # CLUB is an upper bound of I(z; c)


def test_club_learned_q_separates_independent_and_dependent():
    rng = np.random.default_rng(3)
    n = 512
    z = rng.normal(size=(n, 2)).astype("float32")
    cases = {"ind": rng.normal(size=(n, 2)).astype("float32"),
             "dep": (0.9 * z + 0.3 * rng.normal(size=(n, 2))).astype("float32")}
    est = {}
    for name, c in cases.items():
        keras.utils.set_random_seed(0)
        q = cp2rec.ClubEstimator(2, hidden=16)
        q(z)
        opt = keras.optimizers.Adam(0.02)
        opt.build(q.trainable_variables)

        @tf.function
        def step(c=c):  # CLUB's likelihood step
            with tf.GradientTape() as tape:
                mu, logvar = q(z)
                nll = -cp2rec.club_log_likelihood(mu, logvar, c)
            opt.apply_gradients(zip(tape.gradient(nll, q.trainable_variables), q.trainable_variables))

        for _ in range(150):
            step()
        mu, logvar = q(z)
        est[name] = float(cp2rec.club_mutual_information(mu, logvar, c))
    assert abs(est["ind"]) < 0.1
    assert est["dep"] > 1.0 > est["ind"] + 0.5


# -- Eq. (13): IPS ------------------------------------------------------------------------------


def test_ips_loss_is_unbiased_under_simulated_exposure():
    rng = np.random.default_rng(4)
    n, draws = 400, 4000
    loss = rng.gamma(2.0, 0.5, n)
    p = rng.uniform(0.05, 0.9, n)
    loss = loss * (1 + 2 * p)  # exposure correlates with the loss: the naive mean is biased
    mask = rng.random((draws, n)) < p
    ips = float(cp2rec.ips_loss(loss, p, mask=mask, n_total=n * draws))
    naive = float((mask * loss).sum() / mask.sum())
    per_draw = (mask * loss / p).sum(1) / n
    se = per_draw.std() / np.sqrt(draws)
    assert abs(ips - loss.mean()) < 4 * se
    assert abs(naive - loss.mean()) > 20 * se
    # SNIPS with equal propensities is the plain mean
    assert float(cp2rec.snips_loss(tf.constant(loss), np.full(n, 0.3))) == pytest.approx(loss.mean(), rel=1e-5)


def test_estimated_propensity_is_calibrated():
    cols = batch(100)
    users, items = np.meshgrid(np.arange(21), np.arange(31), indexing="ij")
    grid = {"user_id": users.ravel(), "item_id": items.ravel()}
    p = cp2rec.estimate_propensity(cols, grid)
    assert p.sum() == pytest.approx(100, rel=1e-4)  # sums to N over all pairs
    assert p.max() <= 1.0


# -- the model --------------------------------------------------------------------------------

VARIANTS = [
    dict(backbone="dcn", purifier="cos"),
    dict(backbone="dcn", purifier="proj"),
    dict(backbone="ncf", purifier="solve"),
    dict(backbone="ncf", purifier="proj", loss="snips"),
    dict(backbone="dcn", purifier="cos", abt=False, loss="bce"),
    dict(backbone="ncf", purifier="none", abt=False, loss="cvib"),
    dict(backbone="dcn", purifier="none", abt=False, loss="dib"),
    dict(backbone="dcn", purifier="none", abt=False, loss="rel"),
]


def make(args):
    keras.utils.set_random_seed(0)
    args = {**args, "backbone_args": {"hidden_units": [8]}}
    if args["backbone"] == "dcn":
        args["backbone_args"]["num_cross_layers"] = 1
    model = cp2rec.CP2Rec(SCHEMA, **args)
    model(features(batch(8)))
    return model


@pytest.mark.parametrize("args", VARIANTS, ids=lambda a: "-".join(str(v) for v in a.values()))
def test_gradients_reach_every_trainable_variable(args):
    model = make(args)
    cols = batch(64)
    with tf.GradientTape(persistent=True) as tape:
        terms = model.loss_terms(features(cols), tf.constant(cols["click"]), training=True)
    q_ids = {id(v) for v in model.club_variables()}
    main = [v for v in model.trainable_variables if id(v) not in q_ids]
    grads = tape.gradient(terms["loss"], main)
    dead = [v.path for v, g in zip(main, grads) if g is None or not np.any(np.asarray(tf.convert_to_tensor(g)))]
    assert not dead, dead
    if q_ids:
        qv = model.club_variables()
        assert all(g is not None for g in tape.gradient(terms["club_nll"], qv))
        # q_theta's objective does not reach the embeddings (CLUB's separate likelihood step)
        assert all(g is None for g in tape.gradient(terms["club_nll"], main))
    for k in ("loss", "L_B", "L_U", "L_O", "reg"):
        assert np.isfinite(float(terms[k])), k
    if args.get("purifier") in ("proj", "none"):
        assert float(terms["L_O"]) == 0.0


def test_span_projection_is_orthogonal_to_every_proxy_field():
    rng = np.random.default_rng(5)
    z, c = rng.normal(size=(32, 5, 10)), rng.normal(size=(32, 4, 10))
    zp = np.asarray(cp2rec.project_out_span(z.astype("float32"), c.astype("float32")))
    assert np.abs(np.einsum("bfd,bkd->bfk", zp, c)).max() < 1e-3 * np.abs(z).max() * np.abs(c).max() * 10
    # the residual lies in the span of c: z - z' = C a
    resid = z - zp
    coef, *_ = np.linalg.lstsq(c[0].T, resid[0].T, rcond=None)
    np.testing.assert_allclose(c[0].T @ coef, resid[0].T, atol=1e-4)
    # one field: Eq. (5)-(6) exactly
    np.testing.assert_allclose(cp2rec.project_out_span(z, c[:, :1]), cp2rec.project_out(z, c[:, :1]), atol=1e-5)


def _embedding_rows_grad(grad, table):
    g = tf.convert_to_tensor(grad)  # IndexedSlices -> dense (rows x d)
    return np.asarray(g)[table.offset:table.offset + table.input_dim]


@pytest.mark.parametrize("purifier", ["cos", "solve"])
def test_purifier_does_not_update_the_proxy_embeddings_through_l_o(purifier):
    """L_O moves z only: its gradient on c's rows of the embedding table (position) and on
    the dense proxy fields is zero, on z's rows (user, item) it is not."""
    model = make(dict(backbone="dcn", purifier=purifier))
    cols = batch(64)
    with tf.GradientTape() as tape:
        out = model.heads(features(cols), training=True)
        l_o = out["L_O"]
    emb = model.embed.embeddings
    c_vars = [v for v in model.trainable_variables if "c_dense" in v.path]
    assert c_vars
    grads = tape.gradient(l_o, [emb] + c_vars)
    rows = _embedding_rows_grad(grads[0], model.embed.table("position"))
    assert not rows.any()
    assert all(g is None or not np.any(np.asarray(g)) for g in grads[1:])
    assert np.abs(_embedding_rows_grad(grads[0], model.embed.table("item_id"))).sum() > 0


def test_proj_reads_the_span_of_all_proxy_fields():
    model = make(dict(backbone="dcn", purifier="proj"))
    assert model.n_c == 3 and model.proj_basis == "span"  # position + 2 dense proxies, each a field
    out = model.heads(features(batch(16)))
    c, zp = np.asarray(out["c"]), np.asarray(out["z_purified"])
    assert c.shape[1] == 3
    cos = np.einsum("bfd,bkd->bfk", zp, c) / (
        np.linalg.norm(zp, axis=-1)[:, :, None] * np.linalg.norm(c, axis=-1)[:, None, :] + 1e-12)
    assert np.abs(cos).max() < 1e-2  # float32 solve; an unpurified z field has |cos| ~ 0.3
    assert make(dict(backbone="dcn", purifier="proj", proj_basis="mean")).proj_basis == "mean"


def _proxy_bias_batch(n=4096):
    from tfdebias.datasets.synthetic import confounded_ctr

    params = confounded_ctr.CONFIGS["proxy_bias_small"]
    splits, schema = confounded_ctr.simulate(params), confounded_ctr.schema(params)
    splits = cp2rec.add_propensity(splits, schema)
    cols = {k: v[:n] for k, v in splits["train"].items() if k not in [f.name for f in schema if f.role == "truth"]}
    return splits, schema, cols


def test_l_u_is_on_the_scale_of_l_b_at_initialisation():
    """Self-normalised L_U: within 2x of L_B on the logged rows at init; the plain IPS mean
    (lu_normalization='none') is the mean weight times larger."""
    splits, schema, cols = _proxy_bias_batch()
    feats = {k: tf.constant(v) for k, v in cols.items() if k != "click"}
    ratios = {}
    for norm in ("self", "none"):
        keras.utils.set_random_seed(0)
        model = cp2rec.CP2Rec(schema, backbone="ncf", purifier="proj", lu_normalization=norm,
                              backbone_args={"hidden_units": [16]})
        terms = model.loss_terms(feats, tf.constant(cols["click"]), training=False)
        ratios[norm] = float(terms["L_U"]) / float(terms["L_B"])
    assert 0.5 < ratios["self"] < 2.0, ratios
    w = 1.0 / np.clip(cols[cp2rec.PROPENSITY_HAT], cp2rec.PROPENSITY_CLIP, 1.0)
    assert w.mean() > 4 and ratios["none"] > 4, (ratios, w.mean())


def test_propensity_sees_exposure_and_position():
    from tfdebias.datasets.synthetic import confounded_ctr

    splits, schema, _ = _proxy_bias_batch()
    tr = splits["train"]
    kappa = cp2rec.estimate_examination(tr)
    true = confounded_ctr.examination(np.arange(1, 11), 0.3)
    np.testing.assert_allclose(kappa[1:11], true, atol=0.12)
    ratio = tr[cp2rec.PROPENSITY_HAT] / tr[cp2rec.INDEPENDENCE_HAT]
    np.testing.assert_allclose(ratio, kappa[tr["position"]], rtol=1e-5)
    np.testing.assert_allclose(tr[cp2rec.PROPENSITY_ORACLE], tr["propensity"] * tr["examination"], rtol=1e-5)
    for prop, col in (("estimated", cp2rec.PROPENSITY_HAT), ("independence", cp2rec.INDEPENDENCE_HAT),
                      ("oracle", cp2rec.PROPENSITY_ORACLE)):
        model = cp2rec.CP2RecBaseline(schema, backbone="ncf", propensity=prop)
        p = model._propensity({k: tf.constant(v[:50]) for k, v in tr.items()})
        np.testing.assert_allclose(np.asarray(p), np.clip(tr[col][:50], cp2rec.PROPENSITY_CLIP, 1), rtol=1e-6)


def test_proj_model_feeds_f_with_purified_z():
    model = make(dict(backbone="dcn", purifier="proj"))
    out = model.heads(features(batch(16)))
    c_bar = np.asarray(out["c"]).mean(1, keepdims=True)
    zp = np.asarray(out["z_purified"])
    cos = np.sum(zp * c_bar, -1) / (np.linalg.norm(zp, axis=-1) * np.linalg.norm(c_bar, axis=-1) + 1e-12)
    assert np.abs(cos).max() < 1e-4


@pytest.mark.slow
def test_fit_and_export_serves_y_u(tmp_path):
    from tfdebias.data import make_dataset
    from tfdebias.export import export_saved_model

    model = make(dict(backbone="ncf", purifier="solve"))
    cols = batch(256)
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    q_before = [np.array(v) for v in model.club_variables()]
    hist = model.fit(make_dataset(cols, SCHEMA, batch_size=64), epochs=1, verbose=0)
    assert np.isfinite(hist.history["loss"][-1])
    assert any(not np.allclose(a, np.asarray(v)) for a, v in zip(q_before, model.club_variables()))

    feats = {f.name: cols[f.name][:32] for f in SCHEMA.inputs}
    out = model.heads({k: tf.constant(v) for k, v in feats.items()})
    y_u = 1 / (1 + np.exp(-np.asarray(out["logits_U"], np.float64)))
    y_b = 1 / (1 + np.exp(-np.asarray(out["logits_B"], np.float64)))
    assert not np.allclose(y_u, y_b, atol=1e-4)
    path = export_saved_model(model, SCHEMA, tmp_path / "sm")
    loaded = tf.saved_model.load(str(path))
    served = loaded.signatures["serving_default"](**{k: tf.constant(v) for k, v in feats.items()})
    np.testing.assert_allclose(served["prediction"].numpy(), y_u, atol=1e-5)
    biased = loaded.signatures["biased"](**{k: tf.constant(v) for k, v in feats.items()})
    np.testing.assert_allclose(biased["prediction"].numpy(), y_b, atol=1e-5)


def test_config_round_trip_and_registry():
    from tfdebias import models

    model = make(dict(backbone="dcn", purifier="cos", gamma=0.5))
    clone = models.get("cp2rec").from_config(json.loads(json.dumps(model.get_config())))
    assert clone.purifier == "cos" and clone.gamma == 0.5
    base = models.build("cp2rec_baseline", SCHEMA, loss="dib", backbone="ncf")
    assert not base.abt and base.purifier == "none"


@pytest.mark.parametrize("kwargs, pattern", [
    (dict(purifier="nope"), "purifier"),
    (dict(backbone="fm"), "backbone"),
    (dict(loss="cvib"), "abt=False"),
    (dict(propensity_clip=0.0), "propensity_clip"),
    (dict(propensity="true"), "propensity"),
    (dict(lu_normalization="mean"), "lu_normalization"),
    (dict(proj_basis="all"), "proj_basis"),
])
def test_bad_arguments(kwargs, pattern):
    from tfdebias.errors import UsageError

    with pytest.raises(UsageError, match=pattern):
        cp2rec.CP2Rec(SCHEMA, **kwargs)


def test_missing_propensity_column_is_a_clear_error():
    from tfdebias.errors import UsageError

    model = make(dict(backbone="dcn", purifier="proj"))
    cols = batch(16)
    del cols[cp2rec.PROPENSITY_HAT]
    with pytest.raises(UsageError, match="add_propensity"):
        model.loss_terms(features(cols), tf.constant(cols["click"]))


def test_search_space_is_registered():
    from tfdebias import tuning

    space = tuning.get_space("cp2rec")
    assert set(space) >= {"lambda_reg", "learning_rate", "batch_size", "gamma", "beta"}


def test_reproduce_bad_arguments_exit_2(capsys):
    from tfdebias.cli import main

    assert main(["reproduce", "cp2rec", "--backbones", "fm", "--quick", "--out", "x"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--backbones" in err[0]


@pytest.mark.slow
def test_reproduce_writes_an_evidence_table(tmp_path, data_dir):
    from tfdebias.cli import main

    out = tmp_path / "rep"
    rc = main(["reproduce", "cp2rec", "--data", "confounded_ctr/small", "--quick", "--data-seeds", "2",
               "--backbones", "dcn", "--rows", "CP2Rec-PROJ-DCN", "--epochs", "1", "--hidden-units", "8",
               "--out", str(out)])
    assert rc == 0
    res = json.loads((out / "results.json").read_text())
    rows = {r["name"]: r for r in res["rows"]}
    assert {n: r["role"] for n, r in rows.items()} == {
        "popularity (item CTR)": "simple", "LR (DCN features)": "simple", "truth (relevance)": "truth",
        "DCN": "floor", "DCN on uniform log (skyline)": "skyline", "CP2Rec-PROJ-DCN": "method",
        "CP2Rec-PROJ-DCN (oracle p)": "baseline"}  # --quick adds the true-propensity row
    h = res["headroom"]
    assert h["metric"] == "test/auc" and set(h) >= {"skyline", "floor", "gap"}
    assert h["gap"]["mean"] == pytest.approx(h["skyline"]["mean"] - h["floor"]["mean"], abs=1e-9)
    for r in rows.values():
        assert r["n_data_seeds"] == 2 and r["data_seeds"] == [0, 1]
        lo, hi = r["ci95"]["test/auc"]
        assert lo <= r["mean"]["test/auc"] <= hi and 0.0 < r["mean"]["test/auc"] < 1.0
        assert {"test/auc/exposed-light", "test/auc/exposed-heavy", "test/logloss"} <= set(r["ci95"])
        assert "gap_closed" in r
    assert rows["DCN"]["gap_closed"]["mean"] == 0.0
    assert rows["DCN on uniform log (skyline)"]["gap_closed"]["mean"] == 1.0
    assert rows["truth (relevance)"]["mean"]["test/auc"] > max(
        r["mean"]["test/auc"] for n, r in rows.items() if n != "truth (relevance)")
    # one record per (row, data seed, model seed); every trained row of a data seed has
    # the same number of optimizer steps
    recs = res["records"]
    assert len(recs) == 7 * 2 and {r["data_seed"] for r in recs} == {0, 1}
    for d in (0, 1):
        steps = {r["metrics"]["steps"] for r in recs if r["data_seed"] == d and "steps" in r["metrics"]}
        assert len(steps) == 1
    assert res["stopping"].startswith("fixed budget") and "Stopping: fixed budget" in (out / "results.md").read_text()
