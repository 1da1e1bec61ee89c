"""The gap closed as a function of the rotation φ of the target domain's item content.

    python docs/results/dadin/phi_sweep.py

Reads the 5-data-seed evidence tables of ``cross_domain_ctr/covariate_shift`` at
φ = 0, 15, 35 and 60 degrees (the commands are in this folder's README), prints one
markdown row per φ (the headroom and each alignment row's gap closed and difference to
DADIN9, with their 95% intervals) and draws ``phi_sweep.png``: the gap and the gap
closed against φ, with their intervals.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from findings import _ci  # noqa: E402  (the same interval formatting as README's table)

#: φ (degrees) -> the folder of its 5-data-seed table
TABLES = {0: "covariate_shift_phi0_5seeds", 15: "covariate_shift_phi15_5seeds",
          35: "covariate_shift_5seeds", 60: "covariate_shift_phi60_5seeds"}
#: the rows that align the domains (both are compared with DADIN9, the floor)
ROWS = ("DANN", "DADIN++")


def load() -> dict:
    out = {}
    for phi, folder in TABLES.items():
        path = HERE / folder / "results.json"
        if path.exists():
            out[phi] = json.loads(path.read_text())
    return out


def table(results: dict) -> str:
    head = ["φ", "floor (DADIN9)", "skyline", "gap"]
    head += [f"{r} gap closed" for r in ROWS] + [f"{r} − DADIN9" for r in ROWS]
    lines = ["| " + " | ".join(head) + " |", "|" + "---:|" * len(head)]
    for phi, res in sorted(results.items()):
        h, rows = res["headroom"], {r["name"]: r for r in res["rows"]}
        closed = [_ci(rows.get(r, {}).get("gap_closed"), 2) if h.get("measurable") else "— (no gap)"
                  for r in ROWS]
        vs = [_ci(rows.get(r, {}).get("vs_floor")) for r in ROWS]
        lines.append(f"| {phi}° | {_ci(h['floor'])} | {_ci(h['skyline'])} | {_ci(h['gap'])} | "
                     + " | ".join(closed + vs) + " |")
    return "\n".join(lines)


def plot(results: dict, out: Path) -> None:
    from tfdebias.atomic import write_with
    from tfdebias.evaluation.plots import pyplot

    plt = pyplot()
    phis = sorted(results)
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 3.6))

    def bars(ax, values, label, shift=0.0):
        mean = [v["mean"] if v else math.nan for v in values]
        lo = [m - v["ci95"][0] if v else 0 for m, v in zip(mean, values)]
        hi = [v["ci95"][1] - m if v else 0 for m, v in zip(mean, values)]
        ax.errorbar([p + shift for p in phis], mean, yerr=[lo, hi], fmt="o-", capsize=3, label=label)

    bars(a1, [results[p]["headroom"]["gap"] for p in phis], "skyline − floor")
    a1.axhline(0, color="grey", lw=0.8)
    a1.set_xlabel("φ (degrees)")
    a1.set_ylabel("target test AUC gap")
    a1.set_title("Headroom")
    for k, r in enumerate(ROWS):
        vals = [{x["name"]: x for x in results[p]["rows"]}.get(r, {}).get("gap_closed")
                if results[p]["headroom"].get("measurable") else None for p in phis]
        bars(a2, vals, r, shift=1.2 * (k - 0.5))
    a2.axhline(0, color="grey", lw=0.8)
    a2.axhline(1, color="grey", lw=0.8, ls=":")
    a2.set_xlabel("φ (degrees)")
    a2.set_ylabel("share of the gap closed")
    a2.set_title("Gap closed (5 data seeds, 95% CI)")
    a2.legend()
    fig.tight_layout()
    write_with(out, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    plt.close(fig)


def main() -> None:
    results = load()
    if not results:
        raise SystemExit(f"no table found under {HERE} (see the folder's README for the commands)")
    print(table(results))
    plot(results, HERE / "phi_sweep.png")


if __name__ == "__main__":
    main()
