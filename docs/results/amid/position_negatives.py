"""The next-item loss's negatives: a backbone (SASRec, the evidence table's floor, by
default) trained with the paper's BCE against one negative per position
(``position_negatives=0``) and with the sampled softmax against K negatives of the
domain, against popularity and the own-domain item-kNN.

    python docs/results/amid/position_negatives.py [--backbone NAME] [K ...]   # default: 0 32 128

BERT4Rec's outputs see every position, so its term scores the last position (the row's
target): the BCE against one negative, or the softmax against K, printed twice: with its
Cloze term (the default, ``AMID`` decision 16 in ``docs/methods/amid.md``) and with
``mask_prob=0`` (nothing hidden: the last position alone).

On ``cross_domain_sequences/open_world``, data seed 0 (the evidence table's first draw and
its candidates: 999 sampled negatives per test row), every variant trained exactly as the
table's floor with ``--quick`` (the quick budget's optimizer steps, lr 3e-3, batch 256,
checkpoint chosen on 2,000 validation rows). Prints one JSON line per variant: ``test/A/ndcg@10``, the
validation NDCG@10 of the kept checkpoint, its step and the training seconds.
"""

from __future__ import annotations

import argparse
import json

from tfdebias.methods.amid import reproduce as R
from tfdebias.methods.amid.data import samplers_pools
from tfdebias.methods.amid.protocol import ranking_evidence
from tfdebias.methods.amid.train import step_budget

DATA_SEED = 0


def main(ks, backbone: str = "sasrec") -> None:
    splits, schema, cand = R.evidence_draw(DATA_SEED)
    n_users = schema["user_id"].vocab_size
    for simple in R.SIMPLE_ROWS:
        m, _ = ranking_evidence(R.simple_scores(simple, splits, schema, cand), splits["test"])
        print(json.dumps({"row": simple, R.HEADLINE: round(m[R.HEADLINE], 4)}), flush=True)
    valid = R.validation_set(splits, "train", n_users)
    steps = step_budget(splits, R.QUICK["epochs"], R.DEFAULTS["batch_size"])
    plain = dict(R.ROW_TEMPLATES[0][2], backbone=backbone)
    variants = [(f"position_negatives={k}", dict(plain, position_negatives=k)) for k in ks]
    if backbone == "bert4rec":
        variants += [(f"position_negatives={k}, mask_prob=0 (no Cloze term)",
                      dict(plain, position_negatives=k, backbone_args={"mask_prob": 0.0}))
                     for k in ks if k]
    for label, args in variants:
        m, _ = R.run_row("amid", args, splits, schema, seed=0,
                         steps=steps, batch_size=R.DEFAULTS["batch_size"],
                         learning_rate=R.DEFAULTS["learning_rate"],
                         dr_lr_ratio=R.DEFAULTS["dr_lr_ratio"], candidates=cand,
                         pools=samplers_pools(splits), valid=valid)
        print(json.dumps({"row": f"{R.DISPLAY[backbone]}, {label}",
                          R.HEADLINE: round(m[R.HEADLINE], 4),
                          "valid/ndcg@10": round(m["valid/ndcg@10"], 4),
                          "best_step": int(m["best_step"]), "steps": int(m["steps"]),
                          "train_seconds": round(m["train_seconds"], 1)}), flush=True)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backbone", choices=list(R.DISPLAY), default="sasrec")
    ap.add_argument("k", type=int, nargs="*", default=[0, 32, 128],
                    help="negatives of the next-item loss, one variant each (0: the BCE)")
    args = ap.parse_args()
    main(args.k, backbone=args.backbone)
