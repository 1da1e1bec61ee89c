"""DADIN's Algorithm 2 (tfdebias.datasets.cold_start): the properties the paper states."""

import numpy as np
import pytest

from tfdebias.datasets.cold_start import resample_cold_start
from tfdebias.errors import DataError, UsageError

N_USERS, N_TARGET_USERS, LAST = 300, 200, 5


def make_log(seed=0):
    """Every user has source rows; users 1..200 also have target rows on day 1 and on
    the last day (so every target user has both earlier and last-day target rows)."""
    rng = np.random.default_rng(seed)
    users = np.arange(1, N_USERS + 1)
    src_u = np.repeat(users, 6)
    src_d = rng.integers(1, LAST + 1, len(src_u))
    tgt_users = users[:N_TARGET_USERS]
    extra = rng.integers(0, 3, N_TARGET_USERS)
    tgt_u = np.concatenate([tgt_users, tgt_users, np.repeat(tgt_users, extra)])
    tgt_d = np.concatenate([np.ones(N_TARGET_USERS, int), np.full(N_TARGET_USERS, LAST),
                            rng.integers(1, LAST + 1, extra.sum())])
    u = np.concatenate([src_u, tgt_u])
    n = len(u)
    return {
        "user_id": u,
        "domain": np.concatenate([np.zeros(len(src_u), int), np.ones(len(tgt_u), int)]),
        "day": np.concatenate([src_d, tgt_d]),
        "row_id": np.arange(n),
        "history": rng.integers(0, 50, (n, 4)),  # a 2-D column travels with its rows
        "click": rng.random(n).astype(np.float32),
    }


A_TRAIN, A_CROSS = 0.6, 0.25


@pytest.fixture(scope="module")
def log():
    return make_log()


@pytest.fixture(scope="module")
def out(log):
    return resample_cold_start(log, a_train=A_TRAIN, a_cross=A_CROSS, seed=3)


def users_of(split, domain=None):
    m = np.ones(len(split["user_id"]), bool) if domain is None else split["domain"] == domain
    return set(split["user_id"][m].tolist())


def test_users_partitioned_as_specified(out):
    n_train = round(A_TRAIN * N_TARGET_USERS)
    n_cross = round(A_CROSS * n_train)
    target_users = set(range(1, N_TARGET_USERS + 1))
    train_users = users_of(out["train"], domain=1)  # = user_train_list (all have day-1 rows)
    rest = target_users - train_users
    eval_users = users_of(out["valid"]) | users_of(out["test"])
    cross = train_users & eval_users
    assert len(train_users) == n_train
    assert len(rest) == N_TARGET_USERS - n_train
    assert len(cross) == n_cross
    assert eval_users == rest | cross  # every step-3/4 user has last-day rows here
    # valid and test share no user, and each gets half of each group
    v, t = users_of(out["valid"]), users_of(out["test"])
    assert not v & t
    for group in (rest, cross):
        assert abs(len(group & v) - len(group & t)) <= 1


def test_valid_and_test_are_last_day_target_rows(out, log):
    for split in ("valid", "test"):
        s = out[split]
        assert len(s["user_id"]) > 0
        assert (s["domain"] == 1).all() and (s["day"] == LAST).all()
    # ... and are *all* last-day target rows of the evaluation users
    eval_users = users_of(out["valid"]) | users_of(out["test"])
    want = (log["domain"] == 1) & (log["day"] == LAST) & np.isin(log["user_id"], list(eval_users))
    got = np.concatenate([out["valid"]["row_id"], out["test"]["row_id"]])
    assert sorted(got.tolist()) == np.nonzero(want)[0].tolist()


def test_removed_from_train_and_rest_users_dropped(out, log):
    tr = out["train"]
    ids = np.concatenate([out[s]["row_id"] for s in ("train", "valid", "test")])
    assert len(ids) == len(np.unique(ids))  # no row in two splits
    eval_ids = np.concatenate([out["valid"]["row_id"], out["test"]["row_id"]])
    assert not np.isin(tr["row_id"], eval_ids).any()
    train_users = users_of(tr, domain=1)
    # a training user's target rows are all in train, except the cross users' last day
    is_t = log["domain"] == 1
    of_train_users = is_t & np.isin(log["user_id"], list(train_users))
    expected = np.nonzero(of_train_users & ~np.isin(log["row_id"], eval_ids))[0]
    assert sorted(tr["row_id"][tr["domain"] == 1].tolist()) == expected.tolist()
    # the cold (step-4) users contribute no target row to train at all
    rest = set(range(1, N_TARGET_USERS + 1)) - train_users
    assert not np.isin(tr["user_id"][tr["domain"] == 1], list(rest)).any()


def test_source_data_kept(out, log):
    src = np.nonzero(log["domain"] == 0)[0]
    tr = out["train"]
    assert sorted(tr["row_id"][tr["domain"] == 0].tolist()) == src.tolist()
    # rows keep their other columns, 2-D ones included
    idx = tr["row_id"]
    np.testing.assert_array_equal(tr["history"], log["history"][idx])
    np.testing.assert_array_equal(tr["click"], log["click"][idx])


def test_strict_reading_keeps_only_train_users_source(log):
    out = resample_cold_start(log, a_train=A_TRAIN, a_cross=A_CROSS, seed=3,
                              keep_all_source=False)
    tr = out["train"]
    train_users = users_of(tr, domain=1)
    want = (log["domain"] == 0) & np.isin(log["user_id"], list(train_users))
    assert sorted(tr["row_id"][tr["domain"] == 0].tolist()) == np.nonzero(want)[0].tolist()


def test_cold_start_column(out):
    warm = users_of(out["train"], domain=1)
    for s in out.values():
        expect = ~np.isin(s["user_id"], list(warm))
        np.testing.assert_array_equal(s["cold_start"] == 1, expect)
        assert s["cold_start"].dtype == np.float32
    assert (out["test"]["cold_start"] == 1).any() and (out["test"]["cold_start"] == 0).any()


def test_deterministic_per_seed(log, out):
    again = resample_cold_start(log, a_train=A_TRAIN, a_cross=A_CROSS, seed=3)
    other = resample_cold_start(log, a_train=A_TRAIN, a_cross=A_CROSS, seed=4)
    for split in out:
        np.testing.assert_array_equal(out[split]["row_id"], again[split]["row_id"])
    assert users_of(other["test"]) != users_of(out["test"])


def test_per_user_last_day():
    cols = {  # user 1's last target day is 2, user 2's is 3; the global last day is 3
        "user_id": np.array([1, 1, 1, 2, 2, 2]),
        "domain": np.array([0, 1, 1, 0, 1, 1]),
        "day": np.array([3, 1, 2, 1, 2, 3]),
        "row_id": np.arange(6),
    }
    out = resample_cold_start(cols, a_train=0.0, a_cross=0.0, seed=0, last_day="user")
    got = np.concatenate([out["valid"]["row_id"], out["test"]["row_id"]])
    assert sorted(got.tolist()) == [2, 5]
    glob = resample_cold_start(cols, a_train=0.0, a_cross=0.0, seed=0, last_day="global")
    got = np.concatenate([glob["valid"]["row_id"], glob["test"]["row_id"]])
    assert sorted(got.tolist()) == [5]
    assert sorted(out["train"]["row_id"].tolist()) == [0, 3]  # only the source rows


def test_bad_arguments():
    cols = make_log()
    with pytest.raises(UsageError):
        resample_cold_start(cols, a_train=1.5, a_cross=0.1, seed=0)
    with pytest.raises(UsageError):
        resample_cold_start(cols, a_train=0.5, a_cross=0.1, seed=0, last_day="week")
    with pytest.raises(DataError, match="day"):
        resample_cold_start({k: v for k, v in cols.items() if k != "day"},
                            a_train=0.5, a_cross=0.1, seed=0)
