"""``cross_domain_sequences``: two-domain sequences, open-world user selection (Amazon Cloth-Sport).

Frozen at 1.1.0: the generator below never changes under this version (1.1.0 added the
split ``train_unbiased`` and the ``medium``/``medium_ku75`` configs; every 1.0.0 split
keeps its values bit for bit, pinned by ``tests/test_amid_evidence.py``).

Stands in for **Amazon Cloth-Sport** (and Phone-Elec) as AMID uses them (the AMID paper,
Sec. 2-3 and 5.1): cross-domain sequential recommendation where most users are
*non-overlapping* (seen in one domain only) and the users that reach training are
selected not at random: "users to be exposed are sometimes selected by the
recommendation algorithm based on factors such as estimated conversion rates ... The
rating data of these unexposed users are missing not at random" (Sec. 2). The causal
graph of Sec. 3.2 (Fig. 4) has the sequences ``S`` and ratings ``R`` both cause the
observation ``O``. ``K_u`` is realised as in the authors' code
(``official_code_notes.md`` §1.5): train = every overlapping user plus a ``k_u``
fraction (on average) of the non-overlapping users.

Generative story (one draw per ``seed``):

1. Each user has a general interest ``g_u``, domain-specific interests ``s_u^A``,
   ``s_u^B`` and an activity ``a_u ~ N(0, 1)``. Her interest in domain ``D`` is
   ``z_u^D = sqrt(rho) g_u + sqrt(1 - rho) s_u^D`` (``rho = cross_correlation``), and
   drifts over time by ``delta_u^D``.
2. Items of each domain have a latent ``v_i``; popularity is log-normal along a
   "mainstream" unit direction ``mu``: ``pop_i ~ exp(dim^(1/4) <v_i, mu>)`` (unit
   log-sd). Domain A ids are ``1..n_items_a``, domain B ids follow.
3. A user is overlapping with probability ``overlap_fraction`` (both domains); else
   she has domain A (probability ``domain_a_fraction``) or B only.
4. Her sequence in domain ``D`` has ``T = min_len + Poisson(mean_extra_len *
   e^(0.4 a_u) / E[.])`` items. Step ``t`` draws ``n_candidates`` items by popularity
   and keeps the best of ``temperature * <z_u^D + (t+1)/T delta_u^D, v> + Gumbel``
   (a softmax choice among candidates), so later items follow the drift.
5. Open-world selection: a non-overlapping user is observed (enters training) with
   ``propensity = sigmoid(c + selection_strength * (<g_u, mu> + a_u) / sqrt(2))`` (both
   terms standardised), ``c`` set so the mean is ``k_u``; overlapping users are always
   observed (propensity 1).

Rows: each (user, domain) gives three rows, one per *level* ``k`` (0 train, 1 valid,
2 test): the target ``item_id`` is the item at position ``T - 3 + k`` and each
domain's history holds that domain's items before its own level-``k`` target
(``history_a``/``history_b``, right-aligned, last ``max_len``; all padding for a domain
the user does not have). No row's history contains a held-out target of its level or
a later one.

Bias it injects: selection on user latents (missing not at random): observed users
are more mainstream and more active (longer sequences) than the unobserved ones, who
still appear at valid/test time.

The same sample without the bias (``train_unbiased``): the level-0 rows of every
overlapping user plus as many non-overlapping users as the selection observed, drawn
*uniformly at random* among the non-overlapping users instead of by the propensity of
step 5 (users observed at random instead of by the selection mechanism). It has the same
overlapping users and exactly as many users and rows as ``train``, so a backbone trained
on it against one trained on ``train`` measures the selection bias alone (the evidence
table's skyline against its floor). Its ``observed`` is 1 on every row (these are the
users that sample observes) and its ``propensity`` is the sample's inclusion
probability (1 for overlapping users, ``#observed / #non-overlapping`` otherwise). It is
drawn from its own random stream (``np.random.default_rng([seed, 7])``), after every
other draw, so every other split of every config is bit for bit what 1.0.0 wrote.

Ground truth shipped: ``propensity`` (true P(observed) of the user), ``overlap``.

Splits: ``train`` = level-0 rows of observed users (``observed`` = 1);
``unobserved`` = level-0 rows of unobserved users (``observed`` = 0; what a doubly
robust estimator imputes over); ``valid``/``test`` = level-1/level-2 rows of every user
(the held-out last two items per user and domain; ``observed`` says if the user was in
training); ``train_unbiased`` = the level-0 rows of a random sample of users of the
same size as ``train`` (above). ``label`` is 1.0 on every row: negatives are sampled
by the pipeline.

Configs: ``small`` (k_u 0.25, default), ``medium`` (the same scenario with 12,000
users: 7.2K test users per domain, ~7.1K train rows; the default of
``tfdebias reproduce amid``), ``small_ku75``, ``medium_ku75``, ``paper`` and
``paper_ku75``, the last two sized like AMID's Cloth-Sport (19,000 users, ~12%
overlapping, 23,033 and 18,357 items as in the Amazon 2014 5-core Clothing and Sports
files). ``paper`` gives 8,621 train rows at K_u 0.25 and ``paper_ku75`` 17,051, near
the 8,119 and 15,403 rows of the authors' released cloth_sport train25/train75 files.
``medium`` only adds users (items, lengths, selection and correlations are ``small``'s),
so its NDCG@10 over one domain's test users has a standard error of about 0.003-0.004
(per-user NDCG has a standard deviation of about 0.2-0.25) and the three user groups
of a domain (overlapping ~2.4K, observed non-overlapping ~1.2K, unobserved
non-overlapping ~3.6K test users) about 0.004-0.007.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from tfdebias.errors import UsageError
from tfdebias.schema import Feature, Schema

from . import _base
from ._base import SimulatorBuilder

NAME = "cross_domain_sequences"

DEFAULTS = {
    "seed": 0,
    "n_users": 6000,
    "overlap_fraction": 0.2,
    "domain_a_fraction": 0.5,
    "n_items_a": 800,
    "n_items_b": 600,
    "dim": 16,
    "cross_correlation": 0.6,
    "drift": 0.5,
    "min_len": 5,
    "mean_extra_len": 5.0,
    "max_len": 20,
    "n_candidates": 50,
    "temperature": 3.0,
    "k_u": 0.25,
    "selection_strength": 1.5,
}

_PAPER = {
    "n_users": 19000,
    "overlap_fraction": 0.12,
    "n_items_a": 23033,
    "n_items_b": 18357,
    "dim": 32,
    "mean_extra_len": 3.0,
}
_MEDIUM = {"n_users": 12000}
CONFIGS = {
    "small": {},
    "medium": dict(_MEDIUM),
    "small_ku75": {"k_u": 0.75},
    "medium_ku75": dict(_MEDIUM, k_u=0.75),
    "paper": dict(_PAPER),
    "paper_ku75": dict(_PAPER, k_u=0.75),
}


def _params(params: Mapping | None) -> dict:
    p = _base.merge_params(DEFAULTS, params, NAME)
    _base.check_positive(p, "n_users", "n_items_a", "n_items_b", "dim", "max_len",
                         "n_candidates", where=NAME)
    _base.check_fraction(p, "overlap_fraction", "domain_a_fraction", "cross_correlation",
                         "k_u", where=NAME)
    if p["min_len"] < 4:
        raise UsageError(f"{NAME}: min_len must be >= 4 (three held-out levels + history)")
    return p


def schema(params: Mapping | None = None) -> Schema:
    p = _params(params)
    n_items = 1 + p["n_items_a"] + p["n_items_b"]
    return Schema([
        Feature("user_id", "categorical", vocab_size=p["n_users"] + 1, description="user"),
        Feature("history_a", "sequence", vocab_size=n_items, max_len=p["max_len"], vocab="item_id",
                description="domain-A items before the target, right-aligned"),
        Feature("history_b", "sequence", vocab_size=n_items, max_len=p["max_len"], vocab="item_id",
                description="domain-B items before the target, right-aligned"),
        Feature("domain", "domain", vocab_size=2, description="domain of the target: 0 = A, 1 = B"),
        Feature("item_id", "categorical", vocab_size=n_items,
                description=f"target item; A 1..{p['n_items_a']}, B after"),
        Feature("label", "label", description="1.0 (a positive next item)"),
        Feature("observed", "label", description="1 if the user is observed in training"),
        Feature("propensity", "exposure", description="true P(observed) of the user"),
        Feature("overlap", "truth", description="1 if the user has both domains"),
    ])


def simulate(params: Mapping | None = None) -> _base.Splits:
    """Splits ``train``, ``unobserved``, ``valid``, ``test``, ``train_unbiased`` (see the
    module docstring)."""
    p = _params(params)
    sch = schema(p)
    s_struct, s_seq, s_sel = np.random.SeedSequence(p["seed"]).spawn(3)
    rng = np.random.default_rng(s_struct)
    nu, d = p["n_users"], p["dim"]
    n_items = (p["n_items_a"], p["n_items_b"])
    offset = (1, 1 + p["n_items_a"])

    # 1.-3. users, items, who has which domain
    rho = p["cross_correlation"]
    g = _base.latent(rng, nu, d)
    z = [np.sqrt(rho) * g + np.sqrt(1 - rho) * _base.latent(rng, nu, d) for _ in range(2)]
    drift = [p["drift"] * _base.latent(rng, nu, d) for _ in range(2)]
    activity = rng.standard_normal(nu)
    mu = rng.standard_normal(d)
    mu /= np.linalg.norm(mu)
    v = [_base.latent(rng, n, d) for n in n_items]
    pop = [np.exp(vi @ mu * d**0.25) for vi in v]
    pop = [w / w.sum() for w in pop]
    overlap = rng.random(nu) < p["overlap_fraction"]
    only_a = rng.random(nu) < p["domain_a_fraction"]
    has = [overlap | only_a, overlap | ~only_a]
    mult = np.exp(0.4 * activity)
    mult /= mult.mean()

    # 4. sequences, one flat array per domain sorted by (user, t)
    rng = np.random.default_rng(s_seq)
    seq_users, seq_t, seq_item, seq_len = [], [], [], []
    for dom in range(2):  # the two domains
        users = np.nonzero(has[dom])[0]
        length = p["min_len"] + rng.poisson(p["mean_extra_len"] * mult[users])
        uu = np.repeat(users, length)
        tt = _base.rank_within_groups(uu)
        tl = np.repeat(length, length)
        item = np.empty(len(uu), np.int64)
        for sl in _base.user_blocks(len(uu), p["n_candidates"] * d, 16_000_000):  # memory bound
            cand = rng.choice(n_items[dom], (sl.stop - sl.start, p["n_candidates"]), p=pop[dom])
            want = z[dom][uu[sl]] + ((tt[sl] + 1) / tl[sl])[:, None] * drift[dom][uu[sl]]
            score = p["temperature"] * np.einsum("sd,scd->sc", want, v[dom][cand])
            score += rng.gumbel(size=score.shape)
            item[sl] = cand[np.arange(len(cand)), np.argmax(score, axis=1)] + offset[dom]
        seq_users.append(uu)
        seq_t.append(tt)
        seq_item.append(item)
        seq_len.append(tl)

    # 5. open-world selection of the non-overlapping users
    sel = (g @ mu * d**0.25 + activity) / np.sqrt(2)
    rng = np.random.default_rng(s_sel)
    non, k_u, strength = ~overlap, float(p["k_u"]), p["selection_strength"]
    if non.any() and 0.0 < k_u < 1.0:
        c = _base.calibrate_intercept(strength * sel[non], k_u)
        prop_non = _base.sigmoid(c + strength * sel)
    else:  # k_u of exactly 0 or 1: nobody / everybody is observed
        prop_non = np.full(nu, k_u)
    propensity = np.where(overlap, 1.0, prop_non)
    observed = overlap | (rng.random(nu) < propensity)

    # rows: per level k, each domain's history ends before its own level-k target
    levels = []
    for k in range(3):  # train, valid, test levels
        hist, target_rows = [], []
        for dom in range(2):
            uu, tt, it, tl = seq_users[dom], seq_t[dom], seq_item[dom], seq_len[dom]
            before = tt < tl - 3 + k
            hist.append(_base.pad_right_aligned(uu[before], it[before], nu, p["max_len"]))
            is_target = tt == tl - 3 + k
            target_rows.append((uu[is_target], it[is_target], np.full(is_target.sum(), dom)))
        ru, ri, rd = (np.concatenate(a) for a in zip(*target_rows))
        levels.append(_base.cast_to_schema(sch, {
            "user_id": ru + 1,
            "history_a": hist[0][ru],
            "history_b": hist[1][ru],
            "domain": rd,
            "item_id": ri,
            "label": np.ones(len(ru)),
            "observed": observed[ru],
            "propensity": propensity[ru],
            "overlap": overlap[ru],
        }))
    train_level = levels[0]
    obs = train_level["observed"] == 1
    return {
        "train": _base.take(train_level, obs),
        "unobserved": _base.take(train_level, ~obs),
        "valid": levels[1],
        "test": levels[2],
        "train_unbiased": _unbiased_sample(train_level, overlap, observed, p["seed"]),
    }


def _unbiased_sample(train_level, overlap, observed, seed) -> _base.Columns:
    """``train_unbiased``: every overlapping user's level-0 rows plus those of as many
    non-overlapping users as were observed, drawn uniformly at random (own rng stream)."""
    rng = np.random.default_rng([int(seed), 7])
    non = np.flatnonzero(~overlap)
    n_obs = int((observed & ~overlap).sum())
    picked = overlap.copy()
    picked[rng.choice(non, n_obs, replace=False)] = True
    user = train_level["user_id"] - 1
    out = _base.take(train_level, picked[user])
    rate = n_obs / max(len(non), 1)
    out["observed"] = np.ones_like(out["observed"])
    out["propensity"] = np.where(out["overlap"] == 1, 1.0, rate).astype(out["propensity"].dtype)
    return out


class CrossDomainSequences(SimulatorBuilder):
    """TFDS builder ``cross_domain_sequences`` (see the module docstring)."""

    BUILDER_CONFIGS = _base.make_configs(CONFIGS)
    _schema_fn = staticmethod(schema)
    _simulate_fn = staticmethod(simulate)
    _defaults = DEFAULTS
    _citation = """@inproceedings{xu2024amid,
  title={Rethinking Cross-Domain Sequential Recommendation under Open-World Assumptions},
  author={Xu, Wujiang and Wu, Qitian and Wang, Runzhong and Ha, Mingming and Ma, Qiongxu and
    Chen, Linxun and Han, Bing and Yan, Junchi},
  booktitle={The Web Conference (WWW)}, year={2024}}"""
