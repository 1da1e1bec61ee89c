"""DADIN: Domain Adversarial Deep Interest Network for cross-domain CTR prediction
(Kong et al., 2023, arXiv 2305.12058).

The model (Sec. 3, Fig. 3), one forward pass of :meth:`DADIN.forward_all`:

==============================  ==========================================================
paper                           code
==============================  ==========================================================
Eq. (1) field sum pooling       ``p = sum_f e(user_f)``, ``q = sum_f e(item_f)``
                                (:meth:`DADIN.fields`)
Eq. (2)-(3) item attention      one shared :class:`~tfdebias.layers.AttentionPooling` per
                                history, ``terms=(key, query, context, product)``,
                                hidden ``[d]`` ReLU, softmax over the valid positions
Eq. (4) / (5)-(6) interest      :class:`InterestAttention`: ``v_* = exp(g_*^T ReLU(V_*
attention                       [q||p||a||b])) + b_*``; ``m = [q || v_u p || v_t a || v_s b]``
Eq. (7)-(8) bi-interaction      :class:`~tfdebias.layers.BiInteraction` with one weight
                                ``c_i`` per field (``field_weights=True``)
DNN -> ``h_spec``               :class:`~tfdebias.layers.MLP` ``hidden_units``
Sec. 3.3.1 domain agnostic      ``h_DA = sigmoid(W h_spec + b)``; ``h = h_DA + h_spec``
Eq. (9)-(10) label predictor    ``Dense(100) -> Dropout -> Dense(1) -> sigmoid``
Eq. (11) GRL                    :class:`~tfdebias.layers.GradientReversal`
Eq. (12) global classifier      ``D_dagger = sigmoid(W_3 Rev(h_DA) + b_3)``
Eq. (13)-(14) intra-class       ``D^1 = sigmoid(W_4 Rev(y_hat * h_DA) + b_4)``,
classifiers                     ``D^0 = sigmoid(W_5 Rev((1 - y_hat) * h_DA) + b_5)``
Eq. (15)-(22) loss              :func:`dadin_loss_terms` (the one loss function)
==============================  ==========================================================

Choices where the paper is ambiguous (also in ``docs/methods/dadin.md``):

* **Loss weighting.** Eq. (21) reads ``alpha lambda_3 (L_d^0 + (1 - alpha) L_d^1)``,
  which with ``alpha = 0.5`` weights the two classes 0.5 / 0.25, against the text
  ("the importance of confusion loss in the two classes should be the same") and
  against Eq. (22) and (24), which weight them ``alpha`` / ``1 - alpha``. We implement
  Eq. (22)/(24) with the lambdas of Eq. (20):
  ``L = lambda_1 L_y + lambda_2 L_d_dagger + lambda_3 (alpha L_d^0 + (1 - alpha) L_d^1)``,
  as the authors' code does (``official_code_notes.md`` §3.2). The sign-less
  cross-entropies of Eq. (15)-(18) are read as the usual (positive) binary
  cross-entropy.
* **Threshold T** (Eq. (17)-(18)) applies to the *predicted* CTR ``y_hat`` (as the
  paper says and the code does); ``L_d^1`` averages over the ``rho`` rows in class 1,
  ``L_d^0`` over the ``tau`` rows in class 0; an empty class contributes 0. The paper
  gives no value of ``T``; the authors' code uses 0.05 on DIGIX. A fixed ``T`` between
  the two domains' click rates splits the batch by domain rather than by class (a
  near-chance model predicts its domain's base rate), leaving the intra-class
  classifiers nothing to align. Default ``threshold="domain_median"``: each domain of a
  batch is split at its own median ``y_hat``, so both domains fall in both classes
  (:func:`intra_class_membership`); ``threshold=<T>`` is the paper's fixed rule.
* **Conditioning ``y_hat * h_DA``** (Eq. (13)-(14)): ``condition="detached"`` (default)
  stops the gradient through ``y_hat``: a class-membership weight, as CDAN's and
  MADA's conditioning uses the prediction, so the reversed gradient cannot move the
  label predictor's domain offset. ``condition="paper"`` is Eq. (13) literally,
  ``Rev(y_hat h_DA)`` (the reversed gradient reaches the predictor through ``y_hat``);
  ``condition="authors"`` is the authors' code, ``Rev(h_DA) y_hat`` (``y_hat`` gets the
  classifier's unreversed gradient).
* **DNN width.** The text says "two FC layers" giving ``h_spec in R^d``; Table 2 lists
  DADIN with hidden units ``[512, 128, 64]`` (64 = d). We default to Table 2;
  ``h_spec`` has the width of the last layer. The authors' code uses ``[128, d]``.
* **Interest weights.** Eq. (5) writes ``v_s`` twice; we use ``v_t`` for the target
  history ``a`` and ``v_s`` for the source history ``b``, each with its own ``V, g, b``
  (the code reuses ``g_s`` for ``v_t``, a bug we do not copy). ``exp`` is applied to a
  value clipped at 20 so that an early large score cannot overflow.
* **Eq. (8)**'s absolute value is read as brackets: Eq. (7), which it restates, has none.
* **Domain-agnostic layer**: one ``Dense`` with a sigmoid (the code's
  ``sigmoid(Linear(d, d))``); the paper gives no form. Without it (DADIN6) the
  classifiers and the label predictor all read ``h_spec``.
* **GRL weight**: Eq. (11) is ``-I`` (weight 1). The authors' code ramps the weight with
  DANN's ``2 / (1 + exp(-10 p)) - 1``, ``p = step / 15000``; a run of a few hundred or
  thousand steps then ends at a weight of 0.08-0.3, not 1. Default
  ``grl_schedule="run"``: the same ramp with ``p = step / total steps of the run``
  (:meth:`DADIN.set_run_length`, or ``fit``'s epochs x steps per epoch), so the weight
  reaches ``grl_scale`` by the end of a run of any length; ``"warmup"`` is the authors'
  fixed 15,000 steps, ``"constant"`` (or ``grl_warmup_steps=0``) the literal Eq. (11)
  with a constant ``grl_scale`` (the tuning grid has 0.03, 0.1, 0.3, 1).
* **Loss weights and clipping**: the evidence table uses the authors' ``lambda_2 =
  lambda_3 = 0.5`` and clips the gradient at global norm 10 (their FuxiCTR
  ``max_gradient_norm``; ``clip_norm``, default 10, 0 = off), with a GRL maximum of 0.1
  (:data:`~tfdebias.methods.dadin.reproduce.ADVERSARY`): at 1, a plain DANN on the
  simulator's ``covariate_shift`` diverges (with Adam, clipping does not bound the step).
* **Inputs.** The user profile is every ``user_*`` categorical feature, the item field
  every ``item_*`` one (a single item table serves both domains: the simulator's item
  ids are disjoint ranges of one id space; the code keeps two tables, which is the same
  model with disjoint rows). Other context features (``day``) are not DADIN inputs.
  The candidate item queries both histories (for source rows the source item queries
  them, as in the code).

Ablations (Sec. 4.4) are constructor switches, :data:`VARIANTS` maps the paper's names
to them: DADIN1 ``item_attention=False`` (average pooling), DADIN2
``interest_attention=False`` (Eq. (4)), DADIN3 ``bi_interaction=False`` (the DNN reads
the flattened ``m``), DADIN4 ``dnn=False``, DADIN5 both, DADIN6
``domain_agnostic=False``, DADIN7 ``global_domain_loss=False``, DADIN8
``intra_class_loss=False``, DADIN9 neither loss, DADIN++ everything. A removed piece is
not built, so its parameters disappear from ``count_params()``.
In the evidence table the loss ablations are zero weights instead
(:data:`~tfdebias.methods.dadin.reproduce.ZERO_WEIGHT`: DADIN7 ``lambda_global=0``,
DADIN8 ``lambda_intra=0``, DADIN9 both): the same layers as DADIN++, so under one seed
they start from the same weights and draw the same dropout masks (paired seeds); the
architectural ablations DADIN1-6 take DADIN++'s initial weights wherever they share its
layers (:func:`share_initial_weights`). The table adds a plain **DANN** row (DADIN's
backbone, no domain-agnostic layer, one global domain classifier on the representation
the predictor reads, weight 1) and a **target-only** row (DADIN9 on the target rows).

Diagnostics: :func:`domain_diagnostics` (linear-probe domain separability of ``h_DA``
and ``h``, :func:`domain_probe_auc`, and the global classifier's loss, ``ln 2`` when it
is confused).

Example:

>>> from tfdebias import models                                          # doctest: +SKIP
>>> model = models.build("dadin", schema, embedding_dim=16, **VARIANTS["dadin3"])  # doctest: +SKIP
>>> model.compile(optimizer="adam")        # DADIN trains with its own loss  # doctest: +SKIP
>>> model.fit(make_dataset(train, schema, batch_size=2000, shuffle=True))  # doctest: +SKIP

The package:

* :mod:`~tfdebias.methods.dadin.losses`: :func:`dadin_loss_terms`, Eq. (15)-(22);
* :mod:`~tfdebias.methods.dadin.model`: :class:`InterestAttention`, :class:`DADIN`
  (registered as ``"dadin"``), :func:`grl_schedule`, :data:`VARIANTS`, :func:`field_names`;
* :mod:`~tfdebias.methods.dadin.data`: one simulator draw's splits and the rows each
  evidence-table group trains on;
* :mod:`~tfdebias.methods.dadin.train`: the step budgets, paired initial weights of the
  ablations (:func:`share_initial_weights`) and exactly-``steps`` training (:func:`train_row`);
* :mod:`~tfdebias.methods.dadin.protocol`: the ``cross_domain`` protocol and
  :func:`evidence_scores`;
* :mod:`~tfdebias.methods.dadin.reproduce`: ``tfdebias reproduce dadin``
  (:func:`run_reproduce`) and :data:`SEARCH_SPACE`.
"""

from tfdebias.methods.dadin.data import (  # noqa: F401
    group_rows,
    load_splits,
    model_sample,
    target_domain_rows,
)
from tfdebias.methods.dadin.losses import (  # noqa: F401
    DOMAIN_MEDIAN,
    dadin_loss_terms,
    intra_class_membership,
)
from tfdebias.methods.dadin.model import (  # noqa: F401
    CONDITIONS,
    DADIN,
    GRL_SCHEDULES,
    PAPER_DEFAULTS,
    VARIANTS,
    InterestAttention,
    field_names,
    grl_schedule,
    variant_args,
)
from tfdebias.methods.dadin.protocol import (  # noqa: F401
    domain_diagnostics,
    domain_probe_auc,
    evidence_scores,
    representations,
)
from tfdebias.methods.dadin.reproduce import (  # noqa: F401
    ADVERSARY,
    FLOOR,
    LOGISTIC,
    METHOD,
    POPULARITY,
    QUICK_ROWS,
    SEARCH_SPACE,
    SKYLINE,
    TABLE_ROWS,
    TRUTH,
    ZERO_WEIGHT,
    json_budget,
    run_reproduce,
)
from tfdebias.methods.dadin.train import (  # noqa: F401
    BUDGETS,
    build_row_model,
    row_config,
    share_initial_weights,
    train_row,
)

__all__ = ["DADIN", "InterestAttention", "PAPER_DEFAULTS", "SEARCH_SPACE", "VARIANTS",
           "dadin_loss_terms", "grl_schedule", "variant_args"]
