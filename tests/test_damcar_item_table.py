"""DAMCAR's item features kept once per item: rows given as (user, item) ids get their
item features gathered per batch from the item table, with the same batches, values and
scores as rows that carry every feature (``benchmarks/damcar_scale.py`` measures the
memory this saves)."""

import numpy as np
import pytest
import tensorflow as tf

from tfdebias.data import make_dataset
from tfdebias.datasets.synthetic import cascade_exposure as C
from tfdebias.methods import damcar as D
from tfdebias.methods.damcar.train import with_item_features
from tfdebias.models import predict

TINY = {"scenario": "communities", "seed": 3, "n_users": 60, "n_items": 90, "n_authors": 12,
        "exposures_per_user": 20.0, "oracle_per_user": 20}


@pytest.fixture(scope="module")
def tiny():
    return D.prepare_cascade(C.simulate(TINY), C.schema(TINY))


def full_rows(data, split="train"):
    c = data.splits[split]
    return {k: c[k] for k in data.user_names + data.item_names}


def test_the_simulator_rows_match_the_item_table(tiny):
    assert tiny.rows_match_items
    ids = tiny.rows("train")
    assert sorted(ids) == ["item_id", "user_id"]
    full = full_rows(tiny)
    back = tiny.expand(ids)
    assert list(back) == list(full)  # same key order as the full columns
    for k in full:
        np.testing.assert_array_equal(back[k], full[k])


def test_a_split_that_disagrees_with_the_table_keeps_its_own_columns():
    splits = C.simulate(TINY)
    schema = C.schema(TINY)
    data = D.prepare_cascade(splits, schema)
    name = next(n for n in data.item_names if n != "item_id" and schema[n].role == "dense")
    # one test row gets another value of an item feature than its item's other rows
    splits["test"] = dict(splits["test"])
    col = np.array(splits["test"][name], copy=True)
    col[0] = col[0] + 1.0
    splits["test"][name] = col
    changed = D.prepare_cascade(splits, schema)
    assert data.rows_match_items and not changed.rows_match_items
    rows = changed.rows("train")
    assert set(rows) == set(changed.user_names + changed.item_names)
    np.testing.assert_array_equal(rows[name], changed.splits["train"][name])


def test_pairs_are_the_expanded_ids(tiny):
    u, i = np.array([1, 2, 3, 1]), np.array([5, 7, 5, 9])
    pairs, ids = tiny.pairs(u, i), tiny.ids(u, i)
    assert set(ids) == {"user_id", "item_id"}
    assert set(pairs) == set(tiny.user_names + tiny.item_names)
    for n in tiny.item_names:
        np.testing.assert_array_equal(pairs[n], tiny.items[n][i])


def test_gathered_batches_equal_the_batches_of_full_rows(tiny):
    full = {**full_rows(tiny), "finish": tiny.splits["train"]["finish"]}
    ids = {**tiny.rows("train"), "finish": tiny.splits["train"]["finish"]}
    a = make_dataset(full, tiny.schema, batch_size=64, shuffle=True, seed=4, label="finish")
    b = with_item_features(make_dataset(ids, tiny.schema, batch_size=64, shuffle=True, seed=4,
                                        label="finish"), tiny, ids)
    assert b.epoch is not None  # the epoch counter survives (resumable shuffles)
    n = 0
    for (xa, ya), (xb, yb) in zip(a, b):
        assert list(xa) == list(xb)
        for k in xa:
            assert xa[k].dtype == xb[k].dtype
            np.testing.assert_array_equal(xa[k].numpy(), xb[k].numpy())
        np.testing.assert_array_equal(ya.numpy(), yb.numpy())
        n += 1
    assert n == int(a.cardinality()) == int(b.cardinality())


def test_predict_on_ids_equals_predict_on_full_rows(tiny):
    from tfdebias import models

    ranker = models.build("deepfm", tiny.schema, embedding_dim=4, hidden_units=(8,))
    ids, full = tiny.rows("train"), full_rows(tiny)
    ranker(tiny.expand_batch({k: tf.constant(v[:4]) for k, v in ids.items()}))
    np.testing.assert_array_equal(tiny.predict(ranker, ids, batch_size=100),
                                  predict(ranker, full, batch_size=100))
    np.testing.assert_array_equal(D.ranker_scores(ranker, ids, tiny), D.ranker_scores(ranker, full))
    # the evaluation set's table serves the protocol the same way
    es = D.eval_set(tiny.splits, tiny.label, tiny.item_names)
    pairs = {"item_id": es.corpus, "user_id": np.full(len(es.corpus), 3, np.int64)}
    np.testing.assert_array_equal(
        es.predict(ranker, pairs),
        predict(ranker, {**es.corpus_features(), "user_id": pairs["user_id"]}))


def test_item_side_names_in_blocks_agree_with_a_whole_column_check(tiny, monkeypatch):
    from tfdebias.methods.damcar import data as Dd

    tr = C.simulate(TINY)["train"]
    schema = C.schema(TINY)
    whole = Dd.item_side_names(tr, schema, ["user_id"])
    monkeypatch.setattr(Dd, "CHECK_BLOCK_ROWS", 7)  # many small blocks
    assert Dd.item_side_names(tr, schema, ["user_id"]) == whole
    assert "item_id" in whole and "user_id" not in whole
    assert "day" not in whole  # varies within an item


@pytest.mark.slow
def test_run_seed_gives_the_same_results_from_ids_as_from_full_rows():
    """The whole pipeline (ranker, target domain, label generator, retrievers, cascade
    protocol) from id rows and from per-row features: identical results."""
    data = D.prepare_cascade(C.simulate(TINY), C.schema(TINY))
    b = D.Budget(ranker_steps=20, label_steps=10, retrieval_steps=20, batch_size=64)
    rows = ("BC", D.SSAM_ZERO, "DAMCAR")
    got = D.run_seed(data, 0, D.Settings(), b, rows=rows)
    data.rows_match_items = False  # the per-row path
    ref = D.run_seed(data, 0, D.Settings(), b, rows=rows)
    for row in rows:
        for k, v in ref["per_user"][row].items():
            np.testing.assert_allclose(got["per_user"][row][k], v, rtol=0, atol=1e-12)
    assert got["info"]["label_generator_full"] == ref["info"]["label_generator_full"]
