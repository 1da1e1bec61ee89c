"""DAMCAR target-domain generation (the DAMCAR paper, Eq. (1)-(3)) on a WeChat-size graph.

16,904 users, 42,031 items and 1,639,527 exposure edges (the DAMCAR paper, Table 1) with
Zipf-distributed item popularity and log-normal watch times as edge weights; random
walks with R = 25 hops and H = 50 walks per user (the paper's WeChat setting), then the
Eq. (3) selection. Target: under 30 s on 2 cores. Prints the peak memory and one JSON
object on the last line.

    python benchmarks/random_walk.py [--json] [--radius 25] [--walks 50]

``--scenario CONFIG`` instead runs the numpy checks of a ``cascade_exposure`` config
(nothing trained; the numbers in that simulator's docstring): exposed vs unexposed
finish rates, the policy's alignment with relevance, ``P(relevant)`` of the walk's
``S_sam`` at several radii against random unexposed pairs, and recall@100 of retrievers
that score the truth, the policy and popularity (DAMCAR's protocol):

    python benchmarks/random_walk.py --scenario communities
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


def scenario_check(config: str, seed: int = 0) -> dict:
    """The numpy checks of ``cascade_exposure/<config>`` (see the module docstring)."""
    from tfdebias.data.random_walk import generate_target_domain
    from tfdebias.datasets.synthetic import cascade_exposure as C
    from tfdebias.methods import damcar as D

    params = {**C.CONFIGS[config], "seed": seed}
    d, t = C.simulate(params), C.truth(params)
    p = C._params(params)
    nu, ni = p["n_users"], p["n_items"]

    def keys(c):
        return (c["user_id"] - 1).astype(np.int64) * ni + c["item_id"] - 1

    exposed = np.unique(np.concatenate([keys(d[s]) for s in ("train", "valid", "test")]))
    rng = np.random.default_rng(0)
    ru, ri = rng.integers(0, nu, 400_000), rng.integers(0, ni, 400_000)
    ok = ~np.isin(ru.astype(np.int64) * ni + ri, exposed)
    logit = lambda v: np.log(v / (1 - v))  # noqa: E731
    out = {
        "config": config, "seed": seed,
        "exposed_finish_rate": float(np.concatenate(
            [d[s]["finish"] for s in ("train", "valid", "test")]).mean()),
        "unexposed_p_finish": float(t.relevance0(ru[ok], ri[ok]).mean()),
        "policy_relevance_logit_corr": float(np.corrcoef(
            logit(t.propensity0(ru, ri)), logit(t.relevance0(ru, ri)))[0, 1]),
        "s_sam": {},
    }
    tr = d["train"]
    logged = np.unique(np.concatenate([keys(d[s]) for s in ("train", "valid")]))
    for radius, walks in ((3, 50), (5, 50), (7, 100), (25, 50)):
        tu, ti, _ = generate_target_domain(tr["user_id"] - 1, tr["item_id"] - 1,
                                           tr["play_seconds"], nu, ni, radius=radius,
                                           walks=walks, seed=0, exclude_keys=logged)
        out["s_sam"][f"R={radius},H={walks}"] = {
            "pairs": int(len(tu)), "items": int(len(np.unique(ti))),
            "p_relevant": float(t.relevance0(tu, ti).mean()) if len(tu) else None}
    data = D.prepare_cascade(d, C.schema(params))
    es = D.eval_set(data.splits, data.label, data.item_names,
                    seen=("train", "valid", "train_unbiased"))

    def truth(users):
        return t.relevance_block(users)[:, es.corpus - 1]

    def policy(users):
        return t.propensity_block(users)[:, es.corpus - 1]

    D.add_true_top(es, truth, data.splits, m=50)
    scorers = {"truth": truth, "policy": policy, **D.simple_scorers(data, es)}
    out["recall@100"] = {}
    for name, fn in scorers.items():
        m = D.mean_metrics(D.cascade_eval(fn, None, es))
        out["recall@100"][name] = {g: round(m[f"retrieval/R@100{k}"], 4) for g, k in (
            ("unexposed", "/unexposed"), ("true_top50", f"/{D.TRUE_TOP}"),
            ("exposed", "/exposed"), ("all", ""))}
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--radius", type=int, default=25)
    ap.add_argument("--walks", type=int, default=50)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", action="store_true", help="(the JSON line is always printed last)")
    ap.add_argument("--scenario", default=None,
                    help="a cascade_exposure config: print its numpy checks instead")
    args = ap.parse_args(argv)
    if args.scenario:
        res = scenario_check(args.scenario, args.seed)
        for k, v in res.items():
            print(f"{k}: {v}")
        emit_json({"benchmark": "random_walk_scenario", **res})
        return
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
