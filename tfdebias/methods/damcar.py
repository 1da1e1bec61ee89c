"""DAMCAR (paper 001: Lin et al., "Mitigating Sample Selection Bias with Robust Domain
Adaption in Multimedia Recommendation", ACM MM 2024) and its baselines on a two-stage
cascade (DSSM retrieval -> DeepFM / DCN ranking).

Three modules (Sec. 4, Fig. 2):

1. **Target domain generation** (Eq. (1)-(3)): :mod:`tfdebias.data.random_walk`
   draws the hard-to-distinguish unexposed pairs ``S_sam`` by random walks on the
   watch-time-weighted user-item exposure graph.
2. **Robust pseudo-label generation** (Eq. (4)-(11)): :class:`LabelGenerator`, the
   ``label_generator``: a shared encoder ``E`` (MLP 300-200-100), a transform ``g``
   (MLP 128-100) used on source (exposed) samples only, a label head ``Phi`` and a
   ``domain_classifier`` ``Psi`` behind a gradient reversal layer, plus an
   ``ema_teacher`` (Eq. (9), alpha = 0.99) that supervises the student on the target
   domain (Eq. (10)). All loss terms come from :func:`label_generator_losses`.
3. **Hybrid training** (Eq. (12)-(17)): :class:`HybridRetrieval`, a DSSM two-tower
   retriever trained on ``S_exp u S_sam`` with the modified pseudo-labels ``y_mpl``
   (:func:`modified_pseudo_labels`, Eq. (12)) and distilled from the pre-trained
   ranker's scores (Eq. (16)). All loss terms come from :func:`retrieval_losses`,
   which every baseline and ablation shares (BC, KD, TL, AR, MUDA; w/o TDG, w/o EMA,
   w/o MPL differ only in the rows, the targets and the weights they feed it).

The ``cascade`` evaluation protocol (:func:`cascade_protocol`) retrieves the top-K of
the whole item corpus with the retriever (R/P/F@100, 200), lets the ranker re-rank the
candidates and keeps the top K/10 (N/M/H@10, 20), against every held-out positive:
exposed test positives *and* the simulator's oracle positives that the logging policy
never showed.

Choices where the paper is silent or ambiguous (also in ``docs/methods/damcar.md``):

* R, H, v_ui: see :mod:`tfdebias.data.random_walk` (authors' code: H walks of R hops).
* Pseudo-labels (Eq. (5), (12)): the student's soft outputs; source rows get
  ``Phi(g(E(x)))``, target rows ``Phi(E(x))`` as Eq. (5) prints it (default,
  ``Settings.target_label_path="target"``). The authors' code labels target rows through
  ``g`` as well (``"source"``). Note that with the printed reading ``Phi`` sees
  un-transformed ``z`` only through ``L_sup``, whose teacher is the same path.
* Eq. (8) is trained on both domains (the authors' code loses the target term to a
  bug, ``official_code_notes.md`` §2.2); the GRL scale is 1 and ``lambda2`` weights the
  loss, so ``Psi`` minimises ``lambda2 L_dom`` while ``E``/``g`` receive ``-lambda2``
  times its gradient: Eq. (11)'s ``- lambda2 L_dom``.
* Heads: ``Phi`` and ``Psi`` are each ``Dense(1)`` + sigmoid (Sec. 5.1.5, "single-layer
  MLP with the Sigmoid").
* The teacher is a full copy of the student (embeddings included), initialised from it
  before the first step and updated after every optimizer step (authors' code).
* DSSM: towers 300-300-128 (authors' code; the paper's "dimension 128"), field
  embeddings 32-d, cosine times a temperature plus a bias; item tower = item-side
  features (id, author, content vectors, duration), user tower = user id.
* Dense scalars (``duration``) are min-max scaled with the training split's range
  (authors: MinMaxScaler), for every model alike; exports expect scaled inputs.
* Baselines TL, AR and MUDA use the same unexposed rows ``S_sam`` as DAMCAR, so the
  comparison isolates the labels; MUDA binarises ranker scores at 0.5.
* The paper's Table 4 grid is lambda1 in {0.5, ..., 0.9}, lambda2, lambda3 in
  {0.1, ..., 0.5} (the issue's "0.5 ... 9" / "0.1 ... 5" read 5e-1 ... 9e-1 as
  0.5 ... 9); registered with the tuner as :data:`SEARCH_SPACE`.
"""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path
from typing import Sequence

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from tfdebias.errors import DataError, UsageError
from tfdebias.evaluation import metrics as M
from tfdebias.evaluation import protocols
from tfdebias.layers.gradient_reversal import GradientReversal
from tfdebias.layers.mlp import MLP
from tfdebias.methods import Reproducer, register_reproducer
from tfdebias.models import register
from tfdebias.models.base import Backbone, build_on_first_call

#: Table 4 of the paper (the tuner's grid; see the module docstring).
SEARCH_SPACE = {
    "lambda1": [0.5, 0.6, 0.7, 0.8, 0.9],
    "lambda2": [0.2, 0.1, 0.3, 0.4, 0.5],
    "lambda3": [0.3, 0.1, 0.2, 0.4, 0.5],
}
#: paper Sec. 5.4.1: the best (R, H) per data set
PAPER_RH = {"wechat": (25, 50), "tiktok": (30, 60)}

try:  # the tuner registry (tfdebias.tuning) declares search spaces as data
    from tfdebias.tuning import register_space as _register_space

    _register_space("damcar", SEARCH_SPACE)
except ImportError:  # pragma: no cover - tuning not installed
    pass

USER = "user_id"
ITEM = "item_id"
# Extra batch columns of the hybrid training set (never schema features).
TARGET, RANK, WEIGHT, DOMAIN = "_target", "_rank", "_weight", "_domain"


def _bce_logits(target, logits):
    return tf.nn.sigmoid_cross_entropy_with_logits(labels=tf.cast(target, logits.dtype),
                                                   logits=logits)


def _col(features, name, like):
    v = features.get(name)
    if v is None:
        return tf.ones_like(like)
    return tf.cast(tf.reshape(v, [-1]), like.dtype)


# =============================================================================================
# 2. Robust pseudo-label generation (Eq. (4)-(11))
# =============================================================================================


@keras.saving.register_keras_serializable(package="tfdebias")
class ADANetwork(keras.layers.Layer):
    """Embeddings, encoder ``E``, transform ``g``, label head ``Phi`` and domain
    classifier ``Psi`` behind a gradient reversal layer (Eq. (4), (5), (7)).

    ``source=True`` sends ``z`` through ``g`` (Eq. (5): ``Phi(g(z^s))``, Eq. (7):
    ``Psi(g(z^s))``); ``source=False`` does not (``Phi(z^t)``, ``Psi(z^t)``).
    """

    def __init__(self, schema, embedding_dim=32, encoder_units=(300, 200, 100),
                 transform_units=(128, 100), **kwargs):
        super().__init__(**kwargs)
        from tfdebias.layers.feature_embedding import FeatureEmbedding, as_schema

        self.schema = as_schema(schema)
        self.embed = FeatureEmbedding(self.schema, embedding_dim, name="embed")
        self.encoder = MLP(encoder_units, name="encoder")  # E, Eq. (4)
        self.transform = MLP(transform_units, name="transform")  # g, Eq. (5)
        self.label_head = keras.layers.Dense(1, name="label_head")  # Phi
        self.grl = GradientReversal(1.0, name="grl")
        self.domain_head = keras.layers.Dense(1, name="domain_head")  # Psi

    def encode(self, features, training=False):
        e = self.embed(features)
        return self.encoder(Backbone.flat_inputs(e), training=training)

    def heads(self, z, source: bool, training=False):
        """``(label logits (B,), domain logits (B,))`` of representations ``z``."""
        h = self.transform(z, training=training) if source else z
        y = tf.reshape(self.label_head(h), [-1])
        d = tf.reshape(self.domain_head(self.grl(h)), [-1])
        return y, d

    def call(self, features, source: bool = False, training=False):
        return self.heads(self.encode(features, training), source, training)


@register("damcar_label_generator")
@keras.saving.register_keras_serializable(package="tfdebias")
class LabelGenerator(Backbone):
    """The ``label_generator`` with its ``ema_teacher`` (Sec. 4.2).

    Args:
      schema: input schema (user and item features).
      embedding_dim: field embedding width (authors: 32).
      lambda1: weight of ``L_sup`` (Eq. (11)); 0 = no teacher ("w/o EMA").
      lambda2: weight of ``L_dom`` (Eq. (11)).
      alpha: EMA smoothing of Eq. (9).

    ``call(features)`` serves the target-domain pseudo-label ``Phi(E(x))``;
    :meth:`pseudo_labels` gives either path. Train with ``fit`` on
    ``zip(source batches (x, y), target batches (x, _))``; each step applies the
    gradient of :func:`label_generator_losses` and then the EMA update (Eq. (9)).
    """

    engine_unsupported = (
        "it trains on paired source/target batches (Eq. (11)), which `tfdebias reproduce "
        "damcar` builds (tfdebias.methods.damcar.train_label_generator)")

    def __init__(self, schema, embedding_dim: int = 32, encoder_units=(300, 200, 100),
                 transform_units=(128, 100), lambda1: float = 0.5, lambda2: float = 0.2,
                 alpha: float = 0.99, **kwargs):
        super().__init__(schema, embedding_dim, **kwargs)
        if not 0.0 < float(alpha) < 1.0:
            raise UsageError(f"alpha must be in (0, 1), got {alpha}")
        for n, v in (("lambda1", lambda1), ("lambda2", lambda2)):
            if float(v) < 0:
                raise UsageError(f"{n} must be >= 0, got {v}")
        self.remember(encoder_units=list(encoder_units), transform_units=list(transform_units),
                      lambda1=float(lambda1), lambda2=float(lambda2), alpha=float(alpha))
        self.lambda1, self.lambda2, self.alpha = float(lambda1), float(lambda2), float(alpha)
        net = dict(embedding_dim=embedding_dim, encoder_units=encoder_units,
                   transform_units=transform_units)
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
        y, _ = self.student.heads(z, False, training)
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

    def update_teacher(self):
        """Eq. (9): ``Theta_tea <- alpha Theta_tea + (1 - alpha) Theta_stu``."""
        a = self.alpha
        for t, s in zip(self.teacher.weights, self.student.weights):
            t.assign(a * t + (1.0 - a) * ops.cast(s, t.dtype))

    def pseudo_labels(self, features, source: bool):
        """Student probabilities: ``Phi(g(E(x)))`` (source) or ``Phi(E(x))`` (target)."""
        y, _ = self.student(features, source=source)
        return tf.sigmoid(y)

    def train_step(self, data):
        (sx, sy), target = data
        tx = target[0] if isinstance(target, (tuple, list)) else target
        with tf.GradientTape() as tape:
            losses = label_generator_losses(self, sx, sy, tx, training=True)
        variables = self.student.trainable_variables
        grads = tape.gradient(losses["objective"], variables)
        self.optimizer.apply_gradients(zip(grads, variables))
        self.update_teacher()
        return losses


def label_generator_losses(model: LabelGenerator, source_x, source_y, target_x,
                           training: bool = False) -> dict:
    """Every loss term of the label generator from one source and one target batch.

    * ``ce``  = Eq. (6): BCE of ``Phi(g(z^s))`` against ``y^s``;
    * ``dom`` = Eq. (8): ``-mean log Psi(g(z^s)) - mean log(1 - Psi(z^t))``;
    * ``sup`` = Eq. (10): BCE of the student's ``Phi(z^t)`` against the EMA teacher's
      ``y_tea^t`` (soft targets, no gradient into the teacher); 0 when ``lambda1 = 0``;
    * ``total`` = Eq. (11): ``ce + lambda1 sup - lambda2 dom`` (the encoder's view);
    * ``objective`` = ``ce + lambda1 sup + lambda2 dom``: what the optimizer minimises.
      The GRL between ``g(z)``/``z`` and ``Psi`` flips the sign of ``lambda2 dom``'s
      gradient for ``E`` and ``g``, so ``Psi`` minimises ``L_dom`` and the encoder
      maximises it (Eq. (11)).
    """
    net = model.student
    zs = net.encode(source_x, training)
    zt = net.encode(target_x, training)
    ys, ds = net.heads(zs, True, training)  # Eq. (5), (7): source through g
    yt, dt = net.heads(zt, False, training)  # target: no g
    y = tf.cast(tf.reshape(source_y, [-1]), ys.dtype)
    ce = tf.reduce_mean(_bce_logits(y, ys))
    dom = tf.reduce_mean(_bce_logits(tf.ones_like(ds), ds)) + \
        tf.reduce_mean(_bce_logits(tf.zeros_like(dt), dt))
    if model.lambda1 > 0:
        t_logits, _ = model.teacher.heads(model.teacher.encode(target_x, False), False, False)
        y_tea = tf.stop_gradient(tf.sigmoid(t_logits))
        sup = tf.reduce_mean(_bce_logits(y_tea, yt))
    else:
        sup = tf.zeros((), ys.dtype)
    extra = tf.add_n(model.losses) if model.losses else tf.zeros((), ys.dtype)
    objective = ce + model.lambda1 * sup + model.lambda2 * dom + extra
    return {"ce": ce, "sup": sup, "dom": dom,
            "total": ce + model.lambda1 * sup - model.lambda2 * dom, "objective": objective}


def modified_pseudo_labels(y_true, is_source, pseudo):
    """Eq. (12): ``y_mpl = 1`` for exposed positives, else the pseudo-label ``y_hat``.

    ``is_source`` marks exposed rows; ``y_true`` is ignored where it is 0 or on target
    rows.
    """
    y_true = np.asarray(y_true, np.float64).reshape(-1)
    is_source = np.asarray(is_source, bool).reshape(-1)
    pseudo = np.asarray(pseudo, np.float64).reshape(-1)
    return np.where(is_source & (y_true > 0.5), 1.0, pseudo)


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
        from tfdebias.export import serving_specs

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


def retrieval_losses(model: HybridRetrieval, features, target, training: bool = False) -> dict:
    """Every loss term of the retrieval model from one batch (all variants share it).

    * ``mpl`` = Eq. (14): BCE of ``y_ret = sigmoid(logit)`` against the batch target
      (``y_mpl`` for DAMCAR, ``y`` for BC, ranker scores for KD/TL, binarised ones for
      MUDA), averaged over rows with ``_weight`` = 1;
    * ``con`` = Eq. (16): ``mean (y_rank - y_ret)^2`` (``_rank``), weighted by ``lambda3``;
    * ``adv``: AR's domain BCE of a classifier on the DSSM representation behind a GRL
      (``_domain``: 1 exposed, 0 unexposed), weighted by ``adversarial``;
    * ``total`` = Eq. (17) ``mpl + lambda3 con`` (+ ``adversarial adv`` + regularisers).
    """
    logits, rep = model.dssm.forward(features, training)
    logits = tf.cast(tf.reshape(logits, [-1]), tf.float32)
    y = tf.cast(tf.reshape(target, [-1]), tf.float32)
    w = _col(features, WEIGHT, logits)
    mpl = tf.reduce_sum(w * _bce_logits(y, logits)) / tf.maximum(tf.reduce_sum(w), 1.0)
    p = tf.sigmoid(logits)
    con = tf.reduce_mean(tf.square(_col(features, RANK, p) - p)) if RANK in features \
        else tf.zeros(())
    total = mpl + model.lambda3 * con
    adv = tf.zeros(())
    if model.adversarial > 0:
        d = tf.reshape(model.domain_head(model.grl(rep)), [-1])
        adv = tf.reduce_mean(_bce_logits(_col(features, DOMAIN, d), d))
        total = total + model.adversarial * adv
    if model.losses:
        total = total + tf.add_n(model.losses)
    return {"mpl": mpl, "con": con, "adv": adv, "total": total}


# =============================================================================================
# Data: item table, scaling, pair features
# =============================================================================================


@dataclasses.dataclass
class CascadeData:
    """Splits with dense scalars min-max scaled, the item table and the feature sides."""

    splits: dict
    schema: object  # the model schema: user + item features + label
    label: str
    user_names: list
    item_names: list
    items: dict  # item feature name -> (n_item_ids, ...) array indexed by item id
    present: np.ndarray  # item ids that occur in the data
    n_users: int
    n_items: int
    weight_column: str | None

    def pairs(self, users, items) -> dict:
        """Model features of (user, item) pairs (ids as in the data, 1-based)."""
        users = np.asarray(users, np.int64)
        items = np.asarray(items, np.int64)
        out = {n: self.items[n][items] for n in self.item_names}
        out[USER] = users
        return out

    def corpus(self) -> dict:
        return {n: self.items[n][self.present] for n in self.item_names}


def item_side_names(columns: dict, schema, user_names) -> list[str]:
    """Model inputs that are a function of the item (constant within an item id)."""
    ids = np.asarray(columns[ITEM]).reshape(-1)
    order = np.argsort(ids, kind="stable")
    sid = ids[order]
    same = sid[1:] == sid[:-1]
    out = []
    for f in schema.inputs:
        if f.name in user_names:
            continue
        if f.name == ITEM:
            out.append(f.name)
            continue
        v = np.asarray(columns[f.name]).reshape(len(ids), -1)[order]
        if np.all(v[1:][same] == v[:-1][same]):
            out.append(f.name)
    return out


def prepare_cascade(splits: dict, schema) -> CascadeData:
    """Scale dense scalars with the train split's range, build the item table."""
    for need in (USER, ITEM):
        if need not in schema:
            raise DataError(f"DAMCAR needs {USER!r} and {ITEM!r} features; the data set has "
                            f"{[f.name for f in schema.inputs]}")
    for need in ("train", "valid", "test"):
        if need not in splits:
            raise DataError(f"DAMCAR needs train/valid/test splits; got {sorted(splits)}")
    label = schema.label.name
    user_names = [USER]
    item_names = item_side_names(splits["train"], schema, user_names)
    splits = {k: dict(v) for k, v in splits.items()}
    for f in schema.by_role("dense"):
        if f.name not in item_names:
            continue
        lo, hi = float(np.min(splits["train"][f.name])), float(np.max(splits["train"][f.name]))
        for cols in splits.values():
            cols[f.name] = ((np.asarray(cols[f.name], np.float64) - lo) / max(hi - lo, 1e-9)
                            ).astype(np.float32)
    n_ids = schema[ITEM].vocab_size
    items = {}
    for n in item_names:
        f = schema[n]
        items[n] = np.zeros((n_ids, *f.shape), np.dtype(f.dtype))
    seen = np.zeros(n_ids, bool)
    for cols in splits.values():
        ids = np.asarray(cols[ITEM], np.int64)
        seen[ids] = True
        for n in item_names:
            items[n][ids] = cols[n]
    items[ITEM] = np.arange(n_ids, dtype=np.int64)
    model_schema = schema.select(user_names + item_names + [label])
    weight = "play_seconds" if "play_seconds" in splits["train"] else None
    return CascadeData(splits, model_schema, label, user_names, item_names, items,
                       np.nonzero(seen)[0], schema[USER].vocab_size, n_ids, weight)


def _dataset(columns, schema, label, batch_size, shuffle, seed, repeat=False):
    from tfdebias.data import make_dataset

    return make_dataset(columns, schema, batch_size=batch_size, shuffle=shuffle, seed=seed,
                        label=label, repeat=repeat, drop_remainder=False)


def predict_batched(fn, columns: dict, batch_size: int = 8192) -> np.ndarray:
    """``fn(batch dict) -> (B,)`` over all rows, in batches, as a numpy array."""
    n = len(next(iter(columns.values())))
    if not n:
        return np.zeros(0)
    ds = tf.data.Dataset.from_tensor_slices(dict(columns)).batch(batch_size)
    # eager: each call is a handful of large batches, cheaper than tracing a new graph
    return np.concatenate([np.asarray(fn(b)).reshape(-1) for b in ds])


# =============================================================================================
# Training pieces
# =============================================================================================


@dataclasses.dataclass
class Budget:
    """Epochs, batch size and optimizer, shared by every model and variant.

    Paper: AdaGrad, lr 1e-2, batch 512, (authors' code) 3 epochs on ~1M rows, i.e.
    ~6,000 steps. The ``cascade_exposure`` simulator's ``small`` config has ~11k
    training rows (21 steps per epoch), so we train more epochs and raise AdaGrad's
    rate to 5e-2: at 1e-2 the DeepFM ranker stays at test AUC 0.52 after 20 epochs
    (0.56 at 5e-2). Every method and ablation gets the same budget."""

    ranker_epochs: int = 20
    label_epochs: int = 10
    retrieval_epochs: int = 20
    batch_size: int = 512
    learning_rate: float = 5e-2
    optimizer: str = "adagrad"


def _optimizer(budget: Budget):
    from tfdebias.optimizers import make_optimizer

    return make_optimizer(budget.optimizer, budget.learning_rate)


def train_ranker(data: CascadeData, kind: str = "deepfm", seed: int = 0,
                 budget: Budget = Budget(), verbose=0):
    """The pre-trained ranking model ``Rank`` (DeepFM or DCN) on the exposed train rows."""
    from tfdebias import models
    from tfdebias.training.engine import compile_model

    if kind not in ("deepfm", "dcn"):
        raise UsageError(f"ranker must be 'deepfm' or 'dcn', got {kind!r}")
    keras.utils.set_random_seed(seed)
    cols = {k: data.splits["train"][k] for k in data.user_names + data.item_names + [data.label]}
    ds = _dataset(cols, data.schema, data.label, budget.batch_size, True, seed)
    model = models.build(kind, data.schema, embedding_dim=32, hidden_units=(256, 128))
    model(next(iter(ds))[0])
    compile_model(model, _optimizer(budget))
    model.fit(ds, epochs=budget.ranker_epochs, verbose=verbose)
    return model


def ranker_scores(ranker, features: dict) -> np.ndarray:
    return predict_batched(lambda b: tf.reshape(ranker(b), [-1]), features)


def train_label_generator(data: CascadeData, source: dict, source_y, target: dict, *,
                          lambda1=0.5, lambda2=0.2, alpha=0.99, seed=0,
                          budget: Budget = Budget(), verbose=0) -> LabelGenerator:
    """Fit the label generator on paired source / target batches (authors: the target
    set is tiled or truncated to the source size so batches pair up one to one)."""
    from tfdebias.training.engine import compile_model

    keras.utils.set_random_seed(seed)
    ns = len(source_y)
    nt = len(next(iter(target.values())))
    if nt == 0:
        raise DataError("the target domain is empty (no unexposed sample selected)")
    src = {**source, "_y": np.asarray(source_y, np.float32)}
    tgt_idx = np.random.default_rng(seed).permutation(np.resize(np.arange(nt), ns))
    tgt = {k: np.asarray(v)[tgt_idx] for k, v in target.items()}
    tgt["_y"] = np.zeros(ns, np.float32)
    s_ds = _dataset(src, data.schema, "_y", budget.batch_size, True, seed)
    t_ds = _dataset(tgt, data.schema, "_y", budget.batch_size, True, seed + 1)
    ds = tf.data.Dataset.zip((s_ds, t_ds))
    model = LabelGenerator(data.schema, embedding_dim=32, lambda1=lambda1, lambda2=lambda2,
                           alpha=alpha)
    sample = next(iter(s_ds))[0]
    model(sample)
    model.init_teacher()
    compile_model(model, _optimizer(budget))

    class _Epoch(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            for d in (s_ds, t_ds):
                d.epoch.assign(epoch)

    model.fit(ds, epochs=budget.label_epochs, verbose=verbose, callbacks=[_Epoch()])
    return model


def train_retrieval(data: CascadeData, columns: dict, *, lambda3=0.0, adversarial=0.0,
                    temperature=5.0, seed=0, budget: Budget = Budget(), epochs=None,
                    model: HybridRetrieval | None = None, verbose=0) -> HybridRetrieval:
    """Fit (or continue fitting) a :class:`HybridRetrieval` on a hybrid training set
    ``columns`` (features + ``_target``, ``_rank``, ``_weight``, ``_domain``)."""
    from tfdebias.training.engine import compile_model

    keras.utils.set_random_seed(seed)
    ds = _dataset(columns, data.schema, TARGET, budget.batch_size, True, seed)
    if model is None:
        model = HybridRetrieval(data.schema, lambda3=lambda3, adversarial=adversarial,
                                temperature=temperature, user_features=data.user_names,
                                item_features=data.item_names)
        model(next(iter(ds))[0])
    compile_model(model, _optimizer(budget))

    class _Epoch(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            ds.epoch.assign(epoch)

    model.fit(ds, epochs=epochs or budget.retrieval_epochs, verbose=verbose,
              callbacks=[_Epoch()])
    return model


def hybrid_columns(features_e: dict, target_e, rank_e, features_t: dict | None = None,
                   target_t=None, rank_t=None, weight_t: float = 1.0) -> dict:
    """The training set ``S_T = S_exp u S_sam`` as columns (Eq. (12)-(17))."""
    ne = len(target_e)
    cols = {k: np.asarray(v) for k, v in features_e.items()}
    cols[TARGET] = np.asarray(target_e, np.float32)
    cols[RANK] = np.asarray(rank_e, np.float32)
    cols[WEIGHT] = np.ones(ne, np.float32)
    cols[DOMAIN] = np.ones(ne, np.float32)
    if features_t is None:
        return cols
    nt = len(rank_t)
    tt = np.zeros(nt, np.float32) if target_t is None else np.asarray(target_t, np.float32)
    add = {k: np.asarray(features_t[k]) for k in features_e}
    add[TARGET] = tt
    add[RANK] = np.asarray(rank_t, np.float32)
    add[WEIGHT] = np.full(nt, weight_t, np.float32)
    add[DOMAIN] = np.zeros(nt, np.float32)
    return {k: np.concatenate([cols[k], add[k]]) for k in cols}


# =============================================================================================
# The cascade protocol
# =============================================================================================


def _map_at_k(relevant, top_ids, k):
    """MAP@k: mean over queries of ``sum_i P@i rel_i / min(R, k)`` (built on the gains of
    :mod:`tfdebias.evaluation.metrics`; R = number of relevant items)."""
    gains, n_rel, _, k_eff = M._ranked_from_ids(relevant, top_ids, k)
    hits = (gains > 0).astype(np.float64)
    prec = np.cumsum(hits, axis=1) / np.arange(1, k_eff + 1)[None, :]
    ap = (prec * hits).sum(axis=1) / np.maximum(np.minimum(n_rel, k_eff), 1)
    return M._finish(ap, n_rel, False)


def _relevant_sets(splits, label, users, holdout):
    """Per user (row of ``users``), the keys ``user * big + item`` of held-out positives."""
    us, its = [], []
    for s in holdout:
        if s in splits:
            c = splits[s]
            pos = np.asarray(c[label]) > 0.5
            us.append(np.asarray(c[USER])[pos])
            its.append(np.asarray(c[ITEM])[pos])
    return np.concatenate(us), np.concatenate(its)


@protocols.register("cascade")
def cascade_protocol(model, splits: dict, schema=None, config=None) -> dict:
    """Two-stage evaluation (Sec. 5.1.2-5.1.4).

    ``model``: the pair ``(retriever, ranker)``; the retriever has ``user_tower`` / ``item_tower`` (unit vectors). ``splits``: the
    splits as the models see them (scaled as in :func:`prepare_cascade`). ``config``
    (dict, optional): ``retrieval_ks`` (100, 200), ``rank_ratio`` (10),
    ``holdout`` (("test", "oracle")), ``seen`` (("train", "valid")).

    Users: every user with a held-out positive. Corpus: every item id in the splits.
    Retrieval: cosine of the towers, the user's train/valid exposures masked, top K1
    (R/P/F@K1). Ranking: the ranker scores the K1 candidates, the top K1/rank_ratio are
    kept (N/M/H@K2; H = hits / K2, the authors' ``hr``, a precision). Relevant = the
    held-out positives (exposed test positives and oracle positives of never-shown
    pairs). Metric names ``"retrieval/R@100"``, ``"ranking/N@10"``, ...
    """
    if not isinstance(model, (tuple, list)) or len(model) != 2:
        raise UsageError("the cascade protocol scores a (retriever, ranker) pair")
    retriever, ranker = model
    cfg = dict(config or {}) if isinstance(config, dict) or config is None else {}
    ks = tuple(cfg.get("retrieval_ks", (100, 200)))
    ratio = int(cfg.get("rank_ratio", 10))
    holdout = tuple(cfg.get("holdout", ("test", "oracle")))
    seen = tuple(cfg.get("seen", ("train", "valid")))
    label = schema.label.name if schema is not None else "finish"
    item_names = list(retriever.dssm.item_names)
    n_ids = int(max(np.max(np.asarray(c[ITEM])) for c in splits.values())) + 1
    table = {n: None for n in item_names}
    present = np.zeros(n_ids, bool)
    for c in splits.values():
        ids = np.asarray(c[ITEM], np.int64)
        present[ids] = True
        for n in item_names:
            if table[n] is None:
                table[n] = np.zeros((n_ids, *np.asarray(c[n]).shape[1:]), np.asarray(c[n]).dtype)
            table[n][ids] = c[n]
    corpus = np.nonzero(present)[0]
    ru, ri = _relevant_sets(splits, label, None, holdout)
    users = np.unique(ru)
    if len(users) == 0:
        raise DataError("no held-out positives to evaluate against")
    # user-major relevance lists
    row = np.searchsorted(users, ru)
    order = np.argsort(row, kind="stable")
    rel_lists = np.split(ri[order], np.cumsum(np.bincount(row, minlength=len(users)))[:-1])
    # stage 1: retrieval over the whole corpus
    item_feats = {n: table[n][corpus] for n in item_names}
    iv = predict_batched(lambda b: retriever.item_tower(b), item_feats).reshape(len(corpus), -1)
    uv = predict_batched(lambda b: retriever.user_tower(b),
                         {USER: users.astype(np.int64)}).reshape(len(users), -1)
    scores = uv @ iv.T
    col_of = np.full(n_ids, -1, np.int64)
    col_of[corpus] = np.arange(len(corpus))
    for s in seen:
        if s in splits:
            su = np.searchsorted(users, np.asarray(splits[s][USER]))
            ok = (su < len(users)) & (users[np.minimum(su, len(users) - 1)] ==
                                      np.asarray(splits[s][USER]))
            scores[su[ok], col_of[np.asarray(splits[s][ITEM], np.int64)[ok]]] = -np.inf
    kmax = min(max(ks), len(corpus))
    top = np.argpartition(-scores, kmax - 1, axis=1)[:, :kmax]
    top = np.take_along_axis(top, np.argsort(-np.take_along_axis(scores, top, 1), 1), 1)
    top_ids = corpus[top]
    out = {}
    for k1 in ks:
        k1e = min(k1, kmax)
        ids = top_ids[:, :k1e]
        out[f"retrieval/R@{k1}"] = M.recall_at_k(rel_lists, top_ids=ids, k=k1e)
        out[f"retrieval/P@{k1}"] = M.precision_at_k(rel_lists, top_ids=ids, k=k1e)
        out[f"retrieval/F@{k1}"] = M.f1_at_k(rel_lists, top_ids=ids, k=k1e)
        # stage 2: the ranker re-ranks the K1 candidates, keeps the top K2 = K1 / ratio
        k2 = max(1, k1 // ratio)
        pu = np.repeat(users, k1e)
        feats = {n: table[n][ids.reshape(-1)] for n in item_names}
        feats[USER] = pu.astype(np.int64)
        rs = predict_batched(lambda b: tf.reshape(ranker(b), [-1]), feats).reshape(len(users), k1e)
        reranked = np.take_along_axis(ids, np.argsort(-rs, axis=1, kind="stable"), 1)[:, :k2]
        out[f"ranking/N@{k2}"] = M.ndcg_at_k(rel_lists, top_ids=reranked, k=k2)
        out[f"ranking/M@{k2}"] = _map_at_k(rel_lists, reranked, k2)
        out[f"ranking/H@{k2}"] = M.precision_at_k(rel_lists, top_ids=reranked, k=k2)
    return {k: float(v) for k, v in out.items()}


# =============================================================================================
# The whole pipeline: baselines, DAMCAR, ablations
# =============================================================================================

METHODS = ("BC", "KD", "TL", "AR", "MUDA", "DAMCAR")
ABLATIONS = ("w/o TDG", "w/o EMA", "w/o MPL")


@dataclasses.dataclass
class Settings:
    radius: int = 25
    walks: int = 50
    lambda1: float = 0.5
    lambda2: float = 0.2
    lambda3: float = 0.3
    alpha: float = 0.99
    adversarial: float = 0.2  # AR's weight
    muda_threshold: float = 0.5
    temperature: float = 5.0
    ranker: str = "deepfm"
    # which head labels S_sam: "target" = Phi(E(x)) (Eq. (5) as printed, the default),
    # "source" = Phi(g(E(x))) (the authors' code)
    target_label_path: str = "target"


def target_domain(data: CascadeData, radius, walks, seed, random_sampling=False,
                  like: tuple | None = None):
    """``S_sam`` (1-based ids): Eq. (1)-(3) on the train exposures, watch time as
    ``v_ui``; train and valid exposures are never chosen. ``random_sampling``: the
    w/o TDG ablation, as many random unexposed items per user as ``like`` has."""
    from tfdebias.data import random_walk as rw

    tr = data.splits["train"]
    u0 = np.asarray(tr[USER], np.int64) - 1
    i0 = np.asarray(tr[ITEM], np.int64) - 1
    w = np.asarray(tr[data.weight_column], np.float64) if data.weight_column else \
        np.asarray(tr[data.label], np.float64) + 0.1
    nu, ni = data.n_users - 1, data.n_items - 1
    logged = np.unique(np.concatenate([
        (np.asarray(data.splits[s][USER], np.int64) - 1) * ni
        + np.asarray(data.splits[s][ITEM], np.int64) - 1 for s in ("train", "valid")]))
    if random_sampling:
        per_user = np.bincount(np.asarray(like[0]) - 1, minlength=nu)
        tu, ti = rw.random_unexposed(nu, ni, per_user, logged, seed)
        return tu + 1, ti + 1, {"target_pairs": int(len(tu))}
    tu, ti, stats = rw.generate_target_domain(u0, i0, w, nu, ni, radius=radius, walks=walks,
                                              seed=seed, exclude_keys=logged)
    return tu + 1, ti + 1, stats


def _diagnostics(data: CascadeData, fn, target_pred) -> dict:
    """AUC of a scorer on the exposed test rows and on the oracle's unexposed rows, and
    its mean prediction on the target domain (how labels and ranker scores look)."""
    out = {"mean_on_target": float(np.mean(target_pred)) if len(target_pred) else None}
    for split in ("test", "oracle"):
        c = data.splits.get(split)
        if c is None or len(np.unique(c[data.label])) < 2:
            continue
        p = predict_batched(fn, {k: c[k] for k in data.user_names + data.item_names})
        out[f"{split}_auc"] = round(float(M.auc(c[data.label], p)), 4)
    return out


def run_seed(data: CascadeData, seed: int, settings: Settings, budget: Budget,
             rows: Sequence[str] = METHODS + ABLATIONS, evaluate=True, verbose=0,
             keep_models=False, ranker=None) -> dict:
    """Train the ranker (unless given), the target domain, the label generator(s) and
    every requested retrieval variant for one seed; returns ``{"metrics": {name:
    metrics}, "info": ..., ["models": ...]}``."""
    s = settings
    tr = data.splits["train"]
    label = np.asarray(tr[data.label], np.float32)
    fe = {k: tr[k] for k in data.user_names + data.item_names}
    if ranker is None:
        ranker = train_ranker(data, s.ranker, seed, budget, verbose)
    r_e = ranker_scores(ranker, fe)
    t0 = time.perf_counter()
    tu, ti, tstats = target_domain(data, s.radius, s.walks, seed)
    tdg_seconds = time.perf_counter() - t0
    ft = data.pairs(tu, ti)
    r_t = ranker_scores(ranker, ft) if len(tu) else np.zeros(0)
    results, models_out, info = {}, {}, {"target": tstats, "tdg_seconds": tdg_seconds}
    info["ranker"] = _diagnostics(data, lambda b: tf.reshape(ranker(b), [-1]), r_t)
    generators = {}

    def labels_from(kind):
        """(pseudo source, pseudo target, target features, target ranker scores)."""
        if kind in generators:
            return generators[kind]
        if kind == "random":
            ru, ri, _ = target_domain(data, s.radius, s.walks, seed, random_sampling=True,
                                      like=(tu, ti))
            f_t = data.pairs(ru, ri)
            rt = ranker_scores(ranker, f_t)
        else:
            f_t, rt = ft, r_t
        lg = train_label_generator(
            data, fe, label, f_t, lambda1=0.0 if kind == "no_ema" else s.lambda1,
            lambda2=s.lambda2, alpha=s.alpha, seed=seed, budget=budget, verbose=verbose)
        tpath = s.target_label_path == "source"
        ps = predict_batched(lambda b: lg.pseudo_labels(b, True), fe)
        pt = predict_batched(lambda b: lg.pseudo_labels(b, tpath), f_t)
        info[f"label_generator_{kind}"] = _diagnostics(
            data, lambda b: lg.pseudo_labels(b, tpath), pt)
        generators[kind] = (ps, pt, f_t, rt, lg)
        return generators[kind]

    def fit(cols, **kw):
        return train_retrieval(data, cols, seed=seed, budget=budget,
                               temperature=s.temperature, verbose=verbose, **kw)

    for name in rows:
        if name == "BC":
            m = fit(hybrid_columns(fe, label, r_e))
        elif name == "KD":
            m = fit(hybrid_columns(fe, r_e, r_e))
        elif name == "TL":
            m = fit(hybrid_columns(fe, label, r_e))
            m.freeze_user_tower(True)
            m = fit(hybrid_columns(ft, r_t, r_t), model=m,
                    epochs=max(1, budget.retrieval_epochs // 2))
        elif name == "AR":
            m = fit(hybrid_columns(fe, label, r_e, ft, None, r_t, weight_t=0.0),
                    adversarial=s.adversarial)
        elif name == "MUDA":
            m = fit(hybrid_columns(fe, label, r_e, ft, (r_t > s.muda_threshold), r_t))
        elif name in ("DAMCAR", "w/o TDG", "w/o EMA", "w/o MPL"):
            kind = {"w/o TDG": "random", "w/o EMA": "no_ema"}.get(name, "full")
            ps, pt, f_t, rt, lg = labels_from(kind)
            y_e = ps if name == "w/o MPL" else modified_pseudo_labels(label, True, ps)  # Eq. 12
            m = fit(hybrid_columns(fe, y_e, r_e, f_t, pt, rt), lambda3=s.lambda3)
            if name == "DAMCAR":
                models_out["label_generator"] = lg
        else:
            raise UsageError(f"unknown row {name!r}; expected {METHODS + ABLATIONS}")
        if evaluate:
            results[name] = cascade_protocol((m, ranker), data.splits, data.schema)
        if keep_models:
            models_out[name] = m
    info["target_features"] = ft
    out = {"metrics": results, "info": info, "ranker": ranker}
    if keep_models:
        out["models"] = models_out
    return out


# =============================================================================================
# Serving
# =============================================================================================


def export_cascade(retriever: HybridRetrieval, ranker, schema, corpus: dict, out_dir, *,
                   k: int = 100, check_rows: dict | None = None, verify: bool = True) -> dict:
    """Export the cascade for TF Serving: ``OUT/retrieval`` (signatures
    ``serving_default``, ``user_tower``, ``item_tower``, ``retrieve`` with the item
    ``corpus`` baked in as a ``keras_rs`` brute-force index) and ``OUT/ranker``
    (``serving_default``). With ``verify``, both are run in a clean Python process that
    cannot import tfdebias (:func:`tfdebias.export.verify_in_clean_process`) on
    ``check_rows`` (user + item features) and compared with the Keras models."""
    from tfdebias.export import export_saved_model, verify_in_clean_process

    out = Path(out_dir)
    retriever.attach_index(corpus, k=k)
    paths = {"retrieval": export_saved_model(retriever, schema, out / "retrieval"),
             "ranker": export_saved_model(ranker, schema, out / "ranker")}
    report = {name: str(p) for name, p in paths.items()}
    if verify and check_rows is not None:
        users = {n: check_rows[n] for n in retriever.dssm.user_names}
        scores, _ = retriever.index(retriever.user_tower(users))
        report["retrieve_check"] = verify_in_clean_process(
            paths["retrieval"], users, np.asarray(scores), signature="retrieve", output="scores")
        feats = {n: check_rows[n] for n in retriever.dssm.user_names + retriever.dssm.item_names}
        report["ranker_check"] = verify_in_clean_process(
            paths["ranker"], feats, np.asarray(ranker(feats)).reshape(-1))
    return report


# =============================================================================================
# Plots
# =============================================================================================


def plot_prediction_distribution(preds: dict, out_png, title=""):
    """Paper Fig. 5: histograms of the retriever's predictions on target-domain samples."""
    from tfdebias.evaluation.plots import _plt

    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 3.8))
    bins = np.linspace(0, 1, 41)
    for i, (name, p) in enumerate(preds.items()):
        ax.hist(p, bins=bins, alpha=0.55, density=True, color=f"C{i}",
                label=f"{name} (mean {np.mean(p):.3f})")
    ax.set_xlabel("retrieval model prediction on target-domain (unexposed) samples")
    ax.set_ylabel("density")
    ax.set_title(title or "Predictions on the target domain")
    ax.legend()
    fig.tight_layout()
    Path(out_png).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=110)
    plt.close(fig)


def plot_sweep(points: list, metric: str, out_png):
    """R/H sensitivity (paper Fig. 4): ``metric`` against the (R, H) settings."""
    from tfdebias.evaluation.plots import _plt

    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 3.6))
    xs = [f"R={p['radius']}\nH={p['walks']}" for p in points]
    m = [p["mean"][metric] for p in points]
    sd = [p["std"][metric] for p in points]
    ax.errorbar(range(len(xs)), m, yerr=sd, fmt="o-", capsize=3)
    ax.set_xticks(range(len(xs)), xs)
    ax.set_ylabel(metric)
    ax.set_title(f"DAMCAR sensitivity to R and H ({metric})")
    fig.tight_layout()
    Path(out_png).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=110)
    plt.close(fig)


# =============================================================================================
# `tfdebias reproduce damcar`
# =============================================================================================

METRIC_ORDER = [f"retrieval/{m}@{k}" for k in (100, 200) for m in "RPF"] + \
    [f"ranking/{m}@{k}" for k in (10, 20) for m in "NMH"]


def _add_arguments(p):
    p.add_argument("--ranker", default="deepfm", choices=["deepfm", "dcn"],
                   help="ranking model (Table 2: deepfm, Table 3: dcn)")
    p.add_argument("--radius", type=int, default=None, help="R (default: 25, TikTok 30)")
    p.add_argument("--walks", type=int, default=None, help="H (default: 50, TikTok 60)")
    for n, d in (("lambda1", 0.5), ("lambda2", 0.2), ("lambda3", 0.3)):
        p.add_argument(f"--{n}", type=float, default=d, help=f"{n} (default {d})")
    p.add_argument("--no-sweep", action="store_true", help="skip the R/H sensitivity sweep")
    p.add_argument("--export", action="store_true",
                   help="export seed 0's DAMCAR retriever (with its item index) and ranker to "
                        "OUT/export and check both in a clean process")


def _budget(quick: bool) -> Budget:
    if quick:
        return Budget(ranker_epochs=10, label_epochs=5, retrieval_epochs=10)
    return Budget()


def _sweep_points(quick, radius, walks):
    if quick:
        return [(5, 10), (radius, walks), (45, 90)]
    return [(5, 10), (15, 30), (radius, walks), (35, 70), (45, 90)]


def run_reproduce(args) -> Path:
    from tfdebias import data as tdata
    from tfdebias.evaluation.results import summarize, write_results

    name = args.data or "cascade_exposure"
    if args.radius is not None and args.radius < 1 or args.walks is not None and args.walks < 1:
        raise UsageError("--radius and --walks must be positive integers")
    for n in ("lambda1", "lambda2", "lambda3"):
        if getattr(args, n) < 0:
            raise UsageError(f"--{n} must be >= 0")
    tiktok = "tiktok" in name
    radius = args.radius or (30 if tiktok else 25)
    walks = args.walks or (60 if tiktok else 50)
    t_start = time.time()
    splits, schema = tdata.load(name, data_dir=args.data_dir, manual_dir=args.manual_dir)
    data = prepare_cascade(splits, schema)
    settings = Settings(radius=radius, walks=walks, lambda1=args.lambda1, lambda2=args.lambda2,
                        lambda3=args.lambda3, ranker=args.ranker)
    budget = _budget(args.quick)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    seeds = list(range(1 if args.quick else args.seeds))  # --quick: one seed
    records, dist, infos, rankers = [], {}, [], {}
    for seed in seeds:
        t0 = time.time()
        res = run_seed(data, seed, settings, budget, keep_models=(seed == seeds[0]))
        rankers[seed] = res["ranker"]
        for row, metrics in res["metrics"].items():
            records.append({"name": row, "seed": seed, "metrics": metrics})
        infos.append({"seed": seed, "seconds": round(time.time() - t0, 1),
                      **{k: v for k, v in res["info"].items() if k != "target_features"}})
        if seed == seeds[0]:
            ft = res["info"]["target_features"]
            for row in ("BC", "DAMCAR"):
                m = res["models"][row]
                dist[row] = predict_batched(lambda b, m=m: tf.reshape(m(b), [-1]), ft)
            if getattr(args, "export", False):
                te = data.splits["test"]
                rows = {k: np.asarray(te[k])[:256] for k in data.user_names + data.item_names}
                rep = export_cascade(res["models"]["DAMCAR"], res["ranker"], data.schema,
                                     data.corpus(), out / "export", k=200, check_rows=rows)
                print(f"exported to {out / 'export'}: retrieve max diff "
                      f"{rep['retrieve_check']['max_abs_diff']:.2g}, ranker max diff "
                      f"{rep['ranker_check']['max_abs_diff']:.2g}", flush=True)
        print(f"seed {seed}: {infos[-1]['seconds']} s, target domain "
              f"{res['info']['target']}", flush=True)
    plot_prediction_distribution(dist, out / "prediction_distribution.png",
                                 title=f"{name}: predictions on target-domain samples")
    sweep = []
    if not args.no_sweep:
        sweep_seeds = seeds[:1] if args.quick else seeds[:2]
        for r, h in _sweep_points(args.quick, radius, walks):
            recs = []
            for seed in sweep_seeds:
                if (r, h) == (radius, walks):  # the main run's DAMCAR row
                    met = next(x["metrics"] for x in records
                               if x["name"] == "DAMCAR" and x["seed"] == seed)
                    pairs = next(x["target"]["target_pairs"] for x in infos if x["seed"] == seed)
                else:
                    st = dataclasses.replace(settings, radius=r, walks=h)
                    res = run_seed(data, seed, st, budget, rows=("DAMCAR",),
                                   ranker=rankers[seed])
                    met, pairs = res["metrics"]["DAMCAR"], res["info"]["target"]["target_pairs"]
                recs.append({"name": f"R={r},H={h}", "seed": seed,
                             "metrics": {**met, "target_pairs": pairs}})
            row = summarize(recs)[0]
            sweep.append({"radius": r, "walks": h, **row})
            print(f"sweep R={r} H={h}: N@10 {row['mean']['ranking/N@10']:.4f}", flush=True)
        plot_sweep(sweep, "ranking/N@10", out / "sensitivity_rh.png")
    wall = time.time() - t_start
    notes = [
        f"Data: `{name}`; ranker {args.ranker}; R={radius}, H={walks}; lambda1={args.lambda1}, "
        f"lambda2={args.lambda2}, lambda3={args.lambda3}; {'quick' if args.quick else 'full'} "
        f"budget {dataclasses.asdict(budget)}; wall time {wall:.0f} s "
        f"(load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs).",
        "", "Rows BC…DAMCAR follow the paper's Tables 2-3; w/o TDG, w/o EMA, w/o MPL are the "
        "ablations of Fig. 3. Relevant items: held-out test positives plus oracle positives "
        "(unexposed pairs with labels from the true model).", "",
        "![predictions on the target domain](prediction_distribution.png)",
    ]
    if sweep:
        notes += ["", "## R/H sensitivity (DAMCAR)", "",
                  "| R | H | seeds | target pairs | R@100 | N@10 | M@10 | H@10 |",
                  "|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for p in sweep:
            mu, sd = p["mean"], p["std"]
            notes.append(f"| {p['radius']} | {p['walks']} | {p['n_seeds']} | "
                         f"{mu['target_pairs']:.0f} | " + " | ".join(
                             f"{mu[k]:.4f} ± {sd[k]:.4f}" for k in
                             ("retrieval/R@100", "ranking/N@10", "ranking/M@10", "ranking/H@10"))
                         + " |")
        notes += ["", "![R/H sensitivity](sensitivity_rh.png)"]
    notes += ["", "## Diagnostics (per seed)", "",
              "| seed | seconds | target pairs | ranker AUC test / oracle | "
              "label generator AUC oracle (target path) | mean pseudo-label on S_sam |",
              "|---:|---:|---:|---|---|---:|"]
    for inf in infos:
        rk, lg = inf.get("ranker", {}), inf.get("label_generator_full", {})
        notes.append(f"| {inf['seed']} | {inf['seconds']} | {inf['target']['target_pairs']} | "
                     f"{rk.get('test_auc')} / {rk.get('oracle_auc')} | {lg.get('oracle_auc')} | "
                     f"{lg.get('mean_on_target') or float('nan'):.3f} |")
    title = f"DAMCAR cascade results ({name}, DSSM + {args.ranker})"
    write_results(out, records, title=title, metrics=METRIC_ORDER, plot_metric="ranking/N@10",
                  bold_best={k: "max" for k in METRIC_ORDER}, notes="\n".join(notes),
                  extra={"sweep": sweep, "seeds_info": infos, "wall_seconds": round(wall, 1),
                         "settings": dataclasses.asdict(settings),
                         "budget": dataclasses.asdict(budget)})
    return out


register_reproducer(Reproducer(
    name="damcar",
    help="DAMCAR (ACM MM 2024): cascade retrieval debiasing, Tables 2-3 + ablations + R/H sweep",
    run=run_reproduce, add_arguments=_add_arguments, default_data="cascade_exposure",
    default_seeds=5))
