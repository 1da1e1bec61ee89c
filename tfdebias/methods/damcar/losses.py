"""DAMCAR's loss terms (pure functions on tensors): the label generator's Eq. (6)-(11),
the modified pseudo-labels of Eq. (12) and the retrieval model's Eq. (14)-(17), which
every baseline and ablation shares. Also the batch column names they read."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

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


def label_generator_losses(model, source_x, source_y, target_x,
                           training: bool = False) -> dict:
    """Every loss term of the label generator from one source and one target batch.

    * ``ce``  = Eq. (6): BCE of ``Phi(g(z^s))`` against ``y^s``;
    * ``dom`` = Eq. (8): ``-mean log Psi(g(z^s)) - mean log(1 - Psi(z^t))``
      (``Psi(g(z^t))`` under ``model.domain_through_g``; the target term left out under
      ``model.domain_target_term = False``, the authors' code);
    * ``sup`` = Eq. (10): BCE of the student's target label against the EMA teacher's
      ``y_tea^t`` (soft targets, no gradient into the teacher); 0 when ``lambda1 = 0``.
      The target label is ``Phi(g(z^t))`` when ``model.target_label_path == "source"``
      (the default of :class:`~tfdebias.methods.damcar.train.Settings`: the path Eq. (6)
      trains), else ``Phi(z^t)`` (Eq. (5) as printed);
    * ``total`` = Eq. (11): ``ce + lambda1 sup - lambda2 dom`` (the encoder's view);
    * ``objective`` = ``ce + lambda1 sup + lambda2 dom``: what the optimizer minimises.
      The GRL between ``g(z)``/``z`` and ``Psi`` flips the sign of ``lambda2 dom``'s
      gradient for ``E`` and ``g``, so ``Psi`` minimises ``L_dom`` and the encoder
      maximises it (Eq. (11)).
    """
    net = model.student
    zs = net.encode(source_x, training)
    zt = net.encode(target_x, training)
    through_g = getattr(model, "domain_through_g", False)
    target_g = getattr(model, "target_label_path", "target") == "source"
    ys, ds = net.heads(zs, True, training)  # Eq. (5), (7): source through g
    yt, dt = net.heads(zt, target_g, training, domain_source=through_g)  # target
    y = tf.cast(tf.reshape(source_y, [-1]), ys.dtype)
    ce = tf.reduce_mean(_bce_logits(y, ys))
    dom = tf.reduce_mean(_bce_logits(tf.ones_like(ds), ds))
    if getattr(model, "domain_target_term", True):
        dom = dom + tf.reduce_mean(_bce_logits(tf.zeros_like(dt), dt))
    if model.lambda1 > 0:
        t_logits, _ = model.teacher.heads(model.teacher.encode(target_x, False), target_g,
                                          False)
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


def retrieval_losses(model, features, target, training: bool = False) -> dict:
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
