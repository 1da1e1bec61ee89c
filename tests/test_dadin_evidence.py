"""DADIN's evidence table: the simulator's unbiased sample and ``medium`` config, paired
ablations, the fixed step budget, the scores, and ``tfdebias reproduce dadin`` end to end
(``small`` data, a few optimizer steps)."""

import hashlib
import json
import time

import numpy as np
import pytest

from tfdebias.datasets.synthetic import cross_domain_ctr as C

# sha256 of the train/valid/test columns, computed from the 1.0.0 generator (before
# `train_unbiased` and `medium` were added): every existing split keeps its values.
PINNED = [
    ({}, "d95a81a044ea2b759d9513201317325d1f17852791af0cf0c6ff8ddebb09fbfc"),
    ({"seed": 3}, "b15d2d38edece4d77231960644e87e6ac454433fbc66e61de303b652ebb5ac17"),
    ({"n_users": 300, "last_day": "user", "seed": 5},
     "8341b1130a5034349c5024ec70d3b9d31b047694e7643412117230dd6754e3b4"),
]


def digest(splits, names=("train", "valid", "test")):
    h = hashlib.sha256()
    for s in names:
        for k in sorted(splits[s]):
            a = np.ascontiguousarray(splits[s][k])
            h.update(f"{s}/{k}/{a.dtype}/{a.shape}".encode())
            h.update(a.tobytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def small():
    return C.simulate(C.CONFIGS["small"])


@pytest.mark.parametrize("params,expected", PINNED)
def test_existing_splits_are_bit_for_bit_the_1_0_0_ones(params, expected):
    assert digest(C.simulate({**C.CONFIGS["small"], **params})) == expected


def test_train_unbiased_is_the_target_test_population(small):
    tr, un, te = small["train"], small["train_unbiased"], small["test"]
    n_src = C.DEFAULTS["n_items_source"]
    assert len(un["click"]) == len(tr["click"])
    assert set(un) == set(tr)
    assert (un["domain"] == 1).all() and (un["item_id"] > n_src).all()
    assert (un["day"] == C.DEFAULTS["n_days"]).all()  # the test day
    # every test user can appear; cold-start users have no target history, as in test
    warm = np.unique(tr["user_id"][tr["domain"] == 1])
    np.testing.assert_array_equal(un["cold_start"] == 1, ~np.isin(un["user_id"], warm))
    assert (un["history_target"][un["cold_start"] == 1] == 0).all()
    assert np.isin(te["user_id"], un["user_id"]).mean() > 0.95
    # the population test users are sampled from: every target user (test users are a
    # random subset), so the click rate agrees and cold-start test users are well covered
    assert abs(un["relevance"].mean() - te["relevance"].mean()) < 0.02
    cold_test_users = np.unique(te["user_id"][te["cold_start"] == 1])
    assert np.isin(cold_test_users, un["user_id"]).mean() > 0.95
    logged = np.unique(np.r_[warm, te["user_id"], small["valid"]["user_id"]])
    assert np.isin(logged, un["user_id"]).all()  # every user with a logged target row
    # a separate stream: other seeds give other samples, the same seed the same one
    again = C.simulate(C.CONFIGS["small"])["train_unbiased"]
    for k in un:
        np.testing.assert_array_equal(again[k], un[k])


def _user_category_auc(train, test, k=5.0):
    """AUC on ``test`` of each (user, item category)'s smoothed target click rate in
    ``train``, shrunk to the item's rate: no model, just counts."""
    from tfdebias.evaluation.metrics import auc

    t = train["domain"] == 1
    y = train["click"][t]
    n_i = np.bincount(train["item_id"][t], minlength=2000)
    item = (np.bincount(train["item_id"][t], y, minlength=2000) + k * y.mean()) / (n_i + k)
    key = train["user_id"][t] * 100 + train["item_category"][t]
    n = np.bincount(key, minlength=10**6)
    s = np.bincount(key, y, minlength=10**6)
    tk = test["user_id"] * 100 + test["item_category"]
    prior = item[test["item_id"]]
    return float(auc(test["click"], (s[tk] + k * prior) / (n[tk] + k)))


def test_the_bias_is_measurable_without_training(small):
    # counts from the unbiased sample rank the test rows far better than counts from
    # the biased log (which has no target row of any cold-start user)
    biased = _user_category_auc(small["train"], small["test"])
    unbiased = _user_category_auc(small["train_unbiased"], small["test"])
    assert unbiased - biased > 0.1, (biased, unbiased)


def test_medium_is_sized_for_power():
    configs = [c.name for c in C.CrossDomainCtr.BUILDER_CONFIGS]
    assert configs[:2] == ["small", "medium"]
    t = time.process_time()
    d = C.simulate(C.CONFIGS["medium"])
    seconds = time.process_time() - t
    n_rows = sum(len(s["click"]) for s in d.values())
    assert seconds <= 15 * n_rows / 200_000
    te, tr = d["test"], d["train"]
    assert len(te["click"]) >= 20_000 and (te["domain"] == 1).all()
    assert len(np.unique(te["user_id"])) >= 1_000 and len(np.unique(te["item_id"])) >= 200
    assert len(tr["click"]) / C.CONFIGS["medium"]["n_users"] >= 50
    assert (tr["domain"] == 0).sum() > 2 * (tr["domain"] == 1).sum()  # label-rich source
    assert len(d["train_unbiased"]["click"]) == len(tr["click"])


# -- the reproducer's parts ------------------------------------------------------------

def _schema_and_splits():
    params = {"n_users": 300}
    sp = C.simulate(params)
    return C.schema(params), sp


def test_paired_ablations_share_initial_weights():
    from tfdebias.methods import dadin as D
    from tfdebias.methods.dadin import train as DT

    schema, sp = _schema_and_splits()
    sample = {k: v[:8] for k, v in sp["train"].items() if k != "click"}
    args = {"embedding_dim": 4, "hidden_units": [8, 6]}

    def weights(variant, seed):
        m = D.build_row_model("dadin", {**args, **D.VARIANTS[variant]}, schema, sample, seed)
        return {a: [w.numpy() for w in getattr(m, a).weights] for a in DT._DADIN_LAYERS
                if getattr(m, a, None) is not None}

    # identical weights and dropout masks: the same training-mode forward pass
    batch = {k: v[:16] for k, v in sp["train"].items() if k != "click"}
    h = [D.build_row_model("dadin", {**args, **D.VARIANTS[v]}, schema, sample, 0)
         .forward_all(batch, training=True)["h"].numpy() for v in ("dadin9", "dadin++")]
    np.testing.assert_array_equal(h[0], h[1])
    nine, full, other = weights("dadin9", 0), weights("dadin++", 0), weights("dadin9", 1)
    assert set(nine) < set(full)
    for layer in nine:
        for a, b in zip(nine[layer], full[layer]):
            np.testing.assert_array_equal(a, b, err_msg=layer)
    assert not np.array_equal(nine["embed"][0], other["embed"][0])  # another seed, other weights
    # DADIN3's DNN reads 4d inputs: it cannot share the DNN, but shares the embeddings
    three = weights("dadin3", 0)
    np.testing.assert_array_equal(three["embed"][0], full["embed"][0])
    assert three["dnn_layers"][0].shape != full["dnn_layers"][0].shape


@pytest.mark.slow
def test_train_row_takes_exactly_the_budgeted_steps():
    from tfdebias.methods import dadin as D

    schema, sp = _schema_and_splits()
    train = {k: v[:100] for k, v in sp["train"].items()}  # 4 batches of 32 per epoch
    cfg = {"batch_size": 32, "learning_rate": 1e-3, "optimizer": "adam"}
    for model, args in (("dadin", {}), ("din", {})):
        m = D.train_row(model, {"embedding_dim": 4, "hidden_units": [8], **args}, train, schema,
                        cfg, steps=10, seed=0)
        assert int(m.optimizer.iterations.numpy()) == 10, model


def test_evidence_scores_match_plain_metrics(small):
    from tfdebias.evaluation.metrics import auc, logloss
    from tfdebias.methods import dadin as D

    te = small["test"]
    p = np.clip(te["relevance"] + 0.05 * np.random.default_rng(0).standard_normal(len(te["click"])),
                0.01, 0.99)
    s = D.evidence_scores(te, p)
    assert {"test/auc", "test/logloss", "test/auc/cold", "test/auc/warm"} <= set(s)
    np.testing.assert_allclose(s["test/auc"].point(), auc(te["click"], p), rtol=1e-9)
    np.testing.assert_allclose(s["test/logloss"].point(), logloss(te["click"], p), rtol=1e-6)
    cold = te["cold_start"] == 1
    np.testing.assert_allclose(s["test/auc/cold"].point(), auc(te["click"][cold], p[cold]), rtol=1e-9)
    assert s["test/auc"].n_units == te["user_id"].max() + 1  # units = test users


# -- end to end ----------------------------------------------------------------------------

@pytest.mark.slow
def test_reproduce_writes_the_evidence_table(tmp_path, data_dir, capsys):
    from tfdebias import cli

    out = tmp_path / "dadin"
    assert cli.main(["reproduce", "dadin", "--data", "cross_domain_ctr/small", "--rows", "DADIN++",
                     "--steps", "4", "--embedding-dim", "4", "--data-seeds", "2", "--seeds", "1",
                     "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "[1/8] DADIN9 data seed 0 seed 0" in printed and "[8/8]" in printed
    res = json.loads((out / "results.json").read_text())
    h = res["headroom"]
    assert h["metric"] == "test/auc"
    for k in ("skyline", "floor", "gap"):
        assert len(h[k]["ci95"]) == 2 and h[k]["ci95"][0] <= h[k]["ci95"][1]
    rows = {r["name"]: r for r in res["rows"]}
    roles = {n: r["role"] for n, r in rows.items()}
    assert roles == {"DADIN9": "floor", "DADIN++": "method", "DADIN9 on train_unbiased": "skyline",
                     "popularity": "simple", "logistic regression": "simple",
                     "truth (relevance)": "truth"}
    assert rows["DADIN9"]["gap_closed"]["mean"] == 0.0
    assert rows["DADIN9 on train_unbiased"]["gap_closed"]["mean"] == 1.0
    assert rows["DADIN++"]["vs_baseline"]["name"] == "DADIN9"
    for r in rows.values():
        assert r["n_data_seeds"] == 2 and set(r["ci95"]["test/auc"]) and "test/auc/cold" in r["mean"]
    trained = [r for r in res["records"] if r["role"] in ("floor", "skyline", "method")]
    assert len(trained) == 6 and {r["data_seed"] for r in trained} == {0, 1}
    assert {r["metrics"]["train/steps"] for r in trained} == {4.0}  # one budget for every row
    assert all("scores" not in r for r in res["records"])
    # the two draws are different data: the truth row scores differently
    truth = [r["metrics"]["test/auc"] for r in res["records"] if r["role"] == "truth"]
    assert len(truth) == 2 and truth[0] != truth[1]
    md = (out / "results.md").read_text()
    assert "Headroom" in md and "fixed budget: 4 optimizer steps" in md


def test_reproduce_refuses_snips_stopping(capsys):
    from tfdebias import cli

    assert cli.main(["reproduce", "dadin", "--stopping", "snips", "--out", "unused"]) == 2
    assert "propensities" in capsys.readouterr().err


def test_loss_ablations_are_zero_weights_on_identical_layers():
    """DADIN7-9 of the table are DADIN++'s layers with a loss weight at 0: under one seed
    every weight and the training-mode forward pass (dropout masks) are identical."""
    from tfdebias.methods import dadin as D

    schema, sp = _schema_and_splits()
    sample = {k: v[:8] for k, v in sp["train"].items() if k != "click"}
    rows = {name: args for name, model, args, group in D.TABLE_ROWS if model == "dadin"}
    assert rows["DADIN9"]["lambda_global"] == rows["DADIN9"]["lambda_intra"] == 0.0
    assert rows["DADIN++"]["lambda_global"] == rows["DADIN++"]["lambda_intra"] == 0.5
    batch = {k: v[:16] for k, v in sp["train"].items() if k != "click"}
    built = {n: D.build_row_model("dadin", {"embedding_dim": 4, "hidden_units": [8, 6], **rows[n]},
                                  schema, sample, 0) for n in ("DADIN9", "DADIN8", "DADIN++")}
    ref = built["DADIN++"]
    for name in ("DADIN9", "DADIN8"):
        m = built[name]
        assert [w.path for w in m.weights] == [w.path for w in ref.weights]
        for a, b in zip(m.weights, ref.weights):
            np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=f"{name} {a.path}")
    h = [m.forward_all(batch, training=True)["h"].numpy() for m in (built["DADIN9"], ref)]
    np.testing.assert_array_equal(h[0], h[1])
    # with its weights at 0, DADIN9's loss is the CTR loss alone
    t = built["DADIN9"].loss_terms(batch, sp["train"]["click"][:16], training=False)
    np.testing.assert_allclose(float(t["loss"]), float(t["loss_y"]), rtol=1e-6)


def test_domain_probe_reads_the_domain_id():
    """The linear probe's AUC is ~1 on a representation that contains the domain id and
    ~0.5 on one that does not."""
    from tfdebias.methods import dadin as D

    rng = np.random.default_rng(1)
    n = 4000
    dom = (rng.random(n) < 0.5).astype(float)
    noise = rng.standard_normal((n, 6))
    assert D.domain_probe_auc(np.c_[noise, dom], dom) > 0.999
    # a mean shift of 0.5 on 6 axes: d' = 0.5 sqrt(6), AUC = Phi(d' / sqrt 2) = 0.807
    assert abs(D.domain_probe_auc(noise + 0.5 * dom[:, None], dom) - 0.807) < 0.03
    assert abs(D.domain_probe_auc(noise, dom) - 0.5) < 0.05


def test_domain_diagnostics_of_a_model():
    from tfdebias.methods import dadin as D

    schema, sp = _schema_and_splits()
    sample = {k: v[:8] for k, v in sp["train"].items() if k != "click"}
    rows = {name: args for name, model, args, group in D.TABLE_ROWS if model == "dadin"}
    m = D.build_row_model("dadin", {"embedding_dim": 4, "hidden_units": [8, 6], **rows["DADIN++"]},
                          schema, sample, 0)
    out = D.domain_diagnostics(m, sp["train"], schema, n=300)
    assert {"probe/h_da", "probe/h", "loss/domain"} <= set(out)
    assert 0.0 <= out["probe/h"] <= 1.0 and out["loss/domain"] > 0
    nine = D.build_row_model("dadin", {"embedding_dim": 4, "hidden_units": [8, 6], **rows["DADIN9"]},
                             schema, sample, 0)
    assert "loss/domain" not in D.domain_diagnostics(nine, sp["train"], schema, n=300)
