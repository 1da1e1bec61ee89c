"""``cross_domain_ctr``: a dense source and a sparse, shifted target domain with cold-start users.

Version 1.1.0 adds the split ``train_unbiased`` and the config ``medium``; every
split of 1.0.0 keeps its values bit for bit (``tests/test_dadin_evidence.py`` pins
their hashes).

Stands in for the two data sets of DADIN (the DADIN paper, Sec. 4.2): **Huawei DIGIX 2022**
(source = news feeds, target = ads; 7 days of logs) and **Amazon movies -> music**
(source = movies, target = music). The problem as the paper states it (Sec. 3.1): a
common user set with a *domain-agnostic* interest, disjoint item sets, far fewer
target-domain interactions, target users a subset of source users, and users that are
cold in the target domain but known in the source. The paper's toy experiment makes
the target distribution a rotation of the source one (Sec. 4.1); here the shift is
controlled by ``domain_shift``.

Generative story (one draw per ``seed``):

1. Every user has a domain-agnostic interest ``z_u`` and a private target-domain
   interest ``w_u`` (both ``dim``-d). Her target-domain taste is
   ``z_u^t = cos(theta) z_u + sin(theta) w_u`` with ``theta = domain_shift * pi/2``:
   0 = the same taste in both domains, 1 = unrelated tastes.
2. Items of each domain have a latent near their category's centre; item ids and
   categories of the two domains are disjoint ranges of one id space (source first).
3. A fraction ``target_user_fraction`` of the users is active in the target domain.
   On each day ``1..n_days`` a user sees ``Poisson(rate * m_u)`` impressions per
   domain (``m_u`` her activity), items drawn by (Zipf) popularity.
4. ``relevance = sigmoid(b_s + alpha <z_u, y_i>)`` in the source and
   ``sigmoid(b_t + alpha <z_u^t, y_i>)`` in the target; ``click ~ Bernoulli(relevance)``.
5. Histories: on day 0 (before the logged period) the same process runs with
   ``Poisson(history_*_impressions)`` impressions per user (target-domain users only
   in the target); her clicked items, in order, are
   ``history_source`` / ``history_target`` (right-aligned, last ``max_len``). They are
   fixed per user, so no logged label leaks into them.
6. Cold start: DADIN's Algorithm 2 (:func:`tfdebias.datasets.cold_start.resample_cold_start`)
   with ``a_train``/``a_cross`` splits the log into train / valid / test, valid and test
   being last-day target-domain rows. A user with no target row left in train is a
   cold-start user; she is new to the target domain, so her ``history_target`` is
   emptied too.

Bias it injects: domain shift (source and target click models differ by
``domain_shift``), target sparsity, and cold-start users at evaluation time whose
target behaviour was never seen in training.

7. ``train_unbiased``, the same log *without* that bias (for the skyline of an evidence
   table): DADIN's problem is that the labels sit in the wrong domain, so the unbiased
   sample has as many rows as ``train``, all drawn from the population the test split
   is sampled from: target-domain impressions (day ``n_days``, the test day) of every
   target-domain user (the test users are a random subset of them), each user with her
   share ``m_u / sum m`` of the target log, items by target popularity, clicks from the
   same ``relevance``; cold-start users are included and keep the features the test
   split gives them (no target history). It is what a model would see if the target
   domain were as label-rich as the source. It comes from its own
   stream, ``np.random.default_rng([seed, 7])``, after every other draw, so the other
   splits do not change. ``cold_start`` marks the users that are cold in ``train``.
   Measured with counts alone (no model): a smoothed (user, item category) click rate
   ranks the ``small`` test rows with AUC 0.55 from ``train`` and 0.72 from
   ``train_unbiased`` (true ``relevance``: 0.83); ``medium``: 0.57 vs 0.71 (0.82).

Ground truth shipped: ``relevance`` (true click probability of the row) and
``cold_start`` (1 if the row's user has no target-domain row in train).

Splits: ``train`` (both domains), ``valid`` and ``test`` (target domain, last day;
disjoint users), ``train_unbiased`` (target domain, see 7.).

Configs: ``small`` (default; ~41k train rows, 453 test rows), ``medium`` (sized for
an evidence table: 10,000 users, 2 days, ~653k train rows (~500k source, ~153k target,
65 per user on average), ~58k test rows over ~2,920 test users (most cold-start) and
300 target items, so a test AUC's standard error is about 0.0045; the default of
``tfdebias reproduce dadin``), and ``paper``, sized
like the Amazon 2014 5-core Movies_and_TV -> Digital_Music pair that DADIN uses (50,052
movie items; target items 3,568; 20,000 shared users, ~1M source and ~63k target rows;
DADIN gives no statistics, so the user overlap and target item count are our estimates).
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from tfdebias.datasets.cold_start import resample_cold_start
from tfdebias.errors import UsageError
from tfdebias.schema import Feature, Schema

from . import _base
from ._base import SimulatorBuilder

NAME = "cross_domain_ctr"

#: ``np.random.default_rng([seed, UNBIASED_STREAM])`` draws ``train_unbiased``, apart from
#: the streams of every other split
UNBIASED_STREAM = 7

DEFAULTS = {
    "seed": 0,
    "n_users": 2500,
    "n_items_source": 600,
    "n_items_target": 200,
    "n_categories_source": 12,
    "n_categories_target": 6,
    "dim": 8,
    "domain_shift": 0.5,
    "n_days": 7,
    "source_rate": 1.8,
    "target_user_fraction": 0.6,
    "target_rate": 1.2,
    "history_source_impressions": 60,
    "history_target_impressions": 30,
    "max_len": 20,
    "source_intercept": -1.5,
    "target_intercept": -2.5,
    "preference_click": 1.5,
    "popularity_exponent": 0.8,
    "n_age": 6,
    "n_activity": 4,
    "a_train": 0.8,
    "a_cross": 0.3,
    "last_day": "global",
}

CONFIGS = {
    "small": {},
    # sized for power (the evidence guide): a test AUC's standard error over test users
    # <= 0.005 (about 58K target test rows over about 2,900 test users and 300 target
    # items; the floor's measured 0.0050 at 8,000 users, so 10,000 for margin), >= 50 train
    # rows per user. Two days, so that the last (test) day holds as many target rows per
    # user as a warm user's whole target history; half of the target users kept for
    # training (A_train = 0.5), so most test users are cold.
    "medium": {
        "n_users": 10000,
        "n_items_source": 1200,
        "n_items_target": 300,
        "n_days": 2,
        "source_rate": 25.0,
        "target_user_fraction": 0.9,
        "target_rate": 20.0,
        "a_train": 0.5,
        "a_cross": 0.3,
    },
    "paper": {
        "n_users": 20000,
        "n_items_source": 50052,
        "n_items_target": 3568,
        "n_categories_source": 30,
        "n_categories_target": 15,
        "dim": 16,
        "source_rate": 7.0,
        "target_user_fraction": 0.5,
        "target_rate": 0.9,
        "history_source_impressions": 100,
        "history_target_impressions": 40,
    },
}


def _params(params: Mapping | None) -> dict:
    p = _base.merge_params(DEFAULTS, params, NAME)
    _base.check_positive(
        p, "n_users", "n_items_source", "n_items_target", "n_categories_source",
        "n_categories_target", "dim", "n_days", "max_len", "n_age", "n_activity", where=NAME,
    )
    _base.check_fraction(p, "domain_shift", "target_user_fraction", "a_train", "a_cross",
                         where=NAME)
    if p["last_day"] not in ("global", "user"):
        raise UsageError(f"{NAME}: last_day must be 'global' or 'user', got {p['last_day']!r}")
    return p


def schema(params: Mapping | None = None) -> Schema:
    p = _params(params)
    n_items = 1 + p["n_items_source"] + p["n_items_target"]
    n_cats = 1 + p["n_categories_source"] + p["n_categories_target"]
    return Schema([
        Feature("user_id", "categorical", vocab_size=p["n_users"] + 1, description="user"),
        Feature("user_age", "categorical", vocab_size=p["n_age"] + 1, description="age bucket"),
        Feature("user_gender", "categorical", vocab_size=3, description="gender (1, 2)"),
        Feature("user_activity", "categorical", vocab_size=p["n_activity"] + 1,
                description="activity level (quantile bucket)"),
        Feature("item_id", "categorical", vocab_size=n_items,
                description=f"item; source 1..{p['n_items_source']}, target after"),
        Feature("item_category", "categorical", vocab_size=n_cats,
                description="item category; source categories first, then target"),
        Feature("domain", "domain", vocab_size=2, description="0 = source, 1 = target"),
        Feature("history_source", "sequence", vocab_size=n_items, max_len=p["max_len"],
                vocab="item_id", description="source items clicked before the log, right-aligned"),
        Feature("history_target", "sequence", vocab_size=n_items, max_len=p["max_len"],
                vocab="item_id", description="target items clicked before the log, right-aligned"),
        Feature("day", "categorical", vocab_size=p["n_days"] + 1, description="day 1..n_days"),
        Feature("click", "label", description="clicked (Bernoulli(relevance))"),
        Feature("relevance", "truth", description="true P(click) of the row"),
        Feature("cold_start", "truth", description="1 if the user has no target row in train"),
    ])


def simulate(params: Mapping | None = None) -> _base.Splits:
    """Splits ``train``, ``valid``, ``test``, ``train_unbiased`` as column dicts (see the
    module docstring)."""
    p = _params(params)
    sch = schema(p)
    s_struct, s_rows, s_split = np.random.SeedSequence(p["seed"]).spawn(3)
    rng = np.random.default_rng(s_struct)
    nu, d, ns, nt = p["n_users"], p["dim"], p["n_items_source"], p["n_items_target"]

    # 1. users
    z = _base.latent(rng, nu, d)
    w = _base.latent(rng, nu, d)
    theta = p["domain_shift"] * np.pi / 2
    z_t = np.cos(theta) * z + np.sin(theta) * w
    act = 0.5 * rng.standard_normal(nu)
    m = np.exp(act) / np.exp(act).mean()
    age = _base.quantile_bucket(z[:, 0] + 0.5 * rng.standard_normal(nu), p["n_age"])
    gender = np.where(z[:, 1] + 0.5 * rng.standard_normal(nu) > 0, 2, 1)
    activity = _base.quantile_bucket(act, p["n_activity"])
    is_t_user = rng.random(nu) < p["target_user_fraction"]

    # 2. items of both domains in one id space
    def items(n, n_cat):
        centres = _base.latent(rng, n_cat, d)
        cat = rng.integers(0, n_cat, n)
        return 0.8 * centres[cat] + 0.6 * _base.latent(rng, n, d), cat

    y_s, cat_s = items(ns, p["n_categories_source"])
    y_t, cat_t = items(nt, p["n_categories_target"])
    y = np.concatenate([y_s, y_t])
    item_cat = np.concatenate([cat_s + 1, cat_t + 1 + p["n_categories_source"]])
    pop_s = _base.zipf_weights(ns, p["popularity_exponent"], rng)
    pop_t = _base.zipf_weights(nt, p["popularity_exponent"], rng)

    # 3.-5. impressions of day 0 (history) and days 1..n_days (the log)
    rng = np.random.default_rng(s_rows)
    n_days = p["n_days"]

    def impressions(domain, rate_log, rate_hist):
        users_ok = np.ones(nu, bool) if domain == 0 else is_t_user
        counts = np.zeros((nu, n_days + 1), np.int64)
        counts[:, 0] = rng.poisson(rate_hist, nu)
        counts[:, 1:] = rng.poisson(rate_log * m[:, None], (nu, n_days))
        counts[~users_ok] = 0
        uu = np.repeat(np.repeat(np.arange(nu), n_days + 1), counts.ravel())
        dd = np.repeat(np.tile(np.arange(n_days + 1), nu), counts.ravel())
        if domain == 0:
            ii = rng.choice(ns, len(uu), p=pop_s)
            logit = p["source_intercept"] + p["preference_click"] * np.einsum(
                "nd,nd->n", z[uu], y[ii])
        else:
            ii = ns + rng.choice(nt, len(uu), p=pop_t)
            logit = p["target_intercept"] + p["preference_click"] * np.einsum(
                "nd,nd->n", z_t[uu], y[ii])
        rel = _base.sigmoid(logit)
        click = rng.random(len(rel)) < rel
        return uu, dd, ii, rel, click

    src = impressions(0, p["source_rate"], p["history_source_impressions"])
    tgt = impressions(1, p["target_rate"], p["history_target_impressions"])

    hist = {}
    for name, (uu, dd, ii, _, click) in (("history_source", src), ("history_target", tgt)):
        keep = (dd == 0) & click  # uu is sorted, impressions in time order
        hist[name] = _base.pad_right_aligned(uu[keep], ii[keep] + 1, nu, p["max_len"])

    def rows(uu, ii, domain, history_target, day, click, rel):
        """Log rows of users ``uu`` (0-based) on items ``ii`` (0-based)."""
        return {
            "user_id": uu + 1,
            "user_age": age[uu],
            "user_gender": gender[uu],
            "user_activity": activity[uu],
            "item_id": ii + 1,
            "item_category": item_cat[ii],
            "domain": np.full(len(uu), domain),
            "history_source": hist["history_source"][uu],
            "history_target": history_target,
            "day": day,
            "click": click,
            "relevance": rel,
        }

    log = []
    for domain, (uu, dd, ii, rel, click) in enumerate((src, tgt)):
        keep = dd > 0
        uu, ii = uu[keep], ii[keep]
        log.append(rows(uu, ii, domain, hist["history_target"][uu], dd[keep], click[keep], rel[keep]))
    cols = _base.concat(log)

    # 6. DADIN's Algorithm 2, then cold-start users lose their target history
    splits = resample_cold_start(
        cols, a_train=p["a_train"], a_cross=p["a_cross"],
        seed=int(s_split.generate_state(1)[0]), last_day=p["last_day"],
    )
    for part in splits.values():
        part["history_target"][part["cold_start"] == 1] = 0

    # 7. the unbiased training sample, from its own stream (the splits above are untouched)
    n_train = len(splits["train"]["click"])
    t_users = np.flatnonzero(is_t_user)
    cold_user = np.ones(nu, bool)
    tr = splits["train"]
    cold_user[tr["user_id"][tr["domain"] == 1] - 1] = False
    rng = np.random.default_rng([p["seed"], UNBIASED_STREAM])
    share = m[t_users] / m[t_users].sum()  # a user's share of the target log
    uu = np.sort(rng.choice(t_users, n_train, p=share)) if len(t_users) else np.zeros(0, int)
    ii = ns + rng.choice(nt, len(uu), p=pop_t)
    rel = _base.sigmoid(p["target_intercept"] + p["preference_click"] * np.einsum(
        "nd,nd->n", z_t[uu], y[ii]))
    h_t = hist["history_target"][uu]
    h_t[cold_user[uu]] = 0
    splits["train_unbiased"] = {
        **rows(uu, ii, 1, h_t, np.full(len(uu), n_days), rng.random(len(uu)) < rel, rel),
        "cold_start": cold_user[uu].astype(np.float32),
    }
    return {k: _base.cast_to_schema(sch, v) for k, v in splits.items()}


class CrossDomainCtr(SimulatorBuilder):
    """TFDS builder ``cross_domain_ctr`` (see the module docstring)."""

    BUILDER_CONFIGS = _base.make_configs(CONFIGS)
    _schema_fn = staticmethod(schema)
    _simulate_fn = staticmethod(simulate)
    _defaults = DEFAULTS
    _citation = """@article{kong2023dadin,
  title={DADIN: Domain Adversarial Deep Interest Network for Cross Domain Recommender Systems},
  author={Kong, Menglin and Hou, Muzhou and Zhao, Shaojie and Liu, Feng and Su, Ri and
    Chen, Yinghao},
  journal={arXiv preprint arXiv:2305.12058}, year={2023}}"""
