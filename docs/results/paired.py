"""Every row of an evidence table against a baseline of your choice.

    python docs/results/paired.py TABLE BASELINE [METRIC ...]

e.g. ``python docs/results/paired.py docs/results/damcar/full_5seeds "S_sam as 0"
retrieval/R@100/unexposed retrieval/R@100/true_top``. A table compares every row with
the paper's main baseline; this re-analyses its records (``TABLE/results.json``) with
``tfdebias.evaluation.evidence.analyse`` and ``BASELINE`` as the main baseline and prints
each row's paired difference with its 95% interval, per metric (default: the table's
headline). The records keep one value per row, data seed and model seed, so the
intervals are over the data seeds only (the table's own cells also resample test units).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from tfdebias.evaluation.evidence import analyse

sys.path.insert(0, str(Path(__file__).resolve().parent))
from findings import _ci  # noqa: E402  (README's interval formatting)


def main(argv=None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) < 2:
        raise SystemExit(__doc__)
    res = json.loads((Path(argv[0]) / "results.json").read_text())
    baseline, metrics = argv[1], argv[2:] or [res["headroom"]["metric"]]
    names = {r["name"] for r in res["records"]}
    if baseline not in names:
        raise SystemExit(f"{argv[0]}: no row {baseline!r}; rows are {sorted(names)}")
    # the baseline may be a simple row: analyse compares against any row of another role
    records = [{**r, "role": "baseline"} if r["name"] == baseline and r["role"] == "simple"
               else r for r in res["records"]]
    for metric in metrics:
        ev = analyse(records, metric=metric, main_baseline=baseline, method=res.get("method"))
        print(f"\n{metric}, row − {baseline} (95% interval over data seeds):\n")
        print("| row | difference |")
        print("|---|---:|")
        for r in ev["rows"]:
            if r["name"] != baseline and r.get("vs_baseline"):
                print(f"| {r['name']} | {_ci(r['vs_baseline'])} |")


if __name__ == "__main__":
    main()
