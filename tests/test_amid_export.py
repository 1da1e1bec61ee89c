"""AMID exports its serving endpoints: next-item scores for a two-domain history and top-K."""

import numpy as np
import pytest
import tensorflow as tf

from tfdebias import models
from tfdebias.datasets.synthetic import cross_domain_sequences as cds
from tfdebias.export.saved_model import export_saved_model
from tfdebias.methods import amid

PARAMS = dict(n_users=200, n_items_a=40, n_items_b=30, dim=8, max_len=8)


@pytest.mark.slow
@pytest.mark.parametrize("backbone,group_size", [("sasrec", 0), ("bert4rec", 2)])
def test_export_next_item_scores_and_top_k(tmp_path, backbone, group_size):
    """Both groupings of MIM serve: the threshold (SASRec) and the top-n (BERT4Rec's)."""
    splits, schema = cds.simulate(PARAMS), cds.schema(PARAMS)
    b = {k: tf.constant(v[:5]) for k, v in splits["test"].items()}
    m = models.build("amid", schema, backbone=backbone, embedding_dim=8, n_sampled_users=4,
                     bank_size=8, backbone_args={"num_blocks": 1}, group_size=group_size)
    amid.build_amid(m, b)
    m.set_user_bank(splits["train"])
    path = export_saved_model(m, schema, tmp_path / "sm")
    loaded = tf.saved_model.load(str(path))
    assert {"serving_default", "next_item_scores", "top_k"} <= set(loaded.signatures)
    feats = {k: b[k] for k in ("history_a", "history_b", "domain")}
    cands = tf.stack([b["item_id"], b["item_id"] + 1], 1)
    got = loaded.signatures["next_item_scores"](candidates=cands, **feats)["scores"].numpy()
    np.testing.assert_allclose(got, tf.sigmoid(m.score_candidates(b, cands)).numpy(), atol=1e-5)
    top = loaded.signatures["top_k"](**feats)
    ids = top["item_ids"].numpy()
    assert ids.shape == (5, 10) and (ids > 0).all()
    seen = np.concatenate([b["history_a"].numpy(), b["history_b"].numpy()], 1)
    assert not any(set(ids[r]) & set(seen[r][seen[r] > 0]) for r in range(5))
    assert (np.diff(top["scores"].numpy(), axis=1) <= 1e-6).all()
