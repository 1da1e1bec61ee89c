"""The next-item loss's negatives: SASRec (the evidence table's floor) trained with the
paper's BCE against one negative per position (``position_negatives=0``) and with the
sampled softmax against K negatives of the domain, against the own-domain item-kNN.

    python docs/results/amid/position_negatives.py [K ...]   # default: 0 32 128

On ``cross_domain_sequences/open_world``, data seed 0 (the evidence table's first draw and
its candidates: 999 sampled negatives per test row), every variant trained exactly as the
table's floor with ``--quick`` (the quick budget's optimizer steps, lr 3e-3, batch 256,
checkpoint chosen on 2,000 validation rows). Prints one JSON line per variant: ``test/A/ndcg@10``, the
validation NDCG@10 of the kept checkpoint, its step and the training seconds.
"""

from __future__ import annotations

import json
import sys

from tfdebias.methods.amid import reproduce as R
from tfdebias.methods.amid.data import samplers_pools
from tfdebias.methods.amid.protocol import ranking_evidence
from tfdebias.methods.amid.train import step_budget

DATA_SEED = 0


def main(ks) -> None:
    splits, schema, cand = R.evidence_draw(DATA_SEED)
    n_users = schema["user_id"].vocab_size
    knn, _ = ranking_evidence(R.simple_scores(R.SIMPLE_ROWS[1], splits, schema, cand), splits["test"])
    print(json.dumps({"row": R.SIMPLE_ROWS[1], R.HEADLINE: round(knn[R.HEADLINE], 4)}), flush=True)
    valid = R.validation_set(splits, "train", n_users)
    steps = step_budget(splits, R.QUICK["epochs"], R.DEFAULTS["batch_size"])
    plain = dict(R.ROW_TEMPLATES[0][2], backbone="sasrec")
    for k in ks:
        m, _ = R.run_row("amid", dict(plain, position_negatives=k), splits, schema, seed=0,
                         steps=steps, batch_size=R.DEFAULTS["batch_size"],
                         learning_rate=R.DEFAULTS["learning_rate"],
                         dr_lr_ratio=R.DEFAULTS["dr_lr_ratio"], candidates=cand,
                         pools=samplers_pools(splits), valid=valid)
        print(json.dumps({"row": f"SASRec, position_negatives={k}",
                          R.HEADLINE: round(m[R.HEADLINE], 4),
                          "valid/ndcg@10": round(m["valid/ndcg@10"], 4),
                          "best_step": int(m["best_step"]), "steps": int(m["steps"]),
                          "train_seconds": round(m["train_seconds"], 1)}), flush=True)


if __name__ == "__main__":
    main([int(x) for x in sys.argv[1:]] or [0, 32, 128])
