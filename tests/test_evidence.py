"""The evidence layer: bootstrap coverage, DeLong, gap closed, flags and the written table."""

import json

import numpy as np
import pytest

from tfdebias.progress import Progress
from sklearn.metrics import roc_auc_score

from tfdebias.errors import UsageError
from tfdebias.evaluation import evidence as ev


def _records(rows, n_data_seeds=1, n_units=200, per_unit=5, seed=0, model_seeds=1):
    """Records of AUC rows: ``rows`` = [(name, role, skill)], skill = signal strength."""
    rng = np.random.default_rng(seed)
    out = []
    for d in range(n_data_seeds):
        units = np.repeat(np.arange(n_units), per_unit)
        y = rng.random(len(units)) < 0.3
        base = rng.standard_normal(len(units))  # shared by every row: pairs them
        for name, role, skill in rows:
            for s in range(model_seeds):
                score = skill * y + base + 0.3 * rng.standard_normal(len(units))
                out.append({"name": name, "role": role, "data_seed": d, "seed": s,
                            "metrics": {"test/auc": roc_auc_score(y, score)},
                            "scores": {"test/auc": ev.row_auc(y, score, units)}})
    return out


def test_row_auc_matches_sklearn_with_and_without_weights():
    rng = np.random.default_rng(1)
    units = rng.integers(0, 50, 800)
    y = rng.random(800) < 0.4
    score = np.round(y * 0.7 + rng.standard_normal(800), 1)  # rounding makes ties
    sc = ev.row_auc(y, score, units)
    assert sc.point() == pytest.approx(roc_auc_score(y, score), abs=1e-12)
    w = rng.multinomial(50, np.full(50, 1 / 50), size=3).astype(float)
    got = sc.under(w)
    for b in range(3):
        assert got[b] == pytest.approx(roc_auc_score(y, score, sample_weight=w[b][units]), abs=1e-6)


def test_row_mean_under_weights_is_the_weighted_mean():
    rng = np.random.default_rng(2)
    units = rng.integers(0, 30, 300)
    values = rng.random(300)
    sc = ev.row_mean(values, units)
    assert sc.point() == pytest.approx(values.mean())
    w = rng.random((2, 30))
    for b in range(2):
        assert sc.under(w)[b] == pytest.approx(np.average(values, weights=w[b][units]))


def test_bad_scores_are_refused():
    with pytest.raises(UsageError, match="one id per row"):
        ev.row_mean([1.0, 2.0], [0])
    with pytest.raises(UsageError, match="both positive and negative"):
        ev.row_auc([1, 1], [0.2, 0.3], [0, 1])


def _coverage(n_data_seeds, reps, tau):
    """How often the paired CI of m(B) - m(A) covers the true difference 0.1."""
    hits = 0
    for r in range(reps):
        rng = np.random.default_rng(1000 + r)
        recs = []
        for d in range(n_data_seeds):
            n = 60
            unit_effect = rng.standard_normal(n)  # shared by both rows: the pairing
            shift = tau * rng.standard_normal()  # the data draw moves the difference
            units = np.repeat(np.arange(n), 4)
            a = unit_effect[units] + 0.5 * rng.standard_normal(len(units))
            b = a + 0.1 + shift + 0.2 * rng.standard_normal(n)[units] + 0.1 * rng.standard_normal(len(units))
            for name, role, v in (("A", "floor", a), ("B", "skyline", b)):
                recs.append({"name": name, "role": role, "data_seed": d, "seed": 0, "metrics": {},
                             "scores": {"m": ev.row_mean(v, units)}})
        gap = ev.analyse(recs, metric="m", n_boot=400, seed=r)["headroom"]["gap"]["ci95"]
        hits += gap[0] <= 0.1 <= gap[1]
    return hits / reps


def test_paired_bootstrap_covers_a_known_difference_about_95_percent():
    # one data draw: the cluster bootstrap over units alone; ~95% (binomial SE ~1.5%)
    cov = _coverage(1, 200, 0.0)
    assert 0.89 <= cov <= 0.99, cov


def test_two_level_bootstrap_covers_when_data_draws_move_the_difference():
    # five data draws whose own differences vary: the two-level interval must cover
    # (it is conservative by construction, so only the lower side is bounded)
    assert _coverage(5, 120, 0.05) >= 0.9


def _delong_bruteforce(y, a, b):
    """DeLong et al. (1988) from their definitions: placements by pairwise comparison."""
    y = np.asarray(y) > 0.5

    def psi(x, z):
        return (x[:, None] > z[None, :]) + 0.5 * (x[:, None] == z[None, :])

    comps = []
    for s in (a, b):
        k = psi(s[y], s[~y])
        comps.append((k.mean(), k.mean(axis=1), k.mean(axis=0)))
    m, n = y.sum(), (~y).sum()
    v10 = np.cov(np.stack([c[1] for c in comps]))
    v01 = np.cov(np.stack([c[2] for c in comps]))
    s = v10 / m + v01 / n
    diff = comps[0][0] - comps[1][0]
    se = np.sqrt(s[0, 0] + s[1, 1] - 2 * s[0, 1])
    return diff, se


def test_delong_agrees_with_its_definition_and_sklearn():
    rng = np.random.default_rng(3)
    y = rng.random(300) < 0.35
    a = np.round(1.5 * y + rng.standard_normal(300), 1)  # ties inside and across classes
    b = np.round(0.5 * y + rng.standard_normal(300), 1)
    out = ev.delong(y, a, b)
    diff, se = _delong_bruteforce(y, a, b)
    assert out["auc_a"] == pytest.approx(roc_auc_score(y, a), abs=1e-12)
    assert out["auc_b"] == pytest.approx(roc_auc_score(y, b), abs=1e-12)
    assert out["diff"] == pytest.approx(diff, abs=1e-12)
    assert out["se"] == pytest.approx(se, rel=1e-9)
    assert 0 < out["p"] < 0.05 and out["ci95"][0] > 0


def test_delong_of_identical_scores_is_zero():
    rng = np.random.default_rng(4)
    y = rng.random(100) < 0.5
    s = rng.random(100)
    out = ev.delong(y, s, s)
    assert out["diff"] == 0 and out["p"] == 1.0


def test_gap_closed_is_zero_for_floor_and_one_for_skyline():
    recs = _records([("naive", "floor", 0.3), ("oracle", "skyline", 1.2), ("half", "method", 0.75)],
                    n_data_seeds=3, model_seeds=2)
    out = ev.analyse(recs, metric="test/auc", main_baseline="naive", n_boot=300)
    rows = {r["name"]: r for r in out["rows"]}
    assert rows["naive"]["gap_closed"] == {"mean": 0.0, "ci95": [0.0, 0.0]}
    assert rows["oracle"]["gap_closed"] == {"mean": 1.0, "ci95": [1.0, 1.0]}
    half = rows["half"]["gap_closed"]
    assert 0.2 < half["mean"] < 0.8 and half["ci95"][0] < half["mean"] < half["ci95"][1]
    assert out["headroom"]["measurable"] and out["headroom"]["gap"]["ci95"][0] > 0
    assert rows["half"]["vs_baseline"]["ci95"][0] > 0  # better than the naive row, paired
    dl = rows["half"]["delong"]  # DeLong agrees: clearly better on every data draw
    assert dl["vs"] == "naive" and len(dl["per_data_seed"]) == 3 and dl["p"] < 1e-3 and dl["z"] > 0
    assert "better than floor" in rows["half"]["flags"]
    assert rows["oracle"]["n_data_seeds"] == 3 and rows["oracle"]["n_seeds"] == 6


def test_a_scenario_without_bias_is_flagged():
    # skyline and floor are the same model on the same kind of data: no gap to close.
    # The flag is a 95% interval, so it should stand in about 19 draws of 20.
    flagged = 0
    for seed in range(20):
        recs = _records([("naive", "floor", 0.6), ("unbiased", "skyline", 0.6), ("m", "method", 0.9)],
                        n_data_seeds=3, seed=seed)
        out = ev.analyse(recs, metric="test/auc", n_boot=200)
        if not out["headroom"]["measurable"]:
            flagged += 1
            assert any(f.startswith("no measurable bias") for f in out["flags"])
            assert "no measurable bias" in {r["name"]: r for r in out["rows"]}["m"]["flags"]
    assert flagged >= 16, flagged
    # and a real gap is not flagged
    recs = _records([("naive", "floor", 0.3), ("unbiased", "skyline", 0.9)], n_data_seeds=3)
    assert ev.analyse(recs, metric="test/auc", n_boot=200)["headroom"]["measurable"]


def test_a_skyline_below_the_floor_leaves_gap_closed_out():
    recs = _records([("naive", "floor", 1.0), ("sky", "skyline", 0.3), ("m", "method", 0.6)], n_data_seeds=3)
    out = ev.analyse(recs, metric="test/auc", n_boot=200)
    assert not out["headroom"]["measurable"] and "skyline scores below the floor" in out["flags"][0]
    m = {r["name"]: r for r in out["rows"]}["m"]
    assert np.isnan(m["gap_closed"]["mean"]) and "no measurable bias" in m["flags"]


def test_a_backbone_below_a_simple_baseline_makes_rows_uninterpretable():
    recs = _records([("naive", "floor", 0.2), ("sky", "skyline", 1.0), ("pop", "simple", 0.8),
                     ("m", "method", 0.5)], n_data_seeds=2)
    out = ev.analyse(recs, metric="test/auc", n_boot=300)
    assert any("does not beat pop" in f for f in out["flags"])
    assert "not interpretable" in {r["name"]: r for r in out["rows"]}["m"]["flags"]
    recs = _records([("naive", "floor", 0.8), ("sky", "skyline", 1.2), ("pop", "simple", 0.2)], n_data_seeds=2)
    assert not ev.analyse(recs, metric="test/auc", n_boot=300)["flags"]


def test_tables_need_one_floor_and_one_skyline():
    recs = _records([("a", "floor", 0.3), ("b", "floor", 0.3)])
    with pytest.raises(UsageError, match="exactly one floor"):
        ev.analyse(recs, metric="test/auc")
    with pytest.raises(UsageError, match="role"):
        ev.analyse([{**recs[0], "role": "hero"}], metric="test/auc")


def test_write_evidence_writes_the_fields_the_tables_promise(tmp_path):
    recs = _records([("naive", "floor", 0.3), ("sky", "skyline", 1.0), ("m", "method", 0.6),
                     ("pop", "simple", 0.0)], n_data_seeds=2)
    out = ev.write_evidence(tmp_path / "t", recs, title="T", metric="test/auc", main_baseline="naive",
                            method="m", stopping="fixed budget", n_boot=200, command="tfdebias x")
    res = json.loads((out / "results.json").read_text())
    h = res["headroom"]
    assert h["metric"] == "test/auc" and {"mean", "ci95"} <= set(h["gap"]) and len(h["skyline"]["ci95"]) == 2
    for row in res["rows"]:
        assert {"name", "n_seeds", "mean", "std", "ci95", "gap_closed"} <= set(row)
        assert "test/auc" in row["ci95"]
    assert {r["data_seed"] for r in res["records"]} == {0, 1} and all("scores" not in r for r in res["records"])
    md = (out / "results.md").read_text()
    assert "Headroom" in md and "gap closed" in md and "Stopping: fixed budget." in md
    assert (out / "results.png").stat().st_size > 0
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary files left


def test_snips_logloss_weights_rare_rows_up():
    y = np.array([1.0, 0.0])
    p = np.array([0.9, 0.9])
    plain = ev.snips_logloss(y, p, [1.0, 1.0])
    assert plain == pytest.approx(-(np.log(0.9) + np.log(0.1)) / 2)
    assert ev.snips_logloss(y, p, [1.0, 0.01]) > plain  # the badly predicted row is rarely shown
    with pytest.raises(UsageError, match="> 0"):
        ev.snips_logloss(y, p, [1.0, 0.0])


def test_progress_prints_counts_and_an_estimate(capsys):
    p = Progress(2)
    p.step("row A")
    p.step("row B")
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("[1/2] row A") and "left" in out[0]
    assert out[1].startswith("[2/2] row B") and "left" not in out[1]
