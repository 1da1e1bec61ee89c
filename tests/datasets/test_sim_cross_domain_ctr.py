"""The ``covariate_shift`` scenario of ``cross_domain_ctr``: one labelling function, items
read through their content, the target's content rotated (the shift DANN-style alignment
can repair); the old ``medium`` stays the negative control."""

import numpy as np
import pytest

from tfdebias.datasets.synthetic import cross_domain_ctr as C
from tfdebias.errors import UsageError


@pytest.fixture(scope="module")
def small():
    return C.simulate(C.CONFIGS["covariate_shift_small"])


def test_configs_and_evidence_default():
    names = [c.name for c in C.CrossDomainCtr.BUILDER_CONFIGS]
    assert names[:2] == ["small", "medium"]
    assert {"covariate_shift", "covariate_shift_phi0", "covariate_shift_phi15",
            "covariate_shift_phi60", "covariate_shift_small"} <= set(names)
    assert C.CrossDomainCtr.EVIDENCE_CONFIG == "covariate_shift"
    assert C.CONFIGS["covariate_shift"]["phi_degrees"] == 35.0
    assert "scenario" not in C.CONFIGS["medium"]  # the negative control: concept shift
    for name, phi in (("phi0", 0.0), ("phi15", 15.0), ("phi60", 60.0)):
        cfg = C.CONFIGS[f"covariate_shift_{name}"]
        assert cfg == {**C.CONFIGS["covariate_shift"], "phi_degrees": phi}


def test_schema_reads_items_by_content(small):
    sch = C.schema(C.CONFIGS["covariate_shift_small"])
    content = [f.name for f in sch.categorical if f.name.startswith("item_c")]
    assert len(content) == C.DEFAULTS["dim"]
    for k, v in small.items():
        assert set(v) == {f.name for f in sch}, k
        for f in content:
            assert v[f].min() >= 1 and v[f].max() < sch[f].vocab_size


def test_splits_domains_and_sizes(small):
    tr, te = small["train"], small["test"]
    n_src, n_tgt = (tr["domain"] == 0).sum(), (tr["domain"] == 1).sum()
    assert n_src > 5 * n_tgt > 0  # a large source, a small target domain
    for s in ("valid", "test", "train_unbiased"):
        assert (small[s]["domain"] == 1).all()
    assert len(small["train_unbiased"]["click"]) == len(tr["click"])
    # test items are target items never seen in train (nor in the unbiased sample)
    assert not np.isin(te["item_id"], tr["item_id"]).any()
    assert not np.isin(te["item_id"], small["train_unbiased"]["item_id"]).any()
    assert not np.isin(te["user_id"], small["valid"]["user_id"]).any()
    big = C.simulate(C.CONFIGS["covariate_shift"])
    assert len(big["test"]["click"]) >= 10_000


def test_cold_start_users(small):
    tr, te = small["train"], small["test"]
    warm = np.unique(tr["user_id"][tr["domain"] == 1])
    cold = te["cold_start"] == 1
    assert cold.any() and (~cold).any()
    np.testing.assert_array_equal(cold, ~np.isin(te["user_id"], warm))
    assert not te["history_target"][cold].any()  # new to the target domain
    assert te["history_target"][~cold].any()
    assert te["history_source"].any(axis=1).mean() > 0.9


def test_one_labelling_function_and_rotated_content():
    p = C._params(C.CONFIGS["covariate_shift_small"])
    w = C.covariate_world(p)
    d = C._simulate_covariate(p)
    tr = d["train"]
    assert p["source_intercept"] == p["target_intercept"]
    uu, ii = tr["user_id"] - 1, tr["item_id"] - 1
    rel = 1 / (1 + np.exp(-(p["source_intercept"]
                             + p["preference_click"] * np.einsum("nd,nd->n", w["z"][uu], w["y"][ii]))))
    np.testing.assert_allclose(tr["relevance"], rel, rtol=1e-5)  # both domains, one function
    np.testing.assert_allclose(w["r_target"], C.rotation(35.0, p["dim"]) @ w["r_source"], atol=1e-12)
    rot = C.rotation(90.0, 4)
    np.testing.assert_allclose(rot @ [1, 0, 0, 0], [0, 1, 0, 0], atol=1e-12)
    same = C.covariate_world({**p, "phi_degrees": 0.0})
    np.testing.assert_allclose(same["r_target"], same["r_source"])
    np.testing.assert_array_equal(same["y"], w["y"])  # the sweep changes the rotation only


def test_the_gap_grows_with_phi_and_is_repairable():
    """Nothing trained: reading target content with the source map costs AUC that grows
    with phi; the target's own map recovers it; the content, not the latent, shows the
    domain."""
    c0 = C.covariate_checks("covariate_shift_small", phi_degrees=0.0)
    c35 = C.covariate_checks("covariate_shift_small")
    c60 = C.covariate_checks("covariate_shift_small", phi_degrees=60.0)
    assert abs(c0["source_map"] - c0["target_map"]) < 1e-9
    assert c60["target_map"] - c60["source_map"] > c35["target_map"] - c35["source_map"] > 0.03
    assert c35["probe_x_quadratic"] > 0.7 and abs(c35["probe_y_quadratic"] - 0.5) < 0.05
    assert abs(c35["ctr_source"] - c35["ctr_target"]) < 0.03  # no label-prior shift


def test_bad_scenario_parameters():
    with pytest.raises(UsageError, match="scenario"):
        C.simulate({"scenario": "label_shift"})
    with pytest.raises(UsageError, match="dim"):
        C.simulate({**C.CONFIGS["covariate_shift_small"], "dim": 7})
    with pytest.raises(UsageError, match="test_item_fraction"):
        C.simulate({**C.CONFIGS["covariate_shift_small"], "test_item_fraction": 1.0})
