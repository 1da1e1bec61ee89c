"""Print README's findings table from the evidence tables under docs/results/.

    python docs/results/findings.py [--tables evidence_quick]

Reads ``docs/results/<method>/<tables>/results.json`` (written by
``tfdebias reproduce <method> --quick --out docs/results/<method>/evidence_quick``) and prints one
markdown row per method: the scenario's headroom, the method's gap closed and its
difference from the paper's main baseline, each with its 95% interval, and the flags.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

METHODS = ("cp2rec", "dadin", "damcar", "amid")
HERE = Path(__file__).resolve().parent


def _ci(x: dict | None, digits: int = 4) -> str:
    if not x or x.get("mean") is None or not math.isfinite(x["mean"]):
        return "—"
    lo, hi = x.get("ci95") or (None, None)
    if lo is None or hi is None:
        return f"{x['mean']:.{digits}f}"
    return f"{x['mean']:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"


def row(method: str, res: dict, folder: str) -> str:
    h = res["headroom"]
    rows = {r["name"]: r for r in res["rows"]}
    m = rows.get(res.get("method") or "", {})
    gap_closed = _ci(m.get("gap_closed"), 2) if h.get("measurable") else "— (no gap)"
    vs = _ci(m.get("vs_baseline"))
    data = res.get("data") or res["title"].split(" on ")[-1].split(" ")[0]
    flags = "; ".join(f.split(":")[0] for f in res.get("flags", [])) or "—"
    return (f"| {method} | `{data}` | `{h['metric']}` | {_ci(h['floor'])} | {_ci(h['skyline'])} | "
            f"{_ci(h['gap'])} | {res.get('method') or '—'}: {gap_closed} | "
            f"vs {res.get('main_baseline') or '—'}: {vs} | {flags} | "
            f"[table](docs/results/{method}/{folder}/results.md) |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tables", default="evidence_quick", help="the folder under docs/results/<method>/")
    args = p.parse_args()
    print("| method | scenario | headline | floor | skyline | gap (skyline − floor) | method's gap closed "
          "| method vs main baseline | flags | table |")
    print("|---|---|---|---:|---:|---:|---:|---:|---|---|")
    for method in METHODS:
        path = HERE / method / args.tables / "results.json"
        if path.exists():
            print(row(method, json.loads(path.read_text()), args.tables))


if __name__ == "__main__":
    main()
