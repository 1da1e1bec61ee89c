"""DADIN's layers and registered model: :class:`InterestAttention` (Eq. (5)-(6)),
:class:`DADIN` (Sec. 3, Fig. 3; ``models.build("dadin", ...)``), the GRL ramp
:func:`grl_schedule`, the paper's variants (:data:`VARIANTS`, Sec. 4.4) and
:func:`field_names` (the ``user_*`` / ``item_*`` fields, shared with the cross-domain
baselines). The package docstring lists the equations and the choices."""

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
from tfdebias.methods.dadin.losses import DOMAIN_MEDIAN, dadin_loss_terms
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


#: how the GRL weight moves during training (``DADIN(grl_schedule=...)``)
GRL_SCHEDULES = ("run", "warmup", "constant")
#: how ``y_hat`` conditions the intra-class classifiers (``DADIN(condition=...)``)
CONDITIONS = ("detached", "paper", "authors")


def grl_schedule(step, warmup_steps: int, scale: float = 1.0):
    """DANN's ramp ``scale * (2 / (1 + exp(-10 p)) - 1)``, ``p = min(step / warmup, 1)``
    (Ganin et al.; the authors' code with ``warmup = 15000``); ``scale`` when
    ``warmup <= 0``. Over a run of ``n`` steps, ``warmup = n`` and ``step`` counted from 1
    make the last step's weight ``scale * (2 / (1 + e^-10) - 1) = 0.99991 scale``."""
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


def field_names(schema, given, prefix, what):
    """The categorical features of a field: ``given`` when set, else every categorical
    feature named ``prefix`` or ``prefix_*``; raises :class:`SchemaError` when one is not
    a categorical feature of ``schema`` or there is none (``what`` names the argument)."""
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
    """Domain Adversarial Deep Interest Network (see the package docstring).

    Args:
      schema: the data set's schema; needs user_* and item_* categorical features, the
        two histories and a ``domain`` feature.
      embedding_dim: ``d``.
      hidden_units, dnn_dropout: the DNN giving ``h_spec``.
      predictor_units, predictor_dropout: the label predictor, Eq. (9) (100 units).
      item_attention, interest_attention, bi_interaction, dnn, domain_agnostic,
        global_domain_loss, intra_class_loss: the ablation switches (:data:`VARIANTS`).
      lambda_y, lambda_global, lambda_intra, alpha: the loss, Eq. (20)-(22); an
        ablation without a domain loss is the same model with its lambda at 0.
      threshold: ``T`` of Eq. (17)-(18): ``"domain_median"`` (default: each domain of a
        batch split at its own median ``y_hat``) or a fixed value in (0, 1) (the paper's).
      grl_scale, grl_schedule, grl_warmup_steps: the GRL weight's maximum and how it
        moves: ``"run"`` (default) DANN's ramp over the whole training run (``p = step /
        total steps``, the total from :meth:`set_run_length` or ``fit``'s epochs x steps),
        ``"warmup"`` the ramp over ``grl_warmup_steps`` (the authors' code: 15,000),
        ``"constant"`` the literal Eq. (11). ``grl_warmup_steps=0`` also means constant.
      condition: how ``y_hat`` conditions ``D^1``/``D^0``: ``"detached"`` (default,
        ``Rev(sg(y_hat) h_DA)``), ``"paper"`` (Eq. (13)-(14), ``Rev(y_hat h_DA)``: the
        reversed gradient also reaches the label predictor) or ``"authors"`` (their code,
        ``Rev(h_DA) y_hat``: ``y_hat`` gets the classifier's unreversed gradient).
      detach_condition: ``True`` = ``condition="detached"`` (kept for old configs).
      clip_norm: clip the gradient to this global norm (the authors' FuxiCTR
        ``max_gradient_norm``, 10); 0 = no clipping.
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
        threshold: float | str = DOMAIN_MEDIAN,
        grl_scale: float = 1.0,
        grl_schedule: str = "run",
        grl_warmup_steps: int = 15000,
        condition: str = "detached",
        detach_condition: bool = False,
        clip_norm: float = 10.0,
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
        self.user_features = field_names(sch, user_features, "user", "user_features")
        self.item_features = field_names(sch, item_features, "item", "item_features")
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
        if isinstance(threshold, str):
            if threshold != DOMAIN_MEDIAN:
                raise UsageError(f"DADIN: threshold must be {DOMAIN_MEDIAN!r} or a number in "
                                 f"(0, 1), got {threshold!r}")
        elif not 0.0 < float(threshold) < 1.0:
            raise UsageError(f"DADIN: threshold T must be in (0, 1), got {threshold}")
        else:
            threshold = float(threshold)
        if grl_schedule not in GRL_SCHEDULES:
            raise UsageError(f"DADIN: grl_schedule must be one of {GRL_SCHEDULES}, got "
                             f"{grl_schedule!r}")
        if detach_condition:
            condition = "detached"
        if condition not in CONDITIONS:
            raise UsageError(f"DADIN: condition must be one of {CONDITIONS}, got {condition!r}")
        if float(clip_norm) < 0:
            raise UsageError(f"DADIN: clip_norm must be >= 0, got {clip_norm}")
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
                              threshold=threshold)
        self.grl_scale, self.grl_warmup_steps = float(grl_scale), int(grl_warmup_steps)
        self.grl_schedule = "constant" if self.grl_warmup_steps <= 0 else grl_schedule
        self.condition, self.clip_norm = condition, float(clip_norm)
        self.detach_condition = condition == "detached"
        # the run the "run" ramp spans: [total steps, optimizer step at its start,
        # 1 once set_run_length fixed it]; plain variables, not model weights
        self._run = tf.Variable([0.0, 0.0, 0.0], trainable=False, name="grl_run")
        self.remember(
            hidden_units=[int(u) for u in hidden_units], dnn_dropout=float(dnn_dropout),
            predictor_units=int(predictor_units), predictor_dropout=float(predictor_dropout),
            **self.switches, **self.loss_args, grl_scale=self.grl_scale,
            grl_schedule=self.grl_schedule, grl_warmup_steps=self.grl_warmup_steps,
            condition=self.condition, clip_norm=self.clip_norm,
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
            if self.condition == "authors":  # Rev(h_DA) * y_hat: y_hat is not reversed
                rev = self.grl(h_da)
                c1, c0 = rev * yh, rev * (1.0 - yh)
            else:  # Rev(y_hat * h_DA), Eq. (13)-(14); "detached": no gradient into y_hat
                if self.condition == "detached":
                    yh = ops.stop_gradient(yh)
                c1, c0 = self.grl(yh * h_da), self.grl((1.0 - yh) * h_da)
            out["d_intra1"] = ops.reshape(self.domain_classifier_1(c1), (-1,))  # Eq. (13)
            out["d_intra0"] = ops.reshape(self.domain_classifier_0(c0), (-1,))  # Eq. (14)
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

    # -- the GRL weight over a run -----------------------------------------------------
    def set_run_length(self, steps: int, start: int | None = None) -> None:
        """Fix the length of the training run the ``"run"`` ramp spans: ``steps``
        optimizer steps from optimizer step ``start`` (default: the optimizer's current
        step, 0 before training). ``fit`` otherwise sets it to epochs x steps per epoch."""
        if int(steps) < 1:
            raise UsageError(f"DADIN: a run has >= 1 step, got {steps}")
        if start is None:
            opt = getattr(self, "optimizer", None)
            start = int(opt.iterations.numpy()) if opt is not None and opt.built else 0
        self._run.assign([float(steps), float(start), 1.0])

    def grl_weight(self, step):
        """The GRL weight used at optimizer step ``step`` (0-based; the schedule counts
        the step being taken, so a run's last step uses its full ``p = 1``)."""
        if self.grl_schedule == "constant":
            return ops.convert_to_tensor(self.grl_scale, "float32")
        done = ops.cast(step, "float32") + 1.0
        if self.grl_schedule == "warmup":
            return grl_schedule(done, self.grl_warmup_steps, self.grl_scale)
        p = ops.minimum((done - self._run[1]) / ops.maximum(self._run[0], 1.0), 1.0)
        return self.grl_scale * (2.0 / (1.0 + ops.exp(-10.0 * p)) - 1.0)

    def fit(self, *args, **kwargs):
        """``keras.Model.fit``; the ``"run"`` ramp spans this call's epochs x steps per
        epoch unless :meth:`set_run_length` fixed the run before."""
        callbacks = list(kwargs.pop("callbacks", None) or [])
        if self.grl_schedule == "run":
            callbacks.insert(0, _RunLength(self))
        return super().fit(*args, callbacks=callbacks, **kwargs)

    def train_step(self, data):
        from keras.src.losses.loss import scale_loss_for_distribution

        x, y, sw = keras.utils.unpack_x_y_sample_weight(data)
        if self.grl is not None and self.grl_schedule != "constant":
            self.grl._scale.assign(self.grl_weight(self.optimizer.iterations))
        with tf.GradientTape() as tape:
            out = self.forward_all(x, training=True)
            terms = self.loss_terms(x, y, out, sample_weight=sw)
            loss = terms["loss"]
            if self.losses:
                loss = loss + ops.sum(ops.stack([ops.cast(v, "float32") for v in self.losses]))
            scaled = scale_loss_for_distribution(loss)
        grads = tape.gradient(scaled, self.trainable_variables)
        if self.clip_norm > 0:  # the authors' max_gradient_norm
            grads, _ = tf.clip_by_global_norm(grads, self.clip_norm)
        self.optimizer.apply_gradients(zip(grads, self.trainable_variables))
        return self._update_metrics(terms, y, out["y_hat"])

    def test_step(self, data):
        x, y, sw = keras.utils.unpack_x_y_sample_weight(data)
        out = self.forward_all(x, training=False)
        terms = self.loss_terms(x, y, out, sample_weight=sw, training=False)
        return self._update_metrics(terms, y, out["y_hat"])


class _RunLength(keras.callbacks.Callback):
    """Sets a DADIN's ``"run"`` ramp to span the ``fit`` call (epochs x steps per epoch
    as Keras counts them), unless :meth:`DADIN.set_run_length` fixed it; when Keras cannot
    count the steps (an endless data set), the ramp spans ``grl_warmup_steps``."""

    def __init__(self, dadin):
        super().__init__()
        self._dadin = dadin

    def on_train_begin(self, logs=None):
        m = self._dadin
        if float(m._run[2].numpy()) > 0:
            return
        steps, epochs = self.params.get("steps"), self.params.get("epochs")
        total = int(steps) * int(epochs) if steps and epochs else m.grl_warmup_steps
        m._run.assign([float(max(total, 1)), float(m.optimizer.iterations.numpy()), 0.0])


def variant_args(name: str) -> dict:
    """Constructor switches of a paper variant (``"dadin3"``, ``"DADIN++"``)."""
    key = name.strip().lower().replace("_", "")
    if key not in VARIANTS:
        raise UsageError(f"unknown DADIN variant {name!r}; expected one of {list(VARIANTS)}")
    return dict(VARIANTS[key])
