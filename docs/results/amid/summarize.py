"""Print the NDCG@10 table of an AMID ``results.json`` with each row's difference to the
backbone and Welch's t over the seeds (the tables in this folder's README).

Usage: python docs/results/amid/summarize.py docs/results/amid/results.json [--baseline SASRec]
"""

import argparse
import json
import math

import numpy as np

COLUMNS = ["A Ku25/NDCG@10", "A Ku75/NDCG@10", "B Ku25/NDCG@10", "B Ku75/NDCG@10"]


def welch(a, b):
    a, b = np.asarray(a, float), np.asarray(b, float)
    diff = a.mean() - b.mean()
    se = math.sqrt(a.var(ddof=1) / len(a) + b.var(ddof=1) / len(b))
    return diff, (diff / se if se > 0 else float("nan"))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("results")
    p.add_argument("--baseline", default="SASRec")
    args = p.parse_args(argv)
    with open(args.results) as f:
        d = json.load(f)
    rows = {r["name"]: r for r in d["rows"]}
    per_seed = {}
    for r in d["records"]:
        per_seed.setdefault(r["name"], []).append(r["metrics"])
    heads = [c.replace("/NDCG@10", "").replace("Ku", "K_u ") for c in COLUMNS]
    n = rows[args.baseline]["n_seeds"]
    print(f"| NDCG@10 (%), mean ± std over {n} seeds | " + " | ".join(heads) + " |")
    print("|---|" + "---:|" * len(COLUMNS))
    for name, r in rows.items():
        print(f"| {name} | " + " | ".join(f"{r['mean'][c]:.2f} ± {r['std'][c]:.2f}"
                                          for c in COLUMNS) + " |")
    print()
    print(f"| difference vs {args.baseline} (Welch t) | " + " | ".join(heads) + " |")
    print("|---|" + "---:|" * len(COLUMNS))
    base = per_seed[args.baseline]
    for name in rows:
        if name == args.baseline:
            continue
        cells = []
        for c in COLUMNS:
            diff, t = welch([m[c] for m in per_seed[name]], [m[c] for m in base])
            cells.append(f"{diff:+.2f} (t = {t:+.1f})")
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
