"""GRU4Rec / SASRec / BERT4Rec: shapes, masks (padding hidden; SASRec causal; BERT4Rec
bidirectional with [MASK]), candidate scoring consistent with ``call``."""

import numpy as np
import pytest
import tensorflow as tf

from tfdebias import models
from tfdebias.datasets.synthetic import cross_domain_sequences as cds
from tfdebias.models.sequential import attention_mask

PARAMS = dict(n_users=200, n_items_a=40, n_items_b=30, dim=8, max_len=8)


@pytest.fixture(scope="module")
def data():
    return cds.simulate(PARAMS), cds.schema(PARAMS)


def _batch(cols, n=6):
    return {k: tf.constant(v[:n]) for k, v in cols.items()}


@pytest.mark.parametrize("name", ["gru4rec", "sasrec", "bert4rec"])
def test_shapes_and_candidate_scores(name, data):
    splits, schema = data
    m = models.build(name, schema, embedding_dim=8, hidden_units=(8,), dropout=0.0)
    b = _batch(splits["test"])
    p = m(b)
    assert p.shape == (6, 1)
    cands = tf.stack([b["item_id"], b["item_id"] + 1], axis=1)
    s = m.score_candidates(b, cands)
    np.testing.assert_allclose(tf.sigmoid(s[:, 0]).numpy(), p[:, 0].numpy(), rtol=1e-5, atol=1e-6)


def test_attention_mask_hides_padding_and_future():
    mask = tf.constant([[False, True, True, True]])
    causal = attention_mask(mask, causal=True).numpy()[0]
    bidir = attention_mask(mask, causal=False).numpy()[0]
    assert not causal[2, 3] and causal[3, 2] and not causal[3, 0]
    assert bidir[1, 3] and not bidir[2, 0]


def _seq(ids):
    return tf.constant([ids], tf.int64)


@pytest.mark.parametrize("name", ["gru4rec", "sasrec", "bert4rec"])
def test_padding_is_hidden(name, data):
    _, schema = data
    m = models.build(name, schema, embedding_dim=8, hidden_units=(8,), dropout=0.0)
    ids = _seq([0, 0, 0, 5, 7, 9, 11, 13])
    h0, mask = m.encode(0, ids)
    emb = m.item_embedding.embeddings
    emb.assign(tf.tensor_scatter_nd_update(emb, [[0]], [tf.fill([8], 50.0)]))
    h1, _ = m.encode(0, ids)
    valid = mask.numpy()[0]
    np.testing.assert_allclose(h0.numpy()[0][valid], h1.numpy()[0][valid], atol=1e-5)


def test_sasrec_is_causal_bert4rec_is_not(data):
    _, schema = data
    sas = models.build("sasrec", schema, embedding_dim=8, dropout=0.0)
    a, _ = sas.encode(0, _seq([0, 0, 3, 5, 7, 9, 11, 13]))
    b, _ = sas.encode(0, _seq([0, 0, 3, 5, 7, 9, 11, 20]))
    np.testing.assert_allclose(a.numpy()[0, :7], b.numpy()[0, :7], atol=1e-5)  # past unchanged
    assert np.abs(a.numpy()[0, 7] - b.numpy()[0, 7]).max() > 1e-4
    bert = models.build("bert4rec", schema, embedding_dim=8, dropout=0.0)
    a, _ = bert.encode(0, _seq([0, 0, 3, 5, 7, 9, 11, 13]))
    b, _ = bert.encode(0, _seq([0, 0, 3, 5, 7, 9, 11, 20]))
    assert np.abs(a.numpy()[0, 3] - b.numpy()[0, 3]).max() > 1e-4  # bidirectional


def test_bert4rec_appends_mask_token(data):
    _, schema = data
    bert = models.build("bert4rec", schema, embedding_dim=8)
    ids = bert.prepare_ids(_seq([0, 0, 3, 5, 7, 9, 11, 13])).numpy()[0]
    assert ids[-1] == bert.mask_id and list(ids[:-1]) == [0, 3, 5, 7, 9, 11, 13]
    empty = bert.prepare_ids(_seq([0] * 8)).numpy()[0]
    assert (empty == 0).all()
    masked = bert.prepare_ids(tf.constant(np.tile([1, 2, 3, 4, 5, 6, 7, 8], (200, 1)), tf.int64),
                              training=True).numpy()
    assert 0.05 < (masked[:, :-1] == bert.mask_id).mean() < 0.4


def test_single_domain_baseline_reads_only_its_domain(data):
    splits, schema = data
    m = models.build("sasrec", schema, embedding_dim=8, dropout=0.0)
    b = _batch(splits["test"], 8)
    changed = dict(b)
    other = tf.where(b["domain"][:, None] == 0, tf.zeros_like(b["history_b"]) + 70, b["history_b"])
    changed["history_b"] = tf.where(b["history_b"] > 0, other, b["history_b"])
    rows = b["domain"].numpy() == 0
    np.testing.assert_allclose(m(b).numpy()[rows], m(changed).numpy()[rows], atol=1e-6)


def test_one_epoch_lowers_the_loss(data):
    import keras

    from tfdebias.methods.amid import fit_amid

    splits, schema = data
    keras.utils.set_random_seed(0)
    m = models.build("sasrec", schema, embedding_dim=8, hidden_units=(8,), num_blocks=1)
    out = fit_amid(m, splits["train"], schema, epochs=3, batch_size=32, learning_rate=0.01)
    bce = out["history"]["c/bce"]
    assert bce[-1] < bce[0]
