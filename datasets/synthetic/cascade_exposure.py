"""``cascade_exposure``: labels only where an earlier stage showed the item (WeChat / TikTok).

Frozen at 1.0.0: the generator below never changes under this version.

Stands in for the **WeChat Channels** (WeChat Big Data Challenge 2021) and **TikTok**
(ICME 2019) short-video logs as DAMCAR uses them (paper 001, Sec. 3 and Sec. 5.1.1,
Table 1: WeChat 16,904 users, 42,031 items, 1,639,527 interactions; visual, acoustic
and textual item features; label = finish playing; per-user 6:2:2 time split). The
problem it poses (Sec. 3): the retrieval model is trained on the exposed set
``S_exp`` (``e = 1``) chosen by the earlier stages, but must score the whole
``U x I``, mostly unexposed: sample selection bias (SSB).

Generative story (one draw per ``seed``):

1. Users have a latent taste ``x_u``; authors have a latent style; an item's latent
   ``y_i`` lies near its author's style. Items also have a quality ``q_i``, a
   popularity ``pop_i = 0.5 q_i + N(0, 1)`` and a duration (seconds, log-normal,
   median ~27 s, clipped to [3, 300]).
2. Content vectors are noisy views of ``y_i``: ``item_visual = tanh(y_i W_v + 0.5 n)``
   (32-d), ``item_acoustic`` (16-d) and ``item_textual`` (16-d) alike.
3. True finish probability ``relevance = sigmoid(b + alpha <x_u, y_i> + beta q_i
   - delta log(duration / 27 s))``.
4. The earlier-stage exposure policy scores pairs with popularity and its *own*,
   imperfect preference model ``x_u^pol = rho x_u + sqrt(1 - rho^2) x'_u``:
   ``propensity = sigmoid(c + gamma_pop pop_i + gamma_pref <x_u^pol, y_i>)``, ``c`` set
   so the mean is ``exposures_per_user / n_items``. Every pair is exposed
   independently with that probability.
5. Exposed pairs get a day (uniform over ``1..n_days``) and a time within it;
   ``finish ~ Bernoulli(relevance)``; ``play_seconds = duration * (1 + replay)`` when
   finished (a replay with probability 0.2, length Exp(0.5) durations), else
   ``duration * Beta(1 + 4 relevance, 2)`` capped below the duration, so
   ``finish == (play_seconds >= duration)`` as in WeChat's definition.
6. Oracle: for every user with a test row, ``oracle_per_user`` random unexposed items
   (duplicates dropped), plus one row for each item that was never exposed (paired
   with a random test user), with labels from the same true model and ``day`` = that
   user's last test day.

Bias it injects: sample selection. Exposure favours popular items and what a
different preference model likes, so exposed pairs are more relevant on average than
the rest and their distribution over items differs from the corpus.

Ground truth shipped: ``propensity`` (true exposure probability, oracle rows too),
``relevance`` (true finish probability).

Splits: ``train``/``valid``/``test`` = exposed pairs split per user chronologically
6:2:2 (the first ``round(0.6 n)`` of a user's ``n`` exposures, the next up to
``round(0.8 n)``, the rest); ``oracle`` = unexposed pairs of the test users with labels
drawn from the true model (what SSB hides). Every item appears in some split.

Configs: ``small`` (default; ~18k exposures + ~9k oracle rows) and ``paper``
(WeChat-sized: 16,904 users, 42,031 items, ~97 exposures per user = ~1.64M).
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from tfdebias.errors import UsageError
from tfdebias.schema import Feature, Schema

from . import _base
from ._base import SimulatorBuilder

NAME = "cascade_exposure"

DEFAULTS = {
    "seed": 0,
    "n_users": 600,
    "n_items": 1500,
    "n_authors": 150,
    "dim": 16,
    "visual_width": 32,
    "acoustic_width": 16,
    "textual_width": 16,
    "n_days": 14,
    "exposures_per_user": 30.0,
    "oracle_per_user": 15,
    "finish_intercept": -0.6,  # b
    "preference_finish": 1.2,  # alpha
    "quality_finish": 0.5,  # beta
    "duration_finish": 0.6,  # delta
    "popularity_exposure": 1.0,  # gamma_pop
    "preference_exposure": 1.0,  # gamma_pref
    "policy_alignment": 0.5,  # rho
    "popularity_exponent": 1.0,  # Zipf exponent of items per author
}

CONFIGS = {
    "small": {},
    "paper": {
        "n_users": 16904,
        "n_items": 42031,
        "n_authors": 7400,
        "dim": 32,
        "exposures_per_user": 97.0,
        "oracle_per_user": 50,
    },
}

_MEDIAN_DURATION = 27.0


def _params(params: Mapping | None) -> dict:
    p = _base.merge_params(DEFAULTS, params, NAME)
    _base.check_positive(
        p, "n_users", "n_items", "n_authors", "dim", "visual_width", "acoustic_width",
        "textual_width", "n_days", "exposures_per_user", where=NAME,
    )
    _base.check_fraction(p, "policy_alignment", where=NAME)
    if p["exposures_per_user"] >= p["n_items"]:
        raise UsageError(f"{NAME}: exposures_per_user must be below n_items")
    return p


def schema(params: Mapping | None = None) -> Schema:
    p = _params(params)
    return Schema([
        Feature("user_id", "categorical", vocab_size=p["n_users"] + 1, description="user"),
        Feature("item_id", "categorical", vocab_size=p["n_items"] + 1, description="video"),
        Feature("author_id", "categorical", vocab_size=p["n_authors"] + 1, description="author"),
        Feature("item_visual", "vector", width=p["visual_width"], description="visual embedding"),
        Feature("item_acoustic", "vector", width=p["acoustic_width"],
                description="acoustic embedding"),
        Feature("item_textual", "vector", width=p["textual_width"], description="text embedding"),
        Feature("duration", "dense", description="video length in seconds"),
        Feature("day", "categorical", vocab_size=p["n_days"] + 1, description="day 1..n_days"),
        Feature("finish", "label", description="played to the end (Bernoulli(relevance))"),
        Feature("play_seconds", "label", description="watch time in seconds"),
        Feature("propensity", "exposure", description="true P(exposed) by the earlier stage"),
        Feature("relevance", "truth", description="true P(finish)"),
    ])


def simulate(params: Mapping | None = None) -> _base.Splits:
    """Splits ``train``, ``valid``, ``test``, ``oracle`` (see the module docstring)."""
    p = _params(params)
    sch = schema(p)
    s_struct, s_pilot, s_expo, s_rows = np.random.SeedSequence(p["seed"]).spawn(4)
    rng = np.random.default_rng(s_struct)
    nu, ni, d = p["n_users"], p["n_items"], p["dim"]

    # 1.-2. users, authors, items and their content vectors
    x = _base.latent(rng, nu, d)
    rho = p["policy_alignment"]
    x_pol = rho * x + np.sqrt(1 - rho**2) * _base.latent(rng, nu, d)
    style = _base.latent(rng, p["n_authors"], d)
    author = rng.choice(p["n_authors"], ni, p=_base.zipf_weights(
        p["n_authors"], p["popularity_exponent"], rng))
    y = 0.6 * style[author] + 0.8 * _base.latent(rng, ni, d)
    quality = rng.standard_normal(ni)
    pop = 0.5 * quality + rng.standard_normal(ni)
    duration = np.clip(np.exp(np.log(_MEDIAN_DURATION) + 0.6 * rng.standard_normal(ni)), 3, 300)
    vectors = {}
    for name in ("visual", "acoustic", "textual"):
        width = p[f"{name}_width"]
        proj = rng.standard_normal((d, width)) / np.sqrt(d) * d**0.25
        vectors[f"item_{name}"] = np.tanh(y @ proj + 0.5 * rng.standard_normal((ni, width)))

    def relevance(uu, ii):
        return _base.sigmoid(
            p["finish_intercept"] + p["preference_finish"] * np.einsum("nd,nd->n", x[uu], y[ii])
            + p["quality_finish"] * quality[ii]
            - p["duration_finish"] * np.log(duration[ii] / _MEDIAN_DURATION))

    # 4. the exposure policy; intercept calibrated on a pilot sample of pairs
    def policy_logit(pref, ii):
        return p["popularity_exposure"] * pop[ii] + p["preference_exposure"] * pref

    pilot = np.random.default_rng(s_pilot)
    pu, pi = pilot.integers(0, nu, 200_000), pilot.integers(0, ni, 200_000)
    c = _base.calibrate_intercept(
        policy_logit(np.einsum("nd,nd->n", x_pol[pu], y[pi]), pi), p["exposures_per_user"] / ni)
    rng_e = np.random.default_rng(s_expo)
    eu, ei = [], []
    for sl in _base.user_blocks(nu, ni):
        prop = _base.sigmoid(c + policy_logit(x_pol[sl] @ y.T, np.arange(ni)[None, :]))
        r, col = np.nonzero(rng_e.random(prop.shape) < prop)
        eu.append(r + sl.start)
        ei.append(col)
    eu, ei = np.concatenate(eu), np.concatenate(ei)

    def propensity(uu, ii):
        return _base.sigmoid(c + policy_logit(np.einsum("nd,nd->n", x_pol[uu], y[ii]), ii))

    # 5. time and the per-user chronological 6:2:2 split
    rng = np.random.default_rng(s_rows)
    day = rng.integers(1, p["n_days"] + 1, len(eu))
    order = np.lexsort((day + rng.random(len(eu)), eu))
    eu, ei, day = eu[order], ei[order], day[order]
    rank = _base.rank_within_groups(eu)
    n_u = np.bincount(eu, minlength=nu)[eu]
    part = np.where(rank < np.round(0.6 * n_u), 0, np.where(rank < np.round(0.8 * n_u), 1, 2))

    # 6. the oracle: unexposed pairs of the test users, and every never-exposed item
    test_users = np.unique(eu[part == 2])
    ou = np.repeat(test_users, p["oracle_per_user"])
    oi = rng.integers(0, ni, len(ou))
    unseen = np.nonzero(np.bincount(ei, minlength=ni) == 0)[0]
    if len(test_users):
        ou = np.concatenate([ou, rng.choice(test_users, len(unseen))])
        oi = np.concatenate([oi, unseen])
    key = np.unique(ou.astype(np.int64) * ni + oi)
    key = key[~np.isin(key, eu.astype(np.int64) * ni + ei)]
    ou, oi = key // ni, key % ni
    last_test_day = np.zeros(nu, np.int64)
    np.maximum.at(last_test_day, eu[part == 2], day[part == 2])

    def rows(uu, ii, dd):
        rel = relevance(uu, ii)
        finish = rng.random(len(rel)) < rel
        replay = (rng.random(len(rel)) < 0.2) * rng.exponential(0.5, len(rel))
        frac = np.minimum(rng.beta(1 + 4 * rel, 2.0), 0.999)
        cols = {
            "user_id": uu + 1,
            "item_id": ii + 1,
            "author_id": author[ii] + 1,
            **{k: v[ii] for k, v in vectors.items()},
            "duration": duration[ii],
            "day": dd,
            "finish": finish,
            "play_seconds": duration[ii] * np.where(finish, 1.0 + replay, frac),
            "propensity": propensity(uu, ii),
            "relevance": rel,
        }
        return _base.cast_to_schema(sch, cols)

    exposed = rows(eu, ei, day)
    out = {split: _base.take(exposed, part == k)
           for k, split in enumerate(("train", "valid", "test"))}
    out["oracle"] = rows(ou, oi, last_test_day[ou])
    return out


class CascadeExposure(SimulatorBuilder):
    """TFDS builder ``cascade_exposure`` (see the module docstring)."""

    BUILDER_CONFIGS = _base.make_configs(CONFIGS)
    _schema_fn = staticmethod(schema)
    _simulate_fn = staticmethod(simulate)
    _defaults = DEFAULTS
    _citation = """@inproceedings{lin2024damcar,
  title={Mitigating Sample Selection Bias with Robust Domain Adaption in Multimedia Recommendation},
  author={Lin, Jiaye and Li, Qing and Xie, Guorui and Guan, Zhongxu and Jiang, Yong and
    Xu, Ting and Zhang, Zhong and Zhao, Peilin},
  booktitle={ACM Multimedia}, year={2024}}"""
