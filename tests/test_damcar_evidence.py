"""DAMCAR's evidence table: the simulator's unbiased sample and truth, the medium config,
the blocked per-user protocol, the fixed step budget and `reproduce damcar` end to end."""

import hashlib
import json
import time

import numpy as np
import pytest

from tfdebias.datasets.synthetic import cascade_exposure as C
from tfdebias.methods import damcar as D

TINY = {"seed": 3, "n_users": 50, "n_items": 80, "n_authors": 10}

#: sha256[:16] of every split the simulator wrote before `train_unbiased` existed,
#: computed from the code at commit d08bc96 (before the split was added)
PINNED = {
    "small": {"train": "fa711280319a837c", "valid": "c97a9d91033bf79a",
              "test": "5403ab25cb6a6421", "oracle": "a28d04c94de03c5a"},
    "tiny": {"train": "2852c91bfd154db4", "valid": "fe78a1649b19136f",
             "test": "752bce2a16959776", "oracle": "dae09e40dc9ff9c6"},
}


def digest(cols):
    h = hashlib.sha256()
    for k in sorted(cols):
        v = np.ascontiguousarray(cols[k])
        h.update(k.encode())
        h.update(str(v.dtype).encode())
        h.update(str(v.shape).encode())
        h.update(v.tobytes())
    return h.hexdigest()[:16]


@pytest.fixture(scope="module")
def small():
    return C.simulate(C.CONFIGS["small"])


# -- the simulator ---------------------------------------------------------------------
def test_existing_splits_stay_bit_for_bit_identical(small):
    tiny = C.simulate(TINY)
    for name, d in (("small", small), ("tiny", tiny)):
        assert set(d) == {"train", "valid", "test", "oracle", "train_unbiased"}
        assert {s: digest(d[s]) for s in PINNED[name]} == PINNED[name], name


def test_train_unbiased_is_uniform_exposure_with_oracle_labels(small):
    tr, un = small["train"], small["train_unbiased"]
    n_items = C.DEFAULTS["n_items"]
    assert len(un["user_id"]) == len(tr["user_id"])
    np.testing.assert_array_equal(un["user_id"], tr["user_id"])  # the same users and days
    np.testing.assert_array_equal(un["day"], tr["day"])
    # no held-out (test / oracle) pair leaks into it
    key = lambda c: c["user_id"] * 10**6 + c["item_id"]  # noqa: E731
    assert not np.isin(key(un), np.concatenate([key(small["test"]), key(small["oracle"])])).any()
    # items uniform: the per-item counts are Poisson-like, the exposed log's are not
    cu = np.bincount(un["item_id"], minlength=n_items + 1)[1:]
    ce = np.bincount(tr["item_id"], minlength=n_items + 1)[1:]
    assert cu.var() / cu.mean() < 1.5 < 5 < ce.var() / ce.mean()
    # labels from the true model, WeChat's finish definition kept
    assert abs(un["finish"].mean() - un["relevance"].mean()) < 0.02
    np.testing.assert_array_equal(un["finish"] == 1, un["play_seconds"] >= un["duration"])


def test_the_bias_is_measurable_without_training(small):
    """numpy only: the exposed log is more relevant than uniform exposure, and a scorer
    that copies the policy wins the exposed group but loses the unexposed one to the
    true relevance (so the unexposed-positive metric cannot be won by copying)."""
    tr, un = small["train"], small["train_unbiased"]
    assert tr["relevance"].mean() - un["relevance"].mean() > 0.08
    truth = C.truth(C.CONFIGS["small"])
    splits = {k: dict(v) for k, v in small.items()}
    es = D.eval_set(splits, "finish", ["item_id"], seen=("train", "valid", "train_unbiased"))

    def policy(users):
        uu = np.repeat(np.asarray(users) - 1, len(es.corpus))
        ii = np.tile(es.corpus - 1, len(users))
        return truth.propensity0(uu, ii).reshape(len(users), -1)

    def relevance(users):
        return truth.relevance_block(users)[:, es.corpus - 1]

    pol = D.mean_metrics(D.cascade_eval(policy, None, es))
    rel = D.mean_metrics(D.cascade_eval(relevance, None, es))
    assert pol["retrieval/R@100/exposed"] > rel["retrieval/R@100/exposed"] + 0.05
    assert rel["retrieval/R@100/unexposed"] > pol["retrieval/R@100/unexposed"] + 0.01


def test_truth_rebuilds_every_splits_relevance(small):
    truth = C.truth(C.CONFIGS["small"])
    for split, c in small.items():
        np.testing.assert_allclose(truth.relevance(c["user_id"], c["item_id"]), c["relevance"],
                                   rtol=1e-5, err_msg=split)
    users = np.array([1, 7, 600])
    block = truth.relevance_block(users)
    assert block.shape == (3, C.DEFAULTS["n_items"])
    np.testing.assert_allclose(block[1, 41], truth.relevance([7], [42])[0], rtol=1e-9)


def test_medium_config_is_sized_for_power_and_cheap_to_build():
    assert list(C.CONFIGS)[:2] == ["small", "medium"]
    t0 = time.process_time()
    d = C.simulate(C.CONFIGS["medium"])
    cpu = time.process_time() - t0
    rows = sum(len(c["user_id"]) for c in d.values())
    assert cpu / rows * 200_000 <= 15.0
    test_users = np.unique(np.concatenate([d["test"]["user_id"][d["test"]["finish"] > 0],
                                           d["oracle"]["user_id"][d["oracle"]["finish"] > 0]]))
    assert len(test_users) >= 3000
    assert len(d["train"]["user_id"]) / C.CONFIGS["medium"]["n_users"] >= 50
    assert len(d["train_unbiased"]["user_id"]) == len(d["train"]["user_id"])


# -- the protocol ----------------------------------------------------------------------
def test_blocked_protocol_equals_one_block_and_gives_per_user_values(small):
    splits = {k: dict(v) for k, v in small.items()}
    es = D.eval_set(splits, "finish", ["item_id"])
    rng = np.random.default_rng(0)
    table = rng.normal(size=(C.DEFAULTS["n_users"] + 1, len(es.corpus)))

    def score(users):
        return table[np.asarray(users)]

    one = D.cascade_eval(score, None, es, max_cells=10**9)
    many = D.cascade_eval(score, None, es, max_cells=len(es.corpus) * 37)
    assert set(one) >= {"retrieval/R@100", "retrieval/R@100/exposed", "retrieval/R@100/unexposed"}
    for k in one:
        assert one[k].shape == (len(es.users),)
        np.testing.assert_array_equal(one[k], many[k])
    # a random scorer's recall@100 is about 100 / corpus size in every group
    for k in ("retrieval/R@100", "retrieval/R@100/exposed", "retrieval/R@100/unexposed"):
        assert abs(np.nanmean(one[k]) - 100 / len(es.corpus)) < 0.02


# -- the budget ------------------------------------------------------------------------
def test_budget_equalises_the_label_generator_steps():
    b = D.Budget(ranker_steps=7, label_steps=30, retrieval_steps=50)
    assert b.retriever_steps(True) == 50 and b.retriever_steps(False) == 80 == b.row_steps()
    assert D.Budget().retriever_steps(False) is None  # epochs


def test_fixed_steps_run_exactly_that_many_optimizer_steps():
    d = C.simulate(TINY)
    data = D.prepare_cascade(d, C.schema(TINY))
    tr = data.splits["train"]
    fe = {k: tr[k] for k in data.user_names + data.item_names}
    y = tr["finish"].astype("float32")
    b = D.Budget(batch_size=64)
    per_epoch = -(-len(y) // 64)
    steps = per_epoch + 3  # one full epoch and three batches of the next
    m = D.train_retrieval(data, D.hybrid_columns(fe, y, y), steps=steps, budget=b)
    assert int(m.optimizer.iterations.numpy()) == steps


# -- reproduce end to end --------------------------------------------------------------
@pytest.mark.slow
def test_reproduce_quick_writes_the_evidence_table(tmp_path, data_dir, monkeypatch):
    from tfdebias import cli
    from tfdebias.methods.damcar import reproduce

    monkeypatch.setattr(reproduce, "_budget", lambda quick: D.Budget(
        ranker_steps=4, label_steps=3, retrieval_steps=5, batch_size=256))
    out = tmp_path / "r"
    rc = cli.main(["reproduce", "damcar", "--data", "cascade_exposure/small", "--quick",
                   "--data-seeds", "2", "--radius", "3", "--walks", "2", "--out", str(out)])
    assert rc == 0
    res = json.loads((out / "results.json").read_text())
    h = res["headroom"]
    assert h["metric"] == "retrieval/R@100/unexposed"
    for part in ("skyline", "floor", "gap"):
        assert len(h[part]["ci95"]) == 2 and h[part]["ci95"][0] <= h[part]["ci95"][1]
    roles = {r["name"]: r["role"] for r in res["rows"]}
    assert roles == {"BC": "floor", D.ORACLE: "skyline", "DAMCAR": "method",
                     D.SSAM_ZERO: "baseline",
                     "Popularity": "simple", "Item-kNN": "simple", "True relevance": "truth"}
    rows = {r["name"]: r for r in res["rows"]}
    assert rows["BC"]["gap_closed"]["mean"] == 0.0
    assert rows[D.ORACLE]["gap_closed"]["mean"] == 1.0
    assert rows["DAMCAR"]["vs_baseline"]["name"] == "BC"
    for r in res["rows"]:
        assert r["n_data_seeds"] == 2
        for k in ("retrieval/R@100", "retrieval/R@100/exposed", "retrieval/R@100/unexposed",
                  "retrieval/R@100/true_top"):
            lo, hi = r["ci95"][k]
            assert lo <= r["mean"][k] <= hi or np.isclose(lo, hi)
    assert {(x["data_seed"], x["seed"]) for x in res["records"]} == {(0, 0), (1, 0)}
    assert all("scores" not in x for x in res["records"])
    # the truth ranks the never-shown positives best of all rows
    un = {n: r["mean"]["retrieval/R@100/unexposed"] for n, r in rows.items()}
    assert un["True relevance"] == max(un.values())
    assert set(res["headroom_by_group"]) == {"retrieval/R@100", "retrieval/R@100/exposed",
                                            "retrieval/R@100/unexposed",
                                            "retrieval/R@100/true_top"}
    assert res["headroom_by_group"]["retrieval/R@100/unexposed"]["headroom"] == h
    top = {n: r["mean"]["retrieval/R@100/true_top"] for n, r in rows.items()}
    assert top["True relevance"] == max(top.values())
    info = res["seeds_info"][0]
    assert "target_truth_auc" in info["label_generator_full"]
    assert "target_truth_auc" in info["ranker"]
    assert res["budget"]["retrieval_steps"] == 5
    md = (out / "results.md").read_text()
    assert "Stopping: fixed budget" in md and "8 optimizer steps per" in md
    assert "pseudo-label AUC vs truth" in md
    assert "Headroom" in md and "floor" in md and "vs BC" in md


def test_default_data_is_the_communities_config():
    from tfdebias import data as tdata

    assert tdata.evidence_data("cascade_exposure") == "cascade_exposure/communities"
    assert tdata.evidence_data("cascade_exposure:1.1.0") == \
        "cascade_exposure/communities:1.1.0"
    assert tdata.evidence_data("cascade_exposure/medium") == "cascade_exposure/medium"
    assert tdata.evidence_data("cascade_exposure/small") == "cascade_exposure/small"
    assert tdata.evidence_data("wechat_channels/damcar") == "wechat_channels/damcar"
    assert tdata.evidence_data("kuairec") == "kuairec"
