"""``confounded_ctr``'s ``proxy_shift`` scenario: its schema and truth, proxies computed
from the logged feedback, the unlogged badge, matched coverage, the uniform-policy
control and the headroom a purifier can repair (numpy only)."""

import time
import warnings

import numpy as np
import pytest

from tfdebias.datasets.synthetic import confounded_ctr as sim

TRUTH = ("propensity", "relevance", "confounder", "promotion", "examination", "badge")


@pytest.fixture(scope="module")
def small():
    return sim.simulate(sim.CONFIGS["proxy_shift_small"])


@pytest.fixture(scope="module")
def small_uniform():
    return sim.simulate({**sim.CONFIGS["proxy_shift_small"], **sim.PROXY_SHIFT_UNIFORM})


def _corr(cols, a, b):
    return float(np.corrcoef(np.asarray(cols[a], float), np.asarray(cols[b], float))[0, 1])


def test_configs_registered_and_the_evidence_default():
    assert "proxy_shift" in sim.SCENARIOS
    assert {"proxy_shift", "proxy_shift_small", "proxy_shift_uniform"} <= set(sim.CONFIGS)
    assert sim.ConfoundedCtr.EVIDENCE_CONFIG == "proxy_shift"  # `tfdebias reproduce cp2rec` reads this
    assert {c.name for c in sim.ConfoundedCtr.BUILDER_CONFIGS} >= {"proxy_shift", "proxy_shift_uniform"}
    for name in ("proxy_shift", "proxy_shift_small", "proxy_shift_uniform"):
        assert sim.CONFIGS[name]["scenario"] == "proxy_shift"
    uni = sim.CONFIGS["proxy_shift_uniform"]
    assert uni == {**sim.CONFIGS["proxy_shift"], **sim.PROXY_SHIFT_UNIFORM}
    assert all(uni[k] == 0.0 for k in sim.UNIFORM_POLICY)
    assert sim.PROXY_SHIFT_POLICY_STATS == ("mean_position",)


def test_schema_every_split(small):
    schema = sim.schema(sim.CONFIGS["proxy_shift_small"])
    names = [f.name for f in schema]
    roles = {f.name: f.role for f in schema}
    assert set(TRUTH) <= set(names)
    assert roles["badge"] == "truth" and roles["promotion"] == "truth" and roles["examination"] == "truth"
    assert roles["propensity"] == "exposure" and roles["click"] == "label"
    # the proxies a model reads: the item statistics and the slot; never the badge
    assert {f.name for f in schema.inputs if f.role == "proxy"} == set(sim.PROXY_BIAS_PROXIES)
    assert "badge" not in {f.name for f in schema.inputs}
    assert set(small) == {"train", "valid", "test", "train_unbiased"}
    for split, cols in small.items():
        assert list(cols) == names, split
        n = len(cols["click"])
        for f in schema:
            assert cols[f.name].dtype == np.dtype(f.dtype) and len(cols[f.name]) == n, (split, f.name)
        for f in schema:
            if f.vocab_size:
                assert cols[f.name].min() >= 1 and cols[f.name].max() < f.vocab_size, (split, f.name)
    assert len(small["train_unbiased"]["click"]) == len(small["train"]["click"])


def test_proxies_are_functions_of_the_logged_train_rows(small):
    n_items = sim.DEFAULTS["n_items"]
    stats = sim.item_statistics(small["train"], n_items)
    for split, cols in small.items():
        for name in sim.PROXY_SHIFT_STATS:
            np.testing.assert_allclose(cols[name], stats[name][cols["item_id"]].astype(np.float32),
                                       rtol=1e-6, err_msg=f"{split}/{name}")
    # independently of the helper: show count and smoothed mean position from the rows
    tr = small["train"]
    items = tr["item_id"].astype(np.int64)
    shows = np.bincount(items, minlength=n_items + 1)
    pos = tr["position"].astype(float)
    mean_pos = (np.bincount(items, pos, n_items + 1) + sim.PROXY_PRIOR_SHOWS * pos.mean()) / (
        shows + sim.PROXY_PRIOR_SHOWS)
    np.testing.assert_allclose(tr["mean_position"], mean_pos[items], rtol=1e-5)
    np.testing.assert_allclose(tr["log_show_cnt"], np.log1p(shows)[items], rtol=1e-6)
    # not statistics of valid (or of train + valid): the valid rows would change them
    both = {k: np.concatenate([tr[k], small["valid"][k]]) for k in ("item_id", "click", "position")}
    assert not np.allclose(sim.item_statistics(both, n_items)["logged_ctr"], stats["logged_ctr"])
    # and they follow the logged clicks
    flipped = dict(tr, click=1.0 - tr["click"])
    assert not np.allclose(sim.item_statistics(flipped, n_items)["logged_ctr"], stats["logged_ctr"])


def test_the_proxies_mix_promotion_and_appeal(small):
    tr = small["train"]
    assert _corr(tr, "mean_position", "promotion") < -0.8  # slots: promotion alone
    assert abs(_corr(tr, "mean_position", "confounder")) < 0.15
    assert _corr(tr, "log_show_cnt", "promotion") > 0.4 and _corr(tr, "log_show_cnt", "confounder") > 0.15
    assert _corr(tr, "logged_ctr", "promotion") > 0.4 and _corr(tr, "logged_ctr", "confounder") > 0.15


def test_badge_follows_promotion_only_in_the_log(small):
    tr = small["train"]
    assert set(np.unique(tr["badge"])) == {0.0, 1.0}
    promoted = tr["promotion"] > 1.0
    assert tr["badge"][promoted].mean() > 0.8 and tr["badge"][tr["promotion"] < -1.0].mean() < 0.05
    # given the promotion, the badge does not depend on the slot (the harm is not in position)
    band = (tr["promotion"] > 0.2) & (tr["promotion"] < 0.8)
    top, low = band & (tr["position"] <= 3), band & (tr["position"] >= 6)
    assert abs(tr["badge"][top].mean() - tr["badge"][low].mean()) < 0.1
    for split in ("test", "train_unbiased"):  # collected without the policy: no badge
        assert not small[split]["badge"].any(), split
    # a badge lifts clicks in the log: badged rows click more at the same slot and appeal
    same = band & (tr["position"] <= 5)
    assert tr["click"][same & (tr["badge"] > 0)].mean() > 1.5 * tr["click"][same & (tr["badge"] == 0)].mean()


def test_truth_examination_and_uniform_test_slots(small):
    for split, cols in small.items():
        np.testing.assert_allclose(cols["examination"], sim.examination(cols["position"], 0.3), rtol=1e-6)
        assert (cols["relevance"] <= cols["examination"] + 1e-6).all(), split
        assert ((cols["propensity"] > 0) & (cols["propensity"] < 1)).all(), split
    for split in ("test", "train_unbiased"):
        counts = np.bincount(small[split]["position"], minlength=11)[1:]
        assert counts.min() > 0.7 * counts.mean(), split
        assert abs(_corr(small[split], "position", "promotion")) < 0.05, split


def test_coverage_matched(small):
    """Test items are logged about as often as any item (only the test pairs leave the log)."""
    tr, te = small["train"], small["test"]
    shows = np.bincount(tr["item_id"], minlength=sim.DEFAULTS["n_items"] + 1)[1:]
    test_items = np.unique(te["item_id"]) - 1
    assert 0.8 < shows[test_items].mean() / shows.mean() < 1.1
    # no logged row is a test pair
    n = sim.DEFAULTS["n_items"] + 1
    logged = np.concatenate([small[s]["user_id"].astype(np.int64) * n + small[s]["item_id"]
                             for s in ("train", "valid")])
    assert not np.isin(te["user_id"].astype(np.int64) * n + te["item_id"], logged).any()


def test_uniform_control_has_no_policy_signal(small, small_uniform):
    tr, un = small_uniform["train"], small_uniform["train_unbiased"]
    assert np.ptp(tr["propensity"]) < 1e-6
    assert not tr["badge"].any()
    assert abs(_corr(tr, "position", "promotion")) < 0.05
    assert abs(_corr(tr, "mean_position", "promotion")) < 0.15
    assert abs(_corr(tr, "log_show_cnt", "promotion")) < 0.15
    assert abs(tr["click"].mean() - un["click"].mean()) < 0.01
    # the biased policy does leave these signals (so the assertions above can fail)
    b = small["train"]
    assert _corr(b, "mean_position", "promotion") < -0.8 and b["click"].mean() > un["click"].mean() + 0.05


def test_small_config_builds_fast_and_is_seeded():
    t = time.perf_counter()
    a = sim.simulate(sim.CONFIGS["proxy_shift_small"])
    assert time.perf_counter() - t < 5.0
    assert 15_000 < len(a["train"]["click"]) < 40_000
    b = sim.simulate(sim.CONFIGS["proxy_shift_small"])
    c = sim.simulate({**sim.CONFIGS["proxy_shift_small"], "seed": 1})
    for k in a["train"]:
        np.testing.assert_array_equal(a["train"][k], b["train"][k])
    assert not np.array_equal(a["train"]["promotion"][:100], c["train"]["promotion"][:100])


def test_scenario_streams_are_its_own():
    """proxy_shift draws from its own streams: the same seed gives proxy_bias's world
    nothing in common with it, and proxy_bias is unchanged by proxy_shift's existence."""
    pb = sim.simulate(sim.CONFIGS["proxy_bias_small"])
    ps = sim.simulate(sim.CONFIGS["proxy_shift_small"])
    assert "badge" not in pb["train"]
    assert not np.array_equal(np.unique(pb["train"]["promotion"])[:50], np.unique(ps["train"]["promotion"])[:50])


def test_evidence_config_sizes():
    p = sim.CONFIGS["proxy_shift"]
    assert p["n_users"] == 3000 and p["n_items"] == 1200
    assert p["test_users"] >= 1000 and p["test_items"] >= 200
    s = sim.simulate(p)
    assert 180_000 < len(s["train"]["click"]) + len(s["valid"]["click"]) < 300_000
    assert len(np.unique(s["test"]["user_id"])) >= 1000 and len(np.unique(s["test"]["item_id"])) >= 200


def test_headroom_is_the_promotion_and_a_policy_span_purifier_repairs_it():
    """Evidence size, data seed 0 (deterministic; a few seconds): LR on every input loses to its
    uniform-log twin under the biased policy, not under the uniform one, and holding the
    policy span (mean_position) at its mean at test closes most of the gap."""
    from tfdebias.evaluation import baselines
    from tfdebias.evaluation import metrics as m
    from tfdebias.methods.cp2rec.protocol import _residualise

    gaps = {}
    for name in ("proxy_shift", "proxy_shift_uniform"):
        params = {**sim.CONFIGS[name], "seed": 0}
        s, schema = sim.simulate(params), sim.schema(params)
        te = s["test"]
        y = te["click"]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            auc = {k: m.auc(y, baselines.logistic_regression(s[k], schema).predict(te))
                   for k in ("train", "train_unbiased")}
            span = list(sim.PROXY_SHIFT_POLICY_STATS)
            others = [f for f in sim.PROXY_SHIFT_STATS if f not in span]
            tr, tt = (_residualise(s["train"], c, others, span) for c in (s["train"], te))
            lr = baselines.logistic_regression(tr, schema)
            held = {**tt, **{f: np.full(len(y), float(np.mean(tr[f]))) for f in span}}
            auc["purified"] = m.auc(y, lr.predict(held))
        gaps[name] = auc
    b, u = gaps["proxy_shift"], gaps["proxy_shift_uniform"]
    headroom = b["train_unbiased"] - b["train"]
    assert headroom > 0.01, b
    assert abs(u["train_unbiased"] - u["train"]) < 0.5 * headroom, u
    assert b["purified"] - b["train"] > 0.5 * headroom, b
