"""AMID's evidence table: the simulator's unbiased training sample and ``medium`` config,
the equal step budget of every row, and ``tfdebias reproduce amid``'s records."""

import hashlib

import numpy as np
import pytest

from tfdebias.datasets.synthetic import cross_domain_sequences as cds

#: sha256 of every split `simulate()` wrote before `train_unbiased` was added (computed
#: from the code of commit d08bc96): adding the unbiased sample must leave them bit for bit
PINNED = {
    "small": "a3e7f13a55c057c667f0ce4397ced110a8ddf5b78fe8df3568c663b0f393aed1",
    "small_ku75": "daff1e4e0a0b0456081df2832c8dfb703ec76f3ca9c1fcf3e9e30030a4eb71b8",
}
PINNED_PARAMS = ({"n_users": 500, "seed": 3},
                 "6a2daaf9227da3fd92ec1113249cefd401606119a153674a93840b4b08709c7f")
OLD_SPLITS = ("train", "unobserved", "valid", "test")


def _digest(splits) -> str:
    h = hashlib.sha256()
    for s in sorted(splits):
        for c in sorted(splits[s]):
            a = np.ascontiguousarray(splits[s][c])
            h.update(f"{s}/{c}/{a.dtype}/{a.shape}".encode())
            h.update(a.tobytes())
    return h.hexdigest()


@pytest.mark.parametrize("config", sorted(PINNED))
def test_existing_splits_unchanged_bit_for_bit(config):
    sp = cds.simulate(cds.CONFIGS[config])
    assert _digest({k: sp[k] for k in OLD_SPLITS}) == PINNED[config]


def test_existing_splits_unchanged_under_another_seed():
    params, digest = PINNED_PARAMS
    sp = cds.simulate(params)
    assert _digest({k: sp[k] for k in OLD_SPLITS}) == digest


# -- the unbiased training sample --------------------------------------------------------
@pytest.fixture(scope="module")
def small():
    return cds.simulate(cds.CONFIGS["small"])


def _level0(sp):
    return {k: np.concatenate([sp["train"][k], sp["unobserved"][k]]) for k in sp["train"]}


def test_train_unbiased_same_size_same_overlap_random_users(small):
    tr, tu = small["train"], small["train_unbiased"]
    assert len(tu["item_id"]) == len(tr["item_id"])
    assert set(tu) == set(tr)
    # the same overlapping users, as many non-overlapping users
    ov = lambda c: set(c["user_id"][c["overlap"] == 1].tolist())  # noqa: E731
    non = lambda c: set(c["user_id"][c["overlap"] == 0].tolist())  # noqa: E731
    assert ov(tu) == ov(tr)
    assert len(non(tu)) == len(non(tr))
    assert non(tu) != non(tr)
    # its rows are level-0 rows (train or unobserved), each user with all of her rows
    level0 = _level0(small)
    key = lambda c: set(zip(c["user_id"].tolist(), c["domain"].tolist(), c["item_id"].tolist()))  # noqa: E731
    assert key(tu) <= key(level0)
    assert (tu["observed"] == 1).all()
    rate = len(non(tr)) / len(non(level0))
    np.testing.assert_allclose(tu["propensity"][tu["overlap"] == 0], rate, rtol=1e-6)
    assert (tu["propensity"][tu["overlap"] == 1] == 1).all()


def test_selection_bias_is_measurable_and_absent_from_train_unbiased(small):
    """numpy only: the selected non-overlapping users are more active (longer histories)
    than the population by many standard errors; the random sample is not."""
    def lengths(c):
        sel = c["overlap"] == 0
        return ((c["history_a"][sel] > 0).sum(1) + (c["history_b"][sel] > 0).sum(1)).astype(float)

    pop = lengths(_level0(small))
    for name, biased in (("train", True), ("train_unbiased", False)):
        x = lengths(small[name])
        z = (x.mean() - pop.mean()) / (pop.std() / np.sqrt(len(x)))
        assert (z > 6) if biased else (abs(z) < 4), (name, z)


def test_train_unbiased_follows_the_seed_and_its_own_stream():
    a = cds.simulate({"n_users": 400, "seed": 1})
    b = cds.simulate({"n_users": 400, "seed": 2})
    assert not np.array_equal(a["train_unbiased"]["user_id"], b["train_unbiased"]["user_id"])
    again = cds.simulate({"n_users": 400, "seed": 1})
    np.testing.assert_array_equal(a["train_unbiased"]["user_id"], again["train_unbiased"]["user_id"])


def test_medium_config_is_second_and_sized_for_power():
    assert list(cds.CONFIGS)[:2] == ["small", "medium"]
    sp = cds.simulate(cds.CONFIGS["medium"])
    te = sp["test"]
    for z in (0, 1):
        users = np.unique(te["user_id"][te["domain"] == z])
        assert len(users) >= 3000
        # every group AMID's claims are about has >= 1,000 test users in each domain
        for g in (te["overlap"] == 1, (te["overlap"] == 0) & (te["observed"] == 1),
                  (te["overlap"] == 0) & (te["observed"] == 0)):
            assert len(np.unique(te["user_id"][(te["domain"] == z) & g])) >= 1000
    assert len(sp["train"]["item_id"]) >= 6000
    assert len(sp["train_unbiased"]["item_id"]) == len(sp["train"]["item_id"])


# -- the step budget -----------------------------------------------------------------------
import tensorflow as tf  # noqa: E402

from tfdebias import models  # noqa: E402
from tfdebias.methods import amid  # noqa: E402

TINY = dict(n_users=240, n_items_a=40, n_items_b=30, dim=8, max_len=8)


@pytest.fixture(scope="module")
def tiny():
    return cds.simulate(TINY), cds.schema(TINY)


def _tiny_model(schema, name="sasrec", **kw):
    if name == "sasrec":
        return models.build("sasrec", schema, embedding_dim=8, num_blocks=1, hidden_units=[8])
    return models.build("amid", schema, backbone="sasrec", embedding_dim=8, n_sampled_users=4,
                        bank_size=8, backbone_args={"num_blocks": 1, "hidden_units": [8]}, **kw)


def _pass_steps(splits, bs: int = 32):
    """``(L_c steps, L_r steps)`` of one pass of Algorithm 1 at batch size ``bs``."""
    n = len(splits["train"]["item_id"])
    return -(-n // bs), -(-(n + len(splits["unobserved"]["item_id"])) // bs)


@pytest.mark.slow
def test_every_row_takes_exactly_the_budget_counting_both_optimizers(tiny):
    import keras

    splits, schema = tiny
    bs = 32
    n_c, n_r = _pass_steps(splits, bs)
    budget = amid.step_budget(splits, 1, bs)
    assert budget == n_c + n_r
    for kind, kw in (("sasrec", {}), ("amid", {"mim": False, "estimator": "ips"}),
                     ("amid", {"mim": True, "estimator": "dr"})):
        keras.utils.set_random_seed(0)
        m = _tiny_model(schema, kind, **kw)
        out = amid.fit_amid(m, splits["train"], schema, unobserved_columns=splits["unobserved"],
                            steps=budget + 3, batch_size=bs)
        assert out["steps"] == budget + 3 == out["steps_c"] + out["steps_r"], (kind, kw, out)
        if kw.get("estimator") in ("ips", "dr"):  # one full L_c pass, one full L_r pass, 3 more
            assert out["steps_c"] == n_c + 3 and out["steps_r"] == budget - n_c
        else:
            assert out["steps_r"] == 0


@pytest.mark.slow
def test_fit_without_steps_keeps_the_epoch_schedule(tiny):
    splits, schema = tiny
    m = _tiny_model(schema, "amid", mim=False, estimator="ips")
    out = amid.fit_amid(m, splits["train"], schema, unobserved_columns=splits["unobserved"],
                        epochs=2, batch_size=64)
    assert out["steps"] == amid.step_budget(splits, 2, 64) and out["passes"] == 2


def test_reset_optimizer_restarts_adam():
    import keras

    v = keras.Variable(np.ones((3,), "float32"))
    opt = keras.optimizers.Adam(0.1)
    opt.build([v])
    opt.apply_gradients([(tf.ones(3), v)])
    assert int(opt.iterations.numpy()) == 1
    amid.reset_optimizer(opt, 0.05)
    assert int(opt.iterations.numpy()) == 0
    assert float(opt.learning_rate.numpy()) == pytest.approx(0.05)
    assert all(not np.any(x.numpy()) for x in opt.variables if x is not opt._learning_rate
               and x is not opt.iterations)


# -- per-user scoring --------------------------------------------------------------------
def test_ranking_evidence_matches_the_protocol_metrics_per_user_and_group(tiny):
    from tfdebias.evaluation import metrics as m

    splits, _ = tiny
    test = splits["test"]
    rng = np.random.default_rng(0)
    scores = rng.random((len(test["item_id"]), 21))
    scores[::3, 0] = 2.0  # some positives first
    scores[1::7, 1] = scores[1::7, 0]  # ties count against the positive
    metrics, sc = amid.ranking_evidence(scores, test)
    dom = test["domain"]
    for z, name in enumerate("AB"):
        sel = dom == z
        assert metrics[f"test/{name}/ndcg@10"] == pytest.approx(m.ndcg_at_k(None, scores[sel], k=10))
        assert metrics[f"test/{name}/hr@10"] == pytest.approx(m.hit_rate_at_k(None, scores[sel], k=10))
        assert sc[f"test/{name}/ndcg@10"].point() == pytest.approx(metrics[f"test/{name}/ndcg@10"])
        # the three groups partition the domain's rows; the unit is the user id
        parts = [sc[f"test/{name}/ndcg@10/{g}"] for g in amid.GROUPS]
        assert sum(p.counts.sum() for p in parts) == sel.sum()
        np.testing.assert_allclose(sum(p.sums.sum() for p in parts), sc[f"test/{name}/ndcg@10"].sums.sum())
        assert sc[f"test/{name}/ndcg@10"].n_units == int(test["user_id"][sel].max()) + 1
    unobs = (test["overlap"] == 0) & (test["observed"] == 0) & (dom == 0)
    from tfdebias.evaluation.metrics import sampled_rank

    ranks = sampled_rank(scores[unobs])
    want = np.where(ranks < 10, 1 / np.log2(ranks + 2), 0).mean()
    assert metrics["test/A/ndcg@10/unobserved_non_overlapping"] == pytest.approx(want)


def test_simple_baselines_score_the_candidates(tiny):
    splits, schema = tiny
    cand = amid.ranking_candidates(splits, ["history_a", "history_b"], "test", n_neg=10, seed=0,
                                   n_users=schema["user_id"].vocab_size)
    for name in (*amid.SIMPLE_ROWS, amid.CROSS_DOMAIN_KNN):
        s = amid.simple_scores(name, splits, schema, cand)
        assert s.shape == cand.shape and np.isfinite(s).all()
    with pytest.raises(Exception):
        amid.simple_scores("magic", splits, schema, cand)


def test_own_domain_knn_reads_only_the_targets_own_history(tiny):
    """The like-for-like item-kNN reads what the single-domain backbone reads: blanking
    the other domain's history leaves its scores unchanged, blanking the own domain's
    changes them; the both-domains kNN moves with either."""
    splits, schema = tiny
    cand = amid.ranking_candidates(splits, ["history_a", "history_b"], "test", n_neg=10, seed=0,
                                   n_users=schema["user_id"].vocab_size)
    test = splits["test"]
    own = np.where(np.asarray(test["domain"])[:, None] == 0, "history_a", "history_b")
    assert ((np.asarray(test["history_a"]) > 0).any(1) & (np.asarray(test["history_b"]) > 0).any(1)).any()

    def blank(which):  # zero the own ("own") or the other ("other") domain's history per row
        t = dict(test)
        for h in ("history_a", "history_b"):
            hit = (own[:, 0] == h) if which == "own" else (own[:, 0] != h)
            t[h] = np.where(hit[:, None], 0, np.asarray(test[h]))
        return {**splits, "test": t}

    name = "item-kNN (own domain)"
    base = amid.simple_scores(name, splits, schema, cand)
    np.testing.assert_array_equal(amid.simple_scores(name, blank("other"), schema, cand), base)
    assert not np.array_equal(amid.simple_scores(name, blank("own"), schema, cand), base)
    both = amid.simple_scores(amid.CROSS_DOMAIN_KNN, splits, schema, cand)
    assert not np.array_equal(amid.simple_scores(amid.CROSS_DOMAIN_KNN, blank("other"), schema, cand), both)


# -- tfdebias reproduce amid ----------------------------------------------------------------
import argparse  # noqa: E402
import json  # noqa: E402

from tfdebias.errors import UsageError  # noqa: E402


def _args(out, **kw):
    base = dict(data="cross_domain_sequences/small", data_dir=None, manual_dir=None, seeds=1,
                data_seeds=2, quick=True, out=str(out), backbone=None, epochs=None, steps=None,
                negatives=20, threshold=None, rows=None, stopping="fixed")
    base.update(kw)
    return argparse.Namespace(**base)


@pytest.fixture
def tiny_draws(monkeypatch):
    """`_load_draw` simulates TINY with params["seed"] = data seed (no TFDS build)."""
    seen = []

    def load(name, args, data_seed):
        seen.append((name, data_seed))
        params = dict(TINY, seed=data_seed or 0)
        return cds.simulate(params), cds.schema(params)

    monkeypatch.setattr(amid.reproduce, "_load_draw", load)
    return seen


def _fake_run_row(calls, skew=None):
    def run_row(model_name, model_args, splits, schema, *, steps, candidates, train_split, seed, **kw):
        calls.append((model_name, dict(model_args), train_split, steps))
        rng = np.random.default_rng(len(calls))
        scores = rng.random(candidates.shape)
        if train_split == "train_unbiased":
            scores[:, 0] += 0.3  # the skyline ranks positives higher: a gap to measure
        metrics, sc = amid.ranking_evidence(scores, splits["test"])
        metrics["steps"] = float(steps if skew is None else skew(model_name, model_args, steps))
        return metrics, sc
    return run_row


def test_reproduce_quick_rows_roles_records_and_evidence(tmp_path, tiny_draws, monkeypatch):
    calls = []
    monkeypatch.setattr(amid.reproduce, "run_row", _fake_run_row(calls))
    out = amid.run_reproduce(_args(tmp_path / "q"))
    res = json.loads((out / "results.json").read_text())
    assert [n for n, d in tiny_draws] == ["cross_domain_sequences/small"] * 2
    assert [d for _, d in tiny_draws] == [0, 1]
    roles = {r["name"]: r["role"] for r in res["rows"]}
    # the closed scenario ships no hidden interest: no true-interest row
    assert roles == {"SASRec": "floor", "SASRec on train_unbiased": "skyline",
                     "SASRec + IPSCDR": "baseline", "SASRec + MIM": "baseline",
                     "SASRec + AMID": "method",
                     "popularity": "simple", "item-kNN (own domain)": "simple",
                     "item-kNN (both domains)": "baseline"}
    # the skyline trains on train_unbiased, everything else on train, all with one budget
    splits_used = {(m, a.get("estimator"), a.get("mim")): s for m, a, s, _ in calls}
    assert splits_used[("amid", "none", False)] in ("train", "train_unbiased")
    assert all(m == "amid" for m, *_ in calls)  # one model, one loop, one loss for every row
    assert sorted(s for *_, s, _ in calls).count("train_unbiased") == 2  # once per data seed
    budgets = {d: v for d, v in res["steps_per_row"].items()}
    assert len(calls) == 10 and all(st == budgets[str(i // 5)] for i, (*_, st) in enumerate(calls))
    # evidence fields
    h = res["headroom"]
    assert h["metric"] == amid.HEADLINE == "test/A/ndcg@10"
    assert h["gap"]["mean"] > 0 and h["gap"]["ci95"][0] > 0
    rows = {r["name"]: r for r in res["rows"]}
    assert rows["SASRec"]["gap_closed"]["mean"] == 0.0
    assert rows["SASRec on train_unbiased"]["gap_closed"]["mean"] == 1.0
    for r in res["rows"]:
        assert amid.HEADLINE in r["ci95"] and len(r["ci95"][amid.HEADLINE]) == 2
        for g in amid.GROUPS:
            assert f"test/A/ndcg@10/{g}" in r["mean"] and f"test/B/ndcg@10/{g}" in r["mean"]
    assert rows["SASRec + AMID"]["vs_baseline"]["name"] == "SASRec + IPSCDR"
    assert {(r["name"], r["data_seed"], r["seed"]) for r in res["records"]} >= {
        ("SASRec + AMID", 0, 0), ("SASRec + AMID", 1, 0), ("item-kNN (own domain)", 1, 0)}
    assert all("scores" not in r for r in res["records"])
    assert "fixed budget" in res["stopping"]
    md = (out / "results.md").read_text()
    assert "Headroom" in md and "Stopping: fixed budget" in md


def test_reproduce_full_row_set_adds_the_cross_domain_baselines():
    names = [r[0] for r in amid.experiment_rows(["sasrec"])]
    assert names[:2] == ["SASRec", "SASRec on train_unbiased"]
    assert {"STAR", "Pi-Net", "C2DSR"} <= set(names)
    quick = [r[0] for r in amid.experiment_rows(["sasrec"], quick=True)]
    assert quick == ["SASRec", "SASRec on train_unbiased", "SASRec + IPSCDR", "SASRec + MIM",
                     "SASRec + AMID"]
    with_truth = amid.experiment_rows(["sasrec"], interest=["interest_00", "interest_01"])
    truth = {r[0]: r for r in with_truth if r[3] == "truth"}
    assert set(truth) == {"SASRec + true interest", "SASRec + AMID (true propensity)"}
    assert truth["SASRec + true interest"][2]["interest_features"] == ["interest_00", "interest_01"]
    assert truth["SASRec + AMID (true propensity)"][2]["propensity"] == "true"
    both = amid.experiment_rows(["sasrec", "gru4rec"], quick=True)
    assert [r[3] for r in both].count("floor") == 1 and [r[3] for r in both].count("skyline") == 1
    # the next-item loss is the table's choice: every AMID-model row gets it, none other
    assert all("position_negatives" not in r[2] for r in both)
    k = amid.experiment_rows(["sasrec"], interest=["interest_00"], position_negatives=128)
    assert {r[0] for r in k if r[2].get("position_negatives") == 128} == {
        r[0] for r in k if r[1] == "amid"}
    assert {r[0] for r in k if r[1] != "amid"} == {"STAR", "Pi-Net", "C2DSR"}
    from tfdebias import data as tdata

    assert tdata.evidence_data("cross_domain_sequences") == "cross_domain_sequences/open_world"
    assert tdata.evidence_data("cross_domain_sequences/small") == "cross_domain_sequences/small"


def test_each_backbone_s_mim_rows_get_its_grouping_unless_one_is_given(tmp_path, tiny_draws,
                                                                        monkeypatch):
    grouping = amid.reproduce.MIM_GROUPING
    rows = amid.experiment_rows(["sasrec", "gru4rec", "bert4rec"], quick=True)
    got = {r[0]: {k: r[2][k] for k in ("threshold", "group_size") if k in r[2]}
           for r in rows if r[2].get("mim")}
    assert got == {f"{amid.reproduce.DISPLAY[b]} + {x}": grouping[b]
                   for b in ("sasrec", "gru4rec", "bert4rec") for x in ("MIM", "AMID")}
    assert grouping["sasrec"] == {"threshold": 0.3} and "group_size" in grouping["bert4rec"]
    assert all("threshold" not in r[2] and "group_size" not in r[2]
               for r in rows if not r[2].get("mim"))
    calls = []
    monkeypatch.setattr(amid.reproduce, "run_row", _fake_run_row(calls))
    amid.run_reproduce(_args(tmp_path / "t", data_seeds=1, backbone="bert4rec", threshold=0.55))
    mim_args = [a for _, a, _, _ in calls if a.get("mim")]
    assert mim_args and all(a["threshold"] == 0.55 and a["group_size"] == 0 for a in mim_args)
    calls.clear()
    out = amid.run_reproduce(_args(tmp_path / "g", data_seeds=1, group_size=5))
    mim_args = [a for _, a, _, _ in calls if a.get("mim")]
    assert mim_args and all(a["group_size"] == 5 and "threshold" not in a for a in mim_args)
    assert json.loads((out / "results.json").read_text())["group_size"] == 5
    for bad, match in ((dict(group_size=64), "--group-size"),
                       (dict(group_size=4, threshold=0.3), "not both")):
        with pytest.raises(UsageError, match=match):
            amid.run_reproduce(_args(tmp_path / "bad", data_seeds=1, **bad))
    assert not (tmp_path / "bad").exists()


def test_budget_lc_counts_the_lc_steps_and_the_default_all_steps(tmp_path, tiny_draws, monkeypatch):
    """``--budget lc``: the run checks the L_c steps (an IPS/DR row takes more in all);
    the default checks every step and fails the same skew."""
    calls = []

    def run_row(model_name, model_args, splits, schema, *, steps, count="all", **kw):
        metrics, sc = _fake_run_row(calls)(model_name, model_args, splits, schema, steps=steps, **kw)
        lr = model_args.get("estimator") in ("ips", "dr")
        metrics.update(steps_c=float(steps), steps=float(steps + (7 if lr else 0)))
        calls[-1] = calls[-1] + (count,)
        return metrics, sc

    monkeypatch.setattr(amid.reproduce, "run_row", run_row)
    out = amid.run_reproduce(_args(tmp_path / "lc", data_seeds=1, budget="lc"))
    res = json.loads((out / "results.json").read_text())
    assert res["budget"] == "lc" and "only the L_c steps count" in res["stopping"]
    assert {c[-1] for c in calls} == {"lc"}
    with pytest.raises(RuntimeError, match="both optimizers"):
        amid.run_reproduce(_args(tmp_path / "all", data_seeds=1))
    with pytest.raises(UsageError, match="--budget"):
        amid.run_reproduce(_args(tmp_path / "bad", data_seeds=1, budget="epochs"))


@pytest.mark.slow
def test_fit_with_lc_count_keeps_whole_lr_passes_on_top(tiny):
    splits, schema = tiny
    n_c, n_r = _pass_steps(splits, 32)
    m = _tiny_model(schema, "amid", mim=False, estimator="ips")
    out = amid.fit_amid(m, splits["train"], schema, unobserved_columns=splits["unobserved"],
                        steps=n_c + 3, batch_size=32, count="lc")
    assert out["steps_c"] == n_c + 3 and out["steps_r"] == 2 * n_r and out["passes"] == 2
    assert out["steps"] == n_c + 3 + 2 * n_r


def test_reproduce_fails_a_row_with_another_step_count(tmp_path, tiny_draws, monkeypatch):
    calls = []
    skew = lambda name, args, steps: steps + (1 if args.get("estimator") == "dr" else 0)  # noqa: E731
    monkeypatch.setattr(amid.reproduce, "run_row", _fake_run_row(calls, skew))
    with pytest.raises(RuntimeError, match="optimizer steps"):
        amid.run_reproduce(_args(tmp_path / "x", data_seeds=1))


def test_reproduce_refuses_snips_stopping_and_bad_budgets(tmp_path, tiny_draws):
    with pytest.raises(UsageError, match="snips"):
        amid.run_reproduce(_args(tmp_path / "s", stopping="snips"))
    with pytest.raises(UsageError, match="--steps"):
        amid.run_reproduce(_args(tmp_path / "s", steps=0))
    with pytest.raises(UsageError, match="--rows"):
        amid.run_reproduce(_args(tmp_path / "s", rows="SASRec + DANN"))
    with pytest.raises(UsageError, match="--position-negatives"):
        amid.run_reproduce(_args(tmp_path / "s", position_negatives=-1))
    assert not tiny_draws  # refused before any data was drawn or row trained


@pytest.mark.slow
def test_reproduce_trains_real_rows_for_the_same_steps(tmp_path, tiny_draws):
    """Floor, skyline and AMID really trained (3 steps each) on one tiny draw."""
    out = amid.run_reproduce(_args(tmp_path / "r", data_seeds=1, steps=3, rows="SASRec + AMID"))
    res = json.loads((out / "results.json").read_text())
    trained = [r for r in res["records"] if r["role"] != "simple"
               and r["name"] != amid.CROSS_DOMAIN_KNN]
    assert {r["name"] for r in trained} == {"SASRec", "SASRec on train_unbiased", "SASRec + AMID"}
    assert all(r["metrics"]["steps"] == 3 for r in trained)
    amid_rec = next(r for r in trained if r["name"] == "SASRec + AMID")
    n_c = -(-len(cds.simulate(TINY)["train"]["item_id"]) // 256)  # one L_c pass (bs 256)
    assert n_c < 3
    assert amid_rec["metrics"]["steps_c"] == n_c and amid_rec["metrics"]["steps_r"] == 3 - n_c
    assert 0.0 < amid_rec["metrics"]["group_rate"] < 1.0
    assert 0.0 <= amid_rec["metrics"]["propensity/auc"] <= 1.0
    assert set(res["headroom"]) >= {"metric", "skyline", "floor", "gap"}


def test_a_run_whose_groups_collapse_fails(tiny):
    """A MIM row whose interest groups are empty (rate 0: threshold above every cosine)
    or full (rate 1) fails its run instead of entering the table."""
    from tfdebias.errors import DataError

    splits, schema = tiny
    cand = amid.ranking_candidates(splits, ["history_a", "history_b"], "test", n_neg=10, seed=0,
                                   n_users=schema["user_id"].vocab_size)
    for k in (1e6, -1e6):
        args = {"backbone": "sasrec", "mim": True, "estimator": "none", "threshold": k,
                "n_sampled_users": 4, "bank_size": 8, "embedding_dim": 8,
                "backbone_args": {"num_blocks": 1, "hidden_units": [8]}}
        with pytest.raises(DataError, match="group rate"):
            amid.run_row("amid", args, splits, schema, seed=0, steps=1, batch_size=64,
                         learning_rate=1e-3, dr_lr_ratio=0.1, candidates=cand, where="MIM: ")


def test_pooling_reaches_the_cross_domain_rows_only():
    rows = amid.experiment_rows(["sasrec"], interest=["interest_00"], pooling="balanced")
    got = {r[0] for r in rows if r[2].get("pooling") == "balanced"}
    assert got == {"SASRec + IPSCDR", "SASRec + MIM", "SASRec + AMID",
                   "SASRec + AMID (true propensity)"}
    assert all("pooling" not in r[2] for r in amid.experiment_rows(["sasrec"], quick=True))
