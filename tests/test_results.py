import json

import numpy as np

from tfdebias.evaluation.results import summarize, to_markdown, write_results


def test_summarize_mean_and_sample_std():
    recs = [{"name": "a", "seed": s, "metrics": {"auc": v}} for s, v in enumerate([0.6, 0.7, 0.8])]
    recs += [{"name": "b", "seed": 0, "metrics": {"auc": 0.5}}]
    rows = summarize(recs)
    assert [r["name"] for r in rows] == ["a", "b"]
    assert np.isclose(rows[0]["mean"]["auc"], 0.7)
    assert np.isclose(rows[0]["std"]["auc"], np.std([0.6, 0.7, 0.8], ddof=1))
    assert rows[1]["std"]["auc"] == 0.0 and rows[1]["n_seeds"] == 1


def test_markdown_bolds_best():
    rows = summarize([{"name": "a", "seed": 0, "metrics": {"auc": 0.6}},
                      {"name": "b", "seed": 0, "metrics": {"auc": 0.7}}])
    md = to_markdown(rows, ["auc"], bold_best={"auc": "max"})
    assert "| b | 1 | **0.7000 ± 0.0000** |" in md
    assert "| a | 1 | 0.6000 ± 0.0000 |" in md


def test_write_results_is_complete(tmp_path):
    recs = [{"name": "x", "seed": s, "metrics": {"test/auc": 0.5 + s / 10}} for s in range(2)]
    out = write_results(tmp_path / "res", recs, title="T", plot_metric="test/auc", command="cmd")
    payload = json.loads((out / "results.json").read_text())
    assert payload["rows"][0]["n_seeds"] == 2 and payload["command"] == "cmd"
    assert (out / "results.md").read_text().startswith("# T")
    assert (out / "results.png").stat().st_size > 1000
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
