"""DAMCAR in a few steps with plain Keras: a ranker, the random-walk target domain, the
label generator with its EMA teacher, and the hybrid-trained DSSM retriever, scored by
the cascade protocol against BC (exposed data only).

    TFDEBIAS_DATA_DIR=/tmp/tfds python examples/damcar_fit.py

A tiny budget (a smoke run, ~1 minute): see ``tfdebias reproduce damcar`` for the table.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from tfdebias import data  # noqa: E402
from tfdebias.methods import damcar  # noqa: E402
from tfdebias.models import predict  # noqa: E402

splits, schema = data.load("cascade_exposure")
cascade = damcar.prepare_cascade(splits, schema)  # scaled dense inputs + the item table
budget = damcar.Budget(ranker_epochs=3, label_epochs=2, retrieval_epochs=3)

# 1. the pre-trained ranker (DeepFM) on exposed training rows
ranker = damcar.train_ranker(cascade, "deepfm", seed=0, budget=budget)
train = cascade.splits["train"]
exposed = {k: train[k] for k in cascade.user_names + cascade.item_names}
y = train["finish"].astype("float32")
rank_e = damcar.ranker_scores(ranker, exposed)

# 2. the target domain by random walk (Eq. 1-3)
tu, ti, stats = damcar.target_domain(cascade, radius=25, walks=50, seed=0)
target = cascade.pairs(tu, ti)
rank_t = damcar.ranker_scores(ranker, target)
print("target domain:", stats)

# 3. pseudo-labels from the label generator (Eq. 4-11)
gen = damcar.train_label_generator(cascade, exposed, y, target, lambda1=0.5, lambda2=0.2,
                                   budget=budget)
pseudo_s = predict(lambda b: gen.pseudo_labels(b, True), exposed)
pseudo_t = predict(lambda b: gen.pseudo_labels(b, True), target)
y_mpl = damcar.modified_pseudo_labels(y, np.ones(len(y), bool), pseudo_s)  # Eq. 12

# 4. hybrid training of the retriever (Eq. 13-17) vs BC
dam = damcar.train_retrieval(
    cascade, damcar.hybrid_columns(exposed, y_mpl, rank_e, target, pseudo_t, rank_t),
    lambda3=0.3, budget=budget)
bc = damcar.train_retrieval(cascade, damcar.hybrid_columns(exposed, y, rank_e), budget=budget)

for name, model in (("BC", bc), ("DAMCAR", dam)):
    m = damcar.cascade_protocol((model, ranker), cascade.splits, cascade.schema)
    print(f"{name:7s} R@100 {m['retrieval/R@100']:.4f}  N@10 {m['ranking/N@10']:.4f}")
