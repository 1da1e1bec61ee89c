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
  paper says and the code does); ``L_d^1`` averages over the ``rho`` rows with
  ``y_hat >= T``, ``L_d^0`` over the ``tau`` rows below; an empty class contributes 0.
  The paper gives no value; the authors' code uses 0.05 on DIGIX (click rate of a few
  percent). Our default 0.2 is, likewise, near the simulator's click rate. The
  conditioning ``y_hat * h_DA`` of Eq. (13)-(14) is soft and ``y_hat`` is not detached
  (as in the code); the GRL sits *outside* the product, as Eq. (13) writes it, so the
  reversed gradient also reaches the label predictor through ``y_hat``.
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
* **GRL scale**: Eq. (11) is ``-I`` (scale 1). The authors' code ramps the scale with
  DANN's ``2 / (1 + exp(-10 p)) - 1``, ``p = step / 15000``, and so do we by default
  (``grl_warmup_steps=15000``); ``grl_warmup_steps=0`` is the literal Eq. (11). On the
  simulator the literal version collapses training (train AUC stays at 0.5: the
  domain is given away by the disjoint item ids, and a full-strength reversed gradient
  from step 0 overwhelms the CTR gradient in the shared embeddings).
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

Example:

>>> from tfdebias import models                                          # doctest: +SKIP
>>> model = models.build("dadin", schema, embedding_dim=16, **VARIANTS["dadin3"])  # doctest: +SKIP
>>> model.compile(optimizer="adam")        # DADIN trains with its own loss  # doctest: +SKIP
>>> model.fit(make_dataset(train, schema, batch_size=2000, shuffle=True))  # doctest: +SKIP
"""

from __future__ import annotations

from typing import Sequence

import keras
import tensorflow as tf
from keras import ops

from tfdebias.errors import SchemaError, UsageError
from tfdebias.layers.attention_pooling import AttentionPooling
from tfdebias.layers.bi_interaction import BiInteraction
from tfdebias.layers.gradient_reversal import GradientReversal
from tfdebias.layers.mlp import MLP
from tfdebias.models import register
from tfdebias.models.base import Backbone

#: The paper's model variants (Sec. 4.4) as constructor switches.
VARIANTS: dict[str, dict] = {
    "dadin1": {"item_attention": False},
    "dadin2": {"interest_attention": False},
    "dadin3": {"bi_interaction": False},
    "dadin4": {"dnn": False},
    "dadin5": {"bi_interaction": False, "dnn": False},
    "dadin6": {"domain_agnostic": False},
    "dadin7": {"global_domain_loss": False},
    "dadin8": {"intra_class_loss": False},
    "dadin9": {"global_domain_loss": False, "intra_class_loss": False},
    "dadin++": {},
}

#: The paper's training defaults (Sec. 4.3.1, Table 2).
PAPER_DEFAULTS = {"embedding_dim": 64, "hidden_units": [512, 128, 64], "batch_size": 2000,
                  "learning_rate": 1e-4, "optimizer": "adam"}

#: Search space for ``tfdebias tune dadin`` (registered below when tfdebias.tuning exists).
SEARCH_SPACE = {
    "learning_rate": {"min": 1e-4, "max": 1e-2, "log": True, "step": 10, "default": 1e-4},
    "batch_size": [2000, 512, 1000, 4000],
    "embedding_dim": [64, 16, 32, 128],
    "hidden_units": [[512, 128, 64], [128, 64], [256, 128, 64], [128]],
    "lambda_y": {"fixed": 1.0},
    "lambda_global": [1.0, 0.5, 0.1],
    "lambda_intra": [1.0, 0.5, 0.1],
    "alpha": [0.5, 0.3, 0.7],
    "threshold": [0.2, 0.05, 0.1, 0.3, 0.5],
}


def _bce_from_logits(labels, logits):
    labels = ops.cast(labels, logits.dtype)
    return ops.maximum(logits, 0.0) - logits * labels + ops.log1p(ops.exp(-ops.abs(logits)))


def dadin_loss_terms(
    labels,
    y_logit,
    domain,
    d_global=None,
    d_intra1=None,
    d_intra0=None,
    *,
    lambda_y: float = 1.0,
    lambda_global: float = 1.0,
    lambda_intra: float = 1.0,
    alpha: float = 0.5,
    threshold: float = 0.2,
    sample_weight=None,
) -> dict:
    """DADIN's named loss terms for one batch (Eq. (15)-(18), (20), (22)).

    Args:
      labels: clicks (B,) in {0, 1}.
      y_logit: the label predictor's logit (B,); ``y_hat = sigmoid(y_logit)``.
      domain: domain labels ``d_i`` (B,): 1 = target, 0 = source.
      d_global, d_intra1, d_intra0: logits (B,) of ``D_dagger``, ``D^1``, ``D^0``
        (``None`` where the variant has no such classifier: the term is 0).
      threshold: ``T``; a row is in class 1 when ``y_hat >= T`` (Eq. (17)-(18)).
      sample_weight: optional per-row weights of ``L_y``.

    Returns ``{"loss_y", "loss_global", "loss_intra0", "loss_intra1", "loss"}`` where
    ``loss = lambda_y L_y + lambda_global L_d_dagger
    + lambda_intra (alpha L_d^0 + (1 - alpha) L_d^1)`` (the module docstring says why
    Eq. (22) and not the literal Eq. (21)).
    """
    y_logit = ops.reshape(ops.cast(y_logit, "float32"), (-1,))
    labels = ops.reshape(ops.cast(labels, "float32"), (-1,))
    domain = ops.reshape(ops.cast(domain, "float32"), (-1,))
    per_row = _bce_from_logits(labels, y_logit)  # Eq. (15)
    if sample_weight is not None:
        w = ops.reshape(ops.cast(sample_weight, "float32"), (-1,))
        loss_y = ops.sum(per_row * w) / ops.maximum(ops.sum(w), 1e-12)
    else:
        loss_y = ops.mean(per_row)
    zero = ops.zeros((), "float32")
    flat = lambda z: ops.reshape(ops.cast(z, "float32"), (-1,))  # noqa: E731
    loss_global = zero
    if d_global is not None:  # Eq. (16)
        loss_global = ops.mean(_bce_from_logits(domain, flat(d_global)))
    loss_1 = loss_0 = zero
    if d_intra1 is not None or d_intra0 is not None:
        y_hat = ops.stop_gradient(ops.sigmoid(y_logit))
        in_1 = ops.cast(y_hat >= threshold, "float32")  # the rho rows of Eq. (17)
        in_0 = 1.0 - in_1  # the tau rows of Eq. (18)
        if d_intra1 is not None:
            l1 = _bce_from_logits(domain, flat(d_intra1))
            loss_1 = ops.sum(l1 * in_1) / ops.maximum(ops.sum(in_1), 1.0)
        if d_intra0 is not None:
            l0 = _bce_from_logits(domain, flat(d_intra0))
            loss_0 = ops.sum(l0 * in_0) / ops.maximum(ops.sum(in_0), 1.0)
    total = (lambda_y * loss_y + lambda_global * loss_global
             + lambda_intra * (alpha * loss_0 + (1.0 - alpha) * loss_1))  # Eq. (20), (22)
    return {"loss_y": loss_y, "loss_global": loss_global, "loss_intra0": loss_0,
            "loss_intra1": loss_1, "loss": total}


def grl_schedule(step, warmup_steps: int, scale: float = 1.0):
    """DANN's ramp ``scale * (2 / (1 + exp(-10 p)) - 1)``, ``p = min(step / warmup, 1)``
    (the authors' code, ``official_code_notes.md`` §3.1); ``scale`` when ``warmup <= 0``."""
    if warmup_steps <= 0:
        return scale
    p = ops.minimum(ops.cast(step, "float32") / float(warmup_steps), 1.0)
    return scale * (2.0 / (1.0 + ops.exp(-10.0 * p)) - 1.0)


@keras.saving.register_keras_serializable(package="tfdebias")
class InterestAttention(keras.layers.Layer):
    """Interest-level attention, DADIN Eq. (5)-(6) (MiNet's interest attention).

    ``v_k = exp(g_k^T ReLU(V_k [q || p || a || b])) + b_k`` for ``k`` in (user, target
    history, source history), all three computed by one ``Dense(3 d)``; returns the
    weights (B, 3). ``V_k`` has no bias (the paper's ``V_* in R^{d x 4d}``).

    Example:

    >>> import numpy as np
    >>> att = InterestAttention()
    >>> v = att(np.zeros((2, 4, 5), "float32"))   # (B, 4 fields, d)
    >>> np.round(v.numpy(), 3).tolist()             # exp(0) + 0 = 1 at initialisation
    [[1.0, 1.0, 1.0], [1.0, 1.0, 1.0]]
    """

    def __init__(self, max_score: float = 20.0, **kwargs):
        super().__init__(**kwargs)
        self.max_score = float(max_score)

    def build(self, input_shape):
        d = int(input_shape[-1])
        n_in = int(input_shape[1]) * d
        self.V = self.add_weight(name="V", shape=(n_in, 3 * d), initializer="glorot_uniform")
        self.g = self.add_weight(name="g", shape=(3, d), initializer="glorot_uniform")
        self.b = self.add_weight(name="b", shape=(3,), initializer="zeros")
        self.d = d
        self.built = True

    def call(self, fields):
        """``fields`` (B, 4, d) in the order ``[q, p, a, b]`` -> weights (B, 3)."""
        x = ops.reshape(fields, (-1, fields.shape[1] * fields.shape[2]))
        hidden = ops.relu(ops.reshape(ops.matmul(x, self.V), (-1, 3, self.d)))
        score = ops.sum(hidden * self.g[None], axis=-1)
        return ops.exp(ops.minimum(score, self.max_score)) + self.b[None]

    def get_config(self):
        config = super().get_config()
        config.update(max_score=self.max_score)
        return config


def _names(schema, given, prefix, what):
    if given is not None:
        names = list(given)
    else:
        names = [f.name for f in schema.categorical
                 if f.name == prefix or f.name.startswith(prefix + "_")]
    for n in names:
        if n not in schema or not schema[n].is_categorical:
            raise SchemaError(f"DADIN {what}: {n!r} is not a categorical feature of the schema")
    if not names:
        raise SchemaError(f"DADIN needs {what} (categorical features named {prefix}_*); "
                          f"the schema has {[f.name for f in schema.inputs]}")
    return names


@register("dadin")
@keras.saving.register_keras_serializable(package="tfdebias")
class DADIN(Backbone):
    """Domain Adversarial Deep Interest Network (see the module docstring).

    Args:
      schema: the data set's schema; needs user_* and item_* categorical features, the
        two histories and a ``domain`` feature.
      embedding_dim: ``d``.
      hidden_units, dnn_dropout: the DNN giving ``h_spec``.
      predictor_units, predictor_dropout: the label predictor, Eq. (9) (100 units).
      item_attention, interest_attention, bi_interaction, dnn, domain_agnostic,
        global_domain_loss, intra_class_loss: the ablation switches (:data:`VARIANTS`).
      lambda_y, lambda_global, lambda_intra, alpha, threshold: the loss, Eq. (20)-(22).
      grl_scale, grl_warmup_steps: the GRL coefficient and its DANN ramp.
      detach_condition: stop the gradient through ``y_hat`` in ``y_hat * h_DA`` (not in
        the paper, whose Eq. (13)-(14) let the reversed gradient reach the label
        predictor; a diagnostic switch, see docs/methods/dadin.md).
      user_features, item_features: override the ``user_*`` / ``item_*`` defaults.
      target_history, source_history, domain_feature: feature names.
      embedding_l2: L2 penalty on looked-up embeddings.

    ``call`` returns ``y_hat`` (B, 1); ``representation`` is ``h = h_DA + h_spec``.
    """

    def __init__(
        self,
        schema,
        embedding_dim: int = 64,
        hidden_units: Sequence[int] = (512, 128, 64),
        dnn_dropout: float = 0.2,
        predictor_units: int = 100,
        predictor_dropout: float = 0.2,
        item_attention: bool = True,
        interest_attention: bool = True,
        bi_interaction: bool = True,
        dnn: bool = True,
        domain_agnostic: bool = True,
        global_domain_loss: bool = True,
        intra_class_loss: bool = True,
        lambda_y: float = 1.0,
        lambda_global: float = 1.0,
        lambda_intra: float = 1.0,
        alpha: float = 0.5,
        threshold: float = 0.2,
        grl_scale: float = 1.0,
        grl_warmup_steps: int = 15000,
        detach_condition: bool = False,
        user_features: Sequence[str] | None = None,
        item_features: Sequence[str] | None = None,
        target_history: str = "history_target",
        source_history: str = "history_source",
        domain_feature: str | None = None,
        embedding_l2: float = 0.0,
        **kwargs,
    ):
        super().__init__(schema, embedding_dim, embedding_l2, **kwargs)
        sch = self.schema
        self.user_features = _names(sch, user_features, "user", "user_features")
        self.item_features = _names(sch, item_features, "item", "item_features")
        for h in (target_history, source_history):
            if h not in sch or sch[h].role != "sequence":
                raise SchemaError(f"DADIN: {h!r} is not a sequence feature of the schema")
        if domain_feature is None:
            doms = sch.by_role("domain")
            if not doms:
                raise SchemaError("DADIN needs a feature with role 'domain' (0 = source, 1 = target)")
            domain_feature = doms[0].name
        if domain_feature not in sch:
            raise SchemaError(f"DADIN: no domain feature {domain_feature!r}")
        if not 0.0 <= float(alpha) <= 1.0:
            raise UsageError(f"DADIN: alpha must be in [0, 1], got {alpha}")
        if not 0.0 < float(threshold) < 1.0:
            raise UsageError(f"DADIN: threshold T must be in (0, 1), got {threshold}")
        if dnn and not list(hidden_units):
            raise UsageError("DADIN: hidden_units must be non-empty when dnn=True")
        self.target_history, self.source_history = target_history, source_history
        self.domain_feature = domain_feature
        self.switches = dict(
            item_attention=bool(item_attention), interest_attention=bool(interest_attention),
            bi_interaction=bool(bi_interaction), dnn=bool(dnn),
            domain_agnostic=bool(domain_agnostic), global_domain_loss=bool(global_domain_loss),
            intra_class_loss=bool(intra_class_loss))
        self.loss_args = dict(lambda_y=float(lambda_y), lambda_global=float(lambda_global),
                              lambda_intra=float(lambda_intra), alpha=float(alpha),
                              threshold=float(threshold))
        self.grl_scale, self.grl_warmup_steps = float(grl_scale), int(grl_warmup_steps)
        self.detach_condition = bool(detach_condition)
        self.remember(
            hidden_units=[int(u) for u in hidden_units], dnn_dropout=float(dnn_dropout),
            predictor_units=int(predictor_units), predictor_dropout=float(predictor_dropout),
            **self.switches, **self.loss_args, grl_scale=self.grl_scale,
            grl_warmup_steps=self.grl_warmup_steps, detach_condition=self.detach_condition,
            user_features=self.user_features,
            item_features=self.item_features, target_history=target_history,
            source_history=source_history, domain_feature=domain_feature)

        d = self.embedding_dim
        self.embed = self.feature_embedding(
            include=self.user_features + self.item_features + [target_history, source_history],
            name="embed")
        if self.switches["item_attention"]:  # Eq. (2)-(3), one per history
            make = lambda name: AttentionPooling(  # noqa: E731
                [d], activation="relu", normalize=True,
                terms=("key", "query", "context", "product"), name=name)
            self.target_attention = make("item_attention_target")
            self.source_attention = make("item_attention_source")
        if self.switches["interest_attention"]:  # Eq. (5)-(6)
            self.interest_attention = InterestAttention(name="interest_attention")
        if self.switches["bi_interaction"]:  # Eq. (7)-(8)
            self.bi_pooling = BiInteraction(field_weights=True, name="bi_interaction")
        if self.switches["dnn"]:
            self.dnn_layers = MLP(hidden_units, "relu", float(dnn_dropout), name="dnn")
        self.predictor_hidden = keras.layers.Dense(int(predictor_units), name="label_predictor_1")
        self.predictor_dropout = keras.layers.Dropout(float(predictor_dropout))
        self.predictor_out = keras.layers.Dense(1, name="label_predictor_2")
        adversarial = self.switches["global_domain_loss"] or self.switches["intra_class_loss"]
        self.grl = GradientReversal(self.grl_scale, name="grl") if adversarial else None
        if self.switches["global_domain_loss"]:  # Eq. (12)
            self.domain_classifier = keras.layers.Dense(1, name="domain_classifier")
        if self.switches["intra_class_loss"]:  # Eq. (13)-(14)
            self.domain_classifier_1 = keras.layers.Dense(1, name="domain_classifier_1")
            self.domain_classifier_0 = keras.layers.Dense(1, name="domain_classifier_0")
        self._spec_width = self._h_spec_width(list(hidden_units))
        if self.switches["domain_agnostic"]:  # Sec. 3.3.1
            self.domain_agnostic_layer = keras.layers.Dense(
                self._spec_width, activation="sigmoid", name="domain_agnostic")
        self._trackers = {k: keras.metrics.Mean(name=k) for k in
                          ("loss", "loss_y", "loss_global", "loss_intra0", "loss_intra1")}
        self._auc = keras.metrics.AUC(name="auc")

    def _h_spec_width(self, hidden_units) -> int:
        d = self.embedding_dim
        if self.switches["dnn"]:
            return int(hidden_units[-1])
        return d if self.switches["bi_interaction"] else 4 * d

    def build(self, input_shape=None):
        # Sub-layers build on the first call (``engine.build_model`` calls the model on a
        # sample batch before the optimizer exists), so there is nothing to do here.
        self.built = True

    # -- the forward pass -------------------------------------------------------------
    def fields(self, features, training=False):
        """``(q, p, a, b)``: candidate item (Eq. (1)), user profile (Eq. (1)), target and
        source history aggregates (Eq. (2)-(3), or mean pooling in DADIN1); each (B, d)."""
        p = sum(self.embed.lookup(features, n) for n in self.user_features)
        q = sum(self.embed.lookup(features, n) for n in self.item_features)
        pooled = []
        for name, att in ((self.target_history, "target_attention"),
                          (self.source_history, "source_attention")):
            if self.switches["item_attention"]:
                keys, mask = self.embed.sequence(features, name)
                pooled.append(getattr(self, att)(q, keys, mask=mask, context=p, training=training))
            else:
                pooled.append(self.embed.pooled(features, name))
        return q, p, pooled[0], pooled[1]

    def forward_all(self, features, training=False) -> dict:
        """Every intermediate of Fig. 3: ``logits``, ``y_hat``, ``interest_weights``,
        ``h_spec``, ``h_da``, ``h`` and the domain logits ``d_global``, ``d_intra1``,
        ``d_intra0`` (``None`` where the variant has no such classifier)."""
        q, p, a, b = self.fields(features, training)
        if self.switches["interest_attention"]:
            v = self.interest_attention(ops.stack([q, p, a, b], axis=1))  # Eq. (6)
            m = ops.stack([q, v[:, 0:1] * p, v[:, 1:2] * a, v[:, 2:3] * b], axis=1)  # Eq. (5)
        else:
            v = None
            m = ops.stack([q, p, a, b], axis=1)  # Eq. (4)
        if self.switches["bi_interaction"]:
            z = self.bi_pooling(m)  # Eq. (7)-(8), (B, d)
        else:
            z = ops.reshape(m, (-1, 4 * self.embedding_dim))
        h_spec = self.dnn_layers(z, training=training) if self.switches["dnn"] else z
        if self.switches["domain_agnostic"]:
            h_da = self.domain_agnostic_layer(h_spec)
            h = h_da + h_spec  # the skip connection, Sec. 3.3.1
        else:
            h_da, h = h_spec, h_spec
        h1 = self.predictor_dropout(self.predictor_hidden(h), training=training)  # Eq. (9)
        logits = ops.reshape(self.predictor_out(h1), (-1,))  # Eq. (10), pre-sigmoid
        y_hat = ops.sigmoid(logits)
        out = {"logits": logits, "y_hat": y_hat, "interest_weights": v, "h_spec": h_spec,
               "h_da": h_da, "h": h, "d_global": None, "d_intra1": None, "d_intra0": None}
        if self.switches["global_domain_loss"]:
            out["d_global"] = ops.reshape(self.domain_classifier(self.grl(h_da)), (-1,))  # Eq. (12)
        if self.switches["intra_class_loss"]:
            yh = y_hat[:, None]
            if self.detach_condition:  # no adversarial gradient into the label predictor
                yh = ops.stop_gradient(yh)
            out["d_intra1"] = ops.reshape(self.domain_classifier_1(self.grl(yh * h_da)), (-1,))  # (13)
            out["d_intra0"] = ops.reshape(
                self.domain_classifier_0(self.grl((1.0 - yh) * h_da)), (-1,))  # Eq. (14)
        return out

    def forward(self, features, training=False):
        out = self.forward_all(features, training)
        return out["logits"], out["h"]

    # -- the loss (one function) --------------------------------------------------------
    def loss_terms(self, features, labels, outputs=None, sample_weight=None, training=True) -> dict:
        """Named loss terms of a batch (:func:`dadin_loss_terms` on this model's outputs).
        Used by ``train_step``/``test_step``, the multi-worker loop and the tests."""
        if outputs is None:
            outputs = self.forward_all(features, training=training)
        if self.domain_feature not in features:
            raise SchemaError(f"DADIN: the batch has no domain labels {self.domain_feature!r}")
        return dadin_loss_terms(
            labels, outputs["logits"], features[self.domain_feature], outputs["d_global"],
            outputs["d_intra1"], outputs["d_intra0"], sample_weight=sample_weight,
            **self.loss_args)

    @property
    def metrics(self):
        return [*self._trackers.values(), self._auc]

    def _update_metrics(self, terms, labels, y_hat):
        for k, t in self._trackers.items():
            t.update_state(terms[k])
        self._auc.update_state(ops.reshape(labels, (-1,)), y_hat)
        return {m.name: m.result() for m in self.metrics}

    def train_step(self, data):
        from keras.src.losses.loss import scale_loss_for_distribution

        x, y, sw = keras.utils.unpack_x_y_sample_weight(data)
        if self.grl is not None and self.grl_warmup_steps > 0:
            self.grl._scale.assign(
                grl_schedule(self.optimizer.iterations, self.grl_warmup_steps, self.grl_scale))
        with tf.GradientTape() as tape:
            out = self.forward_all(x, training=True)
            terms = self.loss_terms(x, y, out, sample_weight=sw)
            loss = terms["loss"]
            if self.losses:
                loss = loss + ops.sum(ops.stack([ops.cast(v, "float32") for v in self.losses]))
            scaled = scale_loss_for_distribution(loss)
        grads = tape.gradient(scaled, self.trainable_variables)
        self.optimizer.apply_gradients(zip(grads, self.trainable_variables))
        return self._update_metrics(terms, y, out["y_hat"])

    def test_step(self, data):
        x, y, sw = keras.utils.unpack_x_y_sample_weight(data)
        out = self.forward_all(x, training=False)
        terms = self.loss_terms(x, y, out, sample_weight=sw, training=False)
        return self._update_metrics(terms, y, out["y_hat"])


def variant_args(name: str) -> dict:
    """Constructor switches of a paper variant (``"dadin3"``, ``"DADIN++"``)."""
    key = name.strip().lower().replace("_", "")
    if key not in VARIANTS:
        raise UsageError(f"unknown DADIN variant {name!r}; expected one of {list(VARIANTS)}")
    return dict(VARIANTS[key])


try:  # the tuner registry (tfdebias.tuning) when it is installed
    from tfdebias.tuning import register_space as _register_space

    _register_space("dadin", SEARCH_SPACE)
except ImportError:  # pragma: no cover - the space stays declared as data above
    pass

__all__ = ["DADIN", "InterestAttention", "PAPER_DEFAULTS", "SEARCH_SPACE", "VARIANTS",
           "dadin_loss_terms", "grl_schedule", "variant_args"]


# -- evaluation protocol ------------------------------------------------------------------


def _cross_domain_protocol(model, splits: dict, schema, config=None, *, batch_size: int = 8192) -> dict:
    """AUC and log loss on the target-domain ``valid``/``test`` splits (Sec. 4.2), plus
    ``test/auc_cold`` / ``test/logloss_cold`` on the rows of cold-start users (the
    simulator's ``cold_start`` truth: no target row in train)."""
    import numpy as np

    from tfdebias.evaluation import metrics as m
    from tfdebias.evaluation.protocols import ctr_protocol
    from tfdebias.training.engine import predict

    out = ctr_protocol(model, splits, schema, config, batch_size=batch_size)
    test = splits.get("test")
    label = schema.label.name
    if test is not None and "cold_start" in test:
        cold = np.asarray(test["cold_start"]) > 0.5
        y = np.asarray(test[label], np.float64)[cold]
        if cold.any() and 0 < y.mean() < 1:
            p = predict(model, {k: v[cold] for k, v in test.items()}, batch_size=batch_size)
            out["test/auc_cold"] = float(m.auc(y, p))
            out["test/logloss_cold"] = float(m.logloss(y, p))
    return out


def _register_protocol():
    from tfdebias.evaluation.protocols import PROTOCOLS, register as register_protocol

    if "cross_domain" not in PROTOCOLS:
        register_protocol("cross_domain")(_cross_domain_protocol)


_register_protocol()


# -- tfdebias reproduce dadin -------------------------------------------------------------
#
# The table is an evidence table (tfdebias.evaluation.evidence): every row is trained for the same fixed number of optimizer steps on each
# of several simulator draws (data seeds) and scored on the target-domain test split,
# with 95% intervals from a paired two-level bootstrap over data seeds and test users.
#
# Roles. The bias DADIN addresses is the shift from a label-rich source domain to a
# label-poor target domain with cold-start users. The *floor* is the backbone without its
# debiasing part trained naively on the biased (pooled two-domain) log: DADIN9, the
# paper's own ablation without the two domain losses (no GRL, no classifiers), which is
# also the main baseline of DADIN++ (Table 4). The *skyline* is the same DADIN9, same
# features and budget, trained on ``train_unbiased``: as many rows as ``train``, all drawn
# from the target domain's test population (every target user, cold-start users
# included; see the simulator's docstring), i.e. the target labels the biased log lacks.

#: Table 3 / Table 4 rows: (row name, model, model args, group). Single-domain models are
#: trained on the target-domain rows only (the paper: "the loss is calculated with the
#: true labels in its domain"), the cross-domain ones on the rows of both domains.
TABLE_ROWS = (
    [("LR", "lr", {}, "single"), ("FM", "fm", {}, "single"),
     ("Wide&Deep", "wide_deep", {}, "single"), ("xDeepFM", "xdeepfm", {}, "single"),
     ("DIN", "din", {}, "single"), ("NFM", "nfm", {}, "single"),
     ("MV-DNN", "mv_dnn", {}, "cross"), ("MLP++", "mlp_plus_plus", {}, "cross"),
     ("CSN", "csn", {}, "cross"), ("CoNet", "conet", {}, "cross"), ("MiNet", "minet", {}, "cross")]
    + [(f"DADIN{i}", "dadin", VARIANTS[f"dadin{i}"], "ablation") for i in range(1, 10)]
    + [("DADIN++", "dadin", {}, "dadin")]
)

#: the rows ``--quick`` trains (plus the skyline and the model-free rows)
QUICK_ROWS = ("DIN", "DADIN9", "DADIN++")
#: the floor (the backbone trained naively on the biased log) and main baseline
FLOOR = "DADIN9"
#: the method row
METHOD = "DADIN++"
#: the skyline row: FLOOR's model and budget trained on ``train_unbiased``
SKYLINE = "DADIN9 on train_unbiased"
#: the model-free rows
POPULARITY, LOGISTIC, TRUTH = "popularity", "logistic regression", "truth (relevance)"

#: Budgets: a fixed number of optimizer steps, the same for every row; no early stopping.
#: ``paper`` = Sec. 4.3.1 / Table 2 (Adam, embedding 64; single-domain batch 1000, lr 1e-3,
#: hidden [512, 512, 512]; cross-domain and DADIN batch 2000, lr 1e-4, hidden
#: [512, 128, 64]; the paper early-stops within 60 epochs, we fix 3,000 steps, about 23
#: epochs of ``cross_domain_ctr/medium`` at batch 2000). ``quick`` shrinks everything so
#: that three data seeds fit in minutes on 2 CPU cores (one batch size for every row, so
#: every row also sees the same number of examples). See docs/methods/dadin.md.
BUDGETS = {
    "paper": {"embedding_dim": 64, "steps": 3000,
              "single": {"batch_size": 1000, "learning_rate": 1e-3, "hidden_units": [512, 512, 512]},
              "cross": {"batch_size": 2000, "learning_rate": 1e-4, "hidden_units": [512, 128, 64]}},
    "quick": {"embedding_dim": 16, "steps": 600,
              "single": {"batch_size": 512, "learning_rate": 1e-3, "hidden_units": [128, 128]},
              "cross": {"batch_size": 512, "learning_rate": 1e-3, "hidden_units": [128, 64]}},
}
_NO_HIDDEN = ("lr", "fm")
#: DADIN's sub-layers, in the order ``share_initial_weights`` copies them
_DADIN_LAYERS = ("embed", "target_attention", "source_attention", "interest_attention",
                 "bi_pooling", "dnn_layers", "domain_agnostic_layer", "predictor_hidden",
                 "predictor_out", "domain_classifier", "domain_classifier_1",
                 "domain_classifier_0")


def _row_config(model: str, args: dict, group: str, budget: dict, overrides: dict) -> tuple[dict, dict]:
    """``(train settings, model args)`` of one row under ``budget`` and the CLI overrides."""
    part = budget["single" if group == "single" else "cross"]
    train = {"batch_size": part["batch_size"], "learning_rate": part["learning_rate"],
             "optimizer": "adam"}
    model_args = {"embedding_dim": budget["embedding_dim"], **args}
    if model not in _NO_HIDDEN:
        model_args["hidden_units"] = list(part["hidden_units"])
    if overrides.get("embedding_dim") is not None:
        model_args["embedding_dim"] = overrides["embedding_dim"]
    return train, model_args


def share_initial_weights(model, reference) -> list[str]:
    """Copy into DADIN ``model`` the weights of every sub-layer it shares with
    ``reference`` (same layer, same weight shapes), and the seed state of their dropout
    layers; returns the layers copied.

    Pairs the ablations: built under one seed, DADIN9 and DADIN++ start from identical
    embeddings, attention, DNN, domain-agnostic layer and label predictor and draw the
    same dropout masks (Keras would otherwise draw the layers built after the first
    removed one differently)."""
    copied = []
    for attr in _DADIN_LAYERS + ("predictor_dropout",):
        a, b = getattr(model, attr, None), getattr(reference, attr, None)
        if a is None or b is None:
            continue
        wa, wb = a.weights, b.weights
        if len(wa) != len(wb) or any(tuple(x.shape) != tuple(y.shape) for x, y in zip(wa, wb)):
            continue
        for x, y in zip(wa, wb):
            x.assign(y)
        seeds_a, seeds_b = _seed_states(a), _seed_states(b)
        if len(seeds_a) == len(seeds_b):
            for x, y in zip(seeds_a, seeds_b):
                x.assign(y)
        copied.append(attr)
    return copied


def _seed_states(layer) -> list:
    """The seed-generator states of ``layer`` and its sub-layers (dropout), in order."""
    return [lay.seed_generator.state for lay in layer._flatten_layers()
            if getattr(lay, "seed_generator", None) is not None]


def _stop_at_step(steps: int):
    import keras

    class StopAtStep(keras.callbacks.Callback):
        """Ends ``fit`` after exactly ``steps`` optimizer steps (checked after every step)."""

        def on_train_batch_end(self, batch, logs=None):
            if int(self.model.optimizer.iterations.numpy()) >= steps:
                self.model.stop_training = True

    return StopAtStep()


def build_row_model(model: str, model_args: dict, schema, sample: dict, seed: int):
    """The row's model built under ``seed``; DADIN variants take the initial weights of
    the full DADIN++ built under the same seed wherever they share its layers
    (:func:`share_initial_weights`)."""
    import keras

    from tfdebias.training.engine import build_model

    keras.utils.clear_session(free_memory=False)
    keras.utils.set_random_seed(seed)
    if model != "dadin":
        return build_model(model, schema, model_args, sample)
    if all(model_args.get(k, True) for k in _switch_names()):
        return build_model("dadin", schema, model_args, sample)  # it is the reference
    full = {k: v for k, v in model_args.items() if k not in _switch_names()}
    reference = build_model("dadin", schema, full, sample)
    obj = build_model("dadin", schema, model_args, sample)
    share_initial_weights(obj, reference)
    del reference
    return obj


def _switch_names() -> set:
    return {k for v in VARIANTS.values() for k in v}


def train_row(model: str, model_args: dict, train: dict, schema, train_cfg: dict, steps: int,
              seed: int, sample: dict | None = None):
    """Train one row for exactly ``steps`` optimizer steps (no validation, no early
    stopping); returns the model."""
    import math

    from tfdebias import data as tdata
    from tfdebias.optimizers import make_optimizer
    from tfdebias.training.engine import TrainConfig, compile_model, fit

    n = len(train[schema.label.name])
    batch = train_cfg["batch_size"]
    config = TrainConfig(data="", model=model, model_args=model_args, seed=seed,
                         epochs=max(1, math.ceil(steps / max(1, math.ceil(n / batch)))),
                         patience=0, protocol="cross_domain", **train_cfg)
    train_ds = tdata.make_dataset(train, schema, batch_size=batch, shuffle=True, seed=seed)
    if sample is None:
        sample = next(iter(tdata.make_dataset(train, schema, batch_size=8)))[0]
    obj = build_row_model(model, model_args, schema, sample, seed)
    compile_model(obj, make_optimizer(config.optimizer, config.learning_rate))
    fit(obj, train_ds, None, config, verbose=0, callbacks=[_stop_at_step(steps)])
    done = int(obj.optimizer.iterations.numpy())
    if done != steps:  # pragma: no cover - a guard on the budget's one promise
        raise RuntimeError(f"{model}: trained {done} optimizer steps, the budget is {steps}")
    return obj


def evidence_scores(test: dict, prob, label: str = "click") -> dict:
    """Evidence scores of predicted click probabilities on the target-domain test split:
    ``test/auc`` and ``test/logloss`` over all rows, and ``test/auc/cold`` /
    ``test/auc/warm`` over the rows of cold-start (no target row in train) and warm
    users. Units = test user ids, so a bootstrap replicate draws whole users."""
    import numpy as np

    from tfdebias.evaluation.evidence import ctr_scores

    y = np.asarray(test[label], np.float64).reshape(-1)
    groups = {}
    if "cold_start" in test:
        cold = np.asarray(test["cold_start"]) > 0.5
        groups = {g: m for g, m in (("cold", cold), ("warm", ~cold)) if m.any() and 0 < y[m].mean() < 1}
    return ctr_scores(y, prob, test["user_id"], groups)


def _record(name: str, role: str, data_seed, seed: int, scores: dict, **extra) -> dict:
    metrics = {k: s.point() for k, s in scores.items()}
    metrics.update(extra.pop("metrics", {}))
    return {"name": name, "role": role, "data_seed": data_seed, "seed": seed, **extra,
            "metrics": metrics, "scores": scores}


def _role(name: str) -> str:
    return {FLOOR: "floor", METHOD: "method", SKYLINE: "skyline"}.get(name, "baseline")


def _simple_rows(splits: dict, schema, data_seed) -> list[dict]:
    """The model-free rows of one data seed: popularity (each item's click rate in
    ``train``, shrunk toward the global rate: :func:`~tfdebias.evaluation.baselines.item_ctr`),
    logistic regression on DADIN's own inputs (the ``user_*`` and ``item_*`` fields and
    both histories as bags of items) fitted on ``train``
    (:func:`~tfdebias.evaluation.baselines.logistic_regression`), and the truth row (the
    simulator's true click probability) where the data ships it."""
    from tfdebias.evaluation import baselines

    test, train = splits["test"], splits["train"]
    label = schema.label.name
    n_items = schema["item_id"].vocab_size
    pop = baselines.item_ctr(train["item_id"], train[label], n_items)[test["item_id"]]
    out = [_record(POPULARITY, "simple", data_seed, 0, evidence_scores(test, pop, label))]
    fields = [f.name for f in schema.categorical
              if f.name.startswith(("user_", "item_")) or f.name in ("user", "item")]
    fields += [f.name for f in schema.sequences]
    lr = baselines.logistic_regression(train, schema, label=label, fields=fields)
    out.append(_record(LOGISTIC, "simple", data_seed, 0,
                       evidence_scores(test, lr.predict(test), label)))
    if "relevance" in test:
        out.append(_record(TRUTH, "truth", data_seed, 0,
                           evidence_scores(test, test["relevance"], label)))
    return out


def reproduce(args) -> str:
    """``tfdebias reproduce dadin``: an evidence table of Table 3 (baselines) and Table 4
    (DADIN1-9, DADIN++) over data seeds x model seeds (see the comment above
    :data:`TABLE_ROWS`)."""
    import math
    import time
    from pathlib import Path

    from tfdebias import data as tdata
    from tfdebias.evaluation.evidence import Progress, write_evidence

    if getattr(args, "stopping", "fixed") != "fixed":
        raise UsageError(
            "reproduce dadin: --stopping snips needs propensities, and a cross-domain log has "
            "none (the bias is a domain shift, not an exposure policy); use --stopping fixed")
    budget_name = "quick" if args.quick else "paper"
    budget = BUDGETS[budget_name]
    if args.seeds is None:
        args.seeds = 1 if args.quick else 2
    data_seeds = getattr(args, "data_seeds", None) or (3 if args.quick else 5)
    wanted = [r.strip() for r in (args.rows or "").split(",") if r.strip()]
    names = [r[0] for r in TABLE_ROWS]
    unknown = [w for w in wanted if w not in names]
    if unknown:
        raise UsageError(f"--rows: unknown rows {unknown}; the table has {names}")
    if not wanted and args.quick:
        wanted = list(QUICK_ROWS)
    if wanted and FLOOR not in wanted:
        wanted.append(FLOOR)  # the floor is always trained
    rows = [r for r in TABLE_ROWS if not wanted or r[0] in wanted]
    rows += [(SKYLINE, "dadin", VARIANTS["dadin9"], "skyline")]
    overrides = {"embedding_dim": args.embedding_dim}
    data = tdata.evidence_data(args.data)

    records, t0 = [], time.time()
    seeds_of_data = tdata.data_seeds(data, data_seeds)
    progress = Progress(len(seeds_of_data) * (len(rows) * args.seeds + 1))
    steps = batch = None
    for d in seeds_of_data:
        builder = tdata.prepare(data, data_dir=args.data_dir, manual_dir=args.manual_dir,
                                data_seed=d)
        schema = tdata.load_schema(builder)
        if not schema.by_role("domain"):
            raise UsageError(f"data set {data!r} has no domain feature; DADIN needs a cross-domain log")
        if "train_unbiased" not in builder.info.splits:
            raise UsageError(
                f"data set {data!r} has no train_unbiased split: the evidence table needs a "
                "simulator that can draw the log without the bias (cross_domain_ctr); train "
                "on real data with `tfdebias train`")
        splits = {s: tdata.read_split(builder, s) for s in ("train", "train_unbiased", "test")}
        dom = schema.by_role("domain")[0].name
        train = splits["train"]
        target_rows = {k: v[train[dom] == 1] for k, v in train.items()}
        n_train = len(train[schema.label.name])
        if steps is None:  # fixed on the first draw, the same for every row and draw
            batch = budget["cross"]["batch_size"]
            steps = (args.steps if args.steps is not None
                     else math.ceil(args.epochs * n_train / batch) if args.epochs is not None
                     else budget["steps"])
        sample = {k: v[:8] for k, v in train.items() if k != schema.label.name}
        for name, model, margs, group in rows:
            train_cfg, model_args = _row_config(model, margs, group, budget, overrides)
            rows_of = (target_rows if group == "single" else
                       splits["train_unbiased"] if group == "skyline" else train)
            for seed in range(args.seeds):
                t = time.time()
                obj = train_row(model, model_args, rows_of, schema, train_cfg, steps, seed,
                                sample=sample)
                seconds = time.time() - t
                from tfdebias.training.engine import predict

                p = predict(obj, splits["test"])
                records.append(_record(
                    name, "skyline" if group == "skyline" else _role(name), d, seed,
                    evidence_scores(splits["test"], p, schema.label.name),
                    group=group, params=int(obj.count_params()),
                    metrics={"train/steps": float(steps), "train_seconds": round(seconds, 2)}))
                progress.step(f"{name} data seed {d} seed {seed}: test/auc "
                              f"{records[-1]['metrics']['test/auc']:.4f} ({seconds:.0f}s)")
        records += _simple_rows(splits, schema, d)
        progress.step(f"{POPULARITY}, {LOGISTIC}, {TRUTH} data seed {d}")

    grl_end = float(grl_schedule(steps, 15000))
    notes = (
        f"Data: `{data}`, {data_seeds} data seed(s) (each regenerates the simulator) x "
        f"{args.seeds} model seed(s). Budget `{budget_name}` "
        f"({json_budget(budget, {**overrides, 'steps': steps})}). Single-domain rows (DIN, ...) train on the "
        "target-domain rows of `train`, cross-domain rows and DADIN on both domains. "
        f"Floor = {FLOOR} (no domain losses) on the pooled biased log, also the main "
        f"baseline; skyline = {FLOOR} on `train_unbiased` (as many rows as `train`, drawn "
        "from the target domain's test population, cold-start users included). Ablations "
        "share initial weights with DADIN++ where they share its layers. Metrics on the "
        "target-domain test split (last day); `/cold` = users with no target row in "
        "train, `/warm` = the others; units of the bootstrap = test users. The test split "
        "holds target rows only, so there is no source-domain group. DADIN's GRL ramp "
        f"(DANN, 15,000 steps) reaches {grl_end:.3f} of its scale by the last step. "
        f"Popularity and logistic regression: `tfdebias.evaluation.baselines`. "
        f"Wall time {time.time() - t0:.0f} s. See docs/methods/dadin.md.")
    stopping = (f"fixed budget: {steps} optimizer steps per row (batch "
                f"{budget['single']['batch_size']} single-domain, {batch} cross-domain), no "
                "early stopping")
    out = write_evidence(
        Path(args.out), records, title=f"DADIN on {data} (the paper's Tables 3-4): evidence",
        metric="test/auc", main_baseline=FLOOR, method=METHOD, stopping=stopping,
        metrics=["test/auc", "test/auc/cold", "test/auc/warm", "test/logloss"], notes=notes,
        extra={"budget": budget_name, "budget_settings": budget, "overrides": overrides,
               "data": data, "data_seeds": data_seeds, "steps": steps})
    return str(out)


def json_budget(budget: dict, overrides: dict) -> str:
    import json

    shown = {**budget, **{k: v for k, v in overrides.items() if v is not None}}
    return json.dumps(shown, sort_keys=True)


def _reproduce_arguments(parser):
    parser.add_argument("--rows", default=None,
                        help="comma-separated subset of table rows (e.g. 'DIN,DADIN9,DADIN++'); "
                             f"{FLOOR} (the floor) and the skyline always run")
    budget = parser.add_mutually_exclusive_group()
    budget.add_argument("--steps", type=_positive_int, default=None,
                        help="optimizer steps per row (default: the budget's, 600 with --quick)")
    budget.add_argument("--epochs", type=_positive_int, default=None,
                        help="set the steps to this many epochs of the first draw's `train` "
                             "split (the same steps for every row)")
    parser.add_argument("--embedding-dim", type=_positive_int, default=None,
                        help="override the budget's embedding size")


def _positive_int(s: str) -> int:
    import argparse

    try:
        v = int(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {s!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {s!r}")
    return v


def _register_reproducer():
    from tfdebias.methods import Reproducer, register_reproducer

    register_reproducer(Reproducer(
        name="dadin",
        help="DADIN: evidence table of the baselines, DADIN1-9 and DADIN++ on a "
             "cross-domain CTR log (headroom, gap closed, CIs over data seeds)",
        run=reproduce, add_arguments=_reproduce_arguments, default_data="cross_domain_ctr",
        default_seeds=None))


_register_reproducer()
