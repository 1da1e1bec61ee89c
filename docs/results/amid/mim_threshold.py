"""The MIM threshold ``k`` of Eq. (4) per backbone: the two rows that group users (+MIM and
+AMID) trained at each ``k`` of a grid, their interest groups' rate and their validation
NDCG@10.

    python docs/results/amid/mim_threshold.py BACKBONE [K ...]   # default K: 0.3 0.5 0.7 0.8 0.9
    python docs/results/amid/mim_threshold.py BACKBONE --group-size N [N ...]   # top-n grouping

On ``cross_domain_sequences/open_world``, data seed 0 (the evidence table's first draw),
each ``k`` trains ``<BACKBONE> + MIM`` and ``<BACKBONE> + AMID`` exactly as the table's
rows with ``--quick`` (the quick budget's optimizer steps, lr 3e-3, batch 256, 32 position
negatives, checkpoint chosen on 2,000 validation rows). Prints one JSON line per row and
``k``: the group rate on the first 1,024 validation rows (``valid/group_rate``; 0 or 1
means the groups collapsed, a run there fails), the kept checkpoint's validation NDCG@10
and, for information only, ``test/A/ndcg@10``; then two choices among the ``k`` where
both rows' validation group rates lie strictly between 0.02 and 0.98: the best sum of
the two rows' validation NDCG@10, and the safest (the rates farthest from 0 and 1; a
collapsed group fails a run). Test rows never take part in the choice.

With ``--group-size`` the grid is the group size ``n`` of the top-n grouping instead
(each row groups with her ``n`` most similar of the N sampled users; the rate is ``n / N``
by construction, so nothing collapses and the choice is the best validation NDCG@10).

    python docs/results/amid/mim_threshold.py --choose FILE.jsonl   # the choices again, from a saved output
"""

from __future__ import annotations

import argparse
import json

from tfdebias.methods.amid import reproduce as R
from tfdebias.methods.amid.data import samplers_pools
from tfdebias.methods.amid.model import BACKBONES
from tfdebias.methods.amid.train import step_budget

DATA_SEED = 0
#: a validation group rate outside (LOW, HIGH) counts as collapsed for the choice
LOW, HIGH = 0.02, 0.98


def main(backbone: str, ks, group_sizes=()) -> dict:
    splits, schema, cand = R.evidence_draw(DATA_SEED)
    n_users = schema["user_id"].vocab_size
    valid = R.validation_set(splits, "train", n_users)
    steps = step_budget(splits, R.QUICK["epochs"], R.DEFAULTS["batch_size"])
    found = []
    grid = [("group_size", int(n)) for n in group_sizes] or [("threshold", float(k)) for k in ks]
    for (key, k), (row, estimator) in ((g, r) for g in grid for r in (("MIM", "none"), ("AMID", "dr"))):
        args = {"backbone": backbone, "mim": True, "estimator": estimator, key: k,
                "position_negatives": R.DEFAULTS["position_negatives"]}
        cache: dict = {}
        m, _ = R.run_row("amid", args, splits, schema, seed=0,
                         steps=steps, batch_size=R.DEFAULTS["batch_size"],
                         learning_rate=R.DEFAULTS["learning_rate"],
                         dr_lr_ratio=R.DEFAULTS["dr_lr_ratio"], candidates=cand,
                         pools=samplers_pools(splits), valid=valid, models_cache=cache,
                         check_rate=False)
        model = next(iter(cache.values()))[0]  # the trained row (its kept checkpoint)
        line = {"row": f"{R.DISPLAY[backbone]} + {row}", key: k,
                "valid/group_rate": round(R.group_rate(model, valid[0]), 4),
                "valid/ndcg@10": round(m["valid/ndcg@10"], 4),
                "test/group_rate": round(m["group_rate"], 4),
                R.HEADLINE: round(m[R.HEADLINE], 4), "best_step": int(m["best_step"]),
                "steps": int(m["steps"])}
        found.append(line)
        print(json.dumps(line), flush=True)
    choice = dict(backbone=backbone, **choose(found))
    print(json.dumps(choice), flush=True)
    return choice


def choose(found) -> dict:
    """Two choices among the ``k`` where both rows' validation group rates lie inside
    (LOW, HIGH): ``best_validation`` (the best sum of their validation NDCG@10) and
    ``safest`` (the largest margin ``min(rate, 1 - rate)`` of the two rows, i.e. the
    farthest from a collapse, which fails a run)."""
    by_k: dict = {}
    for f in found:
        by_k.setdefault(f.get("group_size", f.get("threshold")), []).append(f)
    ok = {k: fs for k, fs in by_k.items() if all(LOW < f["valid/group_rate"] < HIGH for f in fs)}
    score = {k: sum(f["valid/ndcg@10"] for f in fs) for k, fs in ok.items()}
    margin = {k: min(min(f["valid/group_rate"], 1 - f["valid/group_rate"]) for f in fs)
              for k, fs in ok.items()}
    return {"best_validation": max(score, key=score.get) if ok else None,
            "safest": max(margin, key=margin.get) if ok else None}


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("backbone", nargs="?", choices=list(BACKBONES))
    ap.add_argument("k", type=float, nargs="*", default=[0.3, 0.5, 0.7, 0.8, 0.9],
                    help="thresholds to train at")
    ap.add_argument("--group-size", type=int, nargs="+", default=[], metavar="N",
                    help="group sizes of the top-n grouping to train at (instead of thresholds)")
    ap.add_argument("--choose", metavar="FILE.jsonl",
                    help="print the two choices again from a saved output (no training)")
    args = ap.parse_args()
    if args.choose:
        with open(args.choose) as fh:
            print(json.dumps(choose([json.loads(x) for x in fh if '"row"' in x])))
    elif args.backbone is None:
        ap.error("give a BACKBONE to train, or --choose FILE.jsonl")
    else:
        main(args.backbone, args.k, args.group_size)
