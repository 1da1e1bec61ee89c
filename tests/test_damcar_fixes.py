"""DAMCAR's revised training: target rows labelled through the path Eq. (6) trains, Ganin's
warm-up of the reversal scale, the EMA rate from the step count, the bounded domain
classifier input, the log-scaled duration, the early-stopped ranker, the "S_sam as 0" and
oracle-label rows, and a protocol that the exposure policy cannot win."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfdebias.datasets.synthetic import cascade_exposure as C
from tfdebias.errors import DataError
from tfdebias.methods import damcar as D

TINY = {"scenario": "communities", "seed": 3, "n_users": 60, "n_items": 90, "n_authors": 12,
        "exposures_per_user": 20.0, "oracle_per_user": 20}


@pytest.fixture(scope="module")
def tiny():
    splits = C.simulate(TINY)
    data = D.prepare_cascade(splits, C.schema(TINY))
    return data, C.truth(TINY)


def features(data, split="train"):
    c = data.splits[split]
    return {k: c[k] for k in data.user_names + data.item_names}, c[data.label]


def small_generator(data, **kw):
    m = D.LabelGenerator(data.schema, embedding_dim=4, encoder_units=(8, 6),
                         transform_units=(5, 6), **kw)
    m(features(data)[0])
    m.init_teacher()
    return m


# -- target labels -------------------------------------------------------------------
def test_default_target_labels_come_from_the_path_eq6_trains(tiny):
    data, _ = tiny
    assert D.Settings().target_label_path == "source"
    m = small_generator(data)
    x, y = features(data)
    served = np.array(m(x)).reshape(-1)  # what `call` serves (a probability)
    np.testing.assert_allclose(served, np.array(m.pseudo_labels(x, source=True)), rtol=1e-6)
    # Eq. (6)'s gradient reaches every layer that makes the served target label
    with tf.GradientTape() as tape:
        ce = D.label_generator_losses(m, x, y, x)["ce"]
    path = m.student.transform.trainable_variables + m.student.label_head.trainable_variables
    assert all(g is not None and float(tf.reduce_sum(tf.abs(g))) > 0
               for g in tape.gradient(ce, path))
    # the printed Eq. (5) stays an option: Phi(E(x)), which Eq. (6) never trains
    lit = small_generator(data, target_label_path="target")
    np.testing.assert_allclose(np.array(lit(x)).reshape(-1),
                               np.array(lit.pseudo_labels(x, source=False)), rtol=1e-6)


# -- the reversal schedule -----------------------------------------------------------
def test_reversal_scale_schedule_starts_at_zero_and_reaches_its_maximum():
    n = 12
    s = [float(D.grl_schedule(i, n)) for i in range(n + 3)]
    assert s[0] == 0.0 and s[n - 1] == pytest.approx(1.0, abs=1e-6)
    assert all(b >= a for a, b in zip(s, s[1:])) and max(s) == pytest.approx(1.0, abs=1e-6)
    assert float(D.grl_schedule(0, 0)) == 1.0  # no warm-up: full scale from step 0


def test_training_warms_the_reversal_scale_up_over_the_run(tiny):
    data, _ = tiny
    x, y = features(data)
    b = D.Budget(batch_size=64, label_steps=7)
    seen = []

    class Record(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            seen.append(float(logs["grl_scale"]))

    import tfdebias.methods.damcar.train as T

    orig = T._fit

    def fit(model, ds, vars_, **kw):
        kw["verbose"] = 0
        model.fit(ds.take(kw["steps"]), epochs=1, verbose=0, callbacks=[Record()])
        return model

    T._fit = fit
    try:
        m = D.train_label_generator(data, x, y, x, budget=b, alpha=None)
    finally:
        T._fit = orig
    assert len(seen) == 7
    assert seen[0] == 0.0 and seen[-1] == pytest.approx(1.0, abs=1e-6)
    assert all(b >= a for a, b in zip(seen, seen[1:]))
    assert float(m.student.grl.scale) == pytest.approx(1.0, abs=1e-6)


# -- EMA -----------------------------------------------------------------------------
def test_ema_rate_is_chosen_from_the_step_count():
    assert D.auto_alpha(250) == pytest.approx(0.96)
    assert D.auto_alpha(6000) == pytest.approx(0.99)  # the paper's value at its ~6k steps
    assert D.auto_alpha(10) == 0.5 and D.auto_alpha(None) == 0.99
    for steps in (250, 1000, 6000):
        assert D.auto_alpha(steps) ** steps <= np.exp(-10) + 1e-12


def test_ema_ramp_lets_the_teacher_leave_its_initial_weights(tiny):
    data, _ = tiny
    m = small_generator(data, alpha=0.99, ema_ramp=True)
    assert float(m.ema_rate(1)) == pytest.approx(0.5)
    assert float(m.ema_rate(10**6)) == pytest.approx(0.99)
    fixed = small_generator(data, alpha=0.99)
    assert float(fixed.ema_rate(1)) == pytest.approx(0.99)


# -- the domain classifier's input ---------------------------------------------------
def test_domain_classifier_reads_the_unit_normalised_representation(tiny):
    data, _ = tiny
    m = small_generator(data)
    z = m.student.encode(features(data)[0])
    _, d1 = m.student.heads(z, True)
    _, d2 = m.student.heads(z * 100.0, False, domain_source=True)
    np.testing.assert_allclose(np.array(d1), np.array(d2), rtol=1e-4, atol=1e-5)


# -- features and the ranker ---------------------------------------------------------
def test_duration_is_log_scaled_into_unit_range(tiny):
    data, _ = tiny
    raw = C.simulate(TINY)["train"]["duration"]
    use_log, lo, hi = data.scaling["duration"]
    assert use_log and lo == pytest.approx(np.log1p(raw.min()), rel=1e-6)
    v = data.splits["train"]["duration"]
    assert v.min() == pytest.approx(0.0, abs=1e-6) and v.max() == pytest.approx(1.0, abs=1e-6)
    np.testing.assert_allclose(v, (np.log1p(raw) - lo) / (hi - lo), rtol=1e-5, atol=1e-6)
    plain = D.prepare_cascade(C.simulate(TINY), C.schema(TINY), log_scale=False)
    assert plain.scaling["duration"][0] is False


def test_ranker_early_stops_on_valid_and_keeps_its_best_weights(tiny):
    data, _ = tiny
    r = D.train_ranker(data, "deepfm", 0, D.Budget(batch_size=64, ranker_steps=20))
    es = r.early_stopping
    assert es["steps_per_check"] == 2 and 0 <= es["best_epoch"] < 10
    assert np.isfinite(es["best_val_loss"])


# -- rows ----------------------------------------------------------------------------
@pytest.mark.slow
def test_ssam_as_zero_and_oracle_label_rows(tiny):
    data, truth = tiny
    b = D.Budget(batch_size=64, ranker_steps=4, label_steps=3, retrieval_steps=4)
    st = D.Settings(radius=3, walks=4)
    res = D.run_seed(data, 0, st, b, rows=("BC", D.SSAM_ZERO, "DAMCAR", D.ORACLE),
                     truth=truth.relevance)
    assert set(res["metrics"]) == {"BC", D.SSAM_ZERO, "DAMCAR", D.ORACLE}
    info = res["info"]
    assert 0.0 <= info["label_generator_full"]["target_truth_auc"] <= 1.0
    assert 0.0 <= info["ranker"]["target_truth_auc"] <= 1.0
    assert 0.0 < info["target"]["true_relevance_mean"] < 1.0
    assert set(info["ranker"]["item_rule_test_auc"]) == {"duration", "item_finish_rate"}
    with pytest.raises(DataError, match="true relevance"):
        D.run_seed(data, 0, st, b, rows=(D.ORACLE,), evaluate=False)


def test_soft_auc_is_the_expected_auc_against_the_truth():
    rng = np.random.default_rng(0)
    rel = rng.uniform(size=4000)
    assert D.soft_auc(rel, rel) > 0.6
    assert D.soft_auc(rel, -rel) < 0.4
    assert D.soft_auc(rel, np.zeros_like(rel)) == pytest.approx(0.5)
    # the same as drawing labels many times (up to sampling noise)
    from tfdebias.evaluation import metrics as M

    draws = [M.auc(rng.uniform(size=4000) < rel, rel) for _ in range(20)]
    assert D.soft_auc(rel, rel) == pytest.approx(np.mean(draws), abs=0.01)


# -- the protocol --------------------------------------------------------------------
@pytest.fixture(scope="module")
def communities_small():
    cfg = C.CONFIGS["communities_small"]
    splits = C.simulate(cfg)
    data = D.prepare_cascade(splits, C.schema(cfg))
    truth = C.truth(cfg)
    es = D.eval_set(data.splits, data.label, data.item_names,
                    seen=("train", "valid", "train_unbiased"))

    def relevance(users):
        return truth.relevance_block(users)[:, es.corpus - 1]

    D.add_true_top(es, relevance, data.splits, m=50)
    return data, truth, es, relevance


def test_true_top_group_is_each_users_best_never_shown_items(communities_small):
    data, truth, es, relevance = communities_small
    top = es.relevant[D.TRUE_TOP]
    assert len(top) == len(es.users) and all(len(t) == 50 for t in top)
    n_items = data.n_items
    shown = np.concatenate([
        data.splits[s]["user_id"].astype(np.int64) * n_items + data.splits[s]["item_id"]
        for s in ("train", "valid", "test", "train_unbiased")])
    got = np.repeat(es.users, 50).astype(np.int64) * n_items + np.concatenate(top)
    assert not np.isin(got, shown).any()
    # the truth finds them all (its top-100 also holds the test exposures, which are
    # candidates at retrieval but never in the group)
    m = D.mean_metrics(D.cascade_eval(relevance, None, es, ks=(100,)))
    assert m[f"retrieval/R@100/{D.TRUE_TOP}"] == pytest.approx(1.0)


def test_a_retriever_scoring_the_exposure_policy_does_not_win_the_unexposed_metrics(
        communities_small):
    data, truth, es, relevance = communities_small

    def policy(users):
        return truth.propensity_block(users)[:, es.corpus - 1]

    pol = D.mean_metrics(D.cascade_eval(policy, None, es))
    rel = D.mean_metrics(D.cascade_eval(relevance, None, es))
    pop = D.mean_metrics(D.cascade_eval(D.simple_scorers(data, es)[D.POPULARITY], None, es))
    # copying the policy wins the exposed test positives ...
    assert pol["retrieval/R@100/exposed"] > rel["retrieval/R@100/exposed"]
    # ... but not the never-shown positives, nor the graded group
    assert rel["retrieval/R@100/unexposed"] > pol["retrieval/R@100/unexposed"] + 0.02
    assert rel[f"retrieval/R@100/{D.TRUE_TOP}"] > pol[f"retrieval/R@100/{D.TRUE_TOP}"] + 0.2
    assert pop[f"retrieval/R@100/{D.TRUE_TOP}"] < rel[f"retrieval/R@100/{D.TRUE_TOP}"]


# -- serving -------------------------------------------------------------------------
@pytest.mark.slow
def test_exports_take_raw_features_with_the_scaling_inside(tiny, tmp_path):
    from tfdebias import models

    data, _ = tiny
    cols = {k: data.splits["train"][k] for k in data.user_names + data.item_names}
    x = {k: np.asarray(v)[:32] for k, v in cols.items()}
    ret = {}
    for name in ("DAMCAR", "BC"):
        ret[name] = D.HybridRetrieval(data.schema, embedding_dim=4, hidden_units=(8, 4),
                                      user_features=data.user_names,
                                      item_features=data.item_names)
        ret[name](x)
    ranker = models.build("deepfm", data.schema, embedding_dim=4, hidden_units=(8,))
    ranker(x)
    rep = D.export_cascade(ret["DAMCAR"], ranker, data.schema, data.corpus(), tmp_path / "e",
                           k=5, check_rows=x, scaling=data.scaling,
                           extra_retrievers={"BC": ret["BC"]})
    for key in ("retrieve_check", "retrieval_bc_retrieve_check", "retrieval_default_check",
                "ranker_check"):
        assert rep[key]["ok"], key
    # a client sends seconds; the SavedModel scales them as training did
    raw = D.unscale_features(x, data.scaling)
    raw_duration = C.simulate(TINY)["train"]["duration"][:32]
    np.testing.assert_allclose(raw["duration"], raw_duration, rtol=1e-4)
    loaded = tf.saved_model.load(str(tmp_path / "e" / "retrieval"))
    items = {n: raw[n] for n in data.item_names}
    got = loaded.signatures["item_tower"](**{k: tf.constant(v) for k, v in items.items()})
    want = ret["DAMCAR"].item_tower({n: x[n] for n in data.item_names})
    np.testing.assert_allclose(got["item_embedding"].numpy(), np.array(want), atol=1e-5)
