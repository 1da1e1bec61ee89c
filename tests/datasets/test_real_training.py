"""A backbone trains on every real builder's dummy data through the simulators' code path:
``tfdebias.training.train`` -> ``tfdebias.data.load`` (prepare from ``manual_dir``) -> the
schema -> a model from ``tfdebias.models`` -> fit -> the ``ctr`` protocol -> a run directory."""

from __future__ import annotations

import json

import numpy as np
import pytest

from .test_real_common import dummy_dir

CASES = [
    ("kuairec", "lr"),
    ("wechat_channels", "lr"),
    ("tiktok_icme19", "lr"),
    ("huawei_digix22", "lr"),
    ("amazon_reviews/movies_music", "deepfm"),
]


@pytest.mark.parametrize("name,model", CASES)
def test_backbone_trains_on_real_dummy_data(tmp_path, name, model):
    from tfdebias.training import TrainConfig, evaluate_run, train

    cfg = TrainConfig(data=name, model=model, epochs=1, batch_size=16, patience=0)
    result = train(cfg, tmp_path / "run", data_dir=str(tmp_path / "tfds"),
                   manual_dir=str(dummy_dir(name.split("/")[0])), verbose=0, plots=False)
    assert result.metrics["epochs_trained"] == 1
    scored = {k: v for k, v in result.metrics.items() if "/" in k}
    assert scored and all(np.isfinite(v) for v in scored.values())
    saved = json.loads((result.run_dir / "config.json").read_text())
    assert saved["data"] == name and saved["model"] == model
    # the run directory alone (config, weights, the prepared data) gives the same scores
    again = evaluate_run(result.run_dir, data_dir=str(tmp_path / "tfds"))
    assert {k: again[k] for k in scored} == pytest.approx(scored, abs=1e-9)
