"""CP2Rec: confounding-proxy priors for accuracy-bias tradeoff CTR learning, its
baselines (IPS, SNIPS, Rel, CVIB, DIB) and ablations, on the NCF and DCN backbones.

Paper: Liu, Qiao, Tang, Chen, He, Ming, "Prior-Guided Accuracy-Bias Tradeoff Learning
for CTR Prediction in Multimedia Recommendation", ACM MM 2023. Equation
numbers below are the paper's.

The pieces, each in one place::

    feature partitioning (Sec. 4.2)   schema role "proxy" -> c, every other input -> z
    COS purifier, Eq. (3)-(4)         cosine_orthogonality_loss
    PROJ purifier, Eq. (5)-(6)        project_out (one c), project_out_span (all proxy fields)
    SOLVE purifier, Eq. (7)-(8)       club_mutual_information, club_log_likelihood, ClubEstimator
    y_B = f([c, z']), Eq. (9)-(10)    CP2Rec._tower(c, z'),  term "L_B"
    c' = sigma(W c + b), Eq. (11)     CP2Rec.refiner
    y_U = f([c', z']), Eq. (12)-(13)  CP2Rec._tower(c', z'), term "L_U" (self-normalised IPS, snips_loss)
    L = gamma L_B + L_U + beta L_O + lambda ||theta||, Eq. (2)   CP2Rec.loss_terms
    baselines: ips_loss, snips_loss, rel_loss, cvib_info_loss, dib_loss (``loss=...``)

:meth:`CP2Rec.loss_terms` is the one function that computes every named loss term of a
batch; ``train_step``/``test_step``, the tests and the multi-worker loop all call it.

Choices the paper leaves open (also in ``docs/methods/cp2rec.md``):

* **c and z as vectors.** Eq. (4)-(6) need ``z_i`` and ``c_i`` in one space. Every
  field is embedded to ``d`` = ``embedding_dim``: categorical ids by a table; each
  dense *proxy* is a field of its own (its batch-normalised value times a learned
  vector), the dense z inputs share one field (a bias-free linear map). So ``z`` is
  (B, F_z, d) and ``c`` (B, F_c, d) with one c field per proxy feature.
* **Which c the purifiers see.** The paper writes one ``c_i``; with several proxy
  fields we purify z against all of them: PROJ removes from each ``z_ij`` its
  orthogonal projection on the span of the row's proxy fields (``project_out_span``,
  ``proj_basis="span"``), so no linear read-out of z' along any proxy field remains;
  ``proj_basis="mean"`` is the paper's literal single vector, the mean proxy field
  ``c_bar`` (Eq. 5-6 with ``c_i = c_bar_i``); ``"auto"`` (default) takes the span when
  F_c < d (else the span is all of R^d and z' would vanish) and the mean otherwise.
  COS averages ``|cos(z_ij, c_ik)|`` over rows, z fields and proxy fields. CLUB
  (SOLVE) runs on the flattened ``z`` (B, F_z*d) and ``c`` (B, F_c*d).
* **Stop-gradient into c.** Inside the purifiers c enters through ``stop_gradient``:
  L_O (COS, SOLVE) and the projection move z only. Otherwise the cheapest way to make
  z orthogonal to c is to move c (shrink or rotate the proxy embeddings), which
  corrupts the prior the paper wants c to carry; c is learnt through f (Eq. 9, 12).
* **f, the backbone's tower.** DCN: ``x_0 = [flatten(c), flatten(z')]`` into its cross
  and deep networks (``DeepCrossNetwork.tower``). NCF: GMF on the user-side and
  item-side z' fields (sum of each side's fields, element-wise product), MLP on
  ``[flatten(c), flatten(z')]`` (``NeuMF.tower``); one embedding serves GMF and MLP
  because the purifier acts on one z. The backbone's own embedding layers are unused.
* **sigma in Eq. (11)** is ``tanh`` by default (``refine_activation``): c' then lives in
  the same signed range as c, which the shared f also reads.
* **Propensities for L_U** (the paper does not say how p is estimated): the
  probability that a row was exposed *and examined*, ``p_hat = e_hat_ui *
  kappa_hat(position)`` (``propensity="estimated"``, column ``propensity_hat``):
  ``e_hat_ui = n_u * n_i / N`` (``estimate_propensity``: a rank-one exposure model fit
  on the training split, calibrated: it sums to N over all pairs) times the examination
  curve of the display position, ``kappa_hat`` (``estimate_examination``: the
  position-based click model ``P(click) = kappa_k rho_i`` fit on the training log,
  ``kappa_hat(1) = 1``). ``e_hat`` alone, a function of ids the model already reads,
  cannot tell the slot's share of a click from the item's; the examination factor can.
  ``propensity="independence"`` is ``n_u n_i / N`` alone (the paper's reading);
  ``propensity="oracle"`` reads ``propensity_oracle``, the simulator's true exposure
  probability times its true examination (the positive-control rows). All clipped below
  at ``propensity_clip``.
* **L_U's scale.** The plain IPS mean ``mean_batch(w * BCE)``, w = 1/p, is about
  mean(w) times L_B (21x on the position-leak log), so with gamma = 0.1, beta = 0.01
  the L_B and L_O terms vanished. CP2Rec's L_U is therefore self-normalised,
  ``sum(w BCE) / sum(w)`` over the batch (``lu_normalization="self"``, default; SNIPS,
  Swaminathan & Joachims 2015): the same minimiser in expectation up to the
  normalisation, on L_B's scale, so gamma and beta mean what Table 3 tunes.
  ``lu_normalization="none"`` is the plain mean. The IPS *baseline* row keeps the plain
  mean (Schnabel et al. 2016), SNIPS is its own row.
* **CLUB training.** q_theta(c|z) is a diagonal Gaussian (two MLPs, as in CLUB's
  reference estimator). Each step q_theta gets the gradient of its own negative
  log-likelihood on (stop_grad z, stop_grad c) only, and every other variable gets the
  gradient of the CP2Rec loss with the MI bound only: CLUB's alternating "likelihood
  step, then MI step" on the same batch, applied in one optimizer update.
* **lambda ||theta||** is an L2 penalty on the looked-up embedding rows (sparse
  gradients), ``lambda_reg``.
* **Ablations** (Table 6): "w/o ABT" = ``abt=False, loss="bce"`` (L = L_B + beta L_O,
  y_B served); "w/o ABT, BD" = also ``purifier="none"``.
* **Baselines** share CP2Rec's features and tower (``abt=False, purifier="none"``) and
  differ only in the loss: ``loss="ips"`` (Schnabel et al. 2016), ``"snips"``
  (Swaminathan & Joachims 2015), ``"rel"`` (Saito et al. 2020, with the same
  estimated propensity as exposure probability), ``"cvib"`` (Wang et al. 2020; the
  unobserved events are the batch's rows with the non-user features permuted), and
  ``"dib"`` (Liu et al. 2021; see :func:`dib_loss`). The plain backbones themselves
  (``models.build("ncf"|"dcn")``, binary cross-entropy) are rows of their own.

The package, in the order its modules import each other (``reproduce -> protocol/train ->
model/data -> losses``)::

    losses.py     the loss terms of Eq. (2)-(13) and the baselines', functions of tensors
    data.py       the propensity columns (estimate_propensity, rel_propensity, add_propensity)
    model.py      ClubEstimator, CP2Rec, CP2RecBaseline (registered models)
    train.py      one row of the evidence table trained with the engine (train_row, SnipsStopping)
    protocol.py   what a row is scored on (evaluation_design, score_predictions, simple_rows),
                  the numpy headroom check and the linear probe of z / z'
    reproduce.py  ``tfdebias reproduce cp2rec``: the table's rows, the run, its notes, and
                  SEARCH_SPACE (Table 3) for ``tfdebias tune cp2rec``
"""

from tfdebias.methods.cp2rec.data import (
    EXAMINATION,
    INDEPENDENCE_HAT,
    PROPENSITY_CLIP,
    PROPENSITY_HAT,
    PROPENSITY_ORACLE,
    REL_PROPENSITY_HAT,
    add_propensity,
    estimate_examination,
    estimate_propensity,
    rel_propensity,
    user_item,
)
from tfdebias.methods.cp2rec.losses import (
    bce_with_logits,
    club_log_likelihood,
    club_mutual_information,
    cosine_orthogonality_loss,
    cvib_info_loss,
    dib_loss,
    ips_loss,
    project_out,
    project_out_span,
    rel_loss,
    snips_loss,
)
from tfdebias.methods.cp2rec.model import (
    BACKBONES,
    LOSSES,
    PROPENSITIES,
    PURIFIERS,
    ClubEstimator,
    CP2Rec,
    CP2RecBaseline,
)
from tfdebias.methods.cp2rec.protocol import (
    GROUPS,
    LOGISTIC,
    POPULARITY,
    TRUTH,
    evaluation_design,
    headroom_check,
    linear_probe,
    score_predictions,
    simple_rows,
    valid_metrics,
)
from tfdebias.methods.cp2rec.reproduce import QUICK_ROWS, SEARCH_SPACE, SKYLINE, row_role, table_rows
from tfdebias.methods.cp2rec.train import PREDICT_BATCH, SnipsStopping, train_row

__all__ = [
    "BACKBONES", "CP2Rec", "EXAMINATION", "INDEPENDENCE_HAT", "PROPENSITIES", "PROPENSITY_ORACLE",
    "estimate_examination", "headroom_check", "linear_probe", "project_out_span", "CP2RecBaseline",
    "ClubEstimator", "GROUPS", "LOGISTIC", "LOSSES", "POPULARITY",
    "PREDICT_BATCH", "PROPENSITY_CLIP", "PROPENSITY_HAT", "PURIFIERS", "QUICK_ROWS", "REL_PROPENSITY_HAT",
    "SEARCH_SPACE", "SKYLINE", "SnipsStopping", "TRUTH", "add_propensity", "bce_with_logits",
    "club_log_likelihood", "club_mutual_information", "cosine_orthogonality_loss", "cvib_info_loss", "dib_loss",
    "estimate_propensity", "evaluation_design", "ips_loss", "project_out", "rel_loss", "rel_propensity",
    "row_role", "score_predictions", "simple_rows", "snips_loss", "table_rows", "train_row", "user_item",
    "valid_metrics",
]
