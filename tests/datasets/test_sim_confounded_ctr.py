"""``confounded_ctr``'s ``proxy_bias`` scenario: proxies computed from the logged feedback,
the truth it ships, its sizes, the uniform-policy control and the headroom (numpy only)."""

import warnings

import numpy as np
import pytest

from tfdebias.datasets.synthetic import confounded_ctr as sim


@pytest.fixture(scope="module")
def small():
    return sim.simulate(sim.CONFIGS["proxy_bias_small"])


@pytest.fixture(scope="module")
def small_uniform():
    return sim.simulate({**sim.CONFIGS["proxy_bias_small"], **sim.UNIFORM_POLICY})


def test_configs_and_evidence_default():
    assert list(sim.CONFIGS)[:2] == ["small", "medium"]  # the old configs stay first, unchanged
    assert sim.ConfoundedCtr.EVIDENCE_CONFIG == "proxy_shift"  # `tfdebias reproduce cp2rec` reads this
    assert {"proxy_bias", "proxy_bias_small", "proxy_bias_uniform"} <= set(sim.CONFIGS)
    uni = sim.CONFIGS["proxy_bias_uniform"]
    assert {k: v for k, v in uni.items() if k not in sim.UNIFORM_POLICY} == sim.CONFIGS["proxy_bias"]
    assert all(uni[k] == 0.0 for k in sim.UNIFORM_POLICY)
    with pytest.raises(Exception, match="scenario"):
        sim.simulate({"scenario": "nope"})


def test_proxies_are_functions_of_the_logged_feedback(small):
    """Recomputing the item statistics from the logged train rows gives the stored values,
    in every split; and they change when the logged clicks change."""
    n_items = sim.DEFAULTS["n_items"]
    stats = sim.item_statistics(small["train"], n_items)
    for split, cols in small.items():
        for name in sim.PROXY_BIAS_STATS:
            np.testing.assert_allclose(cols[name], stats[name][cols["item_id"]].astype(np.float32),
                                       rtol=1e-6, err_msg=f"{split}/{name}")
    # independent check of one statistic, without the helper
    tr = small["train"]
    shows = np.bincount(tr["item_id"], minlength=n_items + 1)
    ctr = (np.bincount(tr["item_id"], tr["click"].astype(float), n_items + 1)
           + sim.PROXY_PRIOR_SHOWS * tr["click"].mean()) / (shows + sim.PROXY_PRIOR_SHOWS)
    np.testing.assert_allclose(tr["logged_ctr"], ctr[tr["item_id"]], rtol=1e-5)
    np.testing.assert_allclose(tr["log_show_cnt"], np.log1p(shows)[tr["item_id"]], rtol=1e-6)
    flipped = dict(tr, click=1.0 - tr["click"])
    assert not np.allclose(sim.item_statistics(flipped, n_items)["logged_ctr"], stats["logged_ctr"])


def test_proxies_mix_the_harmful_promotion_and_the_useful_appeal(small):
    tr = small["train"]
    corr = lambda a, b: np.corrcoef(tr[a], tr[b])[0, 1]  # noqa: E731
    assert corr("log_show_cnt", "promotion") > 0.3 and corr("log_show_cnt", "confounder") > 0.3
    assert corr("logged_ctr", "confounder") > 0.3 and corr("logged_ctr", "promotion") > 0.2
    assert corr("mean_position", "promotion") < -0.6  # promoted items sit at the top
    # positions: a slot score without the pair's hidden interest (no position leak)
    assert abs(corr("position", "relevance") / corr("position", "examination")) < 1.0


def test_truth_and_examination(small):
    for cols in small.values():
        k = sim.examination(cols["position"], 0.3)
        np.testing.assert_allclose(cols["examination"], k, rtol=1e-6)
        assert (cols["relevance"] <= cols["examination"] + 1e-6).all()
        assert ((cols["propensity"] > 0) & (cols["propensity"] < 1)).all()
    te = small["test"]
    counts = np.bincount(te["position"], minlength=11)[1:]
    assert counts.min() > 0.7 * counts.mean()  # the test block is shown at uniform positions
    tr = small["train"]
    assert tr["examination"].mean() > small["train_unbiased"]["examination"].mean() - 0.01


def test_sizes_of_the_evidence_config():
    p = sim.CONFIGS["proxy_bias"]
    assert p["test_users"] >= 1000 and p["test_items"] >= 200
    s = sim.simulate(p)
    assert len(s["train"]["click"]) + len(s["valid"]["click"]) >= 200_000
    assert len(s["train_unbiased"]["click"]) == len(s["train"]["click"])


def test_uniform_policy_logs_like_the_uniform_sample(small_uniform):
    tr, un = small_uniform["train"], small_uniform["train_unbiased"]
    assert abs(tr["click"].mean() - un["click"].mean()) < 0.01
    assert abs(np.corrcoef(tr["log_show_cnt"], tr["promotion"])[0, 1]) < 0.15
    assert abs(np.corrcoef(tr["position"], tr["promotion"])[0, 1]) < 0.05
    assert np.ptp(tr["propensity"]) < 1e-6


def _lr_gap(overrides, seeds=(0, 1, 2)):
    """Unbiased test AUC of LR on the user/item features: biased train minus train_unbiased."""
    from tfdebias.evaluation import baselines
    from tfdebias.evaluation import metrics as m
    from tfdebias.models.base import split_sides

    gaps = []
    for seed in seeds:
        params = {**sim.CONFIGS["proxy_bias_small"], "n_users": 1500, "test_users": 300,
                  "test_items": 100, **overrides, "seed": seed}
        s, schema = sim.simulate(params), sim.schema(params)
        users, items = split_sides(schema)
        y = s["test"]["click"]
        aucs = []
        for split in ("train", "train_unbiased"):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                lr = baselines.logistic_regression(s[split], schema, fields=users + items)
            aucs.append(m.auc(y, lr.predict(s["test"])))
        gaps.append(aucs[1] - aucs[0])
    return np.array(gaps)


def test_headroom_exists_under_the_biased_policy_and_not_under_the_uniform_one():
    biased = _lr_gap({})
    assert biased.min() > 0.005 and biased.mean() > 0.01, biased
    uniform = _lr_gap(sim.UNIFORM_POLICY)
    assert abs(uniform.mean()) < 0.5 * biased.mean(), (biased, uniform)
