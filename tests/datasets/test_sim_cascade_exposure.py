"""`cascade_exposure`'s `communities` scenario (DAMCAR's evidence default): community
structure in tastes, a policy aligned with but not equal to relevance, the truth of every
pair, and the numpy checks of its docstring (nothing trained)."""

import numpy as np
import pytest

from tfdebias.data import random_walk as rw
from tfdebias.datasets.synthetic import cascade_exposure as C
from tfdebias.errors import UsageError

CFG = C.CONFIGS["communities_small"]


@pytest.fixture(scope="module")
def small():
    return C.simulate(CFG), C.truth(CFG)


def keys(c, ni):
    return (np.asarray(c["user_id"], np.int64) - 1) * ni + np.asarray(c["item_id"], np.int64) - 1


def test_configs_and_evidence_default():
    assert {"communities", "communities_small", "medium", "small"} <= set(C.CONFIGS)
    assert C.CascadeExposure.EVIDENCE_CONFIG == "communities"
    assert C.CONFIGS["communities"]["scenario"] == "communities"
    assert "scenario" not in C.CONFIGS["medium"]  # the control keeps the old story
    with pytest.raises(UsageError, match="scenario"):
        C.simulate({"scenario": "nope"})


def test_same_seed_same_data_and_truth_rebuilds_relevance(small):
    d, t = small
    again = C.simulate(CFG)
    for split in d:
        for col in d[split]:
            np.testing.assert_array_equal(d[split][col], again[split][col])
    for split, c in d.items():
        np.testing.assert_allclose(t.relevance(c["user_id"], c["item_id"]), c["relevance"],
                                   rtol=1e-5, err_msg=split)
        np.testing.assert_allclose(
            t.propensity_block(c["user_id"][:50])[np.arange(50), c["item_id"][:50] - 1],
            c["propensity"][:50], rtol=1e-5)


def test_tastes_cluster_in_communities(small):
    _, t = small
    # users' tastes: the top singular values carry the community structure (rank ~K)
    k = CFG["n_communities"]
    sv = np.linalg.svd(t.x - t.x.mean(0), compute_uv=False) ** 2
    assert t.x.shape[1] > k and sv[:k].sum() / sv.sum() > 0.85
    # nearest-neighbour tastes are much closer than random pairs
    sim = t.x @ t.x.T
    np.fill_diagonal(sim, -np.inf)
    assert np.mean(np.max(sim, 1)) > 3 * np.mean(np.abs(t.x @ t.x[::-1].T))


def test_numpy_checks_of_the_docstring(small):
    """Exposed pairs finish far more often than unexposed ones; the policy is aligned
    with relevance but not equal to it; the random walk's S_sam is more relevant than
    random unexposed pairs, more so at a short radius."""
    d, t = small
    p = C._params(CFG)
    nu, ni = p["n_users"], p["n_items"]
    exposed = np.unique(np.concatenate([keys(d[s], ni) for s in ("train", "valid", "test")]))
    fin = np.concatenate([d[s]["finish"] for s in ("train", "valid", "test")]).mean()
    rng = np.random.default_rng(0)
    ru, ri = rng.integers(0, nu, 100_000), rng.integers(0, ni, 100_000)
    ok = ~np.isin(ru.astype(np.int64) * ni + ri, exposed)
    unexp = t.relevance0(ru[ok], ri[ok]).mean()
    assert fin > unexp + 0.2 and unexp < 0.3
    lg = lambda v: np.log(v / (1 - v))  # noqa: E731
    corr = np.corrcoef(lg(t.propensity0(ru, ri)), lg(t.relevance0(ru, ri)))[0, 1]
    assert 0.5 < corr < 0.9
    tr = d["train"]
    logged = np.unique(np.concatenate([keys(d[s], ni) for s in ("train", "valid")]))
    rel = {}
    for radius in (5, 25):
        tu, ti, _ = rw.generate_target_domain(tr["user_id"] - 1, tr["item_id"] - 1,
                                              tr["play_seconds"], nu, ni, radius=radius,
                                              walks=50, seed=0, exclude_keys=logged)
        assert len(tu) > 0
        rel[radius] = t.relevance0(tu, ti).mean()
    assert rel[5] > rel[25] > unexp + 0.03


def test_oracle_and_every_split_are_unexposed_or_exposed_as_named(small):
    d, _ = small
    ni = C._params(CFG)["n_items"]
    exposed = np.concatenate([keys(d[s], ni) for s in ("train", "valid", "test")])
    assert not np.isin(keys(d["oracle"], ni), exposed).any()
    assert len(np.unique(d["oracle"]["user_id"])) >= 0.9 * CFG["n_users"]
