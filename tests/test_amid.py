"""AMID: the DR estimator (Eq. 9, Lemma 4.1 / Corollary 4.1), MIM (Eq. 3-6), the loss
phases (Eq. 13 / 15) and the information each piece may read."""

import numpy as np
import pytest
import tensorflow as tf

from tfdebias import models
from tfdebias.errors import UsageError
from tfdebias.datasets.synthetic import cross_domain_sequences as cds
from tfdebias.methods import amid

PARAMS = dict(n_users=200, n_items_a=40, n_items_b=30, dim=8, max_len=8)


# -- the estimator -----------------------------------------------------------------------
def _world(seed=0, n=4000):
    rng = np.random.default_rng(seed)
    e = rng.gamma(2.0, 0.5, n)  # true errors of every pair
    p = 1 / (1 + np.exp(-(1.5 * (e - 1.0))))  # MNAR: large errors are observed more often
    return rng, e, p


def _mc_mean(e, e_hat, p_hat, p, rng, draws=400):
    o = (rng.random((draws, len(e))) < p).astype(float)
    vals = (e_hat + o * (np.where(o > 0, e, 0) - e_hat) / p_hat).mean(axis=1)
    # the library function on the same draws must agree with the formula
    lib = [amid.doubly_robust_estimate(e, e_hat, o[i], p_hat) for i in range(3)]
    np.testing.assert_allclose(lib, vals[:3], rtol=1e-12)
    return vals.mean(), vals.std() / np.sqrt(draws)


def test_dr_unbiased_when_propensity_correct():
    rng, e, p = _world(0)
    wrong_imputation = np.full_like(e, 0.3)
    mean, se = _mc_mean(e, wrong_imputation, p, p, rng)
    assert abs(mean - e.mean()) < 4 * se + 1e-3


def test_dr_unbiased_when_imputation_correct():
    rng, e, p = _world(1)
    wrong_propensity = np.full_like(p, 0.5)
    mean, se = _mc_mean(e, e.copy(), wrong_propensity, p, rng)
    assert abs(mean - e.mean()) < 4 * se + 1e-9


def test_dr_biased_when_both_wrong_and_bias_matches_lemma_4_1():
    rng, e, p = _world(2)
    e_hat, p_hat = np.full_like(e, 0.3), np.full_like(p, 0.5)
    mean, se = _mc_mean(e, e_hat, p_hat, p, rng)
    lemma = np.mean((p_hat - p) / p_hat * (e - e_hat))  # Eq. (10)
    assert abs(mean - e.mean()) > 10 * se
    assert abs((e.mean() - mean) - lemma) < 4 * se + 1e-3


def test_ips_is_dr_with_zero_imputation_and_clipping():
    e = np.array([1.0, 2.0, 3.0, 4.0])
    o = np.array([1.0, 0.0, 1.0, 1.0])
    p = np.array([0.01, 0.5, 0.5, 1.0])
    got = amid.ips_estimate(e, o, p, clip=0.1)
    assert got == pytest.approx(np.mean([1 / 0.1, 0, 3 / 0.5, 4 / 1.0]))
    tf_got = amid.ips_estimate(tf.constant(e), tf.constant(o), tf.constant(p), clip=0.1)
    assert float(tf_got) == pytest.approx(got)
    # per-domain mean: 1/|Z| sum_Z mean over the domain's pairs (Eq. 9)
    dom = np.array([0, 0, 0, 1])
    got = amid.doubly_robust_estimate(e, np.zeros(4), o, np.ones(4), domain=dom, n_domains=2)
    assert got == pytest.approx(0.5 * ((1 + 0 + 3) / 3 + 4))


# -- the model -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def data():
    return cds.simulate(PARAMS), cds.schema(PARAMS)


def _batch(cols, idx):
    return {k: tf.constant(v[idx]) for k, v in cols.items()}


def _model(schema, splits, **kw):
    kw.setdefault("n_sampled_users", 8)
    kw.setdefault("bank_size", 16)
    m = models.build("amid", schema, backbone="sasrec", embedding_dim=8,
                     backbone_args={"dropout": 0.0, "hidden_units": [8]}, **kw)
    amid.build_amid(m, _batch(splits["test"], np.arange(4)))
    m.set_user_bank(splits["train"], seed=0)
    return m


def test_mim_reads_no_target_item_and_no_other_row(data):
    splits, schema = data
    m = _model(schema, splits, threshold=-5.0)
    b = _batch(splits["test"], np.arange(10))
    u = m.user_representation(b).numpy()
    changed = dict(b, item_id=tf.reverse(b["item_id"], [0]))
    np.testing.assert_allclose(m.user_representation(changed).numpy(), u, atol=1e-6)
    alone = m.user_representation(_batch(splits["test"], np.arange(3))).numpy()
    np.testing.assert_allclose(alone, u[:3], atol=1e-5)  # a score never depends on its batch


def test_threshold_controls_the_groups(data):
    splits, schema = data
    b = _batch(splits["test"], np.arange(12))
    t = schema["history_a"].max_len
    low = _model(schema, splits, threshold=-1e6)
    s, mask, rate = low.enhanced_sequence(b)
    assert s.shape[1] == 2 * t
    assert float(rate) == pytest.approx(1.0)
    assert mask.numpy()[:, t:].any(axis=1).all()  # every row receives messages
    high = _model(schema, splits, threshold=1e6)
    _, mask, rate = high.enhanced_sequence(b)
    assert float(rate) == 0.0
    # no sampled user is in a group: only the user's own other-domain positions are real
    other = np.where(b["domain"].numpy()[:, None] == 0, b["history_b"].numpy(), b["history_a"].numpy())
    np.testing.assert_array_equal(mask.numpy()[:, t:], other > 0)


def test_group_size_groups_each_row_with_its_n_most_similar_sampled_users(data):
    """The top-n grouping (a per-row k): exactly n of the N sampled users, the n with the
    largest a', along the users' axis of either layout (B, N) or (B, N, T); a row with no
    real position groups with nobody; W1 and W2 still get a gradient."""
    splits, schema = data
    n, big_n = 3, 8
    m = _model(schema, splits, group_size=n, n_sampled_users=big_n)
    mim = m.mim_module
    rng = np.random.default_rng(0)
    a_raw = rng.uniform(-1, 1, (5, big_n)).astype(np.float32)
    a_raw[4] = -2e9  # no real position
    a = mim.group(tf.constant(a_raw)).numpy()
    top = np.argsort(-a_raw[:4], axis=1)[:, :n]
    want = np.zeros((4, big_n), np.float32)
    np.put_along_axis(want, top, 1.0, axis=1)
    np.testing.assert_allclose(a[:4], want, atol=1e-6)  # 1 + soft - soft: exact to rounding
    assert not a[4].any()
    tied = np.array([[0.5, 0.9, 0.5, 0.5, 0.1, 0.5, 0.2, 0.5]], np.float32)
    np.testing.assert_allclose(mim.group(tf.constant(tied)).numpy(),
                               [[1, 1, 1, 0, 0, 0, 0, 0]], atol=1e-6)  # ties in bank order
    pre = rng.uniform(-1, 1, (4, big_n, 6)).astype(np.float32)  # (b, N, T) of prefix_messages
    got = mim.group(tf.constant(pre), axis=1).numpy()
    np.testing.assert_allclose(got.sum(axis=1), n, atol=1e-5)
    np.testing.assert_allclose(got, (pre >= np.sort(pre, axis=1)[:, -n][:, None, :]).astype(np.float32),
                               atol=1e-6)
    # in the model: every row groups with n of the N (the bank has no empty history)
    b = _batch(splits["test"], np.arange(12))
    assert float(m.enhanced_sequence(b)[2]) == pytest.approx(n / big_n)
    assert float(m.prefix_representations(b)[2]) == pytest.approx(n / big_n)
    with tf.GradientTape() as tape:
        u = m.user_representation(b)
        loss = tf.reduce_sum(u * u)
    g = tape.gradient(loss, [mim.w1.kernel, mim.w2.kernel])
    assert all(x is not None and float(tf.reduce_max(tf.abs(x))) > 0 for x in g)
    clone = type(m).from_config(m.get_config())  # the grouping is part of the config
    assert clone.mim_module.group_size == n
    for bad in (-1, big_n):
        with pytest.raises(UsageError, match="group_size"):
            _model(schema, splits, group_size=bad, n_sampled_users=big_n)


def test_own_other_domain_message_always_reaches_her(data):
    """Sec. 4.1: the user's own other-domain sequence is propagated whenever she has one,
    whatever the threshold (only the N sampled users are grouped)."""
    splits, schema = data
    test = splits["test"]
    rows = np.flatnonzero(test["overlap"] == 1)[:6]
    assert len(rows) == 6
    b = _batch(test, rows)
    for k, n in ((1e6, 0), (-1e6, 0), (0.3, 0), (0.3, 1)):
        m = _model(schema, splits, threshold=k, group_size=n)
        u = m.user_representation(b).numpy()
        changed = dict(b)
        for name in ("history_a", "history_b"):  # change her other-domain items only
            mine = (b["domain"].numpy() == (1 if name == "history_a" else 0))[:, None]
            h = b[name].numpy()
            changed[name] = tf.constant(np.where(mine & (h > 0), 1 + (h % 5), h))
        assert not np.allclose(m.user_representation(changed).numpy(), u, atol=1e-6), k
    # a user without another domain gets nothing from her (empty) other-domain sequence
    m = _model(schema, splits, threshold=1e6)
    lone = np.flatnonzero(test["overlap"] == 0)[:4]
    bl = _batch(test, lone)
    m_o = m._encoded(bl)[3]
    assert not m_o.numpy().any()


def test_prefix_representation_is_causal_and_ends_at_the_full_one(data):
    """Position t's representation (its next-item loss) never reads an item after t, and
    the last position's is Mean(S*) of Eq. (7), for every configuration."""
    from tfdebias.models.sequential import masked_mean

    splits, schema = data
    b = _batch(splits["test"], np.arange(10))
    t = schema["history_a"].max_len
    for kw in ({"threshold": 0.0}, {"mim": False, "estimator": "ips"},
               {"mim": False, "transfer": False, "estimator": "none"}):
        m = _model(schema, splits, **kw)
        u, valid, _ = m.prefix_representations(b)
        s, mask, _ = m.enhanced_sequence(b)
        np.testing.assert_allclose(u.numpy()[:, -1], masked_mean(s, mask).numpy(), atol=1e-5)
        changed = dict(b)
        for name in ("history_a", "history_b"):  # the most recent item of each history
            h = b[name].numpy().copy()
            h[:, -1] = np.where(h[:, -1] > 0, 1 + h[:, -1] % 7, 0)
            changed[name] = tf.constant(h)
        u2, _, _ = m.prefix_representations(changed)
        if not (kw.get("mim", True) or kw.get("transfer", True)):  # else: the other domain's
            # history (changed here too) is read whole at every position
            np.testing.assert_allclose(u2.numpy()[:, : t - 1], u.numpy()[:, : t - 1], atol=1e-5)
    # MIM: with the other domain left alone, earlier prefixes never see the last target item
    m = _model(schema, splits, threshold=0.0)
    u, _, _ = m.prefix_representations(b)
    changed = dict(b)
    dom = b["domain"].numpy()
    for z, name in enumerate(("history_a", "history_b")):
        h = b[name].numpy().copy()
        h[:, -1] = np.where((dom == z) & (h[:, -1] > 0), 1 + h[:, -1] % 7, h[:, -1])
        changed[name] = tf.constant(h)
    u2, _, _ = m.prefix_representations(changed)
    np.testing.assert_allclose(u2.numpy()[:, : t - 1], u.numpy()[:, : t - 1], atol=1e-5)
    assert not np.allclose(u2.numpy()[:, -1], u.numpy()[:, -1], atol=1e-6)


def test_position_loss_reads_every_next_item(data):
    splits, schema = data
    m = _model(schema, splits, mim=False, transfer=False, estimator="none")
    assert m.position_loss
    b = _batch(splits["train"], np.arange(8))
    nxt = m.next_items(b).numpy()
    dom = b["domain"].numpy()
    own = np.where(dom[:, None] == 0, b["history_a"].numpy(), b["history_b"].numpy())
    np.testing.assert_array_equal(nxt[:, :-1], own[:, 1:])
    np.testing.assert_array_equal(nxt[:, -1], b["item_id"].numpy())
    b["neg_positions"] = tf.ones_like(b["history_a"])  # item 1 as every position's negative
    with_pos = float(m.loss_terms(b, phase=1)["recommendation"])
    del b["neg_positions"]
    assert with_pos != pytest.approx(float(m.loss_terms(b, phase=1)["recommendation"]))
    bert = models.build("amid", schema, backbone="bert4rec", embedding_dim=8, mim=False,
                        transfer=False, estimator="none", n_sampled_users=8, bank_size=16)
    assert not bert.position_loss  # bidirectional: the last position only


def test_user_level_propensity_and_the_true_one(data):
    splits, schema = data
    m = _model(schema, splits)
    cols = {k: np.concatenate([splits["train"][k][:6], splits["unobserved"][k][:6]])
            for k in splits["train"]}
    cols["propensity"] = np.where(cols["overlap"] == 1, 0.5, cols["propensity"])
    b = _batch(cols, np.arange(12))
    b["neg_item_id"] = tf.where(b["domain"] == 0, tf.constant(3, tf.int64), tf.constant(45, tf.int64))
    assert m.propensity_clip == 0.01 and m.n_sampled_users == 8
    first = next(w for w in m.propensity_model.trainable_weights if len(w.shape) == 2)
    assert first.shape[0] == m.dim  # reads the user alone
    true = _model(schema, splits, propensity="true")
    t_learned, t_true = m.loss_terms(b, phase=2), true.loss_terms(b, phase=2)
    changed = dict(b, propensity=b["propensity"] * 0.5)
    assert float(true.loss_terms(changed, phase=2)["loss"]) != pytest.approx(float(t_true["loss"]))
    assert float(m.loss_terms(changed, phase=2)["loss"]) == pytest.approx(float(t_learned["loss"]))
    assert models.build("amid", schema).n_sampled_users == 64


def test_group_rate_of_zero_or_one_fails_the_run():
    from tfdebias.errors import DataError
    from tfdebias.methods.amid.train import check_group_rates

    check_group_rates([0.2, 0.7])
    for bad in ([0.0], [0.4, 1.0]):
        with pytest.raises(DataError, match="group rate"):
            check_group_rates(bad, where="SASRec + MIM seed 0: ")


def test_phase_losses_and_unobserved_labels_unread(data):
    splits, schema = data
    m = _model(schema, splits)
    cols = {k: np.concatenate([splits["train"][k][:6], splits["unobserved"][k][:6]])
            for k in splits["train"]}
    b = _batch(cols, np.arange(12))
    b["neg_item_id"] = tf.where(b["domain"] == 0, tf.constant(3, tf.int64), tf.constant(45, tf.int64))
    b["neg_item_id_2"] = b["neg_item_id"] + 1
    t1 = m.loss_terms(b, phase=1)
    assert {"recommendation", "imputation", "loss"} <= set(t1)
    t2 = m.loss_terms(b, phase=2)
    assert {"dr_risk", "propensity_bce", "loss"} <= set(t2)
    unobs = b["observed"].numpy() == 0
    assert unobs.any()
    changed = dict(b, item_id=tf.where(tf.constant(unobs), b["item_id"] + 1, b["item_id"]))
    assert float(m.loss_terms(changed, phase=2)["loss"]) == pytest.approx(float(t2["loss"]), abs=1e-6)
    assert float(m.loss_terms(changed, phase=1)["loss"]) != pytest.approx(float(t1["loss"]), abs=1e-6)


def test_phase_two_leaves_the_imputation_model_alone(data):
    splits, schema = data
    m = _model(schema, splits)
    ids = {id(w) for w in m.imputation_model.trainable_weights}
    assert not any(id(w) in ids for w in m.phase_variables(2))
    assert any(id(w) in ids for w in m.phase_variables(1))
    pids = {id(w) for w in m.propensity_model.trainable_weights}
    assert any(id(w) in pids for w in m.phase_variables(2))


@pytest.mark.slow
def test_fit_alternates_and_scores(data):
    import keras

    splits, schema = data
    keras.utils.set_random_seed(0)
    m = models.build("amid", schema, backbone="sasrec", embedding_dim=8, n_sampled_users=8,
                     bank_size=16, backbone_args={"num_blocks": 1})
    out = amid.fit_amid(m, splits["train"], schema, unobserved_columns=splits["unobserved"],
                        epochs=1, batch_size=64)
    assert "c/imputation" in out["history"] and "r/dr_risk" in out["history"]
    res = amid.ranking_protocol(m, splits, schema, n_neg=20, split_names=("test",))
    assert 0.0 <= res["test/A/ndcg@10"] <= res["test/A/hr@10"] <= 1.0
    assert res["test/n_negatives"] == 20


def test_bad_arguments(data):
    from tfdebias.errors import UsageError

    _, schema = data
    with pytest.raises(UsageError):
        models.build("amid", schema, estimator="magic")
    with pytest.raises(UsageError):
        models.build("amid", schema, backbone="deepfm")


@pytest.mark.parametrize("name", ["star", "pinet", "c2dsr"])
def test_cdsr_baselines_score_and_train_step(name, data):
    splits, schema = data
    m = models.build(name, schema, embedding_dim=8, hidden_units=(8,), dropout=0.0)
    b = _batch(splits["test"], np.arange(6))
    p = m(b)
    cands = tf.stack([b["item_id"], b["item_id"]], axis=1)
    s = m.score_candidates(b, cands)
    np.testing.assert_allclose(tf.sigmoid(s[:, 0]).numpy(), p[:, 0].numpy(), rtol=1e-5, atol=1e-6)
    terms = m.loss_terms(b, training=True)
    assert np.isfinite(float(terms["loss"]))
    if name == "pinet":  # the transfer unit reads the other domain only for overlapping rows
        changed = dict(b, history_b=tf.where(b["history_b"] > 0, b["history_b"] * 0 + 45, 0))
        rows = (b["domain"].numpy() == 0) & (b["history_b"].numpy() > 0).any(1)
        if rows.any():
            assert np.abs(m(changed).numpy()[rows] - p.numpy()[rows]).max() > 1e-7


def test_building_by_a_call_raises_no_keras_build_warning(data):
    import warnings

    splits, schema = data
    m = models.build("amid", schema, backbone="sasrec", embedding_dim=8, n_sampled_users=8,
                     bank_size=16, backbone_args={"num_blocks": 1})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        amid.build_amid(m, _batch(splits["train"], np.arange(4)))
    assert m.built and m.imputation_model.built and m.propensity_model.built
    assert not [w for w in caught if "build()" in str(w.message)], [str(w.message) for w in caught]


def _own_sequence_hits(batch):
    """Share of a batch's negatives that are items of the row's own target-domain sequence."""
    f = {k: np.asarray(v) for k, v in batch.items()}
    own = np.where(f["domain"][:, None] == 0, f["history_a"], f["history_b"])
    seen = np.concatenate([own, f["item_id"][:, None]], 1)
    hits, total = 0, 0
    for name in ("neg_item_id", "neg_item_id_2", "neg_positions"):
        if name in f:
            neg = f[name].reshape(len(seen), -1)
            hits += int((neg[:, :, None] == seen[:, None, :]).any(2).sum())
            total += neg.size
    return hits, total


def test_training_negatives_exclude_the_rows_own_sequence(data):
    """As the authors' ``item_pool - set(seq)``: no training negative (row, per-position or
    L_r) is an item of the row's own target-domain history or its target, and each stays
    in the target's domain pool. On a 5-item pool half of the raw draws hit the sequence,
    so the check fails without :func:`exclude_own_items`."""
    from tfdebias import data as tdata
    from tfdebias.data import samplers
    from tfdebias.methods.amid.data import exclude_own_items, make_dr_dataset

    splits, schema = data
    pools = samplers.domain_item_pools(splits, ["history_a", "history_b"])
    small = [p[:5] for p in pools]  # tiny pools: collisions are frequent
    cols = {k: np.asarray(v)[:128] for k, v in splits["train"].items()}
    for name in ("history_a", "history_b"):  # the rows' sequences use the tiny pools only
        h = cols[name].copy()
        z = 0 if name == "history_a" else 1
        h[h > 0] = small[z][h[h > 0] % 5]
        cols[name] = h
    cols["item_id"] = np.where(cols["domain"] == 0, small[0][cols["item_id"] % 5],
                               small[1][cols["item_id"] % 5])
    own = np.where(cols["domain"][:, None] == 0, cols["history_a"], cols["history_b"])
    assert ((own > 0).sum(1) <= 3).any()  # some rows leave room in the 5-item pool
    keep = (len(small[0]) - np.array([len(set(r[r > 0]) | {t}) for r, t in zip(own, cols["item_id"])])) > 0
    cols = {k: v[keep] for k, v in cols.items()}
    sampler = samplers.NegativeSampler(small)
    ds = tdata.make_dataset(cols, schema, batch_size=64, shuffle=True, seed=0)
    ds = samplers.add_negatives(ds, sampler, seed=0)
    ds = samplers.add_negatives(ds, sampler, seed=13, name="neg_positions", count=8)
    raw = [_own_sequence_hits(b[0]) for b in ds]
    assert sum(h for h, _ in raw) > 0.2 * sum(t for _, t in raw)  # the raw draws do hit
    fixed = exclude_own_items(ds, sampler, seed=0, names=("neg_item_id", "neg_positions"))
    for b in fixed:
        assert _own_sequence_hits(b[0])[0] == 0
        f = {k: np.asarray(v) for k, v in b[0].items()}
        for name in ("neg_item_id", "neg_positions"):
            neg = f[name].reshape(len(f["domain"]), -1)
            pool_ok = [np.isin(neg[f["domain"] == z], small[z]).all() for z in (0, 1)]
            assert all(pool_ok)
    dr = make_dr_dataset(cols, {k: v[:0] for k, v in cols.items()}, schema, sampler, batch_size=64)
    assert all(_own_sequence_hits(b[0])[0] == 0 for b in dr)


def test_pair_head_is_the_head_of_every_pair(data):
    """The many-negative loss scores (N, d) users x their row's (K, d) items through
    ``pair_head``, which must be the same function as ``head`` on the pairs (MLP + dot)."""
    splits, schema = data
    m = _model(schema, splits, mim=False, transfer=False, estimator="none", position_negatives=4)
    rng = np.random.default_rng(0)
    u = tf.constant(rng.normal(size=(3, 5, 8)), tf.float32)
    v = tf.constant(rng.normal(size=(3, 4, 8)), tf.float32)
    rows = tf.constant([[0] * 5, [1] * 5, [2] * 5], tf.int64)
    got = m.pair_head(tf.reshape(u, [15, 8]), v, tf.reshape(rows, [-1])).numpy().reshape(3, 5, 4)
    want = m.head(tf.repeat(u[:, :, None], 4, axis=2), tf.repeat(v[:, None], 5, axis=1)).numpy()
    np.testing.assert_allclose(got, want, atol=1e-5)
    # each user reads her own row's items, whichever row that is
    flipped = m.pair_head(u[:, 0], v, tf.constant([2, 0, 1], tf.int64)).numpy()
    np.testing.assert_allclose(flipped[0], m.head(tf.repeat(u[:1, :1], 4, axis=1), v[2:3]).numpy()[0],
                               atol=1e-5)


def test_position_softmax_is_the_cross_entropy_of_the_next_item(data):
    """``position_negatives`` = K: the next-item term is -log softmax of the next item
    among it and the row's K negatives, averaged over real positions, then domains."""
    splits, schema = data
    m = _model(schema, splits, mim=False, transfer=False, estimator="none", position_negatives=3)
    b = _batch(splits["train"], np.arange(6))
    negs = np.random.default_rng(1).integers(1, 20, size=(6, 3))
    b["neg_softmax"] = tf.constant(negs)
    got = float(m.loss_terms(b, phase=1)["recommendation"])
    u, valid, _ = m.prefix_representations(b)
    nxt = m.next_items(b).numpy()
    dom = b["domain"].numpy()
    per_dom = {0: [], 1: []}
    for r in range(6):
        for t in range(nxt.shape[1]):
            if nxt[r, t] == 0 or not valid.numpy()[r, t]:
                continue
            items = np.concatenate([[nxt[r, t]], negs[r]])
            ur = tf.repeat(u[r:r + 1, t:t + 1], 4, axis=1)
            logits = m.head(ur, m.backbone.item_vectors(tf.constant(items[None]))).numpy()[0]
            per_dom[int(dom[r])].append(-(logits[0] - np.log(np.exp(logits).sum())))
    want = np.mean([np.mean(v) for v in per_dom.values() if v])
    assert got == pytest.approx(want, rel=1e-4)
    # the BCE next-item term (K = 0) is a different number on the same batch
    m0 = _model(schema, splits, mim=False, transfer=False, estimator="none")
    b["neg_positions"] = tf.constant(np.ones_like(b["history_a"].numpy()))
    assert float(m0.loss_terms(b, phase=1)["recommendation"]) != pytest.approx(got)


def test_one_draw_negatives_stay_in_the_domain_pool_and_are_seeded(data):
    from tfdebias import data as tdata
    from tfdebias.data import samplers

    splits, schema = data
    pools = samplers.domain_item_pools(splits, ["history_a", "history_b"])
    sampler = samplers.NegativeSampler(pools)

    def batches(seed):
        ds = tdata.make_dataset(splits["train"], schema, batch_size=32, shuffle=True, seed=0)
        ds = samplers.add_negatives(ds, sampler, seed=seed, name="neg_softmax", count=16,
                                    one_draw=True)
        return [{k: np.asarray(v) for k, v in b[0].items()} for b in ds]

    a, again, other = batches(5), batches(5), batches(6)
    for f, g in zip(a, again):
        np.testing.assert_array_equal(f["neg_softmax"], g["neg_softmax"])
    assert any((f["neg_softmax"] != g["neg_softmax"]).any() for f, g in zip(a, other))
    for f in a:
        neg = f["neg_softmax"]
        assert neg.shape == (len(f["item_id"]), 16)
        assert not (neg == f["item_id"][:, None]).any()  # never the row's positive
        for z in (0, 1):
            assert np.isin(neg[f["domain"] == z], pools[z]).all()
        assert len(np.unique(neg)) > 16  # draws differ across columns


def test_balanced_pooling_gives_own_and_cross_domain_positions_half_each(data):
    """``pooling="mean"`` is Eq. (7) (every real position alike); ``"balanced"`` averages
    the mean of her own positions and the mean of the cross-domain ones, and is her own
    mean where she has no other domain."""
    from tfdebias.errors import UsageError

    splits, schema = data
    test = splits["test"]
    both = np.flatnonzero((test["overlap"] == 1) & (test["history_a"] > 0).any(1)
                          & (test["history_b"] > 0).any(1))[:4]
    lone = np.flatnonzero(test["overlap"] == 0)[:3]
    b = _batch(test, np.concatenate([both, lone]))
    for pooling in ("mean", "balanced"):
        m = _model(schema, splits, mim=False, estimator="ips", pooling=pooling)
        s_i, m_i, s_o, m_o, _ = m._encoded(b)
        mi, mo = m_i.numpy().astype(np.float32), m_o.numpy().astype(np.float32)
        own, n_own = (s_i.numpy() * mi[..., None]).sum(1), mi.sum(1)
        rest, n_rest = (m.transfer(s_o).numpy() * mo[..., None]).sum(1), mo.sum(1)
        assert (n_rest[:4] > 0).all() and (n_rest[4:] == 0).all() and (n_own > 0).all()
        if pooling == "mean":
            want = (own + rest) / (n_own + n_rest)[:, None]
        else:
            w = np.where(n_rest > 0, 0.5, 1.0)[:, None]
            want = w * own / n_own[:, None] + (1 - w) * rest / np.maximum(n_rest, 1)[:, None]
            eq7 = (own + rest) / (n_own + n_rest)[:, None]
            assert not np.allclose(want[:4], eq7[:4], atol=1e-4)  # the two poolings differ
        np.testing.assert_allclose(m.user_representation(b).numpy(), want, rtol=1e-4, atol=1e-5)
    with pytest.raises(UsageError, match="pooling"):
        _model(schema, splits, pooling="max")


def test_bert4rec_cloze_term_scores_each_hidden_item_from_its_own_position(data):
    """BERT4Rec inside AMID with ``position_negatives``: the last position scores the
    row's target on ``Mean(S*)`` and every hidden item (but the first position's, which
    the shift drops) is scored from its own output, the item at ``t + 1`` from output
    ``t``, against the same negatives; the loss draws the corruption itself."""
    splits, schema = data
    m = models.build("amid", schema, backbone="bert4rec", embedding_dim=8, mim=False,
                     transfer=False, estimator="none", n_sampled_users=8, bank_size=16,
                     position_negatives=3,
                     backbone_args={"dropout": 0.0, "hidden_units": [8], "mask_prob": 0.5})
    amid.build_amid(m, _batch(splits["test"], np.arange(4)))
    assert m.cloze and not m.backbone.corrupt_in_encoder
    b = _batch(splits["train"], np.arange(6))
    negs = np.random.default_rng(2).integers(1, 20, size=(6, 3))
    b["neg_softmax"] = tf.constant(negs)
    dom = b["domain"].numpy()
    own = np.where(dom[:, None] == 0, b["history_a"].numpy(), b["history_b"].numpy())
    # the corruption: [MASK] exactly where hidden, only on real items, the input untouched
    corrupted, hidden = m._corrupt(b)
    np.testing.assert_array_equal(np.where(dom[:, None] == 0, b["history_a"].numpy(),
                                           b["history_b"].numpy()), own)
    hidden = hidden.numpy()
    assert hidden.any() and not (hidden & (own == 0)).any()
    got_own = np.where(dom[:, None] == 0, corrupted["history_a"].numpy(), corrupted["history_b"].numpy())
    np.testing.assert_array_equal(got_own == m.backbone.mask_id, hidden)
    # the term against a hand computation on a fixed hidden pattern
    hide = (own > 0) & (np.arange(own.shape[1])[None] % 2 == 1)
    s_own = m._encoded(b)[0]
    u_all, valid, _ = m.prefix_representations(b)
    got = float(m._position_softmax(b, u_all, valid, b["domain"], False,
                                    cloze=(s_own, tf.constant(hide))))

    def nll(u, item, r):
        items = np.concatenate([[item], negs[r]])
        logits = m.head(tf.repeat(tf.reshape(u, [1, 1, -1]), 4, axis=1),
                        m.backbone.item_vectors(tf.constant(items[None]))).numpy()[0]
        return -(logits[0] - np.log(np.exp(logits).sum()))

    per_dom = {0: [], 1: []}
    for r in range(6):
        per_dom[int(dom[r])].append(nll(u_all[r, -1], b["item_id"].numpy()[r], r))
        for j in range(1, own.shape[1]):
            if hide[r, j]:
                per_dom[int(dom[r])].append(nll(s_own[r, j - 1], own[r, j], r))
    want = np.mean([np.mean(v) for v in per_dom.values() if v])
    assert got == pytest.approx(want, rel=1e-4)
    # without Cloze (the last position alone) it is another number
    alone = float(m._position_softmax(b, u_all, valid, b["domain"], False))
    assert alone != pytest.approx(got)
    assert np.isfinite(float(m.loss_terms(b, phase=1, training=True)["recommendation"]))
