"""CP2Rec: confounding-proxy priors for accuracy-bias tradeoff CTR learning, its
baselines (IPS, SNIPS, Rel, CVIB, DIB) and ablations, on the NCF and DCN backbones.

Paper: Liu, Qiao, Tang, Chen, He, Ming, "Prior-Guided Accuracy-Bias Tradeoff Learning
for CTR Prediction in Multimedia Recommendation", ACM MM 2023. Equation
numbers below are the paper's.

The pieces, each in one place::

    feature partitioning (Sec. 4.2)   schema role "proxy" -> c, every other input -> z
    COS purifier, Eq. (3)-(4)         cosine_orthogonality_loss
    PROJ purifier, Eq. (5)-(6)        project_out
    SOLVE purifier, Eq. (7)-(8)       club_mutual_information, club_log_likelihood, ClubEstimator
    y_B = f([c, z']), Eq. (9)-(10)    CP2Rec._tower(c, z'),  term "L_B"
    c' = sigma(W c + b), Eq. (11)     CP2Rec.refiner
    y_U = f([c', z']), Eq. (12)-(13)  CP2Rec._tower(c', z'), term "L_U" (IPS, ips_loss)
    L = gamma L_B + L_U + beta L_O + lambda ||theta||, Eq. (2)   CP2Rec.loss_terms
    baselines: ips_loss, snips_loss, rel_loss, cvib_info_loss, dib_loss (``loss=...``)

:meth:`CP2Rec.loss_terms` is the one function that computes every named loss term of a
batch; ``train_step``/``test_step``, the tests and the multi-worker loop all call it.

Choices the paper leaves open (also in ``docs/methods/cp2rec.md``):

* **c and z as vectors.** Eq. (4)-(6) need ``z_i`` and ``c_i`` in one space. Every
  field is embedded to ``d`` = ``embedding_dim`` (categorical ids by a table; the dense
  scalars of a group by one bias-free linear map after batch normalisation, i.e. the
  sum of "value x learned vector" field embeddings), giving ``z`` (B, F_z, d) and
  ``c`` (B, F_c, d). The proxy prior of a row is the mean proxy field
  ``c_bar`` (B, d); the purifiers act on every z field against ``c_bar``:
  COS averages ``|cos(z_ij, c_bar_i)|`` over rows and fields, PROJ removes from each
  ``z_ij`` its projection on ``c_bar_i``. CLUB (SOLVE) is run on the flattened vectors
  ``z`` (B, F_z*d) and ``c`` (B, F_c*d), where no common width is needed.
* **f, the backbone's tower.** DCN: ``x_0 = [flatten(c), flatten(z')]`` into its cross
  and deep networks (``DeepCrossNetwork.tower``). NCF: GMF on the user-side and
  item-side z' fields (sum of each side's fields, element-wise product), MLP on
  ``[flatten(c), flatten(z')]`` (``NeuMF.tower``); one embedding serves GMF and MLP
  because the purifier acts on one z. The backbone's own embedding layers are unused.
* **sigma in Eq. (11)** is ``tanh`` by default (``refine_activation``): c' then lives in
  the same signed range as c, which the shared f also reads.
* **Propensities for L_U** when the data has none: ``estimate_propensity``, a rank-one
  (independence) model of the logging policy fit on the training split,
  ``p_hat_ui = n_u * n_i / N`` (n_u, n_i: logged rows of the user / item, N: all logged
  rows; it sums to N over all pairs, i.e. it is calibrated), clipped below at
  ``propensity_clip``. The simulator's true ``propensity`` column is used only with
  ``propensity="oracle"`` (the oracle comparison rows of the reproducer).
* **IPS scale.** ``L_U = mean_batch(w * BCE)`` with ``w = 1/p_hat``, the unbiased
  estimate of the all-pairs loss up to the constant factor 1/density (the logged
  fraction of pairs), which gamma and beta absorb.
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
    protocol.py   what a row is scored on (evaluation_design, score_predictions, simple_rows)
    reproduce.py  ``tfdebias reproduce cp2rec``: the table's rows, the run, its notes, and
                  SEARCH_SPACE (Table 3) for ``tfdebias tune cp2rec``
"""

from tfdebias.methods.cp2rec.data import (
    PROPENSITY_CLIP,
    PROPENSITY_HAT,
    REL_PROPENSITY_HAT,
    add_propensity,
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
    rel_loss,
    snips_loss,
)
from tfdebias.methods.cp2rec.model import BACKBONES, LOSSES, PURIFIERS, ClubEstimator, CP2Rec, CP2RecBaseline
from tfdebias.methods.cp2rec.protocol import (
    GROUPS,
    LOGISTIC,
    POPULARITY,
    TRUTH,
    evaluation_design,
    score_predictions,
    simple_rows,
    valid_metrics,
)
from tfdebias.methods.cp2rec.reproduce import QUICK_ROWS, SEARCH_SPACE, SKYLINE, row_role, table_rows
from tfdebias.methods.cp2rec.train import PREDICT_BATCH, SnipsStopping, train_row

__all__ = [
    "BACKBONES", "CP2Rec", "CP2RecBaseline", "ClubEstimator", "GROUPS", "LOGISTIC", "LOSSES", "POPULARITY",
    "PREDICT_BATCH", "PROPENSITY_CLIP", "PROPENSITY_HAT", "PURIFIERS", "QUICK_ROWS", "REL_PROPENSITY_HAT",
    "SEARCH_SPACE", "SKYLINE", "SnipsStopping", "TRUTH", "add_propensity", "bce_with_logits",
    "club_log_likelihood", "club_mutual_information", "cosine_orthogonality_loss", "cvib_info_loss", "dib_loss",
    "estimate_propensity", "evaluation_design", "ips_loss", "project_out", "rel_loss", "rel_propensity",
    "row_role", "score_predictions", "simple_rows", "snips_loss", "table_rows", "train_row", "user_item",
    "valid_metrics",
]
