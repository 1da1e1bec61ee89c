"""``confounded_ctr``: CTR logs biased by a latent item confounder (stands in for KuaiRec).

Three scenarios (parameter ``scenario``): ``position_leak``, the 1.0/1.1 generator below
(configs ``small``, ``medium``, ``no_bias``, ``paper``; every split bit for bit as
before), ``proxy_bias`` (configs ``proxy_bias``, ``proxy_bias_small``,
``proxy_bias_uniform``), described in "Scenario proxy_bias", and ``proxy_shift``
(configs ``proxy_shift`` = the evidence tables' default since it holds the harm a
purifier can act on, ``proxy_shift_small``, ``proxy_shift_uniform``), described in
"Scenario proxy_shift" at the end of this docstring.

Version 1.1.0 adds the split ``train_unbiased``, the parameter ``test_density`` and the
configs ``medium`` and ``no_bias``; every 1.0.0 split of every 1.0.0 config keeps its
values bit for bit (the new draws come from a stream of their own).

Stands in for **KuaiRec** (Gao et al., CIKM 2022) as CP2Rec uses it (the CP2Rec paper,
Sec. 5.1.1-5.1.2, Table 2): a biased log ("big matrix") split 8:2 into train/valid,
and a fully observed user x item block ("small matrix", 1,411 x 3,327, density 99.6%)
as the unbiased test set; 11 item statistics serve as *confounding proxies* (Sec. 4.2:
"statistical features associated with the items ... more likely to ... affect the
exposure probability of this item in the subsequent recommendation policy", plus
context such as the exposure position, Table 1).

Generative story (one draw per ``seed``):

1. Users ``u`` have a latent taste ``x_u`` (``dim``) and an activity ``a_u ~ N(0,1)``;
   items ``i`` have a latent ``y_i`` near their category's centre, and a latent
   **confounder** ``q_i ~ N(0,1)`` (quality/popularity).
2. Each pair has a latent interest ``h_ui = <x_u, y_i> + s_eps * eps_ui`` with
   ``eps_ui ~ N(0,1)`` pair-level and never observed.
3. Intrinsic click probability ``r_ui = sigmoid(b_c + alpha*h_ui + beta_q*q_i + beta_a*a_u)``.
4. The logging policy exposes the pair with the **true propensity**
   ``p_ui = sigmoid(b_e + gamma_q*q_i + gamma_h*h_ui + gamma_a*a_u)``; ``b_e`` is set so
   the mean of ``p_ui`` equals ``density``. Every pair outside the test block is logged
   with probability ``p_ui`` (independent Bernoulli draws).
5. Display position: logged rows are ranked by the policy score (plus N(0,1) noise)
   into ``n_positions`` equal buckets, 1 = top; test rows get a uniform position (the
   block is collected without the policy). Examination ``kappa(k) = 1/(1 + lambda*(k-1))``.
6. ``relevance = r_ui * kappa(position)`` and ``click ~ Bernoulli(relevance)``.
7. Proxies: item statistics computed from the logged rows (train and valid): the log
   show count and nine smoothed rates (play, complete play, valid play, long play,
   like, comment, share, follow, collect), each a Binomial draw over the item's shows
   with success probability ``sigmoid(a_k + b_k*q_i + 0.5*xi_ik)``; plus ``position``.

Bias it injects: exposure is missing not at random. It depends on ``q_i`` (which also
drives clicks: a confounder, visible only through noisy proxies) and on the pair-level
interest ``h_ui`` (which no feature reveals), and logged rows sit at better positions.
A model fit on the logs over-estimates CTR and ranks differently on the unbiased block.

The unbiased sample (the evidence table's skyline trains on it): ``train_unbiased`` has
as many rows as ``train`` and is what a **uniform** logging policy would have logged in
the same world: pairs outside the test block exposed uniformly at random (the same
users, items and interest ``h_ui``, pair noise included), positions uniform on
``1..n_positions`` as on the test block, ``click ~ Bernoulli(relevance)``, and the same
item proxies (statistics of the biased log, as every split carries). Its ``propensity``
column is still the biased policy's ``p_ui`` of the pair. It is drawn from
``np.random.default_rng([seed, 7])``, apart from every other split's streams.

Ground truth shipped: ``propensity`` (the true ``p_ui`` of every row, test block
included), ``relevance`` (the true click probability of the row), ``confounder``
(``q_i``).

Splits: ``train``/``valid`` = logged rows split 8:2 at random (biased); ``test`` = every
pair of a random ``test_users`` x ``test_items`` block (or a random share
``test_density`` of them), excluded from the logs; ``train_unbiased`` (above).

Configs: ``small`` (default; ~28k logged rows + 8k test rows); ``medium`` (the evidence
tables' default until ``proxy_bias`` replaced it, now the position-leak negative control:
3,000 users x 1,200 items at density 7%, ~237k logged rows, ~63 training
rows per user; a 1,000 x 200 test block with a quarter of its pairs, ~50k rows, so one
test AUC has a standard error of ~0.004); ``no_bias`` (``medium`` with a uniform logging
policy, ``NO_BIAS``: gamma_q = gamma_h = gamma_a = 0, so exposure and logged positions
carry no bias and ``train`` is distributed like ``train_unbiased``: the negative
control); and ``paper`` (7,176 users x 10,728 items and a 1,411 x 3,327 test block as
in KuaiRec; the logged density is scaled down from KuaiRec's 16.3% to 4%, about 2.9M
logged rows instead of 12.5M, to keep the build tractable).

In ``position_leak`` the only ranking bias is the position leak: logged positions rank a
policy score that contains the pair's hidden interest h, and the rate proxies are
Binomial draws around the confounder, not statistics of the logged feedback. ``medium``
stays as that negative control (dropping ``position`` is what wins there).

Scenario proxy_bias
-------------------
The problem the CP2Rec paper states (Sec. 3-4.2): item statistics computed from a log
that a biased policy collected are confounding proxies, partly harmful (they encode the
policy) and partly useful (they encode appeal), and context such as the display position
carries a real examination effect. Generative story (``_simulate_proxy_bias``; its own
random streams):

1. Users, items, tastes x_u, y_i, activity a_u, categories as above; every item has an
   **appeal** ``q_i ~ N(0,1)`` (column ``confounder``) and a **promotion**
   ``w_i ~ N(0,1)`` (column ``promotion``), independent: promotion is not appeal
   (paid placement, stale popularity).
2. Interest ``h_ui = <x_u, y_i> + s_eps eps_ui``; intrinsic click probability
   ``r_ui = sigmoid(b_c + alpha h_ui + beta_q q_i + beta_a a_u)``, as above.
3. Exposure (the true ``propensity``): ``p_ui = sigmoid(b_e + gamma_q q_i + gamma_w w_i +
   gamma_a a_u)``, calibrated to ``density``; the policy does not see h.
4. Display slot of a logged row: quantile bucket (1 = top) of ``delta_w w_i + delta_q q_i
   + s_pos N(0,1)``; promotion pushes items to the top, the row noise spreads each item
   over several slots. The test block and ``train_unbiased`` get uniform slots.
5. Examination ``kappa(k) = 1/(1 + lambda (k-1))`` (column ``examination``, truth);
   ``relevance = r_ui kappa(position)``, ``click ~ Bernoulli(relevance)`` everywhere.
6. Proxies, **computed from the logged train rows** (:func:`item_statistics`):
   ``log_show_cnt`` (log 1 + shows), ``logged_ctr`` and ``mean_position`` (smoothed by
   a prior worth ``PROXY_PRIOR_SHOWS`` shows), the same item values in every split; plus
   the row's ``position``. Shows mix w_i and q_i (exposure), logged CTR mixes q_i with
   w_i (promoted items sit where they are examined more), mean position is mostly w_i.

``proxy_bias``: 3,000 users x 1,200 items, density 7% (~236K logged rows, ~189K train),
lambda = 0.3, gamma_q = 1.2, gamma_w = 1.0, gamma_a = 0.5, delta_w = 1.5, delta_q = 0.5,
s_pos = 1; unbiased test block 1,000 users x 200 items, a quarter of its pairs (~50K
rows). ``proxy_bias_small``: the 1,000 x 700 defaults (~22K train rows) for tests.
``proxy_bias_uniform``: ``proxy_bias`` with ``UNIFORM_POLICY`` (every gamma and delta 0:
uniform exposure and uniform slots; the examination curve stays), so ``train`` is
distributed like ``train_unbiased``: the no-bias control.

Numpy checks (nothing trained with TensorFlow; unbiased test AUC, mean and range over
data seeds 0-2), made by ``python -c "from tfdebias.methods.cp2rec import headroom_check
as h; h('proxy_bias'); h('proxy_bias_uniform')"``:

=============================  =======================  =======================
estimator (fit on ...)         ``proxy_bias``           ``proxy_bias_uniform``
=============================  =======================  =======================
popularity, biased train       0.545 (0.539-0.556)      0.599 (0.593-0.603)
popularity, train_unbiased     0.600 (0.598-0.602)      0.601 (0.597-0.606)
LR on NCF features, biased     0.575 (0.573-0.578)      0.599 (0.590-0.604)
LR on NCF features, uniform    0.601 (0.597-0.606)      0.603 (0.597-0.608)
LR on all inputs, biased       0.650 (0.646-0.653)      0.659 (0.653-0.665)
LR on all inputs, uniform      0.665 (0.661-0.671)      0.662 (0.656-0.670)
popularity / true kappa        0.563 (0.558-0.571)      0.597 (0.591-0.604)
LR NCF features, IPS true p    0.572 (0.566-0.575)      0.599 (0.590-0.604)
LR all inputs, IPS true p      0.633 (0.629-0.640)      0.659 (0.653-0.665)
LR all inputs, IPS p x kappa   0.629 (0.625-0.635)      0.656 (0.650-0.662)
truth (relevance)              0.836                    0.836
=============================  =======================  =======================

So the headroom exists where the floor/skyline live (user/item features: 0.575 vs
0.601, every seed) and vanishes under the uniform policy (0.599 vs 0.603). Removing the
examination factor with the true kappa recovers part of it (0.545 -> 0.563 for
popularity); re-weighting by the true exposure probability alone does not (0.572): the
exposure depends only on item and user, which the features already carry, so what the
log distorts is the click label (through the slot) and the coverage of the items.
Models that read the row's position gain on the test block too (0.650-0.665), because
the test block's clicks carry the examination effect of their (uniform) slots.
For a model that reads every input the log costs 0.015 (0.650 biased vs 0.665 uniform),
and re-weighting the biased rows by the true exposure probability, or by exposure x
examination, lowers it further (0.633, 0.629): weights cannot add rows for the items the
policy rarely shows.

Scenario proxy_shift
--------------------
``proxy_bias``'s headroom is coverage (items the policy rarely shows are learned badly),
which no purifier can repair. ``proxy_shift`` puts the harm where CP2Rec acts: in the
paper's terms (Sec. 3) the log's distribution P = (P^b, P^h) carries a beneficial part
(appeal, the examination curve of the slot) and a harmful, system-induced part (the
promotion); the item statistics (Sec. 4.2: computed from the log, "more likely to ...
affect the exposure probability of this item in the subsequent recommendation policy")
mix both, and the unbiased block Q is collected without the policy. Generative story
(``_simulate_proxy_shift``; its own random streams, ``SeedSequence([seed, 21])`` and
``default_rng([seed, 21, 7])`` for ``train_unbiased``):

1. Users, items, tastes, activity, categories, appeal ``q_i`` (``confounder``) and
   promotion ``w_i`` (``promotion``), independent, as in ``proxy_bias``.
2. Exposure (the true ``propensity``): ``sigmoid(b_e + gamma_q q_i + gamma_w w_i +
   gamma_a a_u)`` with gamma_q = 0.3, gamma_w = 0.6 (mild: shows per item vary less than
   in ``proxy_bias``, so coverage is not what the log costs).
3. Slot of a logged row: quantile bucket of ``delta_w w_i + s_pos N(0,1)`` (paid
   placement: delta_w = 1.5, delta_q = 0), with the real examination curve
   ``kappa(k) = 1/(1 + 0.3 (k-1))`` (column ``examination``).
4. **The badge**: the policy shows a logged row with its promotion badge ("hot",
   "recommended for you") with probability ``sigmoid(b_b + c_w w_i)`` (b_b = -2,
   c_w = 4), independent of the slot given w_i; a badge lifts the click logit by
   tau = 2.5 (social proof). The badge is **not logged** as a feature (column ``badge``
   is truth): a presentation the log does not record, visible only through the item
   statistics. The test block and ``train_unbiased`` are collected without the policy:
   uniform slots and no badge, so w_i raises no click there.
5. ``relevance = sigmoid(b_c + alpha h + beta_q q_i + beta_a a_u + tau badge) x
   kappa(position)`` (b_c = -1.5), ``click ~ Bernoulli(relevance)``.
6. Proxies: ``log_show_cnt``, ``logged_ctr``, ``mean_position`` computed from the logged
   train rows (:func:`item_statistics`, the same values in every split), plus the row's
   ``position``. Show counts mix w_i and q_i (exposure), logged CTR mixes q_i with w_i
   (badges and top slots), mean position encodes w_i alone (``PROXY_SHIFT_POLICY_STATS``).
7. Coverage matched: only the test pairs (a share ``test_density`` of the block) leave
   the logs, so a test item is logged about as often as any item (``coverage`` below:
   mean shows of the test items over all items, 0.92, the same under the uniform
   policy; ``proxy_bias`` drops the whole block's pairs from the logs).

Which context the model reads at test time: every input, ``position`` included. The
test block's clicks carry the examination of their (uniform) slots, so position is a
beneficial proxy there; the harm survives it because the badge is not a function of the
slot. A model fit on the log credits the promotion (through the proxies and through the
item id: a promoted item's logged clicks are lifted) and keeps crediting it on the test
block, where no badge is shown.

``proxy_shift``: the ``medium`` sizes (3,000 users x 1,200 items, density 7%, ~247K
logged rows, ~198K train; the unbiased test block 1,000 users x 200 items, a quarter of
its pairs, ~50K rows). ``proxy_shift_small``: the 1,000 x 700 defaults (~22K train rows,
builds in well under a second) for tests. ``proxy_shift_uniform``: ``proxy_shift`` with
``PROXY_SHIFT_UNIFORM`` (uniform exposure, uniform slots, no badge; the world stays), so
``train`` is distributed like ``train_unbiased``: the negative control.

Numpy checks (nothing trained with TensorFlow; unbiased test AUC, mean (data seeds 0 1
2)), made by ``python -c "from tfdebias.methods.cp2rec import headroom_check as h;
h('proxy_shift'); h('proxy_shift_uniform')"`` (purifier rows: ``headroom_check``'s
docstring). Every row but the uniform one is fit on the biased ``train``:

======================================  ==============================  ==============================
estimator                               ``proxy_shift``                 ``proxy_shift_uniform``
======================================  ==============================  ==============================
LR on NCF features, biased              0.540 (0.533 0.543 0.545)       0.593 (0.598 0.590 0.591)
LR on NCF features, train_unbiased      0.588 (0.590 0.587 0.586)       0.591 (0.597 0.584 0.593)
(a) LR on all inputs, biased            0.644 (0.642 0.645 0.644)       0.661 (0.663 0.664 0.656)
(a) LR on all inputs, train_unbiased    0.659 (0.661 0.659 0.658)       0.660 (0.660 0.665 0.655)
(a) headroom (uniform - biased)         +0.016 (+0.019 +0.015 +0.014)   -0.001 (-0.003 +0.000 -0.002)
(b) oracle: proxies resid. on w         0.648 (0.649 0.648 0.648)       0.662 (0.663 0.666 0.656)
(b) oracle: resid. + w held             0.654 (0.657 0.652 0.653)       0.661 (0.662 0.663 0.656)
(c) policy span (mean_position) dropped 0.648 (0.648 0.649 0.647)       0.661 (0.662 0.664 0.657)
(c) policy span (mean_position) held    0.657 (0.660 0.657 0.654)       0.661 (0.663 0.664 0.655)
(c) wide span (+ log_show_cnt) dropped  0.647 (0.648 0.647 0.646)       0.661 (0.663 0.663 0.659)
(c) wide span (+ log_show_cnt) held     0.629 (0.632 0.628 0.629)       0.662 (0.664 0.665 0.657)
(d) LR all inputs, IPS true p           0.637 (0.638 0.635 0.638)       0.661 (0.663 0.664 0.656)
(d) LR all inputs, IPS p x kappa        0.636 (0.636 0.634 0.637)       0.658 (0.661 0.660 0.653)
coverage (not an AUC)                   0.924 (0.939 0.890 0.944)       0.932 (0.928 0.931 0.938)
truth (relevance)                       0.822 (0.821 0.825 0.821)       0.818 (0.818 0.818 0.818)
======================================  ==============================  ==============================

(a) The log costs a model that reads every input 0.016 (every seed >= 0.013), and
nothing under the uniform policy. Without the badge (``badge_lift`` = 0, the policy's
exposure and slots unchanged: ``h('proxy_shift', overrides={'badge_lift': 0.0})``) the
same gap is 0.004 (0.002 0.006 0.003): about a
quarter of the headroom is the policy's exposure and slots, three quarters the badge's
credit. (b) Residualising the proxies on the true w_i alone closes 0.004 of it: the item
id carries the promoted items' lifted clicks as well. Giving the promotion one slope in
training (the residualised proxies plus w_i) and holding it at its mean at test closes
0.010 (65%). (c) A purifier a method could run without the truth, the same with the span
of ``mean_position`` (the proxy that encodes the policy alone) in place of w_i, closes
0.013 (86%, every seed); dropping the span instead closes 0.004 (as in (b)), and a span
that also holds appeal (``log_show_cnt``) costs 0.014 when held: which proxies to purify
matters. (d) Re-weighting by the true exposure probability makes it worse (0.637): the
harm is in the click label (the badge), not in which pairs are seen.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from tfdebias.errors import UsageError
from tfdebias.schema import Feature, Schema

from . import _base
from ._base import SimulatorBuilder

NAME = "confounded_ctr"

#: ``position_leak``: the 1.0/1.1 generator (configs small, medium, no_bias, paper);
#: ``proxy_bias``: the generator of the ``proxy_bias*`` configs; ``proxy_shift``: the
#: generator of the ``proxy_shift*`` configs (module docstring)
SCENARIOS = ("position_leak", "proxy_bias", "proxy_shift")

DEFAULTS = {
    "seed": 0,
    "n_users": 1000,
    "n_items": 700,
    "dim": 8,
    "n_categories": 12,
    "n_activity": 4,
    "n_segments": 8,
    "n_positions": 10,
    "density": 0.04,
    "test_users": 100,
    "test_items": 80,
    "valid_fraction": 0.2,
    "interest_noise": 1.0,  # s_eps
    "click_intercept": -2.0,  # b_c
    "preference_click": 1.2,  # alpha
    "confounder_click": 0.7,  # beta_q
    "activity_click": 0.3,  # beta_a
    "confounder_exposure": 1.2,  # gamma_q
    "interest_exposure": 0.8,  # gamma_h
    "activity_exposure": 0.5,  # gamma_a
    "position_bias": 0.1,  # lambda
    "test_density": 1.0,  # share of the test block's pairs kept in `test`
    # -- the `proxy_bias` and `proxy_shift` scenarios only (`position_leak` never reads these)
    "scenario": "position_leak",  # or "proxy_bias" (see PROXY_BIAS), "proxy_shift" (PROXY_SHIFT)
    "promotion_exposure": 1.0,  # gamma_w: promotion w_i in the exposure logit
    "promotion_position": 1.5,  # delta_w: promotion w_i in the display-slot score
    "appeal_position": 0.5,  # delta_q: appeal q_i in the display-slot score
    "position_noise": 1.0,  # s_pos: N(0, s_pos^2) noise of the display-slot score
    # -- the `proxy_shift` scenario only (no other generator reads these)
    "badge_intercept": -2.0,  # b_b: P(a logged row carries the policy's badge) = sigmoid(b_b + c_w w_i)
    "badge_promotion": 4.0,  # c_w
    "badge_lift": 2.5,  # tau: the badge's lift of the click logit; the badge is never logged
}

#: the overrides that make the logging policy uniform: exposure depends on nothing, so
#: logged positions (ranks of the policy score plus noise) are uniform at random too
NO_BIAS = {"confounder_exposure": 0.0, "interest_exposure": 0.0, "activity_exposure": 0.0}

#: ``np.random.default_rng([seed, UNBIASED_STREAM])`` draws ``train_unbiased`` and the
#: ``test_density`` subsample, apart from every other split's streams
UNBIASED_STREAM = 7

MEDIUM = {
    "n_users": 3000,
    "n_items": 1200,
    "n_categories": 20,
    "density": 0.07,
    "test_users": 1000,
    "test_items": 200,
    "test_density": 0.25,
}

#: ``proxy_bias``: the evidence default until ``proxy_shift`` (module docstring, "Scenario proxy_bias")
PROXY_BIAS = {**MEDIUM, "scenario": "proxy_bias", "position_bias": 0.3}
#: the overrides that make the ``proxy_bias`` logging policy uniform: exposure and display
#: slots depend on nothing (slots are uniform at random), the examination curve stays
UNIFORM_POLICY = {"confounder_exposure": 0.0, "promotion_exposure": 0.0, "activity_exposure": 0.0,
                  "promotion_position": 0.0, "appeal_position": 0.0}

#: the ``proxy_shift`` world (module docstring, "Scenario proxy_shift"): item-level
#: parameters of the policy and the badge, shared by its configs
_PROXY_SHIFT_WORLD = {"scenario": "proxy_shift", "position_bias": 0.3, "click_intercept": -1.5,
                      "confounder_exposure": 0.3, "promotion_exposure": 0.6,
                      "promotion_position": 1.5, "appeal_position": 0.0}
#: ``proxy_shift``: evidence size (the ``medium`` sizes)
PROXY_SHIFT = {**MEDIUM, **_PROXY_SHIFT_WORLD}
#: ``proxy_shift_small``: the 1,000 x 700 defaults, for tests
PROXY_SHIFT_SMALL = dict(_PROXY_SHIFT_WORLD)
#: the overrides that make the ``proxy_shift`` logging policy uniform: uniform exposure,
#: uniform slots and no badge (sigmoid(-40) ~ 4e-18); the world (appeal, examination
#: curve, the lift a badge would give) stays
PROXY_SHIFT_UNIFORM = {**UNIFORM_POLICY, "badge_intercept": -40.0, "badge_promotion": 0.0}

CONFIGS = {
    "small": {},
    "medium": MEDIUM,
    "no_bias": {**MEDIUM, **NO_BIAS},
    "paper": {
        "n_users": 7176,
        "n_items": 10728,
        "test_users": 1411,
        "test_items": 3327,
        "n_categories": 31,
        "dim": 16,
        "density": 0.04,
    },
    "proxy_bias": PROXY_BIAS,
    "proxy_bias_small": {"scenario": "proxy_bias", "position_bias": 0.3},
    "proxy_bias_uniform": {**PROXY_BIAS, **UNIFORM_POLICY},
    "proxy_shift": PROXY_SHIFT,
    "proxy_shift_small": PROXY_SHIFT_SMALL,
    "proxy_shift_uniform": {**PROXY_SHIFT, **PROXY_SHIFT_UNIFORM},
}

#: The nine rate proxies: (name, a_k, b_k) in sigmoid(a_k + b_k*q_i + 0.5*xi_ik).
RATE_PROXIES = (
    ("play_rate", 0.5, 0.8),
    ("complete_play_rate", -0.8, 1.0),
    ("valid_play_rate", 0.2, 0.9),
    ("long_play_rate", -0.4, 0.9),
    ("like_rate", -3.0, 1.0),
    ("comment_rate", -4.0, 0.8),
    ("share_rate", -4.5, 0.9),
    ("follow_rate", -4.5, 0.7),
    ("collect_rate", -4.2, 0.8),
)
#: All 11 confounding-proxy features (10 dense item statistics + the display position).
PROXIES = ("log_show_cnt",) + tuple(n for n, _, _ in RATE_PROXIES) + ("position",)


def _params(params: Mapping | None) -> dict:
    p = _base.merge_params(DEFAULTS, params, NAME)
    _base.check_positive(
        p, "n_users", "n_items", "dim", "n_categories", "n_activity", "n_segments",
        "n_positions", "test_users", "test_items", where=NAME,
    )
    _base.check_fraction(p, "density", "valid_fraction", "test_density", where=NAME)
    if not p["test_density"] > 0:
        raise UsageError(f"{NAME}: parameter 'test_density' must be > 0")
    if p["test_users"] > p["n_users"] or p["test_items"] > p["n_items"]:
        raise UsageError(f"{NAME}: the test block must fit inside n_users x n_items")
    if p["scenario"] not in SCENARIOS:
        raise UsageError(f"{NAME}: parameter 'scenario' must be one of {SCENARIOS}, got {p['scenario']!r}")
    if p["position_noise"] < 0:
        raise UsageError(f"{NAME}: parameter 'position_noise' must be >= 0")
    return p


def _side_features(p: dict) -> list:
    """The user and item features both scenarios share, in schema order."""
    return [
        Feature("user_id", "categorical", vocab_size=p["n_users"] + 1, description="user"),
        Feature("item_id", "categorical", vocab_size=p["n_items"] + 1, description="video"),
        Feature("user_activity", "categorical", vocab_size=p["n_activity"] + 1,
                description="activity level (quantile bucket, 1 = least active)"),
        Feature("user_segment", "categorical", vocab_size=p["n_segments"] + 1,
                description="taste segment (nearest of n_segments prototypes)"),
        Feature("item_category", "categorical", vocab_size=p["n_categories"] + 1,
                description="item category"),
    ]


def schema(params: Mapping | None = None) -> Schema:
    p = _params(params)
    if p["scenario"] == "proxy_bias":
        return _proxy_bias_schema(p)
    if p["scenario"] == "proxy_shift":
        return _proxy_shift_schema(p)
    feats = [
        *_side_features(p),
        Feature("log_show_cnt", "proxy", description="log(1 + logged shows of the item)"),
    ]
    feats += [
        Feature(n, "proxy", description=f"item {n.replace('_', ' ')} over its logged shows")
        for n, _, _ in RATE_PROXIES
    ]
    feats += [
        Feature("position", "proxy", vocab_size=p["n_positions"] + 1,
                description="display position, 1 = top"),
        Feature("click", "label", description="clicked (Bernoulli(relevance))"),
        Feature("propensity", "exposure", description="true logging-policy P(exposed)"),
        Feature("relevance", "truth", description="true P(click) of the row"),
        Feature("confounder", "truth", description="latent item confounder q_i"),
    ]
    return Schema(feats)


def _draw_exposures(x, y, p, rng_e, rng_u, uniform_rate, test_u, test_i, logit):
    """Every user x item pair, one block of users at a time: the pair interest ``h``
    (with its noise from ``rng_e``), the policy's exposure logit ``logit(h, users)``, an
    exposure draw (``rng_e``) and the uniform policy's draw (``rng_u``, its own stream).
    Returns ``(users, items, h, logit)`` of the logged pairs (outside the test block),
    the test block's pairs and the uniformly shown pairs (outside the block)."""
    nu, ni = len(x), len(y)
    logged, block, uniform = [], [], []
    for sl in _base.user_blocks(nu, ni):
        uu = np.arange(sl.start, sl.stop)
        h = x[sl] @ y.T + p["interest_noise"] * rng_e.standard_normal((len(uu), ni))
        e = logit(h, uu)
        shown = rng_e.random(e.shape) < _base.sigmoid(e)
        in_block = test_u[uu][:, None] & test_i[None, :]
        uniform_shown = rng_u.random(e.shape) < uniform_rate
        for mask, out in ((shown & ~in_block, logged), (in_block, block),
                          (uniform_shown & ~in_block, uniform)):
            r, c = np.nonzero(mask)
            out.append((uu[r], c, h[r, c], e[r, c]))
    return tuple(tuple(np.concatenate(a) for a in zip(*parts)) for parts in (logged, block, uniform))


def simulate(params: Mapping | None = None) -> _base.Splits:
    """Splits ``train``, ``valid``, ``test`` as column dicts (see the module docstring)."""
    p = _params(params)
    if p["scenario"] == "proxy_bias":
        return _simulate_proxy_bias(p)
    if p["scenario"] == "proxy_shift":
        return _simulate_proxy_shift(p)
    sch = schema(p)
    s_struct, s_pilot, s_expo, s_rows = np.random.SeedSequence(p["seed"]).spawn(4)
    rng = np.random.default_rng(s_struct)
    nu, ni, d = p["n_users"], p["n_items"], p["dim"]

    # 1. latent structure
    x = _base.latent(rng, nu, d)
    activity = rng.standard_normal(nu)
    centres = _base.latent(rng, p["n_categories"], d)
    category = rng.integers(0, p["n_categories"], ni)
    y = 0.8 * centres[category] + 0.6 * _base.latent(rng, ni, d)
    q = rng.standard_normal(ni)
    prototypes = _base.latent(rng, p["n_segments"], d)
    segment = 1 + np.argmax(x @ prototypes.T, axis=1)
    activity_id = _base.quantile_bucket(activity, p["n_activity"])
    test_u = np.zeros(nu, bool)
    test_u[rng.choice(nu, p["test_users"], replace=False)] = True
    test_i = np.zeros(ni, bool)
    test_i[rng.choice(ni, p["test_items"], replace=False)] = True

    def exposure_logit(h, uu, ii):
        return (p["confounder_exposure"] * q[ii] + p["interest_exposure"] * h
                + p["activity_exposure"] * activity[uu])

    # 4. calibrate the policy intercept b_e on a pilot sample of pairs
    pilot = np.random.default_rng(s_pilot)
    pu, pi = pilot.integers(0, nu, 200_000), pilot.integers(0, ni, 200_000)
    ph = np.einsum("nd,nd->n", x[pu], y[pi]) + p["interest_noise"] * pilot.standard_normal(len(pu))
    b_e = _base.calibrate_intercept(exposure_logit(ph, pu, pi), p["density"])

    # 2.+4. draw h and exposures for every pair, one block of users at a time
    rng_e = np.random.default_rng(s_expo)
    # The uniform logging policy of `train_unbiased` draws from its own stream, so every
    # other split is the same bit for bit with or without it. It over-samples pairs at
    # rate 1.5 * density (cut to len(train) below) in the same blocks, so its pairs carry
    # the same world's interest h (pair noise included) as the logged ones.
    rng_u = np.random.default_rng([p["seed"], UNBIASED_STREAM])
    uniform_rate = min(1.0, 1.5 * p["density"])
    (lu, li, lh, le), (tu, ti, th, te), (uu_, ui_, uh_, ue_) = _draw_exposures(
        x, y, p, rng_e, rng_u, uniform_rate, test_u, test_i,
        lambda h, uu: exposure_logit(h, uu[:, None], np.arange(ni)[None, :]) + b_e)

    rng = np.random.default_rng(s_rows)
    # 5. positions
    n_pos = p["n_positions"]
    l_pos = _base.quantile_bucket(-(le + rng.standard_normal(len(le))), n_pos)
    t_pos = rng.integers(1, n_pos + 1, len(te))

    # 7. proxies from the logged rows
    shows = np.bincount(li, minlength=ni).astype(np.float64)
    item_stats = {"log_show_cnt": np.log1p(shows)}
    for name, a_k, b_k in RATE_PROXIES:
        pi_k = _base.sigmoid(a_k + b_k * q + 0.5 * rng.standard_normal(ni))
        hits = rng.binomial(shows.astype(np.int64), pi_k)
        prior = _base.sigmoid(a_k)
        item_stats[name] = (hits + 2.0 * prior) / (shows + 2.0)

    def rows(uu, ii, h, e, pos, click_rng=rng):
        r = _base.sigmoid(p["click_intercept"] + p["preference_click"] * h
                          + p["confounder_click"] * q[ii] + p["activity_click"] * activity[uu])
        rel = r / (1.0 + p["position_bias"] * (pos - 1))
        cols = {
            "user_id": uu + 1,
            "item_id": ii + 1,
            "user_activity": activity_id[uu],
            "user_segment": segment[uu],
            "item_category": category[ii] + 1,
            "position": pos,
            "click": (click_rng.random(len(rel)) < rel),
            "propensity": _base.sigmoid(e),
            "relevance": rel,
            "confounder": q[ii],
        }
        cols.update({k: v[ii] for k, v in item_stats.items()})
        return _base.cast_to_schema(sch, cols)

    logged_cols = rows(lu, li, lh, le, l_pos)
    test_cols = rows(tu, ti, th, te, t_pos)
    order = rng.permutation(len(lu))
    n_valid = int(round(p["valid_fraction"] * len(lu)))
    n_train = len(lu) - n_valid

    # the unbiased training sample: uniform exposure outside the test block, uniform
    # positions (as on the test block), clicks ~ relevance; all from rng_u
    pick = rng_u.choice(len(uu_), n_train, replace=len(uu_) < n_train)
    u_pos = rng_u.integers(1, n_pos + 1, n_train)
    unbiased_cols = rows(uu_[pick], ui_[pick], uh_[pick], ue_[pick], u_pos, click_rng=rng_u)
    if p["test_density"] < 1.0:  # a random share of the block's pairs (rng_u as well)
        test_cols = _base.take(test_cols, rng_u.random(len(te)) < p["test_density"])
    return {
        "train": _base.take(logged_cols, order[n_valid:]),
        "valid": _base.take(logged_cols, order[:n_valid]),
        "test": test_cols,
        "train_unbiased": unbiased_cols,
    }


# -- the `proxy_bias` scenario -------------------------------------------------------------

#: the item statistics of ``proxy_bias``, computed from the logged ``train`` rows
PROXY_BIAS_STATS = ("log_show_cnt", "logged_ctr", "mean_position")
#: the confounding proxies of ``proxy_bias``: the item statistics + the display position
PROXY_BIAS_PROXIES = PROXY_BIAS_STATS + ("position",)
#: Beta-prior strength (in shows) of the smoothed item statistics
PROXY_PRIOR_SHOWS = 10.0


def _proxy_bias_schema(p: dict) -> Schema:
    feats = [
        *_side_features(p),
        Feature("log_show_cnt", "proxy", description="log(1 + shows of the item in the logged train rows)"),
        Feature("logged_ctr", "proxy", description="the item's smoothed click rate in the logged train rows"),
        Feature("mean_position", "proxy", description="the item's smoothed mean display position in the "
                                                     "logged train rows"),
        Feature("position", "proxy", vocab_size=p["n_positions"] + 1, description="display position, 1 = top"),
        Feature("click", "label", description="clicked (Bernoulli(relevance))"),
        Feature("propensity", "exposure", description="true logging-policy P(exposed)"),
        Feature("relevance", "truth", description="true P(click) of the row = appeal x examination"),
        Feature("confounder", "truth", description="latent item appeal q_i (drives clicks and exposure)"),
        Feature("promotion", "truth", description="latent item promotion w_i (drives exposure and slots only)"),
        Feature("examination", "truth", description="true examination probability kappa(position) of the row"),
    ]
    return Schema(feats)


def item_statistics(train: Mapping, n_items: int, prior_shows: float = PROXY_PRIOR_SHOWS) -> dict:
    """The ``proxy_bias`` item statistics of every item id ``0..n_items`` (index = id),
    computed from logged rows ``train`` (``item_id``, ``click``, ``position``):
    ``log_show_cnt = log(1 + shows)``, ``logged_ctr`` and ``mean_position`` shrunk toward
    the log's overall rate / mean position by a Beta/normal prior worth ``prior_shows``
    shows. Vectorised (``bincount``); the simulator writes exactly these values."""
    items = np.asarray(train["item_id"], np.int64)
    clicks = np.asarray(train["click"], np.float64)
    pos = np.asarray(train["position"], np.float64)
    shows = np.bincount(items, minlength=n_items + 1).astype(np.float64)
    hit = np.bincount(items, weights=clicks, minlength=n_items + 1)
    pos_sum = np.bincount(items, weights=pos, minlength=n_items + 1)
    return {
        "log_show_cnt": np.log1p(shows),
        "logged_ctr": (hit + prior_shows * clicks.mean()) / (shows + prior_shows),
        "mean_position": (pos_sum + prior_shows * pos.mean()) / (shows + prior_shows),
    }


def examination(pos, position_bias: float) -> np.ndarray:
    """``kappa(k) = 1 / (1 + lambda (k - 1))``: P(a slot-k row is examined), 1 = top."""
    return 1.0 / (1.0 + position_bias * (np.asarray(pos, np.float64) - 1.0))


def _promotion_world(p: dict, s_struct, s_pilot):
    """The world ``proxy_bias`` and ``proxy_shift`` share, drawn in this order from
    ``s_struct``: user tastes ``x`` and activity, item categories and tastes ``y``, appeal
    ``q`` (drives clicks and the policy) and promotion ``w`` (drives the policy only),
    user segments, the test block's users and items; then the policy's exposure logit
    (item appeal, promotion, user activity; no pair interest) and its intercept ``b_e``,
    calibrated to ``density`` on a pilot sample from ``s_pilot``."""
    rng = np.random.default_rng(s_struct)
    nu, ni, d = p["n_users"], p["n_items"], p["dim"]
    x = _base.latent(rng, nu, d)
    activity = rng.standard_normal(nu)
    centres = _base.latent(rng, p["n_categories"], d)
    category = rng.integers(0, p["n_categories"], ni)
    y = 0.8 * centres[category] + 0.6 * _base.latent(rng, ni, d)
    q = rng.standard_normal(ni)
    w = rng.standard_normal(ni)
    prototypes = _base.latent(rng, p["n_segments"], d)
    segment = 1 + np.argmax(x @ prototypes.T, axis=1)
    activity_id = _base.quantile_bucket(activity, p["n_activity"])
    test_u = np.zeros(nu, bool)
    test_u[rng.choice(nu, p["test_users"], replace=False)] = True
    test_i = np.zeros(ni, bool)
    test_i[rng.choice(ni, p["test_items"], replace=False)] = True
    item_logit = p["confounder_exposure"] * q + p["promotion_exposure"] * w
    user_logit = p["activity_exposure"] * activity
    pilot = np.random.default_rng(s_pilot)
    pu, pi = pilot.integers(0, nu, 200_000), pilot.integers(0, ni, 200_000)
    b_e = _base.calibrate_intercept(user_logit[pu] + item_logit[pi], p["density"])
    return (nu, ni, x, activity, category, y, q, w, segment, activity_id, test_u, test_i,
            item_logit, user_logit, b_e)


def _promotion_rows(p, world, uu, ii, h, e, pos, click_rng, badge=None) -> dict:
    """The columns of ``proxy_bias`` / ``proxy_shift`` rows (users ``uu``, items ``ii``,
    interest ``h``, exposure logit ``e``, slot ``pos``): ``relevance = sigmoid(b_c +
    alpha h + beta_q q_i + beta_a a_u [+ tau badge]) x kappa(pos)`` and the click drawn
    from it; ``badge`` (``proxy_shift`` only) adds its lift and its truth column."""
    q, w, activity, activity_id, segment, category = world
    logit = (p["click_intercept"] + p["preference_click"] * h + p["confounder_click"] * q[ii]
             + p["activity_click"] * activity[uu])
    if badge is not None:
        logit = logit + p["badge_lift"] * badge
    kappa = examination(pos, p["position_bias"])
    rel = _base.sigmoid(logit) * kappa
    cols = {
        "user_id": uu + 1, "item_id": ii + 1, "user_activity": activity_id[uu],
        "user_segment": segment[uu], "item_category": category[ii] + 1, "position": pos,
        "click": (click_rng.random(len(rel)) < rel), "propensity": _base.sigmoid(e),
        "relevance": rel, "confounder": q[ii], "promotion": w[ii], "examination": kappa,
    }
    if badge is not None:
        cols["badge"] = badge.astype(np.float64)
    return cols


def _with_proxies(sch, logged_cols, order, n_valid, test_cols, unbiased_cols, n_items) -> _base.Splits:
    """The splits of ``proxy_bias`` / ``proxy_shift``: the logged rows split by ``order``
    into ``valid`` (the first ``n_valid``) and ``train``, the test block, the uniform-log
    sample; then the proxies, statistics of the logged *train* rows
    (:func:`item_statistics`), the same item values in every split."""
    out = {"train": {k: v[order[n_valid:]] for k, v in logged_cols.items()},
           "valid": {k: v[order[:n_valid]] for k, v in logged_cols.items()},
           "test": test_cols, "train_unbiased": unbiased_cols}
    stats = item_statistics(out["train"], n_items)
    for cols in out.values():
        cols.update({k: v[cols["item_id"]] for k, v in stats.items()})
    return {s: _base.cast_to_schema(sch, cols) for s, cols in out.items()}


def _simulate_proxy_bias(p: dict) -> _base.Splits:
    """The ``proxy_bias`` generator (module docstring, "Scenario proxy_bias")."""
    sch = _proxy_bias_schema(p)
    s_struct, s_pilot, s_expo, s_rows = np.random.SeedSequence([p["seed"], 20]).spawn(4)
    (nu, ni, x, activity, category, y, q, w, segment, activity_id, test_u, test_i, item_logit,
     user_logit, b_e) = _promotion_world(p, s_struct, s_pilot)

    rng_e = np.random.default_rng(s_expo)
    rng_u = np.random.default_rng([p["seed"], 20, UNBIASED_STREAM])
    uniform_rate = min(1.0, 1.5 * p["density"])
    (lu, li, lh, le), (tu, ti, th, te), (uu_, ui_, uh_, ue_) = _draw_exposures(
        x, y, p, rng_e, rng_u, uniform_rate, test_u, test_i,
        lambda h, uu: b_e + user_logit[uu][:, None] + item_logit[None, :])

    rng = np.random.default_rng(s_rows)
    n_pos = p["n_positions"]
    slot = (p["promotion_position"] * w[li] + p["appeal_position"] * q[li]
            + p["position_noise"] * rng.standard_normal(len(li)))
    l_pos = _base.quantile_bucket(-slot, n_pos)
    t_pos = rng.integers(1, n_pos + 1, len(te))

    def rows(uu, ii, h, e, pos, click_rng):
        return _promotion_rows(p, (q, w, activity, activity_id, segment, category),
                               uu, ii, h, e, pos, click_rng)

    logged_cols = rows(lu, li, lh, le, l_pos, rng)
    test_cols = rows(tu, ti, th, te, t_pos, rng)
    order = rng.permutation(len(lu))
    n_valid = int(round(p["valid_fraction"] * len(lu)))
    n_train = len(lu) - n_valid
    pick = rng_u.choice(len(uu_), n_train, replace=len(uu_) < n_train)
    u_pos = rng_u.integers(1, n_pos + 1, n_train)
    unbiased_cols = rows(uu_[pick], ui_[pick], uh_[pick], ue_[pick], u_pos, rng_u)
    if p["test_density"] < 1.0:
        keep = rng_u.random(len(te)) < p["test_density"]
        test_cols = {k: v[keep] for k, v in test_cols.items()}
    return _with_proxies(sch, logged_cols, order, n_valid, test_cols, unbiased_cols, ni)


# -- the `proxy_shift` scenario ------------------------------------------------------------

#: the item statistics of ``proxy_shift`` (the ``proxy_bias`` ones, :func:`item_statistics`)
PROXY_SHIFT_STATS = PROXY_BIAS_STATS
#: the item statistic that encodes the logging policy alone (its slots): the span a
#: non-oracle purifier removes (``headroom_check``'s "policy span" rows)
PROXY_SHIFT_POLICY_STATS = ("mean_position",)


def _proxy_shift_schema(p: dict) -> Schema:
    feats = list(_proxy_bias_schema(p))
    feats += [
        Feature("badge", "truth", description="1 if the policy showed the row with its promotion badge "
                "(never logged as a feature; 0 off the policy)"),
    ]
    return Schema(feats)


def _simulate_proxy_shift(p: dict) -> _base.Splits:
    """The ``proxy_shift`` generator (module docstring, "Scenario proxy_shift")."""
    sch = _proxy_shift_schema(p)
    s_struct, s_pilot, s_expo, s_rows, s_test = np.random.SeedSequence([p["seed"], 21]).spawn(5)
    (nu, ni, x, activity, category, y, q, w, segment, activity_id, test_u, test_i, item_logit,
     user_logit, b_e) = _promotion_world(p, s_struct, s_pilot)

    rng_e = np.random.default_rng(s_expo)
    rng_u = np.random.default_rng([p["seed"], 21, UNBIASED_STREAM])
    rng_t = np.random.default_rng(s_test)
    uniform_rate = min(1.0, 1.5 * p["density"])
    # only the test pairs (a share test_density of the block) leave the logs, so test
    # items are logged about as often as any item (coverage matched)
    logged, block, uniform = [], [], []
    for sl in _base.user_blocks(nu, ni):
        uu = np.arange(sl.start, sl.stop)
        h = x[sl] @ y.T + p["interest_noise"] * rng_e.standard_normal((len(uu), ni))
        e = b_e + user_logit[uu][:, None] + item_logit[None, :] + np.zeros_like(h)
        shown = rng_e.random(e.shape) < _base.sigmoid(e)
        in_test = (test_u[uu][:, None] & test_i[None, :]) & (rng_t.random(e.shape) < p["test_density"])
        uniform_shown = rng_u.random(e.shape) < uniform_rate
        for mask, out in ((shown & ~in_test, logged), (in_test, block), (uniform_shown & ~in_test, uniform)):
            r, c = np.nonzero(mask)
            out.append((uu[r], c, h[r, c], e[r, c]))
    (lu, li, lh, le), (tu, ti, th, te), (uu_, ui_, uh_, ue_) = (
        tuple(np.concatenate(a) for a in zip(*parts)) for parts in (logged, block, uniform))

    rng = np.random.default_rng(s_rows)
    n_pos = p["n_positions"]
    slot = (p["promotion_position"] * w[li] + p["appeal_position"] * q[li]
            + p["position_noise"] * rng.standard_normal(len(li)))
    l_pos = _base.quantile_bucket(-slot, n_pos)
    # the policy's badge on a logged row (promoted items carry it most of the time)
    l_badge = rng.random(len(li)) < _base.sigmoid(p["badge_intercept"] + p["badge_promotion"] * w[li])
    t_pos = rng.integers(1, n_pos + 1, len(te))

    def rows(uu, ii, h, e, pos, badge, click_rng):
        return _promotion_rows(p, (q, w, activity, activity_id, segment, category),
                               uu, ii, h, e, pos, click_rng, badge=badge)

    logged_cols = rows(lu, li, lh, le, l_pos, l_badge, rng)
    test_cols = rows(tu, ti, th, te, t_pos, np.zeros(len(te), bool), rng)
    order = rng.permutation(len(lu))
    n_valid = int(round(p["valid_fraction"] * len(lu)))
    n_train = len(lu) - n_valid
    pick = rng_u.choice(len(uu_), n_train, replace=len(uu_) < n_train)
    u_pos = rng_u.integers(1, n_pos + 1, n_train)
    unbiased_cols = rows(uu_[pick], ui_[pick], uh_[pick], ue_[pick], u_pos, np.zeros(n_train, bool), rng_u)
    return _with_proxies(sch, logged_cols, order, n_valid, test_cols, unbiased_cols, ni)


class ConfoundedCtr(SimulatorBuilder):
    """TFDS builder ``confounded_ctr`` (see the module docstring)."""

    BUILDER_CONFIGS = _base.make_configs(CONFIGS)
    EVIDENCE_CONFIG = "proxy_shift"
    _schema_fn = staticmethod(schema)
    _simulate_fn = staticmethod(simulate)
    _defaults = DEFAULTS
    _citation = """@inproceedings{gao2022kuairec,
  title={KuaiRec: A Fully-observed Dataset and Insights for Evaluating Recommender Systems},
  author={Gao, Chongming and Li, Shijun and Lei, Wenqiang and Chen, Jiawei and Li, Biao and
    Jiang, Peng and He, Xiangnan and Mao, Jiaxin and Chua, Tat-Seng},
  booktitle={CIKM}, year={2022}}"""
