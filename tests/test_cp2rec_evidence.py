"""CP2Rec's evidence table: the simulator's unbiased sample and configs, the reproducer's
rows, roles, scores and budget, and the negative control (no injected bias is flagged)."""

import hashlib
import json
import types
import warnings

import numpy as np
import pytest

from tfdebias.datasets.synthetic import confounded_ctr
from tfdebias.evaluation import baselines, evidence
from tfdebias.evaluation import metrics as tm
from tfdebias.methods import cp2rec
from tfdebias.methods.cp2rec import reproduce as cp2rec_reproduce

#: sha256[:16] of every column of the 1.0.0 splits, computed from the generator before
#: ``train_unbiased``, ``test_density`` and the new configs existed
PINNED = {
    0: {"train": "9adeda459ac64b17", "valid": "bdfdfafa44bd5b85", "test": "fb24ba358bd48dd3"},
    3: {"train": "2d34a7b2d0d57a4d", "valid": "86c48d7efbae5c6b", "test": "a657d4502b936517"},
}


def _digest(cols):
    d = hashlib.sha256()
    for k in sorted(cols):
        d.update(k.encode())
        d.update(np.ascontiguousarray(cols[k]).tobytes())
    return d.hexdigest()[:16]


@pytest.fixture(scope="module")
def small():
    return confounded_ctr.simulate(confounded_ctr.CONFIGS["small"])


# -- the simulator ----------------------------------------------------------------------------


@pytest.mark.parametrize("seed", sorted(PINNED))
def test_existing_splits_are_bit_for_bit_unchanged(seed):
    sim = confounded_ctr.simulate({"seed": seed})
    assert {s: _digest(sim[s]) for s in PINNED[seed]} == PINNED[seed]


def test_configs_keep_small_first_and_add_medium_and_no_bias():
    assert list(confounded_ctr.CONFIGS)[:2] == ["small", "medium"]
    nb = confounded_ctr.CONFIGS["no_bias"]
    assert all(nb[k] == 0.0 for k in ("confounder_exposure", "interest_exposure", "activity_exposure"))
    assert {k: v for k, v in nb.items() if k not in confounded_ctr.NO_BIAS} == confounded_ctr.CONFIGS["medium"]


def test_train_unbiased_is_a_uniform_log_of_the_same_size(small):
    tr, un, te = small["train"], small["train_unbiased"], small["test"]
    assert len(un["click"]) == len(tr["click"])
    assert set(un) == set(tr)
    # nothing from the test block
    block = set(zip(te["user_id"].tolist(), te["item_id"].tolist()))
    assert not block & set(zip(un["user_id"].tolist(), un["item_id"].tolist()))
    # uniform exposure: the confounder of the shown items averages as over all items
    # (the biased log leans to high q), and users are shown about equally often
    assert abs(float(un["confounder"].mean())) < 0.05 < 0.5 < float(tr["confounder"].mean())
    per_user = np.bincount(un["user_id"], minlength=confounded_ctr.DEFAULTS["n_users"] + 1)[1:]
    assert per_user.std() < 1.5 * np.sqrt(per_user.mean())  # ~ Binomial, not activity-driven
    # uniform positions, and clicks as on the unbiased test block
    freq = np.bincount(un["position"], minlength=11)[1:] / len(un["position"])
    np.testing.assert_allclose(freq, 0.1, atol=0.012)
    assert abs(un["click"].mean() - te["click"].mean()) < 0.02
    assert tr["click"].mean() > 1.8 * un["click"].mean()  # the log over-states CTR


def test_medium_is_sized_for_power_and_cheap_to_build():
    import time

    t0 = time.perf_counter()
    sim = confounded_ctr.simulate(confounded_ctr.CONFIGS["medium"])
    seconds = time.perf_counter() - t0
    n = {s: len(c["click"]) for s, c in sim.items()}
    assert seconds <= 15 * sum(n.values()) / 200_000, (seconds, n)
    te, tr = sim["test"], sim["train"]
    assert n["test"] >= 20_000
    assert len(np.unique(te["user_id"])) >= 1000 and len(np.unique(te["item_id"])) >= 200
    assert n["train"] + n["valid"] >= 200_000 and n["train_unbiased"] == n["train"]
    assert n["train"] / len(np.unique(tr["user_id"])) >= 50
    # the bias, measured with numpy only: logged positions leak the policy's score
    # (which holds the hidden interest); uniform positions do not
    leak_log = tm.auc(tr["click"], -tr["position"].astype(float))
    leak_uniform = tm.auc(sim["train_unbiased"]["click"], -sim["train_unbiased"]["position"].astype(float))
    assert leak_log - leak_uniform > 0.1
    # the item's CTR in the log ranks the unbiased block worse than its CTR in a uniform log
    vocab = confounded_ctr.CONFIGS["medium"]["n_items"] + 1
    pop = {s: baselines.item_ctr(sim[s]["item_id"], sim[s]["click"], vocab)[te["item_id"]]
           for s in ("train", "train_unbiased")}
    assert tm.auc(te["click"], pop["train_unbiased"]) - tm.auc(te["click"], pop["train"]) > 0.005


def test_no_bias_policy_logs_like_the_uniform_sample():
    sim = confounded_ctr.simulate(confounded_ctr.NO_BIAS)
    tr, un = sim["train"], sim["train_unbiased"]
    assert abs(tr["click"].mean() - un["click"].mean()) < 0.015
    assert abs(float(tr["confounder"].mean())) < 0.05
    assert abs(tm.auc(tr["click"], -tr["position"].astype(float))
               - tm.auc(un["click"], -un["position"].astype(float))) < 0.03


def test_test_density_keeps_a_share_of_the_block():
    full = confounded_ctr.simulate({})
    part = confounded_ctr.simulate({"test_density": 0.25})
    n_full, n_part = len(full["test"]["click"]), len(part["test"]["click"])
    assert 0.2 * n_full < n_part < 0.3 * n_full
    for s in ("train", "valid"):
        assert _digest(part[s]) == _digest(full[s])
    keys = set(zip(full["test"]["user_id"].tolist(), full["test"]["item_id"].tolist()))
    assert set(zip(part["test"]["user_id"].tolist(), part["test"]["item_id"].tolist())) <= keys


# -- the negative control ------------------------------------------------------------------------


def _lr_headroom(tmp_path, overrides):
    """LR on train (floor) vs train_unbiased (skyline) over 3 small data draws."""
    records = []
    for d in range(3):
        params = {"seed": d, "n_users": 600, "n_items": 400, "test_users": 150, "test_items": 80,
                  **overrides}
        sim, schema = confounded_ctr.simulate(params), confounded_ctr.schema(params)
        design = cp2rec.evaluation_design(sim, schema)
        fields = [f.name for f in schema.inputs if f.name not in ("user_id", "item_id")]
        for split, role in (("train", "floor"), ("train_unbiased", "skyline")):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                lr = baselines.logistic_regression(sim[split], schema, fields=fields)
            m, sc = cp2rec.score_predictions(design, lr.predict(sim["test"]))
            records.append({"name": f"LR on {split}", "role": role, "data_seed": d, "seed": 0,
                            "metrics": m, "scores": sc})
    out = tmp_path / ("nobias" if overrides else "biased")
    evidence.write_evidence(out, records, title="negative control", metric="test/auc",
                            stopping="closed form", n_boot=400)
    return json.loads((out / "results.json").read_text()), (out / "results.md").read_text()


def test_no_injected_bias_is_flagged_and_injected_bias_is_not(tmp_path):
    res, md = _lr_headroom(tmp_path, confounded_ctr.NO_BIAS)
    assert res["headroom"]["measurable"] is False
    assert any("no measurable bias" in f for f in res["flags"]) and "no measurable bias" in md
    lo, hi = res["headroom"]["gap"]["ci95"]
    assert lo < 0 < hi
    # the same pipeline on the biased policy: the position leak is a measurable gap
    res, _ = _lr_headroom(tmp_path, {})
    assert res["headroom"]["measurable"] is True and res["headroom"]["gap"]["ci95"][0] > 0.01
    assert not any("no measurable bias" in f for f in res["flags"])


# -- the reproducer's pieces ---------------------------------------------------------------------


def _args(**kw):
    base = dict(quick=False, rows=None, backbones=None, epochs=None, batch_size=None, patience=None,
                hidden_units="8", learning_rate=1e-3, data="confounded_ctr", data_seeds=None, seeds=None,
                stopping="fixed", oracle=False)
    return types.SimpleNamespace(**{**base, **kw})


def test_rows_and_roles():
    cfg = cp2rec_reproduce._resolve(_args(quick=True))
    # the evidence default is the proxy_shift scenario (the builder's EVIDENCE_CONFIG)
    assert cfg["data"] == "confounded_ctr/proxy_shift" and cfg["data_seeds"] == [0, 1, 2]
    assert cfg["backbones"] == ["ncf"] and cfg["seeds"] == 1 and cfg["stopping"] == "fixed"
    quick = cp2rec_reproduce._trained_rows("ncf", cfg, _args(quick=True), oracle=True)
    labels = [r[0] for r in quick]
    assert labels == ["NCF", "NCF on uniform log (skyline)", "IPS-NCF", "CP2Rec-PROJ-NCF",
                      "CP2Rec-COS-NCF w/o ABT, BD", "CP2Rec-COS-NCF w/o ABT, BD on uniform log",
                      "CP2Rec-PROJ-NCF (oracle p)"]
    assert [r[3] for r in quick] == ["train", "train_unbiased", "train", "train", "train",
                                     "train_unbiased", "train"]
    assert quick[0][1:3] == quick[1][1:3]  # the skyline is the floor's model and budget
    assert quick[4][1:3] == quick[5][1:3]  # the proxy-reading twin: BD's model and budget
    assert [cp2rec.row_role(x, "ncf") for x in labels] == [
        "floor", "skyline", "baseline", "method", "baseline", "baseline", "baseline"]
    assert quick[-1][2]["propensity"] == "oracle"
    no_truth = cp2rec_reproduce._trained_rows("ncf", cfg, _args(quick=True), oracle=False)
    assert [r[0] for r in no_truth] == labels[:-1]
    full = cp2rec_reproduce._trained_rows("dcn", cp2rec_reproduce._resolve(_args()), _args(), oracle=True)
    roles = [cp2rec.row_role(r[0], "dcn") for r in full]
    assert roles.count("floor") == 1 and roles.count("skyline") == 1
    assert {r[0] for r, role in zip(full, roles) if role == "method"} == {
        "CP2Rec-COS-DCN", "CP2Rec-PROJ-DCN", "CP2Rec-SOLVE-DCN", "CP2Rec-PROJ-DCN (p = n_u n_i / N)"}
    full_cfg = cp2rec_reproduce._resolve(_args())
    assert full_cfg["data_seeds"] == [0, 1, 2, 3, 4] and full_cfg["backbones"] == ["ncf", "dcn"]
    # --rows filters the trained rows but keeps the floor and the skyline
    some = cp2rec_reproduce._trained_rows("ncf", cfg, _args(quick=True, rows="PROJ"), oracle=False)
    assert [r[0] for r in some] == ["NCF", "NCF on uniform log (skyline)", "CP2Rec-PROJ-NCF"]


def test_scores_units_and_groups(small):
    schema = confounded_ctr.schema({})
    design = cp2rec.evaluation_design(small, schema)
    te = small["test"]
    assert sorted(np.unique(design["units"])) == list(range(len(np.unique(te["user_id"]))))
    light, heavy = design["groups"]["exposed-light"], design["groups"]["exposed-heavy"]
    assert not (light & heavy).any() and (light | heavy).all()
    shows = np.bincount(small["train"]["item_id"])
    assert shows[te["item_id"][heavy]].min() > shows[te["item_id"][light]].max()
    p = np.clip(te["relevance"] + 0.1 * np.random.default_rng(0).random(len(light)), 0, 1)
    metrics, scores = cp2rec.score_predictions(design, p)
    assert set(scores) == {"test/auc", "test/logloss", "test/auc/exposed-light", "test/auc/exposed-heavy"}
    assert metrics["test/auc"] == pytest.approx(tm.auc(te["click"], p), abs=1e-9)
    assert metrics["test/logloss"] == pytest.approx(tm.logloss(te["click"], p), rel=1e-5)
    assert metrics["test/auc/exposed-heavy"] == pytest.approx(tm.auc(te["click"][heavy], p[heavy]), abs=1e-9)


def test_fixed_and_snips_budgets(small):
    from tfdebias.models import predict

    schema = confounded_ctr.schema({})
    splits = cp2rec.add_propensity(small, schema)
    args = dict(embedding_dim=4, hidden_units=[8])
    per_epoch = -(-len(splits["train"]["click"]) // 4096)
    model, info = cp2rec.train_row("ncf", args, splits["train"], schema, seed=0, epochs=2, batch_size=4096,
                                   learning_rate=1e-2)
    assert info["steps"] == 2 * per_epoch and info["epochs_run"] == 2
    np.testing.assert_allclose(predict(model, splits["test"], inputs=[f.name for f in schema.inputs]),
                               predict(model, splits["test"]), atol=1e-6)
    model, info = cp2rec.train_row("ncf", args, splits["train"], schema, seed=0, epochs=4, batch_size=4096,
                                   learning_rate=5e-2, valid_cols=splits["valid"], stopping="snips",
                                   patience=1)
    assert 1 <= info["epochs_trained"] <= info["epochs_run"] <= 4
    assert info["steps"] == info["epochs_trained"] * per_epoch
    # the kept weights are the best epoch's: their SNIPS loss is the best the callback saw
    valid = splits["valid"]
    kept = evidence.snips_logloss(valid["click"], predict(model, valid, inputs=[f.name for f in schema.inputs]),
                                  np.clip(valid[cp2rec.PROPENSITY_HAT], cp2rec.PROPENSITY_CLIP, 1))
    assert kept == pytest.approx(info["valid/snips_best"], rel=1e-5)


def test_tune_trials_start_from_the_defaults_and_draw_distinct_grid_points():
    pts = cp2rec_reproduce.trial_points("cp2rec", {"purifier": "proj"}, 8)
    assert pts[0] == {"gamma": 0.1, "beta": 0.01, "lambda_reg": 1e-6}  # the untuned row first
    assert len(pts) == 8 and len({tuple(sorted(p.items())) for p in pts}) == 8
    for p in pts:
        assert p["gamma"] in cp2rec_reproduce.WEIGHT_GRID and p["beta"] in cp2rec_reproduce.WEIGHT_GRID
        assert p["lambda_reg"] in cp2rec_reproduce.LAMBDA_GRID
    # a grid smaller than the trials is tried whole, once; the plain backbone is not searched
    ips = cp2rec_reproduce.trial_points("cp2rec_baseline", {"loss": "ips"}, 8)
    assert sorted(p["lambda_reg"] for p in ips) == sorted(cp2rec_reproduce.LAMBDA_GRID)
    assert cp2rec_reproduce.trial_points("ncf", {}, 8) == []
    # without ABT there is no L_B weight to search; without a purifier no L_O weight
    assert set(cp2rec_reproduce.tuned_grid("cp2rec", {"abt": False, "purifier": "cos"})) == {
        "lambda_reg", "beta"}
    assert set(cp2rec_reproduce.tuned_grid("cp2rec_baseline", {"loss": "bce"})) == {"lambda_reg"}


def test_tune_trials_pick_the_best_biased_valid_auc(monkeypatch):
    from tfdebias.methods.cp2rec.data import PROPENSITY_HAT

    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 4000).astype(np.float32)
    noise = rng.normal(size=4000)
    splits = {"train": {}, "valid": {"click": y, PROPENSITY_HAT: np.full(4000, 0.5, np.float32)}}
    # a stand-in for training: the "model" is its settings, and its valid predictions are
    # the better the closer gamma is to 1e-3
    monkeypatch.setattr(cp2rec_reproduce, "train_row", lambda name, margs, *a, **k: (margs, {}))
    monkeypatch.setattr(cp2rec_reproduce, "predict", lambda margs, cols, **k: y + (
        0.5 + abs(np.log10(margs["gamma"]) + 3)) * noise)
    steps = []
    progress = types.SimpleNamespace(step=steps.append)
    schema = types.SimpleNamespace(label=types.SimpleNamespace(name="click"))
    cfg = {"epochs": 1, "batch_size": 8, "stopping": "fixed", "patience": 1}
    pts = cp2rec_reproduce.trial_points("cp2rec", {"purifier": "proj"}, 12)
    out = cp2rec_reproduce._tune_rows([("CP2Rec-PROJ-NCF", "cp2rec", {"purifier": "proj"}, pts)],
                                      splits, schema, cfg, types.SimpleNamespace(learning_rate=1e-3),
                                      "d", [], progress)
    trials = out["CP2Rec-PROJ-NCF"]["trials"]
    assert len(trials) == len(steps) == 12
    best = max(trials, key=lambda t: t["valid/auc"])
    assert out["CP2Rec-PROJ-NCF"]["best"] == {k: v for k, v in best.items() if k != "valid/auc"}
    tried = {t["gamma"] for t in trials}
    assert best["gamma"] == min(tried, key=lambda g: abs(np.log10(g) + 3))
