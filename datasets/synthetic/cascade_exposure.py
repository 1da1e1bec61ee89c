"""``cascade_exposure``: labels only where an earlier stage showed the item (WeChat / TikTok).

Frozen at 1.1.0: the generator below never changes under this version (1.1.0 added the
split ``train_unbiased`` and the ``medium`` config; every 1.0.0 split keeps its values bit
for bit, pinned by ``tests/test_damcar_evidence.py``).

Stands in for the **WeChat Channels** (WeChat Big Data Challenge 2021) and **TikTok**
(ICME 2019) short-video logs as DAMCAR uses them (the DAMCAR paper, Sec. 3 and Sec. 5.1.1,
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
7. Unbiased sample (``train_unbiased``, its own rng stream ``default_rng([seed, 7])``,
   drawn last so the splits above do not change): the train log's rows with the item
   replaced by one drawn uniformly from the corpus (uniform exposure; pairs held out in
   ``test`` or ``oracle`` are redrawn, so no evaluation label leaks into it) and the
   labels drawn anew from the true model (oracle labels). Same users, days and size as
   ``train``: what the log would be without sample selection. It is the skyline's
   training set in ``tfdebias reproduce damcar``.

Scenario ``communities`` (configs ``communities``, DAMCAR's evidence default, and
``communities_small`` for tests; ``params["scenario"] = "communities"``; the
``independent`` default is the frozen generator above, so ``small``, ``medium`` and
``paper`` are unchanged). Step 1 changes only: ``n_communities`` centres ``m_k``; each
user and each author belongs to a uniformly drawn community, and a user's taste (an
author's style) is ``sqrt(s) m_k + sqrt(1 - s) n`` with ``s = community_strength``, so
users of one community like the same authors' items and a walk on the exposure graph
stays near its start. The configs also make unexposed pairs mostly irrelevant
(``finish_intercept`` -2) and the policy rely on its own view of the taste
(``preference_exposure`` 2, ``policy_alignment`` 0.7, ``popularity_exposure`` 0.3):
aligned with relevance but not equal to it. ``communities``: 3,000 users, 3,000 items,
300 authors, 10 communities (strength 0.9), ~100 exposures per user (~181k train
rows), 100 oracle pairs per user; builds in ~2 s. The truth of every pair is
:func:`truth` (as above), which the DAMCAR protocol uses to grade every unexposed item.

Measured without training (``communities``, seed 0; ``python benchmarks/random_walk.py
--scenario communities``): exposed pairs finish at 0.644, random unexposed pairs have
true P(finish) 0.256; the policy's and the relevance's logits correlate at 0.71 over
random pairs. The random walk's ``S_sam`` (Eq. (1)-(3) on the train log, H = 50) has
P(relevant) 0.588 at R = 3 (1,626 pairs), 0.482 at R = 5 (7,221), 0.469 at R = 7 /
H = 100 (13,658) and 0.342 at R = 25 (124,609 pairs over 2,747 items), against 0.256 for
random unexposed pairs: the walk finds relevant never-shown pairs, more precisely at a
short radius, where Eq. (3)'s threshold leaves few pairs. Recall@100 over the corpus
(train/valid exposures masked) of the never-shown oracle positives / of each user's true
top-50 never-shown items / of the exposed test positives: true relevance 0.118 / 1.000
/ 0.464, the policy's own score 0.089 / 0.484 / 0.618, item-kNN 0.098 / 0.669 / 0.434,
popularity 0.051 / 0.176 / 0.142 (random ~0.033): copying the policy wins the exposed
group (and the mixed one, 0.263 vs 0.235) but loses both unexposed groups.

Bias it injects: sample selection. Exposure favours popular items and what a
different preference model likes, so exposed pairs are more relevant on average than
the rest and their distribution over items differs from the corpus.

Ground truth shipped: ``propensity`` (true exposure probability under the logging
policy, oracle and unbiased rows too), ``relevance`` (true finish probability). The
truth of *every* pair, exposed or not, is rebuilt from the parameters by
:func:`truth` (``truth(params).relevance(user_ids, item_ids)``, ``relevance_block(user_ids)``
over the whole corpus): a protocol ranks the corpus by it without a dense oracle split.

Splits: ``train``/``valid``/``test`` = exposed pairs split per user chronologically
6:2:2 (the first ``round(0.6 n)`` of a user's ``n`` exposures, the next up to
``round(0.8 n)``, the rest); ``oracle`` = unexposed pairs of the test users with labels
drawn from the true model (what SSB hides); ``train_unbiased`` (step 7). Every item
appears in some split.

Configs: ``small`` (default; ~18k exposures + ~9k oracle rows), ``medium`` (the
earlier evidence default, now the control: no community structure, sized for
evidence tables: 3,200 users, 3,000 items, ~100 exposures per user: ~192k train rows,
~60 per user; 3,200 test users, ~153k oracle rows; builds in ~2.5 s of CPU for ~670k
rows) and ``paper`` (WeChat-sized: 16,904 users, 42,031 items, ~97 exposures per user =
~1.64M).

Measured without training (``medium``, seed 0): exposed train rows have mean relevance
0.525 against 0.393 for ``train_unbiased``; per-user recall@100 over the corpus (train
and valid exposures masked) of the oracle positives (never-shown pairs): true relevance
0.080, the policy's own score 0.049, popularity 0.044, random 0.033; of the exposed test
positives: policy 0.374, popularity 0.220, true relevance 0.174 (SE 0.001-0.003).
"""

from __future__ import annotations

import dataclasses
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
    # the "communities" scenario (new configs only; the default "independent" is the
    # frozen 1.0.0/1.1.0 generator and ignores the two parameters below)
    "scenario": "independent",
    "n_communities": 20,
    "community_strength": 0.8,  # share of a taste's / a style's variance set by its community
}

_COMMUNITIES = {
    "scenario": "communities",
    "n_communities": 10,
    "community_strength": 0.9,
    "policy_alignment": 0.7,
    "finish_intercept": -2.0,
    "preference_finish": 1.5,
    "popularity_exposure": 0.3,
    "preference_exposure": 2.0,
}

CONFIGS = {
    "small": {},
    # sized for evidence tables: 3,200 test users (per-user recall@100 SE ~0.001-0.003),
    # ~60 train exposures per user, ~64 uniform-exposure rows per item in train_unbiased
    "medium": {
        "n_users": 3200,
        "n_items": 3000,
        "n_authors": 300,
        "exposures_per_user": 100.0,
        "oracle_per_user": 50,
    },
    # the "communities" scenario (DAMCAR's evidence default, EVIDENCE_CONFIG): tastes
    # cluster in 10 communities, ~100 exposures per user, a policy aligned with but not
    # equal to relevance (logit correlation ~0.7), unexposed pairs mostly irrelevant
    "communities": {
        **_COMMUNITIES,
        "n_users": 3000,
        "n_items": 3000,
        "n_authors": 300,
        "exposures_per_user": 100.0,
        "oracle_per_user": 100,
    },
    "communities_small": {
        **_COMMUNITIES,
        "n_users": 400,
        "n_items": 600,
        "n_authors": 60,
        "exposures_per_user": 60.0,
        "oracle_per_user": 60,
    },
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


SCENARIOS = ("independent", "communities")


def _params(params: Mapping | None) -> dict:
    p = _base.merge_params(DEFAULTS, params, NAME)
    if p["scenario"] not in SCENARIOS:
        raise UsageError(f"{NAME}: scenario must be one of {SCENARIOS}, got {p['scenario']!r}")
    _base.check_positive(p, "n_communities", where=NAME)
    _base.check_fraction(p, "community_strength", where=NAME)
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


@dataclasses.dataclass
class Truth:
    """The true model of one draw (steps 1.-4.): what ``simulate`` samples labels and
    exposures from. Ids are the data's, 1-based (``user_id``, ``item_id``).

    :meth:`relevance` is the true ``P(finish)`` of any (user, item) pair, exposed or
    not; :meth:`relevance_block` scores users against every item (columns = item ids
    1..n_items), which is how a protocol ranks the corpus by the truth. Rebuilt from the
    parameters alone (:func:`truth`), so a consumer of the written data can score pairs
    that no split holds.
    """

    params: dict
    x: np.ndarray  # (n_users, dim) user tastes
    x_pol: np.ndarray  # (n_users, dim) the policy's view of them
    y: np.ndarray  # (n_items, dim) item latents
    author: np.ndarray  # (n_items,) 0-based author of each item
    quality: np.ndarray
    pop: np.ndarray
    duration: np.ndarray
    vectors: dict  # item_visual / item_acoustic / item_textual, (n_items, width)
    intercept: float  # c: the exposure policy's calibrated intercept

    def _logit(self, pref, ii):
        p = self.params
        return (p["finish_intercept"] + p["preference_finish"] * pref
                + p["quality_finish"] * self.quality[ii]
                - p["duration_finish"] * np.log(self.duration[ii] / _MEDIAN_DURATION))

    def relevance0(self, uu, ii) -> np.ndarray:
        """True P(finish) of 0-based pairs."""
        return _base.sigmoid(self._logit(np.einsum("nd,nd->n", self.x[uu], self.y[ii]), ii))

    def propensity0(self, uu, ii) -> np.ndarray:
        """True P(exposed) of 0-based pairs."""
        p = self.params
        pref = np.einsum("nd,nd->n", self.x_pol[uu], self.y[ii])
        return _base.sigmoid(self.intercept + (p["popularity_exposure"] * self.pop[ii]
                                               + p["preference_exposure"] * pref))

    def relevance(self, user_ids, item_ids) -> np.ndarray:
        """True P(finish) of pairs given by 1-based ids."""
        return self.relevance0(np.asarray(user_ids, np.int64) - 1,
                               np.asarray(item_ids, np.int64) - 1)

    def relevance_block(self, user_ids) -> np.ndarray:
        """``(len(user_ids), n_items)`` true P(finish); column ``j`` is item id ``j + 1``."""
        uu = np.asarray(user_ids, np.int64) - 1
        ii = np.arange(len(self.y))[None, :]
        return _base.sigmoid(self._logit(self.x[uu] @ self.y.T, ii))

    def propensity_block(self, user_ids) -> np.ndarray:
        """``(len(user_ids), n_items)`` true P(exposed) under the logging policy."""
        p = self.params
        uu = np.asarray(user_ids, np.int64) - 1
        return _base.sigmoid(self.intercept + p["popularity_exposure"] * self.pop[None, :]
                             + p["preference_exposure"] * (self.x_pol[uu] @ self.y.T))


def _communities(p: dict, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Tastes and author styles of the ``communities`` scenario: ``n_communities``
    centres ``m_k``; user ``u`` (author ``a``) belongs to a uniformly drawn community
    and its taste (style) is ``sqrt(s) m_k + sqrt(1 - s) n`` with ``s =
    community_strength``, so people of one community like the same authors' items."""
    nu, d, k = p["n_users"], p["dim"], p["n_communities"]
    s = p["community_strength"]
    centre = _base.latent(rng, k, d)
    cu = rng.integers(0, k, nu)
    ca = rng.integers(0, k, p["n_authors"])
    x = np.sqrt(s) * centre[cu] + np.sqrt(1 - s) * _base.latent(rng, nu, d)
    style = np.sqrt(s) * centre[ca] + np.sqrt(1 - s) * _base.latent(rng, p["n_authors"], d)
    return x, style


def _truth(p: dict) -> tuple[Truth, np.random.SeedSequence, np.random.SeedSequence]:
    """Steps 1.-4. (structure and the policy's intercept) and the two seed streams that
    ``simulate`` draws exposures and rows from. The draw order is frozen."""
    s_struct, s_pilot, s_expo, s_rows = np.random.SeedSequence(p["seed"]).spawn(4)
    rng = np.random.default_rng(s_struct)
    nu, ni, d = p["n_users"], p["n_items"], p["dim"]

    # 1.-2. users, authors, items and their content vectors
    if p["scenario"] == "communities":
        x, style = _communities(p, rng)
        rho = p["policy_alignment"]
        x_pol = rho * x + np.sqrt(1 - rho**2) * _base.latent(rng, nu, d)
    else:  # "independent": the frozen draw order of 1.0.0 / 1.1.0
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

    # 4. the exposure policy; intercept calibrated on a pilot sample of pairs
    pilot = np.random.default_rng(s_pilot)
    pu, pi = pilot.integers(0, nu, 200_000), pilot.integers(0, ni, 200_000)
    c = _base.calibrate_intercept(
        p["popularity_exposure"] * pop[pi]
        + p["preference_exposure"] * np.einsum("nd,nd->n", x_pol[pu], y[pi]),
        p["exposures_per_user"] / ni)
    truth = Truth(p, x, x_pol, y, author, quality, pop, duration, vectors, c)
    return truth, s_expo, s_rows


def truth(params: Mapping | None = None) -> Truth:
    """The true model of the draw ``simulate(params)`` makes (see :class:`Truth`)."""
    return _truth(_params(params))[0]


def simulate(params: Mapping | None = None) -> _base.Splits:
    """Splits ``train``, ``valid``, ``test``, ``oracle``, ``train_unbiased`` (see the
    module docstring)."""
    p = _params(params)
    sch = schema(p)
    t, s_expo, s_rows = _truth(p)
    nu, ni = p["n_users"], p["n_items"]
    author, duration, vectors = t.author, t.duration, t.vectors

    # 4. every pair is exposed independently with its propensity
    rng_e = np.random.default_rng(s_expo)
    eu, ei = [], []
    for sl in _base.user_blocks(nu, ni):
        prop = _base.sigmoid(t.intercept + (p["popularity_exposure"] * t.pop[None, :]
                                            + p["preference_exposure"] * (t.x_pol[sl] @ t.y.T)))
        r, col = np.nonzero(rng_e.random(prop.shape) < prop)
        eu.append(r + sl.start)
        ei.append(col)
    eu, ei = np.concatenate(eu), np.concatenate(ei)

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

    def rows(uu, ii, dd, rng):
        rel = t.relevance0(uu, ii)
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
            "propensity": t.propensity0(uu, ii),
            "relevance": rel,
        }
        return _base.cast_to_schema(sch, cols)

    exposed = rows(eu, ei, day, rng)
    out = {split: _base.take(exposed, part == k)
           for k, split in enumerate(("train", "valid", "test"))}
    out["oracle"] = rows(ou, oi, last_test_day[ou], rng)

    # 7. the unbiased sample: train's users and days, items uniform, oracle labels. Its
    # own rng stream, drawn last, so every split above is the same with or without it.
    rng_u = np.random.default_rng([int(p["seed"]), 7])
    uu, dd = eu[part == 0], day[part == 0]
    held = np.unique(np.concatenate([eu[part == 2].astype(np.int64) * ni + ei[part == 2], key]))
    ii = rng_u.integers(0, ni, len(uu))
    for _ in range(50):  # redraw pairs that are held out for evaluation (test, oracle)
        bad = np.isin(uu.astype(np.int64) * ni + ii, held)
        if not bad.any():
            break
        ii[bad] = rng_u.integers(0, ni, int(bad.sum()))
    out["train_unbiased"] = rows(uu, ii, dd, rng_u)
    return out


class CascadeExposure(SimulatorBuilder):
    """TFDS builder ``cascade_exposure`` (see the module docstring)."""

    BUILDER_CONFIGS = _base.make_configs(CONFIGS)
    EVIDENCE_CONFIG = "communities"
    _schema_fn = staticmethod(schema)
    _simulate_fn = staticmethod(simulate)
    _defaults = DEFAULTS
    _citation = """@inproceedings{lin2024damcar,
  title={Mitigating Sample Selection Bias with Robust Domain Adaption in Multimedia Recommendation},
  author={Lin, Jiaye and Li, Qing and Xie, Guorui and Guan, Zhongxu and Jiang, Yong and
    Xu, Ting and Zhang, Zhong and Zhao, Peilin},
  booktitle={ACM Multimedia}, year={2024}}"""
