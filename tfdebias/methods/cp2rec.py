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
"""

from __future__ import annotations

import time
from pathlib import Path

import keras
import numpy as np
from keras import ops

from tfdebias.errors import SchemaError, UsageError
from tfdebias.layers.feature_embedding import FeatureEmbedding, as_schema
from tfdebias.layers.mlp import MLP
from tfdebias.models import register
from tfdebias.models.base import split_sides

PURIFIERS = ("cos", "proj", "solve", "none")
LOSSES = ("ips", "snips", "rel", "bce", "cvib", "dib")
BACKBONES = ("ncf", "dcn")
#: the column :func:`add_propensity` writes (estimated P(logged) of the row)
PROPENSITY_HAT = "propensity_hat"
#: the column Rel reads: Rel-MF's own item-popularity estimate (see rel_propensity)
REL_PROPENSITY_HAT = "rel_propensity_hat"
_EPS = 1e-8
#: lower clip of propensities (CP2Rec's default ``propensity_clip``; IPS weights <= 50),
#: also used for the self-normalised IPS validation loss of ``tfdebias reproduce cp2rec``
PROPENSITY_CLIP = 0.02

#: Table 3 of the paper, declared once for the tuner (``tfdebias tune cp2rec``).
SEARCH_SPACE = {
    "lambda_reg": {"min": 1e-6, "max": 1e-2, "log": True, "step": 10, "default": 1e-6},
    "learning_rate": {"choices": [1e-4, 5e-4, 1e-3, 5e-3, 1e-2], "default": 1e-3},
    "batch_size": {"choices": [128, 256, 512, 1024], "default": 512},
    "gamma": {"min": 1e-5, "max": 1e-1, "log": True, "step": 10, "default": 1e-1},
    "beta": {"min": 1e-5, "max": 1e-1, "log": True, "step": 10, "default": 1e-2},
    "embedding_dim": {"fixed": 10},
}


# -- the equations, as functions of tensors -----------------------------------------------


def cosine_orthogonality_loss(z, c):
    """COS purifier, Eq. (3)-(4): ``L_O = mean |z . c / (|z| |c|)|``.

    ``z`` (..., d) and ``c`` broadcastable to it (e.g. z (B, F, d), c (B, 1, d)); the mean
    runs over every leading position. 0 for orthogonal, 1 for (anti-)parallel inputs.
    """
    z = ops.convert_to_tensor(z)
    c = ops.cast(ops.convert_to_tensor(c), z.dtype)
    dot = ops.sum(z * c, axis=-1)
    norms = ops.sqrt(ops.sum(z * z, axis=-1) * ops.sum(c * c, axis=-1) + _EPS)
    return ops.mean(ops.abs(dot / norms))


def project_out(z, c):
    """PROJ purifier, Eq. (5)-(6): ``z' = z - (z . c / |c|) (c / |c|)``, orthogonal to c."""
    z = ops.convert_to_tensor(z)
    c = ops.cast(ops.convert_to_tensor(c), z.dtype)
    coef = ops.sum(z * c, axis=-1, keepdims=True) / (ops.sum(c * c, axis=-1, keepdims=True) + _EPS)
    return z - coef * c


def club_mutual_information(mu, logvar, c):
    """SOLVE purifier, Eq. (8): the CLUB upper bound of I(z; c) with a Gaussian
    ``q_theta(c | z) = N(mu(z), exp(logvar(z)))``::

        1/I sum_i [ log q(c_i | z_i) - 1/I sum_j log q(c_j | z_i) ]

    (the normalisers cancel). The inner mean over j is computed in closed form,
    ``mean_j (c_j - mu_i)^2 = mean(c^2) - 2 mu_i mean(c) + mu_i^2``, so the cost is
    O(B * D), not O(B^2 * D). ``mu``, ``logvar``, ``c``: (B, D).
    """
    c = ops.cast(c, mu.dtype)
    inv = ops.exp(-logvar)
    positive = -0.5 * ops.square(c - mu) * inv
    c_mean = ops.mean(c, axis=0, keepdims=True)
    c2_mean = ops.mean(ops.square(c), axis=0, keepdims=True)
    negative = -0.5 * (c2_mean - 2.0 * mu * c_mean + ops.square(mu)) * inv
    return ops.mean(ops.sum(positive - negative, axis=-1))


def club_log_likelihood(mu, logvar, c):
    """Mean log q_theta(c|z) of the batch (up to a constant): what CLUB maximises to fit
    its variational distribution (its "likelihood step")."""
    c = ops.cast(c, mu.dtype)
    ll = -0.5 * (ops.square(c - mu) * ops.exp(-logvar) + logvar)
    return ops.mean(ops.sum(ll, axis=-1))


def bce_with_logits(labels, logits):
    """Per-row binary cross-entropy from logits, (B,)."""
    y = ops.cast(ops.reshape(labels, (-1,)), logits.dtype)
    return y * ops.softplus(-logits) + (1.0 - y) * ops.softplus(logits)


def ips_loss(per_row, propensity, mask=None, n_total=None):
    """IPS estimate (Schnabel et al. 2016) of the mean loss over all events,
    ``1/n_total * sum_rows mask * loss / p``: the unbiased loss of Eq. (13).

    In training every row of a batch is observed (``mask=None``) and ``n_total`` is the
    batch size; the estimate is then the all-pairs loss times 1/density (a constant).
    With ``mask`` = the observed indicator over *all* events, ``n_total`` = their
    number, it is unbiased for the mean loss whenever ``p`` = P(observed).
    """
    per_row = ops.convert_to_tensor(per_row)
    w = ops.cast(propensity, per_row.dtype)
    contrib = per_row / w
    if mask is not None:
        contrib = contrib * ops.cast(mask, per_row.dtype)
    n = ops.cast(ops.shape(per_row)[0], per_row.dtype) if n_total is None else n_total
    return ops.sum(contrib) / n


def snips_loss(per_row, propensity):
    """Self-normalised IPS (Swaminathan & Joachims 2015): ``sum(w l) / sum(w)``, w = 1/p."""
    w = 1.0 / ops.cast(propensity, per_row.dtype)
    return ops.sum(w * per_row) / (ops.sum(w) + _EPS)


def rel_loss(labels, logits, propensity, nonnegative=True):
    """Relevance-maximisation loss of Rel-MF (Saito et al. 2020, Eq. (7)):
    ``-[y/theta log s + (1 - y/theta) log(1 - s)]`` with ``theta`` the propensity.

    With ``nonnegative`` (default) the coefficient ``1 - y/theta`` is clipped at 0, as in
    non-negative risk estimators (Kiryo et al. 2017): on logged rows only (no unlogged
    pairs to balance it) the plain estimator is unbounded below, since each clicked row
    with theta < 1 drives its logit to +inf (measured on ``confounded_ctr``: NCF test AUC
    0.41, log loss 12.9 after 3 epochs). ``nonnegative=False`` is the paper's form.
    """
    y = ops.cast(ops.reshape(labels, (-1,)), logits.dtype) / ops.cast(propensity, logits.dtype)
    neg = ops.maximum(1.0 - y, 0.0) if nonnegative else 1.0 - y
    return ops.mean(y * ops.softplus(-logits) + neg * ops.softplus(logits))


def cvib_info_loss(p_observed, p_unobserved, alpha, gamma):
    """CVIB's information term (Wang et al. 2020, contrastive counterfactual
    information bottleneck): the cross-entropy between the mean prediction on observed
    and on unobserved events (balancing), plus ``gamma * mean(p log p)`` on the observed
    ones (confidence penalty)."""
    po = ops.mean(p_observed)
    pu = ops.clip(ops.mean(p_unobserved), 1e-6, 1 - 1e-6)
    balance = -po * ops.log(pu) - (1.0 - po) * ops.log(1.0 - pu)
    p = ops.clip(p_observed, 1e-6, 1 - 1e-6)
    return alpha * balance + gamma * ops.mean(p * ops.log(p))


def dib_loss(labels, logits_z, logits_r, logits_zr, z_flat, alpha, gamma, beta):
    """DIB (Liu et al. 2021, Eq. (3)): ``min beta I(z;x) - I(z;y) + gamma I(z;r) - alpha
    I(r;y)`` over an unbiased component z and a biased component r. With
    ``I(z;r) = I(z;y) - H(y|r) + H(y|z,r)`` and ``I(.;y) = H(y) - H(y|.)`` it becomes::

        (1 - gamma) H(y|z) + (alpha - gamma) H(y|r) + gamma H(y|z,r) + beta ||z||^2

    with each H(y|.) a cross-entropy of a prediction from that component and the
    compression term an L2 bound. Written from the paper's Eq. (3) and its stated
    identity; the DIB authors' code was not available to check the exact tractable form.
    """
    h = lambda s: ops.mean(bce_with_logits(labels, s))  # noqa: E731
    comp = ops.mean(ops.sum(ops.square(z_flat), axis=-1))
    return (1.0 - gamma) * h(logits_z) + (alpha - gamma) * h(logits_r) + gamma * h(logits_zr) + beta * comp


# -- propensities -------------------------------------------------------------------------


def _user_item(schema):
    users, items = split_sides(schema)
    return users[0], items[0]


def estimate_propensity(train_columns, columns, *, user="user_id", item="item_id"):
    """``p_hat_ui = n_u n_i / N``: the rank-one (independence) logging-policy model
    fit on the logged training rows; calibrated (it sums to N over all pairs).

    Item popularity captures the item-level exposure (KuaiRec's popularity bias, the
    simulator's confounder q_i) and the user count the user's activity; what no
    feature reveals (the pair-level interest) it cannot. Vectorised (``bincount``).
    """
    tu = np.asarray(train_columns[user], np.int64)
    ti = np.asarray(train_columns[item], np.int64)
    u = np.asarray(columns[user], np.int64)
    i = np.asarray(columns[item], np.int64)
    cu = np.bincount(tu, minlength=int(max(tu.max(initial=0), u.max(initial=0))) + 1)
    ci = np.bincount(ti, minlength=int(max(ti.max(initial=0), i.max(initial=0))) + 1)
    p = cu[u].astype(np.float64) * ci[i] / max(len(tu), 1)
    return np.minimum(p, 1.0).astype(np.float32)


def rel_propensity(train_columns, columns, *, item="item_id", label="click", power=0.5):
    """Rel-MF's propensity (Saito et al. 2020, Sec. 5): relative item popularity among
    the positives, ``theta_i = (clicks_i / max_j clicks_j) ** 0.5``."""
    ti = np.asarray(train_columns[item], np.int64)
    i = np.asarray(columns[item], np.int64)
    clicks = np.bincount(ti, weights=np.asarray(train_columns[label], np.float64),
                         minlength=int(max(ti.max(initial=0), i.max(initial=0))) + 1)
    return ((clicks[i] / max(clicks.max(), 1.0)) ** power).astype(np.float32)


def add_propensity(splits: dict, schema, train_split: str = "train") -> dict:
    """Every split with a ``propensity_hat`` column (:func:`estimate_propensity` fit on
    ``train_split``) and Rel's ``rel_propensity_hat`` (:func:`rel_propensity`); returns
    new dicts, the arrays of ``splits`` are shared."""
    if train_split not in splits:
        raise UsageError(f"no split {train_split!r} to estimate propensities from; splits are {sorted(splits)}")
    schema = as_schema(schema)
    user, item = _user_item(schema)
    train = splits[train_split]
    out = {}
    for name, cols in splits.items():
        cols = dict(cols)
        if user in cols and item in cols:
            cols[PROPENSITY_HAT] = estimate_propensity(train, cols, user=user, item=item)
            cols[REL_PROPENSITY_HAT] = rel_propensity(train, cols, item=item, label=schema.label.name)
        out[name] = cols
    return out


# -- layers ---------------------------------------------------------------------------------


@keras.saving.register_keras_serializable(package="tfdebias")
class ClubEstimator(keras.layers.Layer):
    """CLUB's variational ``q_theta(c | z)`` (Cheng et al. 2020): a diagonal Gaussian
    whose mean and log-variance are two-layer MLPs of z (log-variance through tanh)."""

    def __init__(self, c_dim: int, hidden: int = 64, **kwargs):
        super().__init__(**kwargs)
        self.c_dim, self.hidden = int(c_dim), int(hidden)
        self.mu = MLP([self.hidden, self.c_dim], activation="relu", name="mu")
        self.logvar = MLP([self.hidden], activation="relu", name="logvar_hidden")
        self.logvar_out = keras.layers.Dense(self.c_dim, activation="tanh", name="logvar")

    def call(self, z):
        return self.mu(z), self.logvar_out(self.logvar(z))

    def get_config(self):
        return {**super().get_config(), "c_dim": self.c_dim, "hidden": self.hidden}


# -- the model ------------------------------------------------------------------------------


@register("cp2rec")
@keras.saving.register_keras_serializable(package="tfdebias")
class CP2Rec(keras.Model):
    """CP2Rec (Eq. (2)-(13)) and, through ``abt``/``purifier``/``loss``, its ablations
    and the baselines that share its features and tower.

    Args:
      schema: the data set's schema; its ``proxy`` features are the confounding proxies c.
      backbone: ``"ncf"`` or ``"dcn"``; its tower is the shared f of Eq. (9)/(12).
      purifier: ``"cos"`` (Eq. 4), ``"proj"`` (Eq. 5-6), ``"solve"`` (CLUB, Eq. 8) or
        ``"none"`` (no bias disentangling).
      abt: the accuracy-bias tradeoff module (Eq. 11-13); without it one head
        ``f([c, z'])`` is trained with ``loss`` (plus beta L_O) and served.
      loss: the unbiased loss of L_U (``"ips"`` in the paper; ``"snips"``, ``"rel"``,
        ``"bce"``), or, with ``abt=False``, the single head's loss (also ``"cvib"``,
        ``"dib"``).
      gamma, beta: the weights of L_B and L_O in Eq. (2).
      lambda_reg: lambda of Eq. (2), an L2 penalty on the looked-up embedding rows.
      embedding_dim: d (10 in the paper).
      propensity: ``"estimated"`` (read ``propensity_hat``, see :func:`add_propensity`)
        or ``"oracle"`` (the data's exposure column: the simulator's truth).
      propensity_clip: lower clip of propensities (upper clip of the IPS weights).
      refine_activation: sigma of Eq. (11).
      backbone_args: constructor arguments of the backbone (hidden units, cross layers).
      club_hidden: hidden width of q_theta.
      cvib_alpha, cvib_gamma, dib_alpha, dib_gamma, dib_beta: the baselines' weights.

    ``call`` returns y_U (B, 1) with ABT, else the single head: what is served.

    Example:

    >>> splits = add_propensity(splits, schema)                       # doctest: +SKIP
    >>> model = CP2Rec(schema, backbone="dcn", purifier="proj")       # doctest: +SKIP
    >>> model.compile(optimizer="adam"); model.fit(train_ds)          # doctest: +SKIP
    """

    model_name = "cp2rec"

    def __init__(
        self,
        schema,
        backbone: str = "dcn",
        purifier: str = "proj",
        abt: bool = True,
        loss: str = "ips",
        gamma: float = 0.1,
        beta: float = 0.01,
        lambda_reg: float = 1e-6,
        embedding_dim: int = 10,
        propensity: str = "estimated",
        propensity_clip: float = PROPENSITY_CLIP,
        refine_activation: str = "tanh",
        backbone_args: dict | None = None,
        club_hidden: int = 64,
        cvib_alpha: float = 0.1,
        cvib_gamma: float = 0.01,
        dib_alpha: float = 0.1,
        dib_gamma: float = 0.1,
        dib_beta: float = 1e-4,
        **kwargs,
    ):
        super().__init__(**kwargs)
        from tfdebias import models

        self.schema = as_schema(schema)
        self.backbone_name = str(backbone).lower()
        self.purifier, self.abt, self.loss_name = str(purifier).lower(), bool(abt), str(loss).lower()
        if self.backbone_name not in BACKBONES:
            raise UsageError(f"CP2Rec backbone must be one of {BACKBONES}, got {backbone!r}")
        if self.purifier not in PURIFIERS:
            raise UsageError(f"purifier must be one of {PURIFIERS}, got {purifier!r}")
        if self.loss_name not in LOSSES:
            raise UsageError(f"loss must be one of {LOSSES}, got {loss!r}")
        if self.abt and self.loss_name in ("cvib", "dib"):
            raise UsageError(f"loss={loss!r} is a single-head baseline: use it with abt=False")
        if propensity not in ("estimated", "oracle"):
            raise UsageError(f"propensity must be 'estimated' or 'oracle', got {propensity!r}")
        if not 0 < float(propensity_clip) <= 1:
            raise UsageError(f"propensity_clip must be in (0, 1], got {propensity_clip}")
        self.gamma, self.beta, self.lambda_reg = float(gamma), float(beta), float(lambda_reg)
        self.embedding_dim = int(embedding_dim)
        self.propensity, self.propensity_clip = propensity, float(propensity_clip)
        self.refine_activation = refine_activation
        self.backbone_args = dict(backbone_args or {})
        self.club_hidden = int(club_hidden)
        self.cvib_alpha, self.cvib_gamma = float(cvib_alpha), float(cvib_gamma)
        self.dib_alpha, self.dib_gamma, self.dib_beta = float(dib_alpha), float(dib_gamma), float(dib_beta)

        # Feature partitioning (Sec. 4.2): proxies -> c, every other input -> z.
        self.proxy_names = [f.name for f in self.schema.proxies]
        if not self.proxy_names:
            raise SchemaError("CP2Rec needs confounding proxies: the schema has no feature with role 'proxy'")
        self.z_names = [f.name for f in self.schema.inputs if f.role != "proxy"]
        if not self.z_names:
            raise SchemaError("CP2Rec needs inputs besides the proxies")
        if self.propensity == "oracle" and self.schema.exposure is None:
            raise SchemaError("propensity='oracle' needs an 'exposure' column in the schema")

        d = self.embedding_dim
        self.embed = FeatureEmbedding(self.schema, d, name="embed")
        self.c_dense = self._dense_field("c", self.proxy_names)
        self.z_dense = self._dense_field("z", self.z_names)
        self.n_c = len(self.embed.field_names(include=self.proxy_names)) + (self.c_dense is not None)
        self.n_z = len(self.embed.field_names(include=self.z_names)) + (self.z_dense is not None)
        if self.n_z == 0:
            raise SchemaError("CP2Rec: no z fields to purify")

        self.backbone = models.build(self.backbone_name, self.schema, embedding_dim=d, **self.backbone_args)
        if self.backbone_name == "ncf":
            z_fields = self.embed.field_names(include=self.z_names) + (["<dense z>"] if self.z_dense else [])
            self.user_idx = [k for k, n in enumerate(z_fields) if n in self.backbone.user_names]
            self.item_idx = [k for k, n in enumerate(z_fields) if n in self.backbone.item_names]
            if not self.user_idx or not self.item_idx:
                raise SchemaError("CP2Rec-NCF needs categorical user-side and item-side features")

        self.refiner = None
        if self.abt:  # Eq. (11): c' = sigma(W c + b)
            self.refiner = keras.layers.Dense(self.n_c * d, activation=refine_activation, name="refiner")
        self.club = ClubEstimator(self.n_c * d, self.club_hidden, name="club") if self.purifier == "solve" else None
        self.bias_embed = None
        if self.loss_name == "dib":  # DIB's biased component r: its own embedding
            self.bias_embed = FeatureEmbedding(self.schema, d, name="bias_embed")
            self.bias_c_dense = self._dense_field("rc", self.proxy_names)
            self.bias_z_dense = self._dense_field("rz", self.z_names)

        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.auc_metric = keras.metrics.AUC(name="auc")
        self.term_trackers = {
            k: keras.metrics.Mean(name=k) for k in ("L_B", "L_U", "L_O")
        }

    def build(self, input_shape=None):
        # Variables are made by the first call (``engine.build_model`` calls the model on
        # a sample batch before the optimizer exists); the backbone's own embedding
        # layers stay unbuilt on purpose (CP2Rec embeds the features itself).
        self.built = True

    def _dense_field(self, tag, names):
        width = self.embed.dense_width(include=names)
        if not width:
            return None
        return {
            "norm": keras.layers.BatchNormalization(momentum=0.9, name=f"{tag}_dense_norm"),
            "proj": keras.layers.Dense(self.embedding_dim, use_bias=False, name=f"{tag}_dense_proj"),
        }

    # -- config ---------------------------------------------------------------------------
    def get_config(self):
        return {
            "name": self.name, "trainable": self.trainable, "schema": self.schema.to_dict(),
            "backbone": self.backbone_name, "purifier": self.purifier, "abt": self.abt,
            "loss": self.loss_name, "gamma": self.gamma, "beta": self.beta,
            "lambda_reg": self.lambda_reg, "embedding_dim": self.embedding_dim,
            "propensity": self.propensity, "propensity_clip": self.propensity_clip,
            "refine_activation": self.refine_activation, "backbone_args": self.backbone_args,
            "club_hidden": self.club_hidden, "cvib_alpha": self.cvib_alpha,
            "cvib_gamma": self.cvib_gamma, "dib_alpha": self.dib_alpha,
            "dib_gamma": self.dib_gamma, "dib_beta": self.dib_beta,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    @classmethod
    def prepare_splits(cls, splits, schema, train_split="train"):
        """Engine/tuner hook: add the propensity columns (:func:`add_propensity`)."""
        if train_split not in splits:
            return splits  # the caller reports the missing split
        return add_propensity(splits, schema, train_split)

    # -- the network ------------------------------------------------------------------------
    def _fields(self, embed, dense_field, features, names, training):
        out = embed(features, include=names)
        fields = out["fields"]
        if dense_field is not None:
            dense = dense_field["norm"](out["dense"], training=training)
            extra = dense_field["proj"](dense)[:, None, :]
            fields = ops.concatenate([fields, ops.cast(extra, fields.dtype)], axis=1) if fields.shape[1] else extra
        return fields

    def partition(self, features, training=False):
        """Feature partitioning + embedding (Sec. 4.2-4.3): ``(c (B,F_c,d), z (B,F_z,d))``."""
        c = self._fields(self.embed, self.c_dense, features, self.proxy_names, training)
        z = self._fields(self.embed, self.z_dense, features, self.z_names, training)
        return c, z

    def _tower(self, c, z, training=False):
        """f([c, z']) of Eq. (9) and (12): the backbone's prediction tower, logits (B,)."""
        flat = lambda t: ops.reshape(t, (-1, t.shape[1] * t.shape[2]))  # noqa: E731
        x = ops.concatenate([flat(c), flat(z)], axis=1)
        if self.backbone_name == "dcn":
            return self.backbone.tower(x, training=training)[0]
        user = ops.sum(ops.take(z, self.user_idx, axis=1), axis=1)
        item = ops.sum(ops.take(z, self.item_idx, axis=1), axis=1)
        return self.backbone.tower(user * item, x, training=training)[0]

    def heads(self, features, training=False):
        """One forward pass: every quantity the losses need (a dict of tensors)."""
        c, z = self.partition(features, training)
        # lambda ||theta|| of Eq. (2): L2 on the embedded rows of the batch (sparse).
        reg = ops.mean(ops.sum(ops.square(c), axis=(1, 2)) + ops.sum(ops.square(z), axis=(1, 2)))
        out = {"c": c, "z": z, "reg": self.lambda_reg * ops.cast(reg, "float32")}
        c_bar = ops.mean(c, axis=1, keepdims=True)  # the row's proxy prior, (B, 1, d)
        if self.purifier == "proj":
            z = project_out(z, c_bar)  # Eq. (5)-(6)
        elif self.purifier == "cos":
            out["L_O"] = cosine_orthogonality_loss(z, c_bar)  # Eq. (4)
        elif self.purifier == "solve":
            c_flat = ops.reshape(c, (-1, self.n_c * self.embedding_dim))
            z_flat = ops.reshape(z, (-1, self.n_z * self.embedding_dim))
            mu, logvar = self.club(z_flat)
            out["L_O"] = club_mutual_information(mu, logvar, c_flat)  # Eq. (8)
            mu_q, logvar_q = self.club(ops.stop_gradient(z_flat))
            out["club_nll"] = -club_log_likelihood(mu_q, logvar_q, ops.stop_gradient(c_flat))
        out["z_purified"] = z
        out["logits_B"] = self._tower(c, z, training)  # Eq. (9)
        if self.abt:
            c_flat = ops.reshape(c, (-1, self.n_c * self.embedding_dim))
            c_ref = ops.reshape(self.refiner(c_flat), (-1, self.n_c, self.embedding_dim))  # Eq. (11)
            out["logits_U"] = self._tower(ops.cast(c_ref, c.dtype), z, training)  # Eq. (12)
        if self.loss_name == "dib":
            rc = self._fields(self.bias_embed, self.bias_c_dense, features, self.proxy_names, training)
            rz = self._fields(self.bias_embed, self.bias_z_dense, features, self.z_names, training)
            out["logits_r"] = self._tower(rc, rz, training)
            out["logits_zr"] = self._tower(c + rc, z + rz, training)
        return out

    def served_logits(self, out):
        return out["logits_U"] if self.abt else out["logits_B"]

    def call(self, features, training=False):
        logits = self.served_logits(self.heads(features, training=training))
        return ops.sigmoid(ops.cast(logits, "float32"))[:, None]

    def serving_endpoints(self, schema):
        """An extra ``biased`` signature serving y_B (the default serves ``call``: y_U)."""
        import tensorflow as tf

        from tfdebias.export.saved_model import serving_specs

        def biased(features):
            out = self.heads(features, training=False)
            return {"prediction": tf.reshape(tf.sigmoid(tf.cast(out["logits_B"], tf.float32)), [-1])}

        return {"biased": (biased, [serving_specs(schema)])}

    # -- the losses -----------------------------------------------------------------------------
    def _propensity(self, features, rel=False):
        key = self.schema.exposure.name if self.propensity == "oracle" else (
            REL_PROPENSITY_HAT if rel else PROPENSITY_HAT)
        if key not in features:
            raise UsageError(
                f"CP2Rec (loss={self.loss_name!r}) needs a {key!r} column in every batch"
                + ("; add it with tfdebias.methods.cp2rec.add_propensity(splits, schema)"
                   if key == PROPENSITY_HAT else ""))
        p = ops.cast(ops.reshape(features[key], (-1,)), "float32")
        return ops.clip(p, self.propensity_clip, 1.0)

    def _unbiased(self, name, labels, logits, features):
        if name == "bce":
            return ops.mean(bce_with_logits(labels, logits))
        p = ops.cast(self._propensity(features, rel=name == "rel"), logits.dtype)
        if name == "ips":
            return ips_loss(bce_with_logits(labels, logits), p)
        if name == "snips":
            return snips_loss(bce_with_logits(labels, logits), p)
        return rel_loss(labels, logits, p)

    def _shuffle_items(self, features):
        """CVIB's unobserved events: the batch with every non-user input permuted."""
        import tensorflow as tf

        n = ops.shape(features[self.z_names[0]])[0]
        perm = tf.random.shuffle(tf.range(n))
        users = set(self.backbone.user_names) if self.backbone_name == "ncf" else set(
            split_sides(self.schema)[0])
        return {k: (v if k in users else tf.gather(v, perm)) for k, v in features.items()
                if k in self.schema and self.schema[k].role in ("categorical", "dense", "sequence",
                                                                 "vector", "domain", "proxy")}

    def loss_terms(self, features, labels, training=False):
        """Every named loss term of a batch, and ``loss`` (Eq. 2): the ONE loss function.

        Terms: ``L_B`` (Eq. 10), ``L_U`` (Eq. 13), ``L_O`` (Eq. 4 or 8), ``reg``
        (lambda ||theta||), the baselines' ``info`` (CVIB), ``club_nll`` (q_theta's own
        objective, trained only on q_theta's variables), ``logits`` (the served head).
        """
        out = self.heads(features, training=training)
        zero = ops.zeros((), "float32")
        terms = {"L_O": ops.cast(out.get("L_O", zero), "float32")}
        reg = out["reg"]
        terms["reg"] = reg
        if self.abt:
            terms["L_B"] = ops.mean(bce_with_logits(labels, out["logits_B"]))
            terms["L_U"] = self._unbiased(self.loss_name, labels, out["logits_U"], features)
            total = self.gamma * terms["L_B"] + terms["L_U"]
        else:
            if self.loss_name == "dib":
                main = dib_loss(labels, out["logits_B"], out["logits_r"], out["logits_zr"],
                                ops.reshape(out["z"], (-1, self.n_z * self.embedding_dim)),
                                self.dib_alpha, self.dib_gamma, self.dib_beta)
            elif self.loss_name == "cvib":
                main = ops.mean(bce_with_logits(labels, out["logits_B"]))
                unobs = self.served_logits(self.heads(self._shuffle_items(features), training=training))
                terms["info"] = cvib_info_loss(ops.sigmoid(out["logits_B"]), ops.sigmoid(unobs),
                                               self.cvib_alpha, self.cvib_gamma)
                main = main + terms["info"]
            else:
                main = self._unbiased(self.loss_name, labels, out["logits_B"], features)
            terms["L_B"] = main
            terms["L_U"] = zero
            total = main
        total = total + self.beta * terms["L_O"] + reg
        terms["loss"] = total
        if "club_nll" in out:
            terms["club_nll"] = out["club_nll"]
        terms["logits"] = self.served_logits(out)
        return terms

    # -- Keras steps ---------------------------------------------------------------------------
    @property
    def metrics(self):
        return [self.loss_tracker, self.auc_metric, *self.term_trackers.values()]

    def _record(self, terms, labels):
        self.loss_tracker.update_state(terms["loss"])
        for k, t in self.term_trackers.items():
            t.update_state(terms[k])
        self.auc_metric.update_state(ops.reshape(labels, (-1,)), ops.sigmoid(terms["logits"]))
        return {m.name: m.result() for m in self.metrics}

    def club_variables(self):
        return list(self.club.trainable_variables) if self.club is not None else []

    def train_step(self, data):
        import tensorflow as tf

        features, labels = data[0], data[1]
        with tf.GradientTape(persistent=self.club is not None) as tape:
            terms = self.loss_terms(features, labels, training=True)
        q_ids = {id(v) for v in self.club_variables()}
        main = [v for v in self.trainable_variables if id(v) not in q_ids]
        pairs = list(zip(tape.gradient(terms["loss"], main), main))
        if self.club is not None:  # CLUB's likelihood step: q_theta fits log q(c|z) only
            qv = self.club_variables()
            pairs += list(zip(tape.gradient(terms["club_nll"], qv), qv))
            del tape
        self.optimizer.apply_gradients([(g, v) for g, v in pairs if g is not None])
        return self._record(terms, labels)

    def test_step(self, data):
        features, labels = data[0], data[1]
        return self._record(self.loss_terms(features, labels, training=False), labels)


@register("cp2rec_baseline")
@keras.saving.register_keras_serializable(package="tfdebias")
class CP2RecBaseline(CP2Rec):
    """The baselines on CP2Rec's features and tower: no ABT, no purifier, one head
    trained with ``loss`` = ``"ips"``, ``"snips"``, ``"rel"``, ``"cvib"``, ``"dib"``
    or ``"bce"`` (the "w/o ABT, BD" ablation)."""

    model_name = "cp2rec_baseline"

    def __init__(self, schema, loss: str = "ips", purifier: str = "none", abt: bool = False, **kwargs):
        super().__init__(schema, loss=loss, purifier=purifier, abt=abt, **kwargs)


def _register_space():
    try:
        from tfdebias.tuning import register_space
    except ImportError:  # the tuner is optional; the space stays declared above
        return
    register_space("cp2rec", SEARCH_SPACE)


_register_space()


# -- tfdebias reproduce cp2rec ---------------------------------------------------------------
#
# The evidence table (docs/methods/cp2rec.md, "Reproduce"): for each data seed (a fresh
# draw of the simulator) x model seed, every row is trained with the same budget and
# scored on the unbiased test block; tfdebias.evaluation.evidence turns the records into
# headroom (skyline - floor), gap closed and paired bootstrap intervals.

#: the rows ``--quick`` trains per backbone: the floor, the main baseline, the method
QUICK_ROWS = ("{b}", "IPS-{b}", "CP2Rec-PROJ-{b}")
#: the skyline row: the plain backbone trained on the simulator's ``train_unbiased``
SKYLINE = "{b} on uniform log (skyline)"
POPULARITY = "popularity (item CTR)"
LOGISTIC = "LR ({b} features)"
TRUTH = "truth (relevance)"
#: test-item groups by their exposure in the log (the paper's claim is about exposure bias)
GROUPS = ("exposed-light", "exposed-heavy")


def table_rows(backbone: str, oracle: bool = False) -> list[tuple[str, str, dict]]:
    """(row label, model name, model args) of one backbone's Table 4 + Table 6 block."""
    b = backbone.upper()
    rows = [
        (f"{b}", backbone, {}),
        (f"IPS-{b}", "cp2rec_baseline", {"loss": "ips"}),
        (f"SNIPS-{b}", "cp2rec_baseline", {"loss": "snips"}),
        (f"Rel-{b}", "cp2rec_baseline", {"loss": "rel"}),
        (f"CVIB-{b}", "cp2rec_baseline", {"loss": "cvib"}),
        (f"DIB-{b}", "cp2rec_baseline", {"loss": "dib"}),
        (f"CP2Rec-COS-{b}", "cp2rec", {"purifier": "cos"}),
        (f"CP2Rec-PROJ-{b}", "cp2rec", {"purifier": "proj"}),
        (f"CP2Rec-SOLVE-{b}", "cp2rec", {"purifier": "solve"}),
        (f"CP2Rec-COS-{b} w/o ABT", "cp2rec", {"purifier": "cos", "abt": False, "loss": "bce"}),
        (f"CP2Rec-COS-{b} w/o ABT, BD", "cp2rec_baseline", {"loss": "bce"}),
    ]
    if oracle:
        rows += [
            (f"IPS-{b} (oracle p)", "cp2rec_baseline", {"loss": "ips", "propensity": "oracle"}),
            (f"CP2Rec-PROJ-{b} (oracle p)", "cp2rec", {"purifier": "proj", "propensity": "oracle"}),
        ]
    for _, name, args in rows:
        if name != backbone:
            args["backbone"] = backbone
    return rows


def row_role(label: str, backbone: str) -> str:
    """The evidence role of a trained row: the plain backbone is the floor, the CP2Rec
    variants (estimated propensity) are methods, everything else a baseline."""
    b = backbone.upper()
    if label == b:
        return "floor"
    if label == SKYLINE.format(b=b):
        return "skyline"
    if label.startswith("CP2Rec-") and "w/o" not in label and "oracle" not in label:
        return "method"
    return "baseline"


def _add_arguments(p):
    p.add_argument("--backbones", default=None,
                   help="comma-separated backbones (ncf, dcn), one evidence table each: the first "
                        "in OUT, the others in OUT/<backbone> (default ncf with --quick, else ncf,dcn)")
    p.add_argument("--epochs", type=int, default=None,
                   help="epochs per row: the fixed budget, or the most with --stopping snips "
                        "(default 3 with --quick, else 5)")
    p.add_argument("--batch-size", type=int, default=None, help="default 1024")
    p.add_argument("--learning-rate", type=float, default=1e-3)
    p.add_argument("--patience", type=int, default=None,
                   help="--stopping snips: epochs without improvement before stopping (default 1 "
                        "with --quick, else 2)")
    p.add_argument("--hidden-units", default="128,64", help="backbone MLP widths")
    p.add_argument("--oracle", action="store_true",
                   help="add rows trained with the simulator's true propensities (positive control)")
    p.add_argument("--rows", default=None,
                   help="only the trained rows whose label contains one of these comma-separated "
                        "strings (floor, skyline, simple baselines and truth always run)")


class SnipsStopping(keras.callbacks.Callback):
    """Early stopping on :func:`tfdebias.evaluation.evidence.snips_logloss` of a
    validation split: the log loss reweighted by 1/propensity and self-normalised, so
    rows the logging policy rarely shows count more. Restores the best epoch's weights."""

    def __init__(self, columns: dict, propensity, schema, patience: int, batch_size: int = 16384):
        super().__init__()
        self.schema = as_schema(schema)
        self.columns, self.label, self.patience, self.batch_size = (
            columns, self.schema.label.name, int(patience), batch_size)
        self.propensity = np.clip(np.asarray(propensity, np.float64), PROPENSITY_CLIP, 1.0)
        self.history: list[float] = []
        self.best, self.best_epoch, self.best_weights, self._wait = np.inf, 0, None, 0

    def on_epoch_end(self, epoch, logs=None):
        from tfdebias.evaluation.evidence import snips_logloss

        loss = snips_logloss(self.columns[self.label],
                             predict_rows(self.model, self.columns, self.schema, self.batch_size),
                             self.propensity)
        self.history.append(loss)
        if loss < self.best:
            self.best, self.best_epoch, self._wait = loss, epoch + 1, 0
            self.best_weights = self.model.get_weights()
        else:
            self._wait += 1
            if self._wait >= self.patience:
                self.model.stop_training = True

    def on_train_end(self, logs=None):
        if self.best_weights is not None:
            self.model.set_weights(self.best_weights)


def train_row(model_name: str, model_args: dict, train_cols: dict, schema, *, seed: int, epochs: int,
              batch_size: int, learning_rate: float, valid_cols: dict | None = None,
              stopping: str = "fixed", patience: int = 1, data: str = ""):
    """Train one row with the engine's pieces; returns ``(model, info)``.

    ``stopping="fixed"``: exactly ``epochs`` passes over ``train_cols``, i.e.
    ``epochs * ceil(rows / batch_size)`` optimizer steps, no validation. ``"snips"``:
    at most that, stopped by :class:`SnipsStopping` on ``valid_cols`` (its
    ``propensity_hat`` column) and rolled back to the best epoch. ``info`` holds
    ``steps`` (optimizer steps of the kept weights), ``epochs_trained`` (kept),
    ``epochs_run``, ``train_seconds`` and with snips ``valid/snips_best``.
    """
    from tfdebias import data as tdata
    from tfdebias.optimizers import make_optimizer
    from tfdebias.training.engine import TrainConfig, build_model, compile_model, fit

    keras.utils.set_random_seed(seed)
    cfg = TrainConfig(data=data or "data", model=model_name, model_args=model_args, epochs=epochs,
                      batch_size=batch_size, learning_rate=learning_rate, optimizer="adam",
                      patience=0, seed=seed)
    train_ds = tdata.make_dataset(train_cols, schema, batch_size=batch_size, shuffle=True, seed=seed)
    sample = {k: v[:2] for k, v in train_cols.items() if k != schema.label.name}
    model = build_model(model_name, schema, model_args, sample)
    compile_model(model, make_optimizer("adam", learning_rate), jit_compile=False,
                  steps_per_execution=cfg.steps_per_execution)
    callbacks = []
    if stopping == "snips":
        callbacks.append(SnipsStopping(valid_cols, valid_cols[PROPENSITY_HAT], schema, patience))
    t0 = time.time()
    hist = fit(model, train_ds, None, cfg, verbose=0, callbacks=callbacks)
    per_epoch = -(-len(train_cols[schema.label.name]) // batch_size)
    ran = len(hist.history.get("loss", []))
    kept = callbacks[0].best_epoch if callbacks else ran
    info = {"steps": kept * per_epoch, "epochs_trained": kept, "epochs_run": ran,
            "train_seconds": round(time.time() - t0, 2)}
    if callbacks:
        info["valid/snips_best"] = float(callbacks[0].best)
    return model, info


def predict_rows(model, columns: dict, schema, batch_size: int = 16384) -> np.ndarray:
    """The served click probability of every row: the model called on blocks of the
    schema's input columns (no ``tf.data`` pipeline; a test block is a few calls)."""
    import tensorflow as tf

    names = [f.name for f in as_schema(schema).inputs]
    n = len(columns[names[0]])
    out = []
    for a in range(0, n, batch_size):
        feats = {k: tf.constant(np.asarray(columns[k])[a:a + batch_size]) for k in names}
        out.append(np.asarray(model(feats, training=False), np.float64).reshape(-1))
    return np.concatenate(out) if out else np.zeros(0)


def evaluation_design(splits: dict, schema) -> dict:
    """What every row of one data seed is scored on: labels, the test units (test
    users, numbered 0..n-1 the same way for every row) and the item groups
    ``exposed-light`` / ``exposed-heavy`` (test items whose logged shows in ``train``
    are at most / above the median over the test items)."""
    user, item = _user_item(schema)
    test, train = splits["test"], splits["train"]
    _, units = np.unique(np.asarray(test[user]), return_inverse=True)
    n_items = int(max(np.max(train[item]), np.max(test[item]))) + 1
    shows = np.bincount(np.asarray(train[item], np.int64), minlength=n_items)
    test_items = np.asarray(test[item], np.int64)
    median = float(np.median(shows[np.unique(test_items)]))
    heavy = shows[test_items] > median
    return {"y": np.asarray(test[schema.label.name], np.float64), "units": units.astype(np.int64),
            "groups": {"exposed-light": ~heavy, "exposed-heavy": heavy}, "median_shows": median}


def score_predictions(design: dict, p) -> tuple[dict, dict]:
    """``(metrics, scores)`` of test predictions ``p``: ``test/auc`` (headline, rows
    clustered by test user), ``test/logloss`` and ``test/auc/<group>``."""
    from tfdebias.evaluation.evidence import ctr_scores

    scores = ctr_scores(design["y"], p, design["units"], {g: design["groups"][g] for g in GROUPS})
    return {k: v.point() for k, v in scores.items()}, scores


def _valid_metrics(valid: dict, p, label: str) -> dict:
    from tfdebias.evaluation import metrics as m
    from tfdebias.evaluation.evidence import snips_logloss

    y = np.asarray(valid[label], np.float64)
    return {"valid/auc": float(m.auc(y, p)),
            "valid/snips_logloss": snips_logloss(y, p, np.clip(valid[PROPENSITY_HAT], PROPENSITY_CLIP, 1.0))}


def simple_rows(splits: dict, schema, backbone: str, design: dict) -> list[tuple[str, str, dict, dict]]:
    """``(label, role, metrics, scores)`` of the rows that train no network: the item's
    smoothed CTR in ``train`` (popularity), logistic regression on the backbone's own
    input features, and the true relevance (the truth ceiling, context only)."""
    from tfdebias.evaluation import baselines

    label = schema.label.name
    _, item = _user_item(schema)
    train, valid, test = splits["train"], splits["valid"], splits["test"]
    if backbone == "ncf":
        users, items = split_sides(schema)
        fields = users + items
    else:  # DCN reads every input
        fields = [f.name for f in schema.inputs]
    n_items = int(max(np.max(c[item]) for c in (train, valid, test))) + 1
    ctr = baselines.item_ctr(train[item], train[label], n_items)
    lr = baselines.logistic_regression(train, schema, fields=fields)
    out = []
    for name, role, predict in (
            (POPULARITY, "simple", lambda c: ctr[np.asarray(c[item], np.int64)]),
            (LOGISTIC.format(b=backbone.upper()), "simple", lr.predict),
    ):
        metrics, scores = score_predictions(design, predict(test))
        metrics.update(_valid_metrics(valid, predict(valid), label))
        out.append((name, role, metrics, scores))
    if "relevance" in test:
        metrics, scores = score_predictions(design, test["relevance"])
        metrics.update(_valid_metrics(valid, valid["relevance"], label))
        out.append((TRUTH, "truth", metrics, scores))
    return out


def _resolve(args):
    """The run's settings from the parsed arguments (defaults depend on ``--quick``)."""
    from tfdebias import data as tdata

    backbones_arg = args.backbones or ("ncf" if args.quick else "ncf,dcn")
    backbones = [b.strip().lower() for b in backbones_arg.split(",") if b.strip()]
    bad = [b for b in backbones if b not in BACKBONES]
    if bad or not backbones or len(set(backbones)) != len(backbones):
        raise UsageError(f"--backbones: expected distinct ones of {BACKBONES}, got {backbones_arg!r}")
    epochs = args.epochs if args.epochs is not None else (3 if args.quick else 5)
    batch_size = args.batch_size if args.batch_size is not None else 1024
    patience = args.patience if args.patience is not None else (1 if args.quick else 2)
    stopping = getattr(args, "stopping", None) or "fixed"
    for k, v in (("--epochs", epochs), ("--batch-size", batch_size), ("--patience", patience)):
        if v < 1:
            raise UsageError(f"{k} must be >= 1, got {v}")
    if not args.learning_rate > 0:
        raise UsageError("--learning-rate must be > 0")
    try:
        hidden = [int(u) for u in args.hidden_units.split(",") if u.strip()]
    except ValueError:
        raise UsageError(f"--hidden-units: expected comma-separated integers, got {args.hidden_units!r}") from None
    data = tdata.evidence_data(args.data or "confounded_ctr")
    n_data = getattr(args, "data_seeds", None) or (3 if args.quick else 5)
    seeds = args.seeds or (1 if args.quick else 2)
    return dict(backbones=backbones, epochs=epochs, batch_size=batch_size, patience=patience,
                stopping=stopping, hidden=hidden, data=data, data_seeds=tdata.data_seeds(data, n_data),
                seeds=seeds)


def _trained_rows(backbone: str, cfg: dict, args, oracle: bool,
                  skyline: bool = True) -> list[tuple[str, str, dict, str]]:
    """(label, model name, model args, train split) of one table's trained rows, floor
    first and (with ``skyline``) the skyline second."""
    b = backbone.upper()
    rows = table_rows(backbone, oracle=oracle)
    if args.quick:
        keep = {r.format(b=b) for r in QUICK_ROWS}
        rows = [r for r in rows if r[0] in keep]
    if args.rows:
        wanted = [w.strip() for w in args.rows.split(",") if w.strip()]
        rows = [r for r in rows if r[0] == b or any(w in r[0] for w in wanted)]
        if len(rows) == 1 and not any(w in b for w in wanted):
            raise UsageError(f"--rows {args.rows!r} matches no row")
    out = []
    for label, name, margs in rows:
        margs = dict(margs)
        if name in BACKBONES:
            margs.update(embedding_dim=10, hidden_units=cfg["hidden"])
        else:
            margs["backbone_args"] = {"hidden_units": cfg["hidden"]}
        out.append((label, name, margs, "train"))
        if label == b and skyline:  # the skyline: the same model and budget on the uniform log
            out.append((SKYLINE.format(b=b), name, dict(margs), "train_unbiased"))
    return out


def _run(args) -> Path:
    from tfdebias import data as tdata
    from tfdebias.evaluation.evidence import Progress, write_evidence

    cfg = _resolve(args)
    data, seeds = cfg["data"], cfg["seeds"]
    t_start = time.time()
    plans, records = {}, {b: [] for b in cfg["backbones"]}
    progress = None
    sizes, train_sizes = {}, {}
    for d in cfg["data_seeds"]:
        splits, schema = tdata.load(data, data_dir=args.data_dir, manual_dir=args.manual_dir, data_seed=d)
        missing = [s for s in ("train", "valid", "test") if s not in splits]
        if missing:
            raise UsageError(f"data set {data!r} lacks splits {missing}: CP2Rec needs biased train/valid "
                             "and an unbiased test")
        if not schema.proxies:
            raise UsageError(f"data set {data!r} declares no confounding proxies (role 'proxy'); CP2Rec needs them")
        # real data has no unbiased training sample: no skyline, a plain table
        has_skyline = "train_unbiased" in splits
        n_tr = len(splits["train"][schema.label.name])
        if has_skyline and n_tr != len(splits["train_unbiased"][schema.label.name]):
            raise UsageError(f"{data}: train and train_unbiased differ in size; the skyline needs the "
                             "floor's budget")
        splits = add_propensity(splits, schema)
        design = evaluation_design(splits, schema)
        train_sizes[d] = n_tr
        sizes = {"train": n_tr, "test": len(design["y"]), "test_users": int(design["units"].max()) + 1,
                 "test_items": int(len(np.unique(splits["test"][_user_item(schema)[1]])))}
        if progress is None:
            oracle = args.oracle and schema.exposure is not None
            plans = {b: _trained_rows(b, cfg, args, oracle, skyline=has_skyline) for b in cfg["backbones"]}
            total = len(cfg["data_seeds"]) * sum(seeds * len(rows) + 1 for rows in plans.values())
            progress = Progress(total)
        for b in cfg["backbones"]:
            for label, role, metrics, scores in simple_rows(splits, schema, b, design):
                records[b].append({"name": label, "role": role, "data_seed": d, "seed": 0,
                                   "metrics": metrics, "scores": scores})
            progress.step(f"{b}: simple baselines + truth, data seed {d}")
            for label, name, margs, split in plans[b]:
                for seed in range(seeds):
                    model, info = train_row(
                        name, margs, splits[split], schema, seed=seed, epochs=cfg["epochs"],
                        batch_size=cfg["batch_size"], learning_rate=args.learning_rate,
                        valid_cols=splits["valid"], stopping=cfg["stopping"], patience=cfg["patience"],
                        data=data)
                    metrics, scores = score_predictions(design, predict_rows(model, splits["test"], schema))
                    metrics.update(_valid_metrics(splits["valid"], predict_rows(model, splits["valid"], schema),
                                                  schema.label.name))
                    metrics.update(info)
                    records[b].append({"name": label, "role": row_role(label, b), "data_seed": d,
                                       "seed": seed, "metrics": metrics, "scores": scores})
                    progress.step(f"{label} data seed {d} seed {seed}: test/auc {metrics['test/auc']:.4f} "
                                  f"({info['epochs_trained']} ep, {info['train_seconds']:.0f} s)")
                    del model
                    keras.backend.clear_session()

    out = Path(args.out)
    first = None
    for k, b in enumerate(cfg["backbones"]):
        B = b.upper()
        # the budget of each data seed (its train size varies a little between draws)
        budget = sorted({cfg["epochs"] * -(-n // cfg["batch_size"]) for n in train_sizes.values()})
        steps = str(budget[0]) if len(budget) == 1 else f"{budget[0]}-{budget[-1]} (by data seed)"
        if cfg["stopping"] == "fixed":
            stopping = (f"fixed budget: {cfg['epochs']} epochs = {steps} optimizer steps of batch "
                        f"{cfg['batch_size']} for every trained row of a data seed (train and "
                        f"train_unbiased have the same number of rows), no early stopping")
        else:
            stopping = (f"early stopping on the self-normalised IPS-weighted log loss of the biased valid "
                        f"split (evidence.snips_logloss, propensity p_hat = n_u n_i / N from train, clipped "
                        f"at {PROPENSITY_CLIP}), "
                        f"patience {cfg['patience']}, at most {cfg['epochs']} epochs = {steps} optimizer "
                        f"steps of batch {cfg['batch_size']}; the best epoch's weights are kept "
                        f"(column `steps`)")
        notes = (
            f"Data: `{data}`, data seeds {cfg['data_seeds']} (each a fresh draw of the simulator), "
            f"{seeds} model seed(s) each; {sizes['train']} training rows, unbiased test block "
            f"{sizes['test']} rows over {sizes['test_users']} users x {sizes['test_items']} items. "
            f"Test units for the bootstrap: test users. "
            + (f"Skyline: `{B}` with the same budget trained on `train_unbiased` (uniform logging policy, "
               f"uniform positions, same size as `train`). " if has_skyline else "")
            + f"Simple rows: the item's smoothed CTR in train, and logistic regression on {B}'s input "
            f"features; truth = the simulator's true click probability (context). Groups: "
            f"`test/auc/exposed-light` / `-heavy` = test items whose logged shows in train are at most / "
            f"above the median over the test items. Every trained row: Adam lr {args.learning_rate}, "
            f"d = 10, MLP {cfg['hidden']}. Each step is one optimizer update: SOLVE's CLUB likelihood "
            f"step and CVIB's pass over permuted rows are computed inside that same update, so no row "
            f"gets extra updates. Propensities for IPS/SNIPS/Rel/CP2Rec: p_hat = n_u n_i / N from "
            f"train (rows marked 'oracle p' read the simulator's true propensity). "
            f"Wall time {time.time() - t_start:.0f} s.")
        where = out if k == 0 else out / b
        extra = {"data": data, "data_seeds": cfg["data_seeds"], "backbone": b,
                 "stopping_rule": cfg["stopping"], "epochs": cfg["epochs"],
                 "batch_size": cfg["batch_size"], "steps_per_row": budget}
        if not has_skyline:
            from tfdebias.evaluation.results import write_results

            plain = [{k2: v for k2, v in r.items() if k2 != "scores"} for r in records[b]]
            written = write_results(
                where, plain, title=f"CP2Rec (Table 4/6 shape), {B} backbone, on {data} (no skyline)",
                metrics=["test/auc", *[f"test/auc/{g}" for g in GROUPS], "test/logloss", "valid/auc"],
                plot_metric="test/auc", notes=f"Stopping: {stopping}. No headroom: {data} has no unbiased "
                f"training sample to train a skyline on.\n\n{notes}", extra=extra)
            first = first or written
            continue
        written = write_evidence(
            where, records[b], title=f"CP2Rec (Table 4/6 shape), {B} backbone, on {data}",
            metric="test/auc", main_baseline=f"IPS-{B}" if any(r["name"] == f"IPS-{B}" for r in records[b]) else None,
            method=f"CP2Rec-PROJ-{B}" if any(r["name"] == f"CP2Rec-PROJ-{B}" for r in records[b]) else None,
            stopping=stopping,
            metrics=["test/auc", *[f"test/auc/{g}" for g in GROUPS], "test/logloss", "valid/auc"],
            notes=notes, extra=extra)
        first = first or written
    return first


def _register_reproducer():
    from tfdebias.methods import Reproducer, register_reproducer

    register_reproducer(Reproducer(
        name="cp2rec",
        help="CP2Rec (ACM MM 2023) Table 4/6 as evidence tables: NCF/DCN x {plain (floor), skyline "
             "(uniform log), IPS, SNIPS, Rel, CVIB, DIB, CP2Rec-COS/PROJ/SOLVE} + ablations + "
             "popularity, LR, truth; --data-seeds default 5 (3 with --quick), --seeds default 2 "
             "(1 with --quick); --quick trains only NCF, IPS-NCF, CP2Rec-PROJ-NCF and the skyline",
        run=_run, add_arguments=_add_arguments, default_data="confounded_ctr", default_seeds=0))


_register_reproducer()
