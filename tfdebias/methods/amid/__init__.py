"""AMID: adaptive multi-interest debiasing for open-world cross-domain sequential
recommendation: Xu et al., *Rethinking Cross-Domain Sequential Recommendation under
Open-World Assumptions*, WWW 2024.

AMID wraps any sequential backbone (:mod:`tfdebias.models.gru4rec`, ``sasrec``,
``bert4rec``) with

* the **multi-interest information module** (MIM, Sec. 4.1, Eq. 3-6): interest groups
  between the target user's target-domain sequence and the other-domain sequences of
  ``N`` sampled users (and her own other-domain sequence, if she has one), messages
  from the group, and an enhanced sequence of length ``2T``;
* the **prediction layer**, Eq. (7): ``sigma(MLP(Mean(S*) || v))`` (the backbone's head);
* the **doubly robust estimator** (DRE, Sec. 4.3, Eq. 9): an imputation model ``g_phi``
  and a propensity model ``g_psi``, both MLPs on ``Mean(S*) || v`` (multi-task);
* **alternating training** (Sec. 4.4 and Algorithm 1): ``L_c`` (Eq. 13) on observed
  pairs updates the recommender ``theta`` and the imputation model ``phi``; then ``L_r``
  (Eq. 15) on all pairs ``D`` (observed and unobserved users) updates ``theta``.

The same class gives the paper's ablation and the IPS baseline:
``estimator="none"`` = backbone + MIM; ``mim=False, estimator="ips"`` = backbone +
IPS-weighted cross-domain training (IPSCDR-style: the user's own other-domain sequence
is transferred, ``L_r`` with ``e_hat = 0`` is the IPS risk).

Choices where the paper is silent or the released code differs (also in
``docs/methods/amid.md``):

1. **MIM follows the paper, not the released code.** The code's batched matmul makes
   every row of the group mask the same (each user gets one shared message,
   official_code_notes 1.3); we compute the per-pair ``a'_ij`` of Eq. (3).
2. **The N sampled users** are drawn from a bank of training users' histories kept in
   the model (:meth:`AMID.set_user_bank`): a fresh random ``N`` (default 64) per training
   step, a fixed ``N`` at evaluation and serving, so a user's score never depends on which
   other test users share her batch (the code uses the mini-batch itself, N = 256).
   ``W_C`` has ``N + 1`` entries: the ``N`` sampled users and the user's own
   other-domain sequence ("the message from the same user in a different domain will
   also be propagated"), which is never thresholded: it reaches her whenever she has
   another domain. A run whose group rate (sampled users only) is 0 or 1 fails.
3. **The threshold of Eq. (4)** is hard in the forward pass; its gradient is the
   straight-through gradient of ``sigmoid((a' - k) / tau)``, so ``W1``, ``W2`` learn
   (with a hard step they would get no gradient at all). ``a'`` is the max *cosine*
   of the projected positions, so ``k`` lives in [-1, 1] (default 0.3, about the median
   of ``a'`` at initialisation on the simulator; at 0.5 the groups emptied during training).
   ``group_size = n`` (an option, BERT4Rec's rows in ``tfdebias reproduce amid``) groups
   each row with her ``n`` most similar sampled users instead: a per-row ``k``, for a
   backbone whose ``a'`` has no fixed ``k`` that keeps the groups open on every draw.
4. **The propensity model is user-level and fitted**: ``g_psi`` reads ``Mean(S*)`` alone
   (observation is per user) and is fitted to the observation indicator ``o`` of each
   row of ``D`` by binary cross-entropy on a stopped-gradient representation, in the
   ``L_r`` phase (the paper does not say how ``g_psi`` is learnt; the code fits nothing,
   so its "propensity" is only a learned denominator). It is clipped to
   ``[propensity_clip, 1]`` (default 0.01) wherever it divides, and enters ``L_c`` and
   ``L_r`` with its gradient stopped; ``propensity="true"`` reads the data's true one.
5. **Unobserved users' pairs carry no label**: their "positive" is replaced by a random
   item of the domain, so neither ``L_r`` nor MIM ever reads an unobserved user's true
   next item (in ``L_r`` an unobserved pair contributes ``e_hat`` only, Eq. 15).
6. ``e`` is the per-pair binary cross-entropy (the code's choice; the paper allows MAE
   or MSE). ``(e_hat - e)^2`` in ``L_c`` regresses ``g_phi`` on a stopped ``e``.
7. **Schedule**: one ``L_c`` epoch over the observed rows, then one ``L_r`` epoch over
   ``D``, per outer epoch (as the code does), with the ``L_r`` optimizer at
   ``dr_lr_ratio`` times the learning rate (``eta'`` of Algorithm 1; code: 0.01).
   ``L_r`` updates ``theta`` (encoders, MIM, prediction MLP); the frozen ``g_phi``
   still passes its gradient into ``theta``'s representation, which is how the
   unobserved users' pairs inform the recommender. ``fit_amid(steps=N)`` stops after
   exactly ``N`` updates of either optimizer; ``tfdebias reproduce amid`` gives every
   row the same ``N`` and keeps each row's best checkpoint on validation.
8. **Next-item loss at every position** (``position_loss``): ``L_c``'s recommendation
   term scores the item after each position of the target history from the prefix's
   representation (MIM's groups over the prefix only), not only the row's target; the
   causal backbones only (BERT4Rec keeps the last position). **The head** adds
   ``<Mean(S*), v>`` to Eq. (7)'s MLP logit (``dot_head``): the MLP alone learned the
   user-item interaction too slowly for a backbone to beat an item-kNN.
   **Many negatives** (``position_negatives`` = K, 32 in ``tfdebias reproduce amid``):
   that next-item term becomes a sampled softmax, the cross-entropy of the next item
   against K negatives of its domain (drawn per row, never an item of her sequence),
   instead of the authors' BCE against one negative. With one negative SASRec stayed at
   the item-kNN's level; the terms the estimators read (``e`` of Eq. 9-15) stay BCE on
   the row's target pair, so IPS and DR weigh the errors the paper defines.
Modules: :mod:`.losses` (Eq. 9, the DR and IPS estimators), :mod:`.model` (MIM, the
heads, :class:`AMID`), :mod:`.data` (the ``L_r`` stream, negative pools), :mod:`.train`
(Algorithm 1, :func:`fit_amid`, step budgets), :mod:`.protocol` (the sampled-negative
ranking protocol and the evidence scores), :mod:`.reproduce` (``tfdebias reproduce amid``).
"""

from tfdebias.methods.amid.losses import domain_mean, doubly_robust_estimate, ips_estimate
from tfdebias.methods.amid.model import (AMID, BACKBONES, ESTIMATORS, PROPENSITIES,
                                         MultiInterestModule, PairHead, build_amid)
from tfdebias.methods.amid.data import make_dr_dataset, samplers_pools, split_negatives
from tfdebias.methods.amid.train import (check_group_rates, fit_amid, reset_optimizer,
                                         step_budget, validation_ndcg)
from tfdebias.methods.amid.protocol import (DOMAIN_NAMES, GROUPS, clear_candidates,
                                            ranking_candidates, ranking_evidence,
                                            ranking_protocol, score_candidate_matrix,
                                            user_groups)
from tfdebias.methods.amid.reproduce import (CDSR_ROWS, CROSS_DOMAIN_KNN, CROSS_METRIC,
                                             DEFAULTS, DISPLAY,
                                             HEADLINE, QUICK, ROW_TEMPLATES, SEARCH_SPACE,
                                             SIMPLE_ROWS, TRAIN_SPLIT, cross_domain_headroom,
                                             experiment_rows, group_rate, propensity_quality,
                                             run_reproduce, run_row, simple_scores,
                                             validation_set)

__all__ = [
    "AMID", "BACKBONES", "CDSR_ROWS", "CROSS_DOMAIN_KNN", "CROSS_METRIC", "DEFAULTS", "PROPENSITIES",
    "check_group_rates", "cross_domain_headroom", "group_rate", "propensity_quality",
    "validation_ndcg", "validation_set", "DISPLAY", "DOMAIN_NAMES", "ESTIMATORS",
    "GROUPS", "HEADLINE", "MultiInterestModule", "PairHead", "QUICK", "ROW_TEMPLATES",
    "SEARCH_SPACE", "SIMPLE_ROWS", "TRAIN_SPLIT", "build_amid", "clear_candidates",
    "domain_mean", "doubly_robust_estimate", "experiment_rows", "fit_amid", "ips_estimate",
    "make_dr_dataset", "ranking_candidates", "ranking_evidence", "ranking_protocol",
    "reset_optimizer", "run_reproduce", "run_row", "samplers_pools", "score_candidate_matrix",
    "simple_scores", "split_negatives", "step_budget", "user_groups",
]
