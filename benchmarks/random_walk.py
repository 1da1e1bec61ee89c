"""DAMCAR target-domain generation (the DAMCAR paper, Eq. (1)-(3)) on a WeChat-size graph.

16,904 users, 42,031 items and 1,639,527 exposure edges (the DAMCAR paper, Table 1) with
Zipf-distributed item popularity and log-normal watch times as edge weights; random
walks with R = 25 hops and H = 50 walks per user (the paper's WeChat setting), then the
Eq. (3) selection. Target: under 30 s on 2 cores. Prints the peak memory and one JSON
object on the last line.

    python benchmarks/random_walk.py [--json] [--radius 25] [--walks 50]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import emit_json, machine, peak_rss_mb  # noqa: E402

from tfdebias.data.random_walk import ExposureGraph, select_target, walk_counts  # noqa: E402


def wechat_like_graph(n_users=16904, n_items=42031, n_edges=1639527, seed=0):
    """Random exposure rows of the paper's WeChat size (vectorised)."""
    rng = np.random.default_rng(seed)
    pop = 1.0 / np.arange(1, n_items + 1) ** 0.8
    activity = rng.dirichlet(np.ones(n_users) * 2.0)
    keys = np.zeros(0, np.int64)
    while len(keys) < n_edges:  # distinct (user, item) pairs, topped up to n_edges
        need = int((n_edges - len(keys)) * 1.1) + 1000
        u = rng.choice(n_users, need, p=activity)
        i = rng.choice(n_items, need, p=pop / pop.sum())
        keys = np.unique(np.concatenate([keys, u * n_items + i]))
    keys = rng.permutation(keys)[:n_edges]
    users, items = keys // n_items, keys % n_items
    play = rng.lognormal(np.log(20.0), 0.8, len(users))
    return users, items, play


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--radius", type=int, default=25)
    ap.add_argument("--walks", type=int, default=50)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", action="store_true", help="(the JSON line is always printed last)")
    args = ap.parse_args(argv)
    users, items, play = wechat_like_graph(seed=args.seed)
    t0 = time.perf_counter()
    graph = ExposureGraph.from_pairs(users, items, play, 16904, 42031)
    t1 = time.perf_counter()
    counts = walk_counts(graph, args.radius, args.walks, seed=args.seed)
    t2 = time.perf_counter()
    tu, ti = select_target(graph, counts)
    t3 = time.perf_counter()
    total = t3 - t0
    print(f"graph {graph.n_edges:,} edges: build {t1 - t0:.2f} s, walks {t2 - t1:.2f} s, "
          f"select {t3 - t2:.2f} s; total {total:.2f} s; {len(tu):,} target pairs; "
          f"peak memory {peak_rss_mb()} MiB")
    emit_json({
        "benchmark": "random_walk", "users": 16904, "items": 42031, "edges": int(graph.n_edges),
        "exposure_rows": int(len(users)), "radius": args.radius, "walks": args.walks,
        "walkers": int(16904 * args.walks), "item_visits": int(counts.count.sum()),
        "visited_pairs": int(len(counts.count)), "target_pairs": int(len(tu)),
        "build_seconds": round(t1 - t0, 3), "walk_seconds": round(t2 - t1, 3),
        "select_seconds": round(t3 - t2, 3), "total_seconds": round(total, 3),
        "under_30s": bool(total < 30.0), "peak_rss_mb": peak_rss_mb(), "machine": machine(),
    })


if __name__ == "__main__":
    main()
