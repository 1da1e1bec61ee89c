"""The CP2Rec table measured against a floor and skyline that read the proxies.

    python docs/results/cp2rec/feature_headroom.py [TABLE]

The evidence table's floor and skyline are the plain backbone (NCF), which never reads
the item proxies or the slot; every row that reads them starts above that skyline, so
"gap closed" there mixes reading the proxies with removing their bias. This re-analyses
the same records (``TABLE/results.json``, default ``proxy_bias_full``) with the floor
``CP2Rec-COS-NCF w/o ABT, BD`` (CP2Rec's features and tower, plain BCE on the biased
log) and the skyline its twin trained the same way on the uniform log: the headroom of a
model that reads the proxies, and each row's share of it, with the same
``tfdebias.evaluation.evidence.analyse`` (95% intervals over the data seeds; the records
keep one metric per row and data seed, so there is no test-user level here). Prints a
markdown table.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from tfdebias.evaluation.evidence import analyse
from tfdebias.methods.cp2rec.reproduce import FEATURE_FLOOR, FEATURE_SKYLINE

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from findings import _ci  # noqa: E402  (README's interval formatting)


def reanalyse(res: dict) -> dict:
    backbone = next(r["name"] for r in res["records"] if r["role"] == "floor")
    floor, sky = FEATURE_FLOOR.format(b=backbone), FEATURE_SKYLINE.format(b=backbone)
    names = {r["name"] for r in res["records"]}
    if floor not in names or sky not in names:
        raise SystemExit(f"the table has no {floor!r} / {sky!r} rows (made before the twin row)")
    recs = []
    for r in res["records"]:
        role = {floor: "floor", sky: "skyline"}.get(
            r["name"], "baseline" if r["role"] in ("floor", "skyline") else r["role"])
        recs.append({**r, "role": role})
    return analyse(recs, metric="test/auc", main_baseline=res.get("main_baseline"),
                   method=res.get("method"))


def main(argv=None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    table = HERE / (argv[0] if argv else "proxy_bias_full")
    res = json.loads((table / "results.json").read_text())
    ev = reanalyse(res)
    h = ev["headroom"]
    print(f"Proxy-reading headroom on `{h['metric']}` ({table.name}): floor {_ci(h['floor'])}, "
          f"skyline {_ci(h['skyline'])}, gap {_ci(h['gap'])}.\n")
    print("| row | test AUC | gap closed (proxy-reading floor) | − proxy-reading floor |")
    print("|---|---:|---:|---:|")
    for r in ev["rows"]:
        if r["role"] in ("simple", "truth"):
            continue
        m = r["mean"]["test/auc"] if isinstance(r["mean"], dict) else r["mean"]
        print(f"| {r['name']} | {m:.4f} | {_ci(r['gap_closed'], 2)} | {_ci(r['vs_floor'])} |")


if __name__ == "__main__":
    main()
