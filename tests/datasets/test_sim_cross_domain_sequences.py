"""``cross_domain_sequences``' open-world scenario: short target histories, long other
domains, rho 0.9 with shared topics, activity-driven overlap, selection on the outcome,
and the hidden truth (shared interest, true propensity); the closed scenario unchanged."""

import numpy as np
import pytest

from tfdebias.datasets.synthetic import cross_domain_sequences as cds


@pytest.fixture(scope="module")
def small():
    p = cds.CONFIGS["open_world_small"]
    return cds.simulate(p), cds.schema(p), cds._params(p)


def _own_len(cols):
    return np.where(cols["domain"] == 0, (cols["history_a"] > 0).sum(1), (cols["history_b"] > 0).sum(1))


def _other_len(cols):
    return np.where(cols["domain"] == 0, (cols["history_b"] > 0).sum(1), (cols["history_a"] > 0).sum(1))


def test_configs_default_and_the_control_unchanged():
    assert cds.EVIDENCE_CONFIG == cds.CrossDomainSequences.EVIDENCE_CONFIG == "open_world"
    assert cds.CONFIGS["medium"] == {"n_users": 12000}  # the negative control
    assert list(cds.CONFIGS)[:2] == ["small", "medium"]
    for name in ("open_world", "open_world_small"):
        p = cds._params(cds.CONFIGS[name])
        assert p["scenario"] == "open_world" and p["cross_correlation"] == 0.9
    # the closed scenario's schema gains nothing
    assert not [f for f in cds.schema(cds.CONFIGS["medium"]) if f.name.startswith("interest_")]
    with pytest.raises(Exception, match="scenario"):
        cds.simulate({"scenario": "magic"})


def test_splits_schema_and_hidden_truth(small):
    sp, sch, p = small
    assert set(sp) == {"train", "unobserved", "valid", "test", "train_unbiased"}
    interest = [f for f in sch if f.name.startswith("interest_")]
    assert len(interest) == p["dim"] and all(f.role == "truth" for f in interest)
    for cols in sp.values():
        assert set(cols) == {f.name for f in sch}
    test = sp["test"]
    # one interest per user: every row of a user carries the same vector
    g = np.stack([test[f.name] for f in interest], 1)
    users = test["user_id"]
    first = {u: i for i, u in reversed(list(enumerate(users)))}
    idx = np.array([first[u] for u in users])
    np.testing.assert_array_equal(g, g[idx])
    # the true propensity: 1 for overlapping users, calibrated to k_u for the others
    non = test["overlap"] == 0
    assert np.all(test["propensity"][~non] == 1.0)
    per_user = {u: pr for u, pr in zip(users[non], test["propensity"][non])}
    assert np.mean(list(per_user.values())) == pytest.approx(p["k_u"], abs=0.02)
    assert len(sp["train_unbiased"]["item_id"]) == len(sp["train"]["item_id"])


def test_short_target_histories_and_long_other_domains(small):
    sp, _, _ = small
    valid = sp["valid"]
    own = _own_len(valid)
    assert 0.5 < np.mean(own <= 3) < 0.9  # most validation rows read 1-3 own items
    assert own.min() >= 1
    ov = valid["overlap"] == 1
    short_ov = ov & (own <= 3)
    assert short_ov.sum() > 0.4 * ov.sum()  # an overlapping user: one short domain ...
    assert np.all(_other_len(valid)[short_ov] >= 6)  # ... and a long other one
    assert np.all(_other_len(valid)[~ov] == 0)


def test_selection_depends_on_the_outcome(small):
    sp, _, p = small
    log_pop = {}
    lat = {}
    cds._simulate_open_world(p, lat)
    pop = np.log(np.concatenate([[1.0]] + lat["pop"]))
    for name in ("train", "unobserved", "train_unbiased"):
        cols = sp[name]
        non = cols["overlap"] == 0
        log_pop[name] = pop[cols["item_id"][non]].mean()
    # the observed non-overlapping users' targets are more popular than a random sample's
    assert log_pop["train"] > log_pop["train_unbiased"] + 0.2 > log_pop["unobserved"] + 0.2


def test_overlap_depends_on_activity(small):
    sp, _, _ = small
    test = sp["test"]
    # activity lengthens the long domain: overlapping users' long domain is longer than
    # the non-overlapping users' long domains
    ov = test["overlap"] == 1
    own = _own_len(test)
    long_ov = own[ov & (own > 6)].mean()
    long_non = own[~ov & (own > 6)].mean()
    assert long_ov > long_non


def test_numpy_checks_show_the_headrooms():
    out = cds.numpy_checks("open_world_small", seed=0)
    cd = out["cross_domain_headroom"]
    assert cd["mean"] > 3 * cd["se"] > 0
    assert set(out["ndcg"]) >= {"hist", "hist+other", "hist+interest", "item-kNN on train",
                                "item-kNN on train_unbiased"}
    z = out["target_log_pop_z"]
    assert z["train"] > z["train_unbiased"] > z["unobserved"]
    # the overlapping users (always observed) hold most of train's next-item positions
    assert 0.1 < out["train_positions_non_overlapping"] < 0.5
    with pytest.raises(Exception, match="open_world"):
        cds.numpy_checks("small")


def test_seeded():
    p = dict(cds.CONFIGS["open_world_small"], n_users=300)
    a, b = cds.simulate(p), cds.simulate(p)
    for s in a:
        for c in a[s]:
            np.testing.assert_array_equal(a[s][c], b[s][c])
    c_ = cds.simulate(dict(p, seed=1))
    assert not np.array_equal(a["test"]["item_id"], c_["test"]["item_id"])
