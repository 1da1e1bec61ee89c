"""Print README's findings table from the evidence tables under docs/results/.

    python docs/results/findings.py [--tables evidence_quick]

For each method, reads the first of its tables in ``TABLES`` that exists (the 5-data-seed
table of its default scenario where one was run, else ``evidence_quick``: the output of
``tfdebias reproduce <method> --quick --out docs/results/<method>/evidence_quick``), or
``docs/results/<method>/<tables>/results.json`` with ``--tables``, and prints one
markdown row per method: the scenario's headroom, the method's gap closed and its
difference from the paper's main baseline, each with its 95% interval, the number of
data seeds × model seeds, and the flags.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

METHODS = ("cp2rec", "dadin", "damcar", "amid")
#: per method, the tables README's findings prefer, first found first (the commands are in
#: each method's ``docs/results/<method>/README.md``)
TABLES = {"cp2rec": ("proxy_shift_full", "evidence_quick"),
          "dadin": ("covariate_shift_5seeds", "evidence_quick"),
          "damcar": ("full_5seeds", "evidence_quick"),
          "amid": ("open_world_5seeds", "evidence_quick")}
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
    n_data, n_runs = m.get("n_data_seeds"), m.get("n_seeds")  # runs = data × model seeds
    draws = f"{n_data} × {n_runs // n_data}" if n_data and n_runs else "—"
    return (f"| {method} | `{data}` | {draws} | `{h['metric']}` | {_ci(h['floor'])} | {_ci(h['skyline'])} | "
            f"{_ci(h['gap'])} | {res.get('method') or '—'}: {gap_closed} | "
            f"vs {res.get('main_baseline') or '—'}: {vs} | {flags} | "
            f"[table](docs/results/{method}/{folder}/results.md) |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tables", help="the folder under docs/results/<method>/ (default: each "
                                    "method's first existing folder in TABLES)")
    args = p.parse_args()
    print("| method | scenario | data × model seeds | headline | floor | skyline | gap (skyline − floor) "
          "| method's gap closed | method vs main baseline | flags | table |")
    print("|---|---|---|---|---:|---:|---:|---:|---:|---|---|")
    for method in METHODS:
        for folder in ((args.tables,) if args.tables else TABLES[method]):
            path = HERE / method / folder / "results.json"
            if path.exists():
                print(row(method, json.loads(path.read_text()), folder))
                break


if __name__ == "__main__":
    main()
