"""DADIN's baselines: the new single-domain backbones (xDeepFM, NFM, DIN), the
cross-domain baselines (MV-DNN, MLP++, CSN, CoNet, MiNet) and the toy data."""

import numpy as np
import pytest

from tfdebias import models
from tfdebias.methods import cross_domain_baselines as X
from tfdebias.methods import moons
from tfdebias.models.xdeepfm import CompressedInteraction

from test_dadin import batch, small_schema


@pytest.mark.parametrize("name", ["xdeepfm", "nfm", "din", *X.CROSS_DOMAIN_BASELINES])
def test_builds_and_serves_probabilities(name):
    m = models.build(name, small_schema(), embedding_dim=4, hidden_units=[8, 6])
    y = m(batch(7)).numpy()
    assert y.shape == (7, 1) and ((y > 0) & (y < 1)).all()
    assert m.representation(batch(7)).shape[0] == 7
    clone = type(m).from_config(m.get_config())
    clone(batch(2))
    assert clone.count_params() == m.count_params()


def test_cin_matches_numpy_reference():
    rng = np.random.default_rng(0)
    x0 = rng.normal(size=(2, 3, 4)).astype("float32")
    cin = CompressedInteraction([5, 2], split_half=False)
    out = cin(x0).numpy()
    w0, b0, w1, b1 = (v.numpy() for v in (cin.filters[0], cin.biases[0], cin.filters[1], cin.biases[1]))
    x1 = np.einsum("bid,bjd,ijh->bhd", x0, x0, w0) + b0[None, :, None]  # Eq. (6)
    x2 = np.einsum("bid,bjd,ijh->bhd", x1, x0, w1) + b1[None, :, None]
    ref = np.concatenate([x1.sum(-1), x2.sum(-1)], axis=1)  # Eq. (7)
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-5)


def test_din_queries_each_history_with_the_candidate():
    m = models.build("din", small_schema(), embedding_dim=4, hidden_units=[8])
    assert m.queries == {"history_source": "item_id", "history_target": "item_id"}
    b = batch(5)
    got = m.interests(b)["history_target"].numpy()
    keys, mask = m.embed.sequence(b, "history_target")
    ref = m.attention["history_target"](m.embed.lookup(b, "item_id"), keys, mask=mask).numpy()
    np.testing.assert_allclose(got, ref, rtol=1e-6)


@pytest.mark.parametrize("name", ["mlp_plus_plus", "csn", "conet", "minet"])
def test_two_tower_models_score_a_row_with_its_domains_tower(name):
    m = models.build(name, small_schema(), embedding_dim=4, hidden_units=[8, 6])
    b = batch(20)
    before = m(b).numpy()[:, 0]
    m.head_s.kernel.assign(m.head_s.kernel.numpy() + 1.0)  # change the source head only
    after = m(b).numpy()[:, 0]
    tgt = b["domain"] == 1
    np.testing.assert_allclose(after[tgt], before[tgt], rtol=1e-6)
    assert not np.allclose(after[~tgt], before[~tgt])


def test_cross_connections_transfer_between_towers():
    for name in ("csn", "conet"):
        m = models.build(name, small_schema(), embedding_dim=4, hidden_units=[8, 6])
        b = batch(20)
        tgt = b["domain"] == 1
        before = m(b).numpy()[tgt, 0]
        layer = m.layers_s[0]
        layer.kernel.assign(layer.kernel.numpy() * 3.0)  # the source tower's first layer
        assert not np.allclose(m(b).numpy()[tgt, 0], before), name


def test_rotated_moons():
    d = moons.rotated_moons(noise=0.0, seed=0)
    assert d["x"].shape == (600, 2) and d["y"].mean() == 0.5 and d["domain"].sum() == 300
    a = -np.deg2rad(moons.ROTATION)
    rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    centre = np.array([0.5, 0.25])
    back = (d["x"][300:] - centre) @ rot.T + centre  # undo the 35 degree rotation
    y = d["y"][300:]
    r_upper = np.linalg.norm(back[y == 0], axis=1)
    r_lower = np.linalg.norm(back[y == 1] - np.array([1.0, 0.5]), axis=1)
    np.testing.assert_allclose(r_upper, 1.0, atol=1e-5)
    np.testing.assert_allclose(r_lower, 1.0, atol=1e-5)
    assert not np.allclose(d["x"][300:], back)


def test_linear_probe_sees_domains():
    rng = np.random.default_rng(0)
    dom = np.repeat([0, 1], 100)
    assert moons.linear_probe_auc(rng.normal(size=(200, 3)) + dom[:, None] * 3, dom) > 0.99
    assert moons.linear_probe_auc(rng.normal(size=(200, 3)), dom) < 0.7


def test_toy_runs_each_number_of_target_labels():
    recs, fig = moons.run_toy(0, steps=3, target_labels=(0, 2))
    assert [r["name"] for r in recs] == ["DADIN-toy, 0 target labels", "DNN, 0 target labels",
                                         "DADIN-toy, 2 target labels", "DNN, 2 target labels"]
    assert fig["k"] == 0 and set(fig["models"]) == {"DADIN-toy", "DNN"}
    assert all(0.0 <= r["metrics"]["target/accuracy"] <= 1.0 for r in recs)
