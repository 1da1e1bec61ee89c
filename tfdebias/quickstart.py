"""``tfdebias quickstart``: the main job on the embedded default, no download.

Builds the confounded-CTR simulator (KuaiRec's stand-in), trains each row of
:data:`ROWS` on its biased training split, scores it on the biased validation split and
the unbiased test split, prints a results table, and exports the last row's model for
TF Serving (``<run>/export/<model>/1`` plus ``<run>/export/models.config``, as
``tfdebias export`` writes it). Methods append their own row to :data:`ROWS` to show
themselves against the backbone.
"""

from __future__ import annotations

import time
from pathlib import Path

from tfdebias.training.engine import TrainConfig

DATA = "confounded_ctr"

#: (row name, TrainConfig overrides). Each row trains once with seed 0.
ROWS: list[tuple[str, dict]] = [
    ("DeepFM (biased baseline)", {"model": "deepfm", "model_args": {"embedding_dim": 16}}),
    ("CP2Rec-PROJ on DCN (debiased, serves y_U)",
     {"model": "cp2rec", "model_args": {"backbone": "dcn", "purifier": "proj",
                                         "backbone_args": {"hidden_units": [64, 32]}}}),
]


def run(out="runs/quickstart", *, data_dir=None, epochs: int = 8, overwrite: bool = False,
        verbose=2, rows=None) -> dict:
    from tfdebias import data
    from tfdebias.evaluation.results import write_results
    from tfdebias.export import export_run
    from tfdebias.training import train

    t0 = time.time()
    out = Path(out)
    print(f"[1/3] Preparing the {DATA!r} simulator (built once, then cached)...", flush=True)
    data.prepare(DATA, data_dir=data_dir)
    records, last = [], None
    rows = rows or ROWS
    for i, (name, overrides) in enumerate(rows):
        cfg = TrainConfig(data=DATA, epochs=epochs, batch_size=512, learning_rate=2e-3,
                          patience=3, **overrides)
        print(f"[2/3] Training {name} ({i + 1}/{len(rows)})...", flush=True)
        run_dir = out / cfg.model
        result = train(cfg, run_dir, data_dir=data_dir, overwrite=overwrite, verbose=verbose)
        records.append({"name": name, "seed": cfg.seed, "metrics": result.metrics,
                        "run_dir": str(result.run_dir)})
        last = result
    metrics = ["valid/auc", "test/auc", "valid/logloss", "test/logloss"]
    table = write_results(out / "results", records, title="Quickstart: confounded_ctr (small)",
                          metrics=metrics, command="tfdebias quickstart",
                          notes="valid = biased (logged exposures); test = unbiased (fully observed block).")
    print((table / "results.md").read_text())
    exported = export_run(last.run_dir, last.run_dir / "export", version=1, overwrite=True,
                          data_dir=data_dir)
    export_dir = exported.path
    print(f"[3/3] Run directory: {last.run_dir}")
    print(f"      SavedModel:    {export_dir}  (TF Serving: {exported.models_config})")
    print(f"Done in {time.time() - t0:.0f} s.")
    return {"records": records, "export": str(export_dir)}
