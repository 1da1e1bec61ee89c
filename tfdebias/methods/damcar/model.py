"""DAMCAR's models: the label generator (Sec. 4.2, :class:`LabelGenerator` with its
:class:`ADANetwork` student and EMA teacher) and the hybrid DSSM retriever
(Sec. 4.3, :class:`HybridRetrieval`), both registered with :func:`tfdebias.models.register`."""

from __future__ import annotations

from typing import Sequence

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from tfdebias.errors import UsageError
from tfdebias.layers.gradient_reversal import GradientReversal
from tfdebias.layers.mlp import MLP
from tfdebias.methods.damcar.losses import ITEM, label_generator_losses, retrieval_losses
from tfdebias.models import register
from tfdebias.models.base import Backbone, build_on_first_call


# =============================================================================================
# 2. Robust pseudo-label generation (Eq. (4)-(11))
# =============================================================================================


def grl_schedule(step, warmup_steps: int):
    """Ganin & Lempitsky's reversal-scale schedule, ``2 / (1 + exp(-10 p)) - 1`` with
    ``p = step / (warmup_steps - 1)`` clipped to [0, 1], divided by its value at
    ``p = 1`` so that it is exactly 0 at step 0 and exactly 1 from step
    ``warmup_steps - 1`` on. ``warmup_steps = 0``: 1 at every step (no warm-up)."""
    if warmup_steps <= 0:
        return tf.constant(1.0, tf.float32)
    p = tf.clip_by_value(tf.cast(step, tf.float32) / float(max(warmup_steps - 1, 1)), 0.0, 1.0)
    top = 2.0 / (1.0 + np.exp(-10.0)) - 1.0
    return (2.0 / (1.0 + tf.exp(-10.0 * p)) - 1.0) / top


@keras.saving.register_keras_serializable(package="tfdebias")
class ADANetwork(keras.layers.Layer):
    """Embeddings, encoder ``E``, transform ``g``, label head ``Phi`` and domain
    classifier ``Psi`` behind a gradient reversal layer (Eq. (4), (5), (7)).

    ``source=True`` sends ``z`` through ``g`` (Eq. (5): ``Phi(g(z^s))``, Eq. (7):
    ``Psi(g(z^s))``); ``source=False`` does not (``Phi(z^t)``, ``Psi(z^t)``).
    """

    def __init__(self, schema, embedding_dim=32, encoder_units=(300, 200, 100),
                 transform_units=(128, 100), domain_normalize: bool = True, **kwargs):
        super().__init__(**kwargs)
        from tfdebias.layers.feature_embedding import FeatureEmbedding, as_schema

        self.schema = as_schema(schema)
        self.domain_normalize = bool(domain_normalize)
        self._config = {"embedding_dim": int(embedding_dim),
                        "encoder_units": [int(u) for u in encoder_units],
                        "transform_units": [int(u) for u in transform_units],
                        "domain_normalize": self.domain_normalize}
        self.embed = FeatureEmbedding(self.schema, embedding_dim, name="embed")
        self.encoder = MLP(encoder_units, name="encoder")  # E, Eq. (4)
        self.transform = MLP(transform_units, name="transform")  # g, Eq. (5)
        self.label_head = keras.layers.Dense(1, name="label_head")  # Phi
        self.grl = GradientReversal(1.0, name="grl")
        self.domain_head = keras.layers.Dense(1, name="domain_head")  # Psi

    build = build_on_first_call  # the sub-layers build on the first call of each path

    def encode(self, features, training=False):
        e = self.embed(features)
        return self.encoder(Backbone.flat_inputs(e), training=training)

    def heads(self, z, source: bool, training=False, domain_source: bool | None = None):
        """``(label logits (B,), domain logits (B,))`` of representations ``z``; the
        domain logits go through ``g`` when ``domain_source`` (default: ``source``)."""
        h = self.transform(z, training=training) if source else z
        y = tf.reshape(self.label_head(h), [-1])
        ds = source if domain_source is None else domain_source
        hd = h if ds == source else (self.transform(z, training=training) if ds else z)
        if self.domain_normalize:  # the reversed gradient cannot grow the features' norm
            hd = tf.math.l2_normalize(hd, axis=-1)
        d = tf.reshape(self.domain_head(self.grl(hd)), [-1])
        return y, d

    def call(self, features, source: bool = False, training=False):
        return self.heads(self.encode(features, training), source, training)

    def get_config(self):
        return {**super().get_config(), "schema": self.schema.to_dict(), **self._config}

    @classmethod
    def from_config(cls, config):
        from tfdebias.schema import Schema

        config = dict(config)
        config["schema"] = Schema.from_dict(config["schema"])
        return cls(**config)


@register("damcar_label_generator")
@keras.saving.register_keras_serializable(package="tfdebias")
class LabelGenerator(Backbone):
    """The ``label_generator`` with its ``ema_teacher`` (Sec. 4.2).

    Args:
      schema: input schema (user and item features).
      embedding_dim: field embedding width (authors: 32).
      lambda1: weight of ``L_sup`` (Eq. (11)); 0 = no teacher ("w/o EMA").
      lambda2: weight of ``L_dom`` (Eq. (11)).
      alpha: EMA smoothing of Eq. (9) (its largest value under ``ema_ramp``).
      warmup_steps: Ganin's warm-up of the reversal scale (:func:`grl_schedule`): the
        gradient reversal layer's scale is 0 at the first step and rises to 1 at step
        ``warmup_steps - 1``; 0 = full scale from the first step.
      ema_ramp: the EMA rate at optimizer step ``t`` is ``min(alpha, 1 - 1 / (t + 1))``
        (mean teacher's ramp), so the teacher leaves its initial weights quickly.
      domain_through_g: Eq. (7) on ``g(z)`` for both domains (``Psi(g(z^t))``) instead
        of ``Psi(z^t)`` as printed (a classifier comparing two spaces wins on the path).
      domain_target_term: False = the authors' code (the target term of Eq. (8) is lost
        to a bug, reference notes §2.2): ``Psi`` is trained on source rows only.
      domain_normalize: ``Psi`` reads the unit-normalised representation (default): the
        encoder maximises ``L_dom`` through the reversal, and a linear ``Psi`` on
        unbounded ReLU features lets it do so by growing the features without end, which
        saturates ``Phi`` too (measured: every pseudo-label -> 1.0 within 250 Adam steps
        at lambda2 = 0.2); on the unit sphere only the direction can be confused.
      target_label_path: ``"source"`` (default): target rows are labelled (and taught by
        the teacher, Eq. (10)) through ``Phi(g(E(x)))``, the path Eq. (6) trains on
        labels, as the authors' code does; ``"target"``: ``Phi(E(x))``, Eq. (5) as
        printed, a head that never sees a label.

    ``call(features)`` serves the target-domain pseudo-label (``target_label_path``);
    :meth:`pseudo_labels` gives either path. Train with ``fit`` on
    ``zip(source batches (x, y), target batches (x, _))``; each step applies the
    gradient of :func:`label_generator_losses` and then the EMA update (Eq. (9)).
    """

    engine_unsupported = (
        "it trains on paired source/target batches (Eq. (11)), which `tfdebias reproduce "
        "damcar` builds (tfdebias.methods.damcar.train_label_generator)")

    def __init__(self, schema, embedding_dim: int = 32, encoder_units=(300, 200, 100),
                 transform_units=(128, 100), lambda1: float = 0.5, lambda2: float = 0.2,
                 alpha: float = 0.99, warmup_steps: int = 0, ema_ramp: bool = False,
                 domain_through_g: bool = False, domain_target_term: bool = True,
                 target_label_path: str = "source", domain_normalize: bool = True, **kwargs):
        super().__init__(schema, embedding_dim, **kwargs)
        if not 0.0 < float(alpha) < 1.0:
            raise UsageError(f"alpha must be in (0, 1), got {alpha}")
        if target_label_path not in ("source", "target"):
            raise UsageError(f"target_label_path must be 'source' or 'target', got "
                             f"{target_label_path!r}")
        for n, v in (("lambda1", lambda1), ("lambda2", lambda2), ("warmup_steps", warmup_steps)):
            if float(v) < 0:
                raise UsageError(f"{n} must be >= 0, got {v}")
        self.remember(encoder_units=list(encoder_units), transform_units=list(transform_units),
                      lambda1=float(lambda1), lambda2=float(lambda2), alpha=float(alpha),
                      warmup_steps=int(warmup_steps), ema_ramp=bool(ema_ramp),
                      domain_through_g=bool(domain_through_g),
                      domain_target_term=bool(domain_target_term),
                      target_label_path=str(target_label_path),
                      domain_normalize=bool(domain_normalize))
        self.target_label_path = str(target_label_path)
        self.lambda1, self.lambda2, self.alpha = float(lambda1), float(lambda2), float(alpha)
        self.warmup_steps, self.ema_ramp = int(warmup_steps), bool(ema_ramp)
        self.domain_through_g = bool(domain_through_g)
        self.domain_target_term = bool(domain_target_term)
        net = dict(embedding_dim=embedding_dim, encoder_units=encoder_units,
                   transform_units=transform_units, domain_normalize=domain_normalize)
        self.student = ADANetwork(self.schema, name="student", **net)
        self.teacher = ADANetwork(self.schema, name="teacher", **net)
        self.teacher.trainable = False

    def build_all(self, features):
        """Run every path of student and teacher once (builds every variable)."""
        for net in (self.student, self.teacher):
            z = net.encode(features)
            net.heads(z, True)
            net.heads(z, False)
            net.built = True  # its sub-layers are; marks it, so `call` builds only once

    def forward(self, features, training=False):
        z = self.student.encode(features, training)
        y, _ = self.student.heads(z, self.target_label_path == "source", training)
        return y, z

    build = build_on_first_call  # the first call runs every path (`build_all`)

    def call(self, features, training=False):
        if not self.teacher.built or not self.student.transform.built:
            self.build_all(features)
        return super().call(features, training)

    # -- Eq. (9) -------------------------------------------------------------------------
    def init_teacher(self):
        """Teacher := student (authors' code: a copy at the start of training)."""
        for t, s in zip(self.teacher.weights, self.student.weights):
            t.assign(s)

    def ema_rate(self, step):
        """The Eq. (9) rate after optimizer step ``step`` (1 = the first): ``alpha``, or
        under ``ema_ramp`` ``min(alpha, 1 - 1 / (step + 1))``."""
        if not self.ema_ramp:
            return tf.constant(self.alpha, tf.float32)
        t = tf.cast(step, tf.float32)
        return tf.minimum(tf.constant(self.alpha, tf.float32), 1.0 - 1.0 / (t + 1.0))

    def update_teacher(self, alpha=None):
        """Eq. (9): ``Theta_tea <- alpha Theta_tea + (1 - alpha) Theta_stu``."""
        a = self.alpha if alpha is None else alpha
        for t, s in zip(self.teacher.weights, self.student.weights):
            at = ops.cast(a, t.dtype)
            t.assign(at * t + (1.0 - at) * ops.cast(s, t.dtype))

    def reversal_scale(self, step):
        """The GRL scale at 0-based optimizer step ``step``: :func:`grl_schedule`."""
        return grl_schedule(step, self.warmup_steps)

    def pseudo_labels(self, features, source: bool):
        """Student probabilities: ``Phi(g(E(x)))`` (source) or ``Phi(E(x))`` (target)."""
        y, _ = self.student(features, source=source)
        return tf.sigmoid(y)

    def train_step(self, data):
        (sx, sy), target = data
        tx = target[0] if isinstance(target, (tuple, list)) else target
        scale = self.reversal_scale(self.optimizer.iterations)
        self.student.grl._scale.assign(scale)
        with tf.GradientTape() as tape:
            losses = label_generator_losses(self, sx, sy, tx, training=True)
        variables = self.student.trainable_variables
        grads = tape.gradient(losses["objective"], variables)
        self.optimizer.apply_gradients(
            [(g, v) for g, v in zip(grads, variables) if g is not None])
        self.update_teacher(self.ema_rate(self.optimizer.iterations))
        return {**losses, "grl_scale": scale}


# =============================================================================================
# 3. Hybrid training of the retrieval model (Eq. (12)-(17)) and the baselines
# =============================================================================================


@register("damcar_retrieval")
@keras.saving.register_keras_serializable(package="tfdebias")
class HybridRetrieval(Backbone):
    """A DSSM retriever trained by :func:`retrieval_losses` (Eq. (14)-(17)), with an
    optional domain classifier behind a GRL on its representation (the AR baseline).

    Args:
      schema: input schema; ``user_features`` / ``item_features`` pick the towers.
      embedding_dim, hidden_units, temperature: the DSSM backbone.
      lambda3: weight of ``L_con`` (Eq. (17)); 0 for BC/KD/TL/AR/MUDA.
      adversarial: weight of the AR domain loss (0 = no domain classifier term).

    Batches carry, besides the features, ``_rank`` (the ranker's score, Eq. (15)),
    ``_weight`` (1 where the row's target counts in ``L_mpl``) and ``_domain`` (1 =
    exposed, 0 = unexposed); the label is the training target (``y_mpl`` for DAMCAR).

    Serving: :meth:`serving_endpoints` adds ``user_tower``, ``item_tower`` and, after
    :meth:`attach_index`, ``retrieve`` (top-K ids and scores from the baked item index).
    """

    def __init__(self, schema, embedding_dim: int = 32, hidden_units=(300, 300, 128),
                 temperature: float = 5.0, lambda3: float = 0.3, adversarial: float = 0.0,
                 user_features: Sequence[str] | None = None,
                 item_features: Sequence[str] | None = None, **kwargs):
        super().__init__(schema, embedding_dim, **kwargs)
        from tfdebias.models.dssm import DSSM

        self.remember(hidden_units=list(hidden_units), temperature=float(temperature),
                      lambda3=float(lambda3), adversarial=float(adversarial),
                      user_features=None if user_features is None else list(user_features),
                      item_features=None if item_features is None else list(item_features))
        self.lambda3, self.adversarial = float(lambda3), float(adversarial)
        self.dssm = DSSM(self.schema, embedding_dim=embedding_dim, hidden_units=hidden_units,
                         temperature=temperature, user_features=user_features,
                         item_features=item_features, name="dssm")
        self.grl = GradientReversal(1.0, name="grl")
        self.domain_head = keras.layers.Dense(1, name="domain_classifier")
        import keras_rs

        # the serving index, filled by attach_index (created here: no state after build)
        self.index = keras_rs.layers.BruteForceRetrieval(k=1, return_scores=True, name="index")

    def forward(self, features, training=False):
        return self.dssm.forward(features, training)

    build = build_on_first_call  # the first call builds the DSSM and the domain classifier

    def call(self, features, training=False):
        out = super().call(features, training)
        if not self.domain_head.built:
            self.domain_head(self.grl(self.dssm.forward(features)[1]))
        return out

    def user_tower(self, features, training=False):
        return self.dssm.user_tower(features, training)

    def item_tower(self, features, training=False):
        return self.dssm.item_tower(features, training)

    def freeze_user_tower(self, frozen: bool = True):
        """TL's fine-tuning stage: the user tower (MLP and user tables) stops training."""
        self.dssm.user_mlp.trainable = not frozen
        tables = [name for name in self.dssm.user_names
                  if self.schema[name].is_categorical or self.schema[name].role == "sequence"]
        self.dssm.embed.freeze(tables, frozen)

    def train_step(self, data):
        x, y = data[0], data[1]
        with tf.GradientTape() as tape:
            losses = retrieval_losses(self, x, y, training=True)
        variables = self.trainable_variables
        grads = tape.gradient(losses["total"], variables)
        self.optimizer.apply_gradients(
            [(g, v) for g, v in zip(grads, variables) if g is not None])
        return losses

    def test_step(self, data):
        return retrieval_losses(self, data[0], data[1], training=False)

    # -- serving -------------------------------------------------------------------------
    def attach_index(self, item_features: dict, k: int = 100):
        """Bake the item corpus into a ``keras_rs.layers.BruteForceRetrieval`` index."""
        n = len(next(iter(item_features.values())))
        ids = item_features.get(ITEM)
        self.index.update_candidates(self.item_tower(item_features),
                                     None if ids is None else ops.reshape(ids, (-1,)))
        self.index.k = min(int(k), n)
        return self.index

    def serving_endpoints(self, schema):
        from tfdebias.models import serving_specs

        user_specs = serving_specs(self.schema, self.dssm.user_names)
        item_specs = serving_specs(self.schema, self.dssm.item_names)
        eps = {
            "user_tower": (lambda f: {"user_embedding": self.user_tower(f)}, [user_specs]),
            "item_tower": (lambda f: {"item_embedding": self.item_tower(f)}, [item_specs]),
        }
        if self.index.candidate_embeddings is not None:
            def retrieve(f):
                scores, ids = self.index(self.user_tower(f))
                return {"scores": scores, "ids": tf.cast(ids, tf.int64)}

            eps["retrieve"] = (retrieve, [user_specs])
        return eps
