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
users: 7.2K test users per domain, ~7.1K train rows; the negative control of
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

Open-world scenario (``open_world``, the config ``tfdebias reproduce amid`` reads by
default, and ``open_world_small`` for tests; ``scenario="open_world"``, its own random
streams, nothing above changes). It holds what AMID acts on at a measurable size:

1. ``rho = 0.9``: ``z_u^D = sqrt(rho) g_u + sqrt(1 - rho) s_u^D``; item latents of *both*
   domains are drawn around ``n_topics`` shared topic centres
   (``v_i = sqrt(w) c_topic(i) + sqrt(1 - w) e_i``, ``w = topic_weight``), so one domain's
   items say which items of the other a user likes.
2. Overlap depends on activity: ``P(overlap) = sigmoid(c + overlap_activity * a_u)``
   (mean ``overlap_fraction``). An overlapping user has a long *primary* domain
   (``min_len + Poisson(mean_extra_len * e^(0.4 a_u))`` items) and a short other one;
   a non-overlapping user's only domain is short with probability ``short_fraction``.
   A short domain has 3-5 items: 1-3 before its validation item, 0-2 before its
   training target, 2-4 before its test item.
3. Items are chosen as in step 4 above (``temperature`` 2, drift 0.3).
4. Selection of the non-overlapping users depends on the user *and on the outcome*
   (S -> O <- R, Fig. 4): ``logit = c + selection_strength * <g_u, mu> d^(1/4) +
   outcome_selection * z(log pop of her level-0 target)`` (both standardised; ``c`` sets
   the mean to ``k_u``): the users the platform observes are the mainstream ones whose
   next item was a popular one.
5. Hidden truth shipped: ``propensity`` (the true P(observed), role ``exposure``) and the
   shared interest ``g_u`` as ``interest_00``..``interest_<dim-1>`` (role ``truth``: no
   model reads them unless asked by name, as the true-interest positive control does).

Numpy checks (nothing trained; :func:`numpy_checks`, full ranking over the domain's
items, NDCG@10, mean +- standard error over test rows), made by::

    python -c "from tfdebias.datasets.synthetic import cross_domain_sequences as c; \
print(c.numpy_checks('open_world', seed=0))"

=====================================================  ===============  ===============  ===============
``open_world``                                          data seed 0      data seed 1      data seed 2
=====================================================  ===============  ===============  ===============
cross-domain headroom (true interest, unobserved n-o)  +.0382 +- .0032  +.0360 +- .0032  +.0367 +- .0031
own other-domain history (overlapping, short domain)   +.0141 +- .0043  +.0124 +- .0044  +.0137 +- .0041
selection headroom, item-kNN, all test rows            +.0008 +- .0010  +.0017 +- .0009  -.0002 +- .0010
selection headroom, item-kNN, unobserved n-o           +.0016 +- .0014  +.0020 +- .0014  -.0021 +- .0014
log-pop z of level-0 targets: train / unobserved       1.11 / 0.46      1.15 / 0.66      0.86 / 0.33
  / train_unbiased                                     0.78             0.90             0.59
train's next-item positions of non-overlapping users   0.237            0.230            0.226
=====================================================  ===============  ===============  ===============

So the cross-domain headroom is large (the hidden interest lifts the scorer from 0.096
to 0.134 on unobserved non-overlapping users, data seed 0) and an overlapping user's own
other-domain history helps her short domain; the selection shifts the observed
targets' popularity by a third of a standard deviation against a random sample, but a
history-conditioned item-kNN fitted on the random sample gains only ~0.1 NDCG points
(the selection headroom a trained backbone shows is measured by the evidence table's
floor and skyline). One reason is structural: as in the paper's open-world protocol every
overlapping user is observed, and their long primary histories hold about three quarters
of ``train``'s next-item positions; the selection only decides which quarter comes from
non-overlapping users. ``open_world``: 8,000 users, ~20 % overlapping (33 % of the test
rows), 600 + 500 items, histories cut to the last 12 items, ~4.8K train rows, ~9.6K
test rows; ``open_world_small``: 1,500 users, 200 + 160 items.
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
    # the open-world scenario (``scenario="open_world"``; unused by the closed one)
    "scenario": "closed",
    "n_topics": 24,
    "topic_weight": 0.7,
    "short_fraction": 0.75,
    "overlap_activity": 1.0,
    "outcome_selection": 1.5,
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
_OPEN = {"scenario": "open_world", "n_users": 8000, "overlap_fraction": 0.2,
         "selection_strength": 2.0, "outcome_selection": 2.5,
         "n_items_a": 600, "n_items_b": 500, "cross_correlation": 0.9, "drift": 0.3,
         "min_len": 8, "mean_extra_len": 6.0, "temperature": 2.0, "max_len": 12}
CONFIGS = {
    "small": {},
    "medium": dict(_MEDIUM),
    "small_ku75": {"k_u": 0.75},
    "medium_ku75": dict(_MEDIUM, k_u=0.75),
    "paper": dict(_PAPER),
    "paper_ku75": dict(_PAPER, k_u=0.75),
    "open_world": dict(_OPEN),
    "open_world_small": dict(_OPEN, n_users=1500, n_items_a=200, n_items_b=160),
}
#: the config ``tfdebias reproduce amid --data cross_domain_sequences`` reads
EVIDENCE_CONFIG = "open_world"
SCENARIOS = ("closed", "open_world")


def _params(params: Mapping | None) -> dict:
    p = _base.merge_params(DEFAULTS, params, NAME)
    _base.check_positive(p, "n_users", "n_items_a", "n_items_b", "dim", "max_len",
                         "n_candidates", where=NAME)
    _base.check_fraction(p, "overlap_fraction", "domain_a_fraction", "cross_correlation",
                         "k_u", where=NAME)
    if p["scenario"] not in SCENARIOS:
        raise UsageError(f"{NAME}: scenario must be one of {SCENARIOS}, got {p['scenario']!r}")
    if p["scenario"] == "open_world":
        _base.check_positive(p, "n_topics", where=NAME)
        _base.check_fraction(p, "topic_weight", "short_fraction", where=NAME)
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
    ] + ([Feature(f"interest_{j:02d}", "truth",
                  description=f"the user's shared (cross-domain) interest g_u, coordinate {j}")
          for j in range(p["dim"])] if p["scenario"] == "open_world" else []))


def _user_latents(rng, nu: int, d: int, rho: float, drift_scale: float):
    """Shared interest ``g``, the two domain interests ``z^D`` (correlation ``rho``
    with ``g``), their drifts and the users' activity, drawn in this order."""
    g = _base.latent(rng, nu, d)
    z = [np.sqrt(rho) * g + np.sqrt(1 - rho) * _base.latent(rng, nu, d) for _ in range(2)]
    drift = [drift_scale * _base.latent(rng, nu, d) for _ in range(2)]
    activity = rng.standard_normal(nu)
    return g, z, drift, activity


def simulate(params: Mapping | None = None) -> _base.Splits:
    """Splits ``train``, ``unobserved``, ``valid``, ``test``, ``train_unbiased`` (see the
    module docstring)."""
    p = _params(params)
    if p["scenario"] == "open_world":
        return _simulate_open_world(p)
    sch = schema(p)
    s_struct, s_seq, s_sel = np.random.SeedSequence(p["seed"]).spawn(3)
    rng = np.random.default_rng(s_struct)
    nu, d = p["n_users"], p["dim"]
    n_items = (p["n_items_a"], p["n_items_b"])
    offset = (1, 1 + p["n_items_a"])

    # 1.-3. users, items, who has which domain
    rho = p["cross_correlation"]
    g, z, drift, activity = _user_latents(rng, nu, d, rho, p["drift"])
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

    levels = _levels(sch, p, (seq_users, seq_t, seq_item, seq_len), observed, propensity, overlap)
    train_level = levels[0]
    obs = train_level["observed"] == 1
    return {
        "train": _base.take(train_level, obs),
        "unobserved": _base.take(train_level, ~obs),
        "valid": levels[1],
        "test": levels[2],
        "train_unbiased": _unbiased_sample(train_level, overlap, observed, p["seed"]),
    }


def _levels(sch, p, seqs, observed, propensity, overlap, truth=None) -> list:
    """The rows of the three levels (0 train, 1 valid, 2 test): per level ``k`` each
    domain's history ends before its own level-``k`` target. ``truth``: extra per-user
    columns (name -> (n_users,) array)."""
    seq_users, seq_t, seq_item, seq_len = seqs
    nu = len(observed)
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
            **{name: col[ru] for name, col in (truth or {}).items()},
        }))
    return levels


def _sequences(rng, p, users, length, z, drift, v, pop, offset):
    """One domain's sequences, flat and sorted by (user, t): ``(users, t, item, T)``.
    Step ``t`` draws ``n_candidates`` items by popularity and keeps the best of
    ``temperature * <z_u + (t+1)/T delta_u, v> + Gumbel``."""
    d = v.shape[1]
    uu = np.repeat(users, length)
    tt = _base.rank_within_groups(uu)
    tl = np.repeat(length, length)
    item = np.empty(len(uu), np.int64)
    for sl in _base.user_blocks(len(uu), p["n_candidates"] * d, 16_000_000):  # memory bound
        cand = rng.choice(len(v), (sl.stop - sl.start, p["n_candidates"]), p=pop)
        want = z[uu[sl]] + ((tt[sl] + 1) / tl[sl])[:, None] * drift[uu[sl]]
        score = p["temperature"] * np.einsum("sd,scd->sc", want, v[cand])
        score += rng.gumbel(size=score.shape)
        item[sl] = cand[np.arange(len(cand)), np.argmax(score, axis=1)] + offset
    return uu, tt, item, tl


def _simulate_open_world(p, latents: dict | None = None) -> _base.Splits:
    """The ``open_world`` scenario (module docstring, "Open-world scenario");
    ``latents``: a dict that receives the item latents ``v`` and ``pop`` (numpy checks)."""
    sch = schema(p)
    s_struct, s_seq, s_sel = np.random.SeedSequence([int(p["seed"]), 23]).spawn(3)
    rng = np.random.default_rng(s_struct)
    nu, d, k_top = p["n_users"], p["dim"], p["n_topics"]
    n_items = (p["n_items_a"], p["n_items_b"])
    offset = (1, 1 + p["n_items_a"])

    # 1. users: shared interest g, domain interests z^D (correlation rho), activity
    rho = p["cross_correlation"]
    g, z, drift, activity = _user_latents(rng, nu, d, rho, p["drift"])
    # 2. items: topics shared by the two domains, log-normal popularity along mu
    mu = rng.standard_normal(d)
    mu /= np.linalg.norm(mu)
    centers = _base.latent(rng, k_top, d)
    w = p["topic_weight"]
    v = [np.sqrt(w) * centers[rng.integers(k_top, size=n)] + np.sqrt(1 - w) * _base.latent(rng, n, d)
         for n in n_items]
    pop = [np.exp(vi @ mu * d**0.25) for vi in v]
    pop = [x / x.sum() for x in pop]
    # 3. overlap depends on activity; a primary (long) domain; short histories
    c_o = _base.calibrate_intercept(p["overlap_activity"] * activity, p["overlap_fraction"])
    overlap = rng.random(nu) < _base.sigmoid(c_o + p["overlap_activity"] * activity)
    primary = (rng.random(nu) >= p["domain_a_fraction"]).astype(np.int64)  # 0 = A
    short_non = rng.random(nu) < p["short_fraction"]
    short_len = 2 + rng.integers(1, 4, size=nu)  # 1-3 items before the level-1 target
    mult = np.exp(0.4 * activity)
    mult /= mult.mean()
    long_len = p["min_len"] + rng.poisson(p["mean_extra_len"] * mult)

    # 4. sequences
    rng = np.random.default_rng(s_seq)
    seqs = ([], [], [], [])
    for dom in range(2):
        has = (primary == dom) | overlap
        users = np.flatnonzero(has)
        short = np.where(overlap[users], primary[users] != dom, short_non[users])
        length = np.where(short, short_len[users], long_len[users])
        for acc, x in zip(seqs, _sequences(rng, p, users, length, z[dom], drift[dom], v[dom],
                                           pop[dom], offset[dom])):
            acc.append(x)

    # 5. selection of the non-overlapping users on the user (how mainstream) and on the
    # outcome: the popularity of her level-0 target item (S -> O <- R)
    uu, tt, it, tl = (np.concatenate(a) for a in seqs)
    first = tt == tl - 3  # the level-0 targets
    log_pop = np.log(np.concatenate(pop))  # by item id - 1
    target_pop = np.zeros(nu)
    target_pop[uu[first]] = log_pop[it[first] - 1]  # one domain per non-overlapping user
    non = ~overlap
    outcome = (target_pop - target_pop[non].mean()) / max(target_pop[non].std(), 1e-9)
    user_side = g @ mu * d**0.25  # how mainstream her shared interest is (unit sd)
    logit = p["selection_strength"] * user_side + p["outcome_selection"] * outcome
    rng = np.random.default_rng(s_sel)
    k_u = float(p["k_u"])
    if non.any() and 0.0 < k_u < 1.0:
        prop_non = _base.sigmoid(_base.calibrate_intercept(logit[non], k_u) + logit)
    else:
        prop_non = np.full(nu, k_u)
    propensity = np.where(overlap, 1.0, prop_non)
    observed = overlap | (rng.random(nu) < propensity)

    if latents is not None:
        latents.update(v=v, pop=pop, z=z, g=g)
    truth = {f"interest_{j:02d}": g[:, j] for j in range(d)}
    levels = _levels(sch, p, seqs, observed, propensity, overlap, truth)
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


def numpy_checks(config: str = "open_world", seed: int = 0, k: int = 10) -> dict:
    """The two headrooms of an ``open_world`` config, measured in numpy (nothing trained).

    Every test row's positive is ranked against all items of its domain (NDCG@k).

    * **Cross-domain headroom** (what the other domain can add): the scorer
      ``temperature * <u, v_i> + log pop_i`` with the simulator's true item latents and
      popularity, where ``u`` is what the scorer knows of the user: ``hist`` =
      ``sum_t (v_t - E v) / (n + 3)`` over her target-domain history (a shrunk estimate of
      her interest from her own items), ``hist+other`` adds ``rho`` times the same over
      her other-domain history, ``hist+interest`` adds the hidden shared interest
      ``sqrt(rho) g_u``. Headroom = NDCG(``hist+interest``) - NDCG(``hist``) on the
      unobserved non-overlapping users; ``own_other_domain_gain`` = NDCG(``hist+other``) -
      NDCG(``hist``) on the overlapping users' rows of their short domain.
    * **Selection headroom** (what the selection removes): an item-kNN (cosine
      co-occurrence of the training users' items, scored against the test row's two
      histories) fitted on ``train_unbiased`` minus the same fitted on ``train``, over
      all test rows and on the unobserved non-overlapping users.
    Also the mean standardised log-popularity of the level-0 targets of ``train``,
    ``train_unbiased`` and ``test`` (the outcome side of the selection), and the share of
    ``train``'s next-item positions (own-domain history items and targets) that belong to
    non-overlapping users, the only part of ``train`` the selection changes."""
    p = _params(dict(CONFIGS[config], seed=seed))
    if p["scenario"] != "open_world":
        raise UsageError(f"{NAME}: numpy_checks needs an open_world config, got {config!r}")
    lat: dict = {}
    sp = _simulate_open_world(p, lat)
    v_all = np.concatenate([np.zeros((1, p["dim"]))] + lat["v"])  # by item id (0 = pad)
    log_pop = np.log(np.concatenate([[1.0]] + lat["pop"]))
    n_a, n_all = p["n_items_a"], len(v_all)
    test = sp["test"]
    dom = test["domain"]
    overlap, observed = test["overlap"] == 1, test["observed"] == 1
    unob = ~overlap & ~observed
    temp, rho = p["temperature"], p["cross_correlation"]
    v_bar = [pop_d @ v_d for pop_d, v_d in zip(lat["pop"], lat["v"])]  # E[v] of a draw

    def estimate(name, z):
        ids = test[name]
        n = (ids > 0).sum(1)
        return ((v_all[ids] - v_bar[z]) * (ids > 0)[..., None]).sum(1) / (n + 3.0)[:, None], n

    (ea, na), (eb, nb) = estimate("history_a", 0), estimate("history_b", 1)
    a_row = (dom == 0)[:, None]
    own, other = np.where(a_row, ea, eb), np.where(a_row, eb, ea)
    n_own = np.where(dom == 0, na, nb)
    g = np.stack([test[f"interest_{j:02d}"] for j in range(p["dim"])], 1)

    def ndcg(scores):  # scores (rows, n_all) by item id
        out = np.empty(len(dom))
        for z, ids in ((0, np.arange(1, n_a + 1)), (1, np.arange(n_a + 1, n_all))):
            sel = dom == z
            s = scores(sel, ids)
            pos = s[np.arange(sel.sum()), test["item_id"][sel] - ids[0]]
            rank = (s > pos[:, None]).sum(1)
            out[sel] = np.where(rank < k, 1.0 / np.log2(rank + 2.0), 0.0)
        return out

    def latent_scorer(u):
        return lambda sel, ids: temp * u[sel] @ v_all[ids].T + log_pop[ids][None]

    def knn_scorer(split):
        cols = sp[split]
        items = np.concatenate([cols["item_id"][:, None], cols["history_a"], cols["history_b"]], 1)
        m = np.zeros((int(cols["user_id"].max()) + 1, n_all))
        m[np.repeat(cols["user_id"], items.shape[1])[items.reshape(-1) > 0], items[items > 0]] = 1.0
        co = m.T @ m
        norm = np.sqrt(np.diag(co)) + 1e-9
        np.fill_diagonal(co, 0.0)
        sim = co / norm[:, None] / norm[None]
        hist = np.concatenate([test["history_a"], test["history_b"]], 1)
        h = np.zeros((len(hist), n_all))
        np.put_along_axis(h, hist, 1.0, 1)
        h[:, 0] = 0.0
        s_all = h @ sim + 1e-6 * m.sum(0)[None]  # ties broken by popularity
        return lambda sel, ids: s_all[sel][:, ids]

    res = {"hist": ndcg(latent_scorer(own)), "hist+other": ndcg(latent_scorer(own + rho * other)),
           "hist+interest": ndcg(latent_scorer(own + np.sqrt(rho) * g)),
           "item-kNN on train": ndcg(knn_scorer("train")),
           "item-kNN on train_unbiased": ndcg(knn_scorer("train_unbiased"))}
    groups = {"overlapping": overlap, "observed_non_overlapping": ~overlap & observed,
              "unobserved_non_overlapping": unob}
    out = {"ndcg": {name: {"all": round(float(x.mean()), 4),
                           **{g_: round(float(x[m].mean()), 4) for g_, m in groups.items()}}
                    for name, x in res.items()}}

    def diff(a, b, sel):
        d_ = res[a][sel] - res[b][sel]
        return {"mean": round(float(d_.mean()), 4), "se": round(float(d_.std(ddof=1) / np.sqrt(sel.sum())), 4)}

    short_ov = overlap & (n_own <= 4)  # the test rows of an overlapping user's short domain
    out["cross_domain_headroom"] = diff("hist+interest", "hist", unob)
    out["own_other_domain_gain"] = diff("hist+other", "hist", short_ov)
    every = np.ones(len(dom), bool)
    out["selection_headroom_knn"] = diff("item-kNN on train_unbiased", "item-kNN on train", every)
    out["selection_headroom_knn_unobserved"] = diff("item-kNN on train_unbiased", "item-kNN on train", unob)
    lp = np.concatenate([np.log(x) for x in lat["pop"]])
    out["target_log_pop_z"] = {s_: round(float(((log_pop[sp[s_]["item_id"]] - lp.mean()) / lp.std()).mean()), 3)
                               for s_ in ("train", "unobserved", "train_unbiased")}
    def own_items(cols):  # items in each row's target-domain history
        return np.where(cols["domain"] == 0, (cols["history_a"] > 0).sum(1),
                        (cols["history_b"] > 0).sum(1))

    out["valid_rows_with_1_to_3_own_items"] = round(float((own_items(sp["valid"]) <= 3).mean()), 3)
    out["overlapping_test_rows"] = round(float(overlap.mean()), 3)
    tr = sp["train"]
    n_pos = own_items(tr) + 1  # next-item positions of a train row: its history + its target
    out["train_positions_non_overlapping"] = round(float(n_pos[tr["overlap"] == 0].sum() / n_pos.sum()), 3)
    out["rows"] = {s_: int(len(c_["item_id"])) for s_, c_ in sp.items()}
    return out


class CrossDomainSequences(SimulatorBuilder):
    """TFDS builder ``cross_domain_sequences`` (see the module docstring)."""

    BUILDER_CONFIGS = _base.make_configs(CONFIGS)
    EVIDENCE_CONFIG = EVIDENCE_CONFIG
    _schema_fn = staticmethod(schema)
    _simulate_fn = staticmethod(simulate)
    _defaults = DEFAULTS
    _citation = """@inproceedings{xu2024amid,
  title={Rethinking Cross-Domain Sequential Recommendation under Open-World Assumptions},
  author={Xu, Wujiang and Wu, Qitian and Wang, Runzhong and Ha, Mingming and Ma, Qiongxu and
    Chen, Linxun and Han, Bing and Yan, Junchi},
  booktitle={The Web Conference (WWW)}, year={2024}}"""
