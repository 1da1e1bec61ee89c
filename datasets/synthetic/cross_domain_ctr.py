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
300 target items, so a test AUC's standard error is about 0.0045; the negative control of
``tfdebias reproduce dadin``), and ``paper``, sized
like the Amazon 2014 5-core Movies_and_TV -> Digital_Music pair that DADIN uses (50,052
movie items; target items 3,568; 20,000 shared users, ~1M source and ~63k target rows;
DADIN gives no statistics, so the user overlap and target item count are our estimates).

Scenario ``covariate_shift`` (configs ``covariate_shift``, the evidence default, and
``covariate_shift_phi0`` / ``_phi15`` / ``_phi60`` / ``_small``; ``scenario =
"covariate_shift"``). The configs above (``small``, ``medium``, ``paper``) are the
``concept_shift`` story: a label-prior shift (intercepts -1.5 vs -2.5) and a rotated
*taste* (``domain_shift``), under which aligning the two domains' marginals cannot help
and may hurt: ``medium`` is the negative control. ``covariate_shift`` is the problem
DANN-style alignment addresses, the shift of the DADIN paper's toy (Sec. 4.1: the target
distribution is the source one rotated by 35 degrees) in a CTR log:

1. One labelling function for both domains: ``relevance = sigmoid(b + alpha <z_u, y_i>)``
   with the same ``b`` (``source_intercept == target_intercept``) and a user's one taste
   ``z_u``; item latents ``y_i`` of both domains come from one mixture of
   ``n_clusters`` centres (one item semantics).
2. Items are described by content ``x_i = R_d y_i + eps`` read through one binning for
   both domains (``item_c1..item_c{dim}``, ``content_bins`` equal-mass bins of the pooled
   content per axis: one shared encoder's input), with ``R_source`` a random orthogonal
   map and ``R_target = rot(phi) R_source``, ``rot(phi)`` the rotation by ``phi_degrees``
   in each plane of axes (0, 1), (2, 3), ... (:func:`rotation`). ``phi = 0``: no shift.
3. A large source and a small target domain: every user logs ``Poisson(source_rate m_u)``
   source impressions; a fraction ``target_user_fraction`` of users is in the target
   domain, of whom a fraction ``a_train`` logs ``Poisson(target_rate m_u)`` target
   training impressions on the *training* target items; the others are cold-start.
4. ``valid`` / ``test``: ``Poisson(test_rate m_u)`` target impressions of every target
   user (a fraction ``a_cross`` of them goes to ``valid``) on target items never seen in
   training (a fraction ``test_item_fraction`` of target items is held out): item ids
   carry nothing at test time, the content does.
5. Histories (day 0): source clicks of every user, target clicks of the users with target
   training rows; ``cold_start`` = no target row in ``train`` (their target history empty).
6. ``train_unbiased``: as many rows as ``train``, all target impressions on the training
   target items of every target user (her share ``m_u / sum m`` of the log): the target
   labels the log lacks.

Sizes (``covariate_shift``): 8,000 users, ~400K source and ~19K target train rows,
~19.7K test rows (target domain, about half of them of cold-start users) over ~3,800
users, click rate 0.27 in both domains. The ``phi`` configs differ from it in the
rotation only: the same users, items and logged impressions.

Numpy checks (nothing trained; :func:`covariate_checks`), on the test split:

==========  =====  ==============  ==============  ============  ==============
phi         truth  source map AUC  target map AUC  probe x lin.  probe x quad.
==========  =====  ==============  ==============  ============  ==============
0           0.847  0.845           0.845           0.51          0.49
15          0.847  0.833           0.845           0.57          0.62
35          0.847  0.782           0.845           0.64          0.78
60          0.847  0.672           0.845           0.72          0.88
==========  =====  ==============  ==============  ============  ==============

"source map": the AUC of ``<z_u, R_source^T x_i>``, the true taste against the item
latent read back from target content by the source's map (what one encoder fitted on the
source computes); "target map": by the target's own map (what alignment aims to
recover). The gap between them, 0 / 0.012 / 0.063 / 0.17, is the part of the target's
ranking that the shift costs an encoder fitted on the source, and it grows with ``phi``.
"probe": held-out AUC of a linear / quadratic logistic domain classifier on item
content ``x`` (on the latent ``y`` it is 0.49 at every ``phi``): the shift is in the
inputs, visible to a domain classifier, and absent in the semantics. Source and target
click rates are equal (0.270 / 0.268): no label-prior shift. Made by::

    python -c "from tfdebias.datasets.synthetic import cross_domain_ctr as C
    for c in ('covariate_shift_phi0', 'covariate_shift_phi15', 'covariate_shift',
              'covariate_shift_phi60'): print(c, C.covariate_checks(c))"
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
    # the ``covariate_shift`` scenario (new configs only; the default ``concept_shift`` is
    # the generator of 1.0.0/1.1.0 and ignores these)
    "scenario": "concept_shift",
    "phi_degrees": 35.0,
    "n_clusters": 8,
    "content_bins": 16,
    "content_noise": 0.1,
    "test_item_fraction": 0.5,
    "test_rate": 4.0,
}

SCENARIOS = ("concept_shift", "covariate_shift")

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

#: the ``covariate_shift`` scenario (see the module docstring): one labelling function,
#: items read through their content, the target's content rotated by ``phi_degrees``
_COVARIATE = {
    "scenario": "covariate_shift",
    "n_users": 8000,
    "n_items_source": 2000,
    "n_items_target": 2000,
    "source_rate": 50.0,
    "target_user_fraction": 0.6,
    "target_rate": 8.0,
    "test_rate": 5.0,
    "a_train": 0.5,
    "a_cross": 0.2,
    "source_intercept": -1.5,
    "target_intercept": -1.5,
    "preference_click": 2.0,
    "popularity_exponent": 0.5,
}
CONFIGS.update({
    # the evidence default (EVIDENCE_CONFIG): ~400K source and ~19K target train rows,
    # ~19K target test rows on target items unseen in train
    "covariate_shift": {**_COVARIATE, "phi_degrees": 35.0},
    # the sweep over the rotation (phi = 0: no shift, the gap is target sparsity alone)
    "covariate_shift_phi0": {**_COVARIATE, "phi_degrees": 0.0},
    "covariate_shift_phi15": {**_COVARIATE, "phi_degrees": 15.0},
    "covariate_shift_phi60": {**_COVARIATE, "phi_degrees": 60.0},
    # for tests
    "covariate_shift_small": {**_COVARIATE, "n_users": 1500, "n_items_source": 400,
                              "n_items_target": 400, "source_rate": 20.0},
})


def _params(params: Mapping | None) -> dict:
    p = _base.merge_params(DEFAULTS, params, NAME)
    _base.check_positive(
        p, "n_users", "n_items_source", "n_items_target", "n_categories_source",
        "n_categories_target", "dim", "n_days", "max_len", "n_age", "n_activity", where=NAME,
    )
    _base.check_fraction(p, "domain_shift", "target_user_fraction", "a_train", "a_cross",
                         where=NAME)
    if p["scenario"] not in SCENARIOS:
        raise UsageError(f"{NAME}: scenario must be one of {SCENARIOS}, got {p['scenario']!r}")
    if p["scenario"] == "covariate_shift":
        _base.check_positive(p, "n_clusters", "content_bins", where=NAME)
        _base.check_fraction(p, "test_item_fraction", where=NAME)
        if p["dim"] % 2:
            raise UsageError(f"{NAME}: covariate_shift rotates pairs of content axes; dim must "
                             f"be even, got {p['dim']}")
        if not 0.0 < p["test_item_fraction"] < 1.0:
            raise UsageError(f"{NAME}: test_item_fraction must be in (0, 1), got "
                             f"{p['test_item_fraction']}")
    if p["last_day"] not in ("global", "user"):
        raise UsageError(f"{NAME}: last_day must be 'global' or 'user', got {p['last_day']!r}")
    return p


def _user_and_item_id(p: dict, n_items: int) -> list:
    """The user features and the item id both scenarios share, in schema order."""
    return [
        Feature("user_id", "categorical", vocab_size=p["n_users"] + 1, description="user"),
        Feature("user_age", "categorical", vocab_size=p["n_age"] + 1, description="age bucket"),
        Feature("user_gender", "categorical", vocab_size=3, description="gender (1, 2)"),
        Feature("user_activity", "categorical", vocab_size=p["n_activity"] + 1,
                description="activity level (quantile bucket)"),
        Feature("item_id", "categorical", vocab_size=n_items,
                description=f"item; source 1..{p['n_items_source']}, target after"),
    ]


def schema(params: Mapping | None = None) -> Schema:
    p = _params(params)
    if p["scenario"] == "covariate_shift":
        return _covariate_schema(p)
    n_items = 1 + p["n_items_source"] + p["n_items_target"]
    n_cats = 1 + p["n_categories_source"] + p["n_categories_target"]
    return Schema([
        *_user_and_item_id(p, n_items),
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


def _covariate_schema(p: dict) -> Schema:
    n_items = 1 + p["n_items_source"] + p["n_items_target"]
    content = [Feature(f"item_c{k + 1}", "categorical", vocab_size=p["content_bins"] + 1,
                       description=f"content feature {k + 1} of the item, binned (one scale "
                                   "for both domains)")
               for k in range(p["dim"])]
    return Schema([
        *_user_and_item_id(p, n_items),
        *content,
        Feature("domain", "domain", vocab_size=2, description="0 = source, 1 = target"),
        Feature("history_source", "sequence", vocab_size=n_items, max_len=p["max_len"],
                vocab="item_id", description="source items clicked before the log, right-aligned"),
        Feature("history_target", "sequence", vocab_size=n_items, max_len=p["max_len"],
                vocab="item_id", description="target items clicked before the log, right-aligned"),
        Feature("click", "label", description="clicked (Bernoulli(relevance))"),
        Feature("relevance", "truth", description="true P(click) of the row"),
        Feature("cold_start", "truth", description="1 if the user has no target row in train"),
    ])


def rotation(phi_degrees: float, dim: int) -> np.ndarray:
    """``rot(phi)``: the rotation by ``phi`` in each plane of content axes ``(0, 1)``,
    ``(2, 3)``, ... (a ``dim`` x ``dim`` orthogonal matrix; ``dim`` even)."""
    c, s = np.cos(np.deg2rad(phi_degrees)), np.sin(np.deg2rad(phi_degrees))
    return np.kron(np.eye(dim // 2), np.array([[c, -s], [s, c]]))


def covariate_world(p: Mapping) -> dict:
    """The latent world of the ``covariate_shift`` scenario (nothing logged): user tastes
    ``z`` (n_users, dim), activity ``m``, item latents ``y`` (all items, source first),
    content ``x`` (before binning), the maps ``R_source`` / ``R_target`` and the bin edges.
    :func:`simulate` logs from it; the numpy checks of the docstring read it."""
    p = _params(p)
    s_struct = np.random.SeedSequence(p["seed"]).spawn(3)[0]
    rng = np.random.default_rng(s_struct)
    nu, d, ns, nt = p["n_users"], p["dim"], p["n_items_source"], p["n_items_target"]
    z = _base.latent(rng, nu, d)
    act = 0.5 * rng.standard_normal(nu)
    m = np.exp(act) / np.exp(act).mean()
    centres = _base.latent(rng, p["n_clusters"], d)  # one item semantics for both domains
    cluster = rng.integers(0, p["n_clusters"], ns + nt)
    y = 0.8 * centres[cluster] + 0.6 * _base.latent(rng, ns + nt, d)
    r_source = np.linalg.qr(rng.standard_normal((d, d)))[0]
    r_target = rotation(p["phi_degrees"], d) @ r_source
    dom = np.r_[np.zeros(ns, int), np.ones(nt, int)]
    maps = np.stack([r_source, r_target])[dom]  # (items, d, d)
    scale = float(np.sqrt(np.mean(y ** 2)))
    x = np.einsum("nij,nj->ni", maps, y) + p["content_noise"] * scale * rng.standard_normal((ns + nt, d))
    # one binning for both domains: equal-mass edges of the pooled content, per axis
    qs = np.linspace(0, 1, p["content_bins"] + 1)[1:-1]
    edges = np.quantile(x, qs, axis=0)  # (bins - 1, d)
    bins = 1 + np.stack([np.searchsorted(edges[:, k], x[:, k], side="right")
                         for k in range(d)], axis=1)
    age = _base.quantile_bucket(z[:, 0] + 0.5 * rng.standard_normal(nu), p["n_age"])
    gender = np.where(z[:, 1] + 0.5 * rng.standard_normal(nu) > 0, 2, 1)
    activity = _base.quantile_bucket(act, p["n_activity"])
    is_t_user = rng.random(nu) < p["target_user_fraction"]
    warm = is_t_user & (rng.random(nu) < p["a_train"])  # target users with target train rows
    valid_user = is_t_user & (rng.random(nu) < p["a_cross"])  # test-day rows go to valid
    test_item = rng.random(nt) < p["test_item_fraction"]
    return {"z": z, "m": m, "y": y, "x": x, "bins": bins, "cluster": cluster,
            "r_source": r_source, "r_target": r_target, "age": age, "gender": gender,
            "activity": activity, "is_t_user": is_t_user, "warm": warm,
            "valid_user": valid_user, "test_item": np.r_[np.zeros(ns, bool), test_item]}


def _auc(y: np.ndarray, score: np.ndarray) -> float:
    """ROC AUC (scikit-learn's; the simulator imports nothing from the evaluation layer
    above it)."""
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(np.asarray(y) > 0.5, score))


def _logistic_probe_auc(x: np.ndarray, label: np.ndarray, seed: int = 0) -> float:
    """Held-out AUC (half / half) of a ridge-regularised logistic regression fitted by
    Newton steps (no model library: the simulator stays numpy)."""
    auc = _auc
    rng = np.random.default_rng(seed)
    fit = rng.random(len(label)) < 0.5
    xs = np.c_[np.ones(len(x)), (x - x[fit].mean(0)) / (x[fit].std(0) + 1e-9)]
    beta = np.zeros(xs.shape[1])
    for _ in range(25):  # Newton steps, each one vectorised
        prob = _base.sigmoid(xs[fit] @ beta)
        grad = xs[fit].T @ (prob - label[fit]) + 1e-3 * beta
        hess = (xs[fit] * (prob * (1 - prob))[:, None]).T @ xs[fit] + 1e-3 * np.eye(len(beta))
        beta -= np.linalg.solve(hess, grad)
    return float(auc(label[~fit], xs[~fit] @ beta))


def covariate_checks(config: str = "covariate_shift", **overrides) -> dict:
    """The numpy checks of the ``covariate_shift`` scenario (nothing trained), on the
    test split of ``config``: AUC of the true ``relevance``; AUC of the taste ``z_u``
    against the item latent read back from its content by the *source* map
    (``R_source^T x``: what one encoder fitted on the source computes on target content)
    and by the target's own map (``R_target^T x``: the repair alignment aims at); held-out
    AUC of a linear and a quadratic domain probe on item content ``x`` and on the latent
    ``y`` (the shift is in the inputs only); source and target click rates of ``train``."""
    p = _params({**CONFIGS[config], **overrides})
    w = covariate_world(p)
    test = _simulate_covariate(p)["test"]
    auc = _auc

    ns = p["n_items_source"]
    uu, ii, yy = test["user_id"] - 1, test["item_id"] - 1, test["click"].astype(float)
    z, x = w["z"][uu], w["x"][ii]
    out = {"truth": float(auc(yy, test["relevance"])),
           "source_map": float(auc(yy, np.einsum("nd,nd->n", z, x @ w["r_source"]))),
           "target_map": float(auc(yy, np.einsum("nd,nd->n", z, x @ w["r_target"])))}
    dom = (np.arange(len(w["x"])) >= ns).astype(float)
    quad = lambda v: np.c_[v, np.einsum("ni,nj->nij", v, v).reshape(len(v), -1)]  # noqa: E731
    out.update(probe_x_linear=_logistic_probe_auc(w["x"], dom),
               probe_x_quadratic=_logistic_probe_auc(quad(w["x"]), dom),
               probe_y_quadratic=_logistic_probe_auc(quad(w["y"]), dom))
    train = _simulate_covariate(p)["train"]
    out.update(ctr_source=float(train["click"][train["domain"] == 0].mean()),
               ctr_target=float(train["click"][train["domain"] == 1].mean()),
               ctr_test=float(yy.mean()), n_test=int(len(yy)))
    return out


def _simulate_covariate(p: dict) -> _base.Splits:
    """The ``covariate_shift`` scenario (module docstring, "Scenario covariate_shift")."""
    sch = schema(p)
    w = covariate_world(p)
    nu, ns, nt = p["n_users"], p["n_items_source"], p["n_items_target"]
    z, m, y = w["z"], w["m"], w["y"]
    rng = np.random.default_rng(np.random.SeedSequence(p["seed"]).spawn(3)[1])

    def pool_probs(items):
        pop = _base.zipf_weights(len(items), p["popularity_exponent"], rng)
        return items, pop

    src_items = pool_probs(np.arange(ns))
    t_ids = ns + np.arange(nt)
    tr_items = pool_probs(t_ids[~w["test_item"][ns:]])
    te_items = pool_probs(t_ids[w["test_item"][ns:]])

    def draw(users_ok, rate, pool):
        counts = rng.poisson(rate * m) * users_ok
        uu = np.repeat(np.arange(nu), counts)
        ii = pool[0][rng.choice(len(pool[0]), len(uu), p=pool[1])]
        intercept = np.where(ii < ns, p["source_intercept"], p["target_intercept"])
        rel = _base.sigmoid(intercept + p["preference_click"] * np.einsum("nd,nd->n", z[uu], y[ii]))
        return uu, ii, rel, rng.random(len(rel)) < rel

    everyone = np.ones(nu, bool)
    # day 0: histories (clicked items, in order); the target history of warm users only
    hist = {}
    for name, ok, n_imp, pool in (("history_source", everyone, p["history_source_impressions"], src_items),
                                  ("history_target", w["warm"], p["history_target_impressions"], tr_items)):
        uu, ii, _, click = draw(ok, n_imp / m, pool)  # rate / m: Poisson(n_imp) per user
        hist[name] = _base.pad_right_aligned(uu[click], ii[click] + 1, nu, p["max_len"])

    def rows(uu, ii, domain, rel, click):
        return {"user_id": uu + 1, "user_age": w["age"][uu], "user_gender": w["gender"][uu],
                "user_activity": w["activity"][uu], "item_id": ii + 1,
                **{f"item_c{k + 1}": w["bins"][ii, k] for k in range(p["dim"])},
                "domain": np.full(len(uu), domain),
                "history_source": hist["history_source"][uu],
                "history_target": hist["history_target"][uu],
                "click": click, "relevance": rel,
                "cold_start": (~w["warm"][uu]).astype(np.float32)}

    def logged(drawn, domain):
        uu, ii, rel, click = drawn
        return rows(uu, ii, domain, rel, click)

    train = _base.concat([logged(draw(everyone, p["source_rate"], src_items), 0),
                          logged(draw(w["warm"], p["target_rate"], tr_items), 1)])
    test_day = logged(draw(w["is_t_user"], p["test_rate"], te_items), 1)
    is_valid = w["valid_user"][test_day["user_id"] - 1]
    splits = {"train": train, "valid": _base.take(test_day, is_valid),
              "test": _base.take(test_day, ~is_valid)}
    # the unbiased training sample: as many rows as train, all target impressions (train
    # items) of every target user, each with her share of the target log
    rng = np.random.default_rng([p["seed"], UNBIASED_STREAM])
    t_users = np.flatnonzero(w["is_t_user"])
    n_train = len(train["click"])
    uu = np.sort(rng.choice(t_users, n_train, p=m[t_users] / m[t_users].sum()))
    ii = tr_items[0][rng.choice(len(tr_items[0]), n_train, p=tr_items[1])]
    rel = _base.sigmoid(p["target_intercept"] + p["preference_click"] * np.einsum("nd,nd->n", z[uu], y[ii]))
    splits["train_unbiased"] = rows(uu, ii, 1, rel, rng.random(n_train) < rel)
    has_target = np.zeros(nu, bool)  # users with a target row in train (a warm user may draw none)
    has_target[train["user_id"][train["domain"] == 1] - 1] = True
    for part in splits.values():  # a cold user is new to the target domain
        part["cold_start"] = (~has_target[part["user_id"] - 1]).astype(np.float32)
        part["history_target"][part["cold_start"] == 1] = 0
    return {k: _base.cast_to_schema(sch, v) for k, v in splits.items()}


def simulate(params: Mapping | None = None) -> _base.Splits:
    """Splits ``train``, ``valid``, ``test``, ``train_unbiased`` as column dicts (see the
    module docstring)."""
    p = _params(params)
    if p["scenario"] == "covariate_shift":
        return _simulate_covariate(p)
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
    EVIDENCE_CONFIG = "covariate_shift"
    _schema_fn = staticmethod(schema)
    _simulate_fn = staticmethod(simulate)
    _defaults = DEFAULTS
    _citation = """@article{kong2023dadin,
  title={DADIN: Domain Adversarial Deep Interest Network for Cross Domain Recommender Systems},
  author={Kong, Menglin and Hou, Muzhou and Zhao, Shaojie and Liu, Feng and Su, Ri and
    Chen, Yinghao},
  journal={arXiv preprint arXiv:2305.12058}, year={2023}}"""
