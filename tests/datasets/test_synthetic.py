"""The four simulators: TFDS builds of ``small``, determinism, ids, padding, and that
each one really injects the bias it claims (checked on ``simulate()`` arrays)."""

import numpy as np
import pytest

import tensorflow_datasets as tfds  # noqa: E402  (a hard dependency: a broken install fails here)

import tfdebias.datasets  # noqa: E402,F401  (registers the builders)
from tfdebias.datasets.synthetic import (  # noqa: E402
    SIMULATORS,
    cascade_exposure,
    confounded_ctr,
    cross_domain_ctr,
    cross_domain_sequences,
)
from tfdebias.errors import UsageError  # noqa: E402
from tfdebias.schema import Schema  # noqa: E402

NAMES = sorted(SIMULATORS)
SPLITS = {
    "confounded_ctr": {"train", "valid", "test"},
    "cross_domain_ctr": {"train", "valid", "test"},
    "cascade_exposure": {"train", "valid", "test", "oracle"},
    "cross_domain_sequences": {"train", "unobserved", "valid", "test"},
}
#: every scenario also ships its unbiased training sample (the evidence tables' skyline)
SPLITS = {k: v | {"train_unbiased"} for k, v in SPLITS.items()}


@pytest.fixture(scope="module")
def small():
    """``simulate()`` output of every ``small`` config (the arrays the builds write)."""
    return {n: SIMULATORS[n].simulate(SIMULATORS[n].CONFIGS["small"]) for n in NAMES}


@pytest.fixture(scope="module")
def built(data_dir):
    """Every simulator's ``small`` config built by TFDS into the session data dir."""
    out = {}
    for n in NAMES:
        b = tfds.builder(n, data_dir=data_dir)
        b.download_and_prepare()
        out[n] = b
    return out


# -- TFDS ------------------------------------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
def test_registered_with_small_first_then_medium(name):
    cls = tfds.builder_cls(name)
    configs = [c.name for c in cls.BUILDER_CONFIGS]
    assert configs[:2] == ["small", "medium"] and "paper" in configs
    assert str(cls.VERSION) == "1.1.0" and {"1.0.0", "1.1.0"} <= set(cls.RELEASE_NOTES)
    doc = SIMULATORS[name].__doc__
    assert "Stands in for" in doc and "Bias it injects" in doc and "train_unbiased" in doc
    assert cls.__module__.startswith("tfdebias.datasets.synthetic.")


@pytest.mark.parametrize("name", NAMES)
def test_small_build_matches_schema_and_simulate(name, built, small):
    b = built[name]
    assert b.builder_config.name == "small"
    sim = small[name]
    assert set(b.info.splits) == SPLITS[name] == set(sim)
    total = sum(s.num_examples for n, s in b.info.splits.items() if n != "train_unbiased")
    assert 15_000 <= total <= 80_000
    # the schema round-trips through info.metadata
    schema = Schema.from_json(b.info.metadata["schema"])
    assert schema == SIMULATORS[name].schema(SIMULATORS[name].CONFIGS["small"])
    for split in SPLITS[name]:
        assert b.info.splits[split].num_examples == len(next(iter(sim[split].values())))
    # read one split back (reading is slow; the others are written by the same code)
    got = tfds.as_numpy(b.as_dataset(split="test", batch_size=-1))
    assert set(got) == {f.name for f in schema}
    for f in schema:
        col = got[f.name]
        assert col.dtype == np.dtype(f.dtype), f.name
        assert col.shape[1:] == f.shape, f.name
    # the same rows as simulate() (TFDS stores them in its own order)
    order_got = np.lexsort([got[f.name] for f in schema if f.shape == ()])
    order_sim = np.lexsort([sim["test"][f.name] for f in schema if f.shape == ()])
    for f in schema:
        np.testing.assert_array_equal(got[f.name][order_got], sim["test"][f.name][order_sim])


def test_tfds_load_works(built, data_dir):
    ds = tfds.load("cross_domain_ctr", data_dir=data_dir, split="valid", batch_size=-1)
    cols = tfds.as_numpy(ds)
    assert len(cols["click"]) == built["cross_domain_ctr"].info.splits["valid"].num_examples


# -- determinism, ids, padding ---------------------------------------------------------
SMALLER = {  # cut-down params so the determinism check stays fast
    "confounded_ctr": {"n_users": 200, "n_items": 150, "test_users": 20, "test_items": 20},
    "cross_domain_ctr": {"n_users": 300},
    "cascade_exposure": {"n_users": 100, "n_items": 300},
    "cross_domain_sequences": {"n_users": 500},
}


@pytest.mark.parametrize("name", NAMES)
def test_same_seed_same_data_other_seed_other_data(name):
    sim = SIMULATORS[name].simulate
    a, b = sim(dict(SMALLER[name], seed=7)), sim(dict(SMALLER[name], seed=7))
    c = sim(dict(SMALLER[name], seed=8))
    for split in a:
        for col in a[split]:
            np.testing.assert_array_equal(a[split][col], b[split][col])
    assert any(
        len(a[s][k]) != len(c[s][k]) or not np.array_equal(a[s][k], c[s][k])
        for s in a for k in a[s]
    )


@pytest.mark.parametrize("name", NAMES)
def test_ids_within_vocab_and_zero_reserved(name, small):
    schema = SIMULATORS[name].schema(SIMULATORS[name].CONFIGS["small"])
    for split, cols in small[name].items():
        for f in schema:
            col = cols[f.name]
            assert col.dtype == np.dtype(f.dtype)
            if f.vocab_size:
                assert col.min() >= 0 and col.max() < f.vocab_size, (split, f.name)
            if f.role == "categorical" or (f.role == "proxy" and f.vocab_size):
                assert col.min() >= 1, (split, f.name)  # 0 is padding/unknown only
            if f.role == "sequence":  # real ids of the shared table, or padding
                assert f.vocab == "item_id" and col.max() < schema["item_id"].vocab_size


@pytest.mark.parametrize("name", ["cross_domain_ctr", "cross_domain_sequences"])
def test_sequences_right_aligned(name, small):
    schema = SIMULATORS[name].schema(SIMULATORS[name].CONFIGS["small"])
    seen_full = False
    for cols in small[name].values():
        for f in schema.sequences:
            nz = cols[f.name] > 0
            # padding only at the front: once an item appears, no zero follows
            assert (np.diff(nz.astype(np.int8), axis=1) >= 0).all(), f.name
            seen_full |= bool(nz.all(axis=1).any())
    assert seen_full  # some history is longer than max_len and was truncated


def test_unknown_parameter_is_a_usage_error():
    with pytest.raises(UsageError, match="n_userz"):
        confounded_ctr.simulate({"n_userz": 3})
    with pytest.raises(UsageError):
        cross_domain_sequences.simulate({"k_u": 1.5})


# -- confounded_ctr --------------------------------------------------------------------
def _features(cols):
    dense = np.stack([cols[n] for n in confounded_ctr.PROXIES if n != "position"], axis=1)
    onehots = [np.eye(v)[cols[k]] for k, v in
               [("item_category", 13), ("user_activity", 5), ("user_segment", 9), ("position", 11)]]
    return np.concatenate([dense] + onehots, axis=1)


def test_confounded_ctr_naive_model_is_biased(small):
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score

    d = small["confounded_ctr"]
    x = _features(d["train"])
    mu, sd = x.mean(0), x.std(0) + 1e-6
    lr = LogisticRegression(solver="liblinear").fit((x - mu) / sd, d["train"]["click"])
    auc, mean_pred = {}, {}
    for s in ("valid", "test"):
        pred = lr.predict_proba((_features(d[s]) - mu) / sd)[:, 1]
        auc[s] = roc_auc_score(d[s]["click"], pred)
        mean_pred[s] = pred.mean()
    assert auc["valid"] - auc["test"] > 0.1  # looks good on the logs, poor unbiased
    assert mean_pred["test"] > 1.8 * d["test"]["click"].mean()  # over-estimates CTR
    assert abs(mean_pred["valid"] - d["valid"]["click"].mean()) < 0.03  # fine on the logs


def test_confounded_ctr_exposure_follows_the_confounder(small):
    t = small["confounded_ctr"]["test"]  # the unselected block: every pair is there
    assert np.corrcoef(t["propensity"], t["confounder"])[0, 1] > 0.3
    assert np.corrcoef(t["relevance"], t["confounder"])[0, 1] > 0.15
    # missing not at random: logged pairs click far more than the full block
    assert small["confounded_ctr"]["train"]["click"].mean() > 2 * t["click"].mean()
    # the proxies are informative of the confounder
    assert np.corrcoef(t["like_rate"], t["confounder"])[0, 1] > 0.3


def test_confounded_ctr_test_block_is_complete_and_unlogged(small):
    d = small["confounded_ctr"]
    p = confounded_ctr.DEFAULTS
    key = lambda c: c["user_id"] * 10**6 + c["item_id"]  # noqa: E731
    t = key(d["test"])
    assert len(np.unique(t)) == len(t) == p["test_users"] * p["test_items"]
    assert len(np.unique(d["test"]["user_id"])) == p["test_users"]
    logged = np.concatenate([key(d["train"]), key(d["valid"])])
    assert not np.isin(t, logged).any()
    n_logged = len(logged)
    assert abs(len(d["valid"]["click"]) / n_logged - 0.2) < 0.01


# -- cross_domain_ctr ------------------------------------------------------------------
def test_cross_domain_ctr_cold_start(small):
    d = small["cross_domain_ctr"]
    p = cross_domain_ctr.DEFAULTS
    n_src = p["n_items_source"]
    for s in ("valid", "test"):
        assert (d[s]["domain"] == 1).all() and (d[s]["day"] == p["n_days"]).all()
        assert (d[s]["item_id"] > n_src).all()
    tr = d["train"]
    assert set(np.unique(tr["domain"])) == {0, 1}
    assert (tr["domain"] == 0).sum() > 2 * (tr["domain"] == 1).sum()  # dense source
    warm = np.unique(tr["user_id"][tr["domain"] == 1])
    test = d["test"]
    cold = test["cold_start"] == 1
    assert cold.any() and (~cold).any()  # cold-start and (A_cross) warm users in test
    np.testing.assert_array_equal(cold, ~np.isin(test["user_id"], warm))
    assert (test["history_target"][cold] == 0).all()  # new to the target domain
    assert (test["history_source"][cold] > 0).any(axis=1).mean() > 0.9  # known in the source
    # A_cross respected: warm evaluation users are at most A_cross of the training users
    ev = np.concatenate([d["valid"]["user_id"], test["user_id"]])
    n_target_users = len(warm) + len(np.setdiff1d(ev, warm))
    n_train = round(p["a_train"] * n_target_users)
    assert len(np.intersect1d(ev, warm)) <= round(p["a_cross"] * n_train)
    # histories stay in their domain
    h_s, h_t = tr["history_source"], tr["history_target"]
    assert (h_s[h_s > 0] <= n_src).all() and (h_t[h_t > 0] > n_src).all()


def test_cross_domain_ctr_domain_shift_moves_only_the_target():
    def run(shift):
        return cross_domain_ctr.simulate({"n_users": 800, "domain_shift": shift,
                                          "target_user_fraction": 1.0})["train"]

    def agreement(d):
        # per user: how well her source-domain taste predicts her target relevance
        src, tgt = d["domain"] == 0, d["domain"] == 1
        taste = np.zeros(801)
        np.add.at(taste, d["user_id"][src], d["relevance"][src] - d["relevance"][src].mean())
        return abs(np.corrcoef(taste[d["user_id"][tgt]], d["relevance"][tgt])[0, 1])

    same, shifted = run(0.0), run(1.0)
    src = same["domain"] == 0
    np.testing.assert_array_equal(src, shifted["domain"] == 0)
    for k in ("user_id", "item_id", "day", "click", "relevance"):
        np.testing.assert_array_equal(same[k][src], shifted[k][src])  # the source is untouched
    assert not np.allclose(same["relevance"][~src], shifted["relevance"][~src])
    assert agreement(same) > agreement(shifted) + 0.03  # seeded, so deterministic


# -- cascade_exposure ------------------------------------------------------------------
def test_cascade_exposure_selection_bias(small):
    d = small["cascade_exposure"]
    exposed = np.concatenate([d[s]["relevance"] for s in ("train", "valid", "test")])
    assert exposed.mean() - d["oracle"]["relevance"].mean() > 0.05
    exp_prop = np.concatenate([d[s]["propensity"] for s in ("train", "valid", "test")])
    assert exp_prop.mean() > 3 * d["oracle"]["propensity"].mean()


def test_cascade_exposure_splits(small):
    d = small["cascade_exposure"]
    p = cascade_exposure.DEFAULTS
    key = lambda c: c["user_id"] * 10**6 + c["item_id"]  # noqa: E731
    exposed = np.concatenate([key(d[s]) for s in ("train", "valid", "test")])
    assert len(np.unique(exposed)) == len(exposed)
    oracle = key(d["oracle"])
    assert len(np.unique(oracle)) == len(oracle) and not np.isin(oracle, exposed).any()
    assert set(np.unique(d["oracle"]["user_id"])) <= set(np.unique(d["test"]["user_id"]))
    every = np.concatenate([d[s]["item_id"] for s in d])
    assert len(np.unique(every)) == p["n_items"]  # every item appears somewhere
    # chronological per user: train days <= valid days <= test days, about 6:2:2
    for early, late in (("train", "valid"), ("valid", "test")):
        last = np.zeros(p["n_users"] + 1)
        np.maximum.at(last, d[early]["user_id"], d[early]["day"])
        assert (d[late]["day"] >= last[d[late]["user_id"]]).all()
    n = {s: len(d[s]["day"]) for s in ("train", "valid", "test")}
    assert abs(n["train"] / sum(n.values()) - 0.6) < 0.03
    # WeChat's finish definition holds
    for cols in d.values():
        np.testing.assert_array_equal(cols["finish"] == 1, cols["play_seconds"] >= cols["duration"])


# -- cross_domain_sequences ------------------------------------------------------------
def test_cross_domain_sequences_open_world_selection(small):
    d = small["cross_domain_sequences"]
    tr, un = d["train"], d["unobserved"]
    non = tr["overlap"] == 0
    assert (tr["observed"] == 1).all() and (un["observed"] == 0).all()
    assert (un["overlap"] == 0).all() and (tr["propensity"][~non] == 1).all()
    # missing not at random: the observed non-overlapping users differ from the rest
    assert tr["propensity"][non].mean() - un["propensity"].mean() > 0.15
    length = lambda c: (c["history_a"] > 0).sum(1) + (c["history_b"] > 0).sum(1)  # noqa: E731
    assert length(tr)[non].mean() > length(un).mean() + 0.5
    # K_u: on average a k_u fraction of the non-overlapping users is observed
    users_obs = len(np.unique(tr["user_id"][non]))
    users_un = len(np.unique(un["user_id"]))
    assert abs(users_obs / (users_obs + users_un) - 0.25) < 0.04
    d75 = cross_domain_sequences.simulate(cross_domain_sequences.CONFIGS["small_ku75"])
    non75 = d75["train"]["overlap"] == 0
    obs75 = len(np.unique(d75["train"]["user_id"][non75]))
    un75 = len(np.unique(d75["unobserved"]["user_id"]))
    assert abs(obs75 / (obs75 + un75) - 0.75) < 0.04


def test_cross_domain_sequences_held_out_items(small):
    d = small["cross_domain_sequences"]
    n_a = cross_domain_sequences.DEFAULTS["n_items_a"]
    for cols in d.values():
        a, b = cols["history_a"], cols["history_b"]
        assert (a[a > 0] <= n_a).all() and (b[b > 0] > n_a).all()
        np.testing.assert_array_equal(cols["item_id"] > n_a, cols["domain"] == 1)
        # a non-overlapping user's other domain is all padding
        non = cols["overlap"] == 0
        has_a = (a > 0).any(1)
        assert not ((a > 0).any(1) & (b > 0).any(1))[non].any()
        assert (has_a[non] == (cols["domain"][non] == 0)).all()
    # leave-last-out: the test row's own-domain history ends with the valid target,
    # the valid row's with the train/unobserved target
    train = {k: np.concatenate([d["train"][k], d["unobserved"][k]]) for k in d["train"]}
    for early, late in ((train, d["valid"]), (d["valid"], d["test"])):
        ke = early["user_id"] * 2 + early["domain"]
        kl = late["user_id"] * 2 + late["domain"]
        oe, ol = np.argsort(ke), np.argsort(kl)
        np.testing.assert_array_equal(ke[oe], kl[ol])
        own = np.where(late["domain"][ol, None] == 0, late["history_a"][ol], late["history_b"][ol])
        np.testing.assert_array_equal(own[:, -1], early["item_id"][oe])


@pytest.mark.parametrize("name", NAMES)
def test_data_seed_draws_the_simulator_anew(name, tmp_path):
    """A data seed is the same config with another seed; seed 0 is the config itself."""
    from tfdebias import data as tdata

    module = SIMULATORS[name]
    assert tdata.get_builder(name, data_dir=str(tmp_path), data_seed=0).builder_config.name == "small"
    b = tdata.prepare(name, data_dir=str(tmp_path), data_seed=2)
    assert b.builder_config.name == "small-seed2"
    want = module.simulate({**module.DEFAULTS, **module.CONFIGS["small"], "seed": 2})
    got = {s: tdata.read_split(b, s) for s in want}
    for split, cols in want.items():  # packed storage keeps values and row order
        for k, v in cols.items():
            np.testing.assert_array_equal(got[split][k], v, err_msg=f"{split}/{k}")
    assert tdata.data_seeds(name, 3) == [0, 1, 2]


def test_real_data_has_one_draw():
    from tfdebias import data as tdata
    from tfdebias.errors import UsageError

    assert tdata.data_seeds("kuairec", 5) == [None]
    with pytest.raises(UsageError, match="one draw"):
        tdata.get_builder("kuairec", data_seed=1)
