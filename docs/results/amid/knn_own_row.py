"""How much of the own-domain item-kNN's score comes from the test user's own training row.

    python docs/results/amid/knn_own_row.py

On ``cross_domain_sequences/open_world`` (data seeds 0-2, the evidence table's draws and
candidates: 999 sampled negatives per test row, seed 0), scores the simple row
``item-kNN (own domain)`` on domain A's test rows twice: fitted on all of ``train`` (as
the evidence table fits it) and fitted without the test user's own training rows (users
split into 8 folds; each fold's test rows are scored by a kNN fitted on the other
folds' users). Prints NDCG@10 per user group for both, and the share of test rows whose
target item repeats an item of the row's own-domain history, with the kNN's NDCG on
those rows. Nothing is trained with TensorFlow.
"""

from __future__ import annotations

import numpy as np

from tfdebias.evaluation.metrics import ndcg_at_rank, sampled_rank
from tfdebias.methods.amid.protocol import user_groups
from tfdebias.methods.amid.reproduce import SIMPLE_ROWS, evidence_draw, simple_scores

KNN = SIMPLE_ROWS[1]  # "item-kNN (own domain)"
FOLDS = 8


def one_seed(seed: int) -> dict:
    splits, schema, cand = evidence_draw(seed)
    test, train = splits["test"], splits["train"]
    in_a = np.asarray(test["domain"]) == 0
    full = ndcg_at_rank(sampled_rank(simple_scores(KNN, splits, schema, cand)), 10)
    held = full.copy()
    test_users, train_users = np.asarray(test["user_id"]), np.asarray(train["user_id"])
    for fold in np.array_split(np.random.default_rng(0).permutation(np.unique(train_users)), FOLDS):
        rows = np.flatnonzero(np.isin(test_users, fold) & in_a)
        others = ~np.isin(train_users, fold)
        sub = dict(splits, train={k: np.asarray(v)[others] for k, v in train.items()},
                   test={k: np.asarray(v)[rows] for k, v in test.items()})
        held[rows] = ndcg_at_rank(sampled_rank(simple_scores(KNN, sub, schema, cand[rows])), 10)
    own = np.where(in_a[:, None], np.asarray(test["history_a"]), np.asarray(test["history_b"]))
    repeat = (own == np.asarray(test["item_id"])[:, None]).any(1)
    out = {}
    for name, mask in user_groups(test).items():
        m = mask & in_a
        r = m & repeat
        out[name] = {"with own row": float(full[m].mean()), "without": float(held[m].mean()),
                     "repeat share": float(r.sum() / max(m.sum(), 1)),
                     "repeat rows, with": float(full[r].mean()) if r.any() else float("nan"),
                     "repeat rows, without": float(held[r].mean()) if r.any() else float("nan")}
    return out


def main() -> None:
    per_seed = {seed: one_seed(seed) for seed in (0, 1, 2)}
    groups = list(per_seed[0])
    keys = list(per_seed[0][groups[0]])
    print(f"{KNN}, NDCG@10 on domain A's test rows (data seeds 0-2; mean, then per seed)\n")
    print("| group | " + " | ".join(keys) + " |")
    print("|---|" + "---:|" * len(keys))
    for g in groups:
        cells = []
        for k in keys:
            v = [per_seed[s][g][k] for s in per_seed]
            cells.append(f"{np.nanmean(v):.3f} ({', '.join(f'{x:.3f}' for x in v)})")
        print(f"| {g} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
