"""AMID: adaptive multi-interest debiasing for open-world cross-domain sequential
recommendation (Xu et al., WWW 2024; paper 003).

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
   the model (:meth:`AMID.set_user_bank`): a fresh random ``N`` per training step, a
   fixed ``N`` at evaluation and serving, so a user's score never depends on which
   other test users share her batch (the code uses the mini-batch itself, N = 256).
   ``W_C`` has ``N + 1`` entries: the ``N`` sampled users and the user's own
   other-domain sequence ("the message from the same user in a different domain will
   also be propagated").
3. **The threshold of Eq. (4)** is hard in the forward pass; its gradient is the
   straight-through gradient of ``sigmoid((a' - k) / tau)``, so ``W1``, ``W2`` learn
   (with a hard step they would get no gradient at all). ``a'`` is the max *cosine*
   of the projected positions, so ``k`` lives in [-1, 1] (default 0.3, about the median
   of ``a'`` at initialisation on the simulator; at 0.5 the groups emptied during training).
4. **The propensity model is fitted** to the observation indicator ``o`` of each row of
   ``D`` by binary cross-entropy on a stopped-gradient representation, in the ``L_r``
   phase (the paper does not say how ``g_psi`` is learnt; the code fits nothing, so its
   "propensity" is only a learned denominator). It is clipped to ``[propensity_clip,
   1]`` wherever it divides, and enters ``L_c`` and ``L_r`` with its gradient stopped.
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
   unobserved users' pairs inform the recommender.
"""

from __future__ import annotations

import math
import time
from typing import Sequence

import keras
import numpy as np
import tensorflow as tf

from tfdebias.errors import UsageError
from tfdebias.layers.mlp import MLP
from tfdebias.models import register
from tfdebias.models._sequential import SequentialBackbone, masked_mean
from tfdebias.models.base import Backbone, build_on_first_call

ESTIMATORS = ("dr", "ips", "none")
BACKBONES = ("gru4rec", "sasrec", "bert4rec")


# -- the doubly robust estimator -------------------------------------------------------
def doubly_robust_estimate(error, imputed_error, observed, propensity, *, clip: float = 0.0,
                           domain=None, n_domains: int = 1):
    """Eq. (9): ``1/|Z| sum_Z 1/|D^Z| sum_{u,v in D^Z} (e_hat + o (e - e_hat) / p_hat)``.

    Works on numpy arrays and tensors. ``error`` may hold anything where ``observed`` is
    0 (it is never read there). ``propensity`` is clipped to ``[clip, 1]``. With
    ``domain`` the mean is taken per domain and then over the domains present.
    """
    xp = tf if any(isinstance(a, tf.Tensor) for a in (error, imputed_error)) else np
    p = xp.clip_by_value(propensity, clip, 1.0) if xp is tf else np.clip(propensity, clip, 1.0)
    o = observed
    err = xp.where(o > 0, error, xp.zeros_like(error)) if xp is tf else np.where(o > 0, error, 0.0)
    terms = imputed_error + o * (err - imputed_error) / p
    return _domain_mean(terms, domain, n_domains, xp)


def ips_estimate(error, observed, propensity, *, clip: float = 0.0, domain=None,
                 n_domains: int = 1):
    """The IPS estimator of IPSCDR [28]: Eq. (9) with ``e_hat = 0``."""
    zeros = tf.zeros_like(error) if isinstance(error, tf.Tensor) else np.zeros_like(error)
    return doubly_robust_estimate(error, zeros, observed, propensity, clip=clip,
                                  domain=domain, n_domains=n_domains)


def _domain_mean(values, domain, n_domains, xp=tf):
    """``1/|Z| sum_Z mean_{rows of Z}`` over the domains present; plain mean if no domain."""
    if domain is None:
        return xp.reduce_mean(values) if xp is tf else float(np.mean(values))
    if xp is tf:
        oh = tf.one_hot(tf.cast(domain, tf.int32), n_domains, dtype=values.dtype)  # (R, Z)
        oh = tf.reshape(oh, tf.concat([tf.shape(values)[:1], [n_domains]], 0))
        flat = tf.reshape(values, [tf.shape(values)[0], -1])
        sums = tf.reduce_sum(oh * tf.reduce_mean(flat, axis=1, keepdims=True), axis=0)
        counts = tf.reduce_sum(oh, axis=0)
        present = tf.cast(counts > 0, values.dtype)
        return tf.reduce_sum(sums / tf.maximum(counts, 1.0)) / tf.maximum(tf.reduce_sum(present), 1.0)
    values = np.asarray(values, np.float64).reshape(len(domain), -1).mean(1)
    means = [values[domain == z].mean() for z in range(n_domains) if np.any(domain == z)]
    return float(np.mean(means))


# -- MIM -------------------------------------------------------------------------------
class MultiInterestModule(keras.layers.Layer):
    """MIM, Eq. (3)-(6).

    For a target sequence ``S_i`` (B, T, d) and the other-domain sequences ``S_j`` of
    ``N`` sampled users (N, T, d) plus the user's own other-domain sequence (B, T, d):

    * Eq. (3): ``a'_ij = max_{t,t'} [(S_i W1)(S_j W2)^T]_{t,t'}`` over real positions,
      with the rows of ``S_i W1`` and ``S_j W2`` scaled to unit length (a cosine), so the
      threshold ``k`` has a fixed scale in [-1, 1] (the raw product grows without bound
      during training; the code normalises with a softmax over the batch instead);
    * Eq. (4): ``a_ij = 1[a'_ij >= k]`` (straight-through sigmoid gradient, ``tau``);
    * Eq. (5): ``m_{i<-j} = a_ij (S_j W_ip)``;
    * Eq. (6): ``S*_i = Concat_time(S_i, Squeeze(m'_i W_C)) W_F`` with ``W_C`` (N+1, 1);
      returned with its (B, 2T) mask (an aggregated position is real when some
      selected user has a real item there).
    """

    def __init__(self, dim: int, n_sampled: int, threshold: float = 0.3, tau: float = 0.1,
                 **kwargs):
        super().__init__(**kwargs)
        self.dim, self.n_sampled = int(dim), int(n_sampled)
        self.threshold, self.tau = float(threshold), float(tau)
        d = self.dim
        self.w1 = keras.layers.Dense(d, use_bias=False, name="W1")
        self.w2 = keras.layers.Dense(d, use_bias=False, name="W2")
        self.w_ip = keras.layers.Dense(d, use_bias=False, name="W_ip")
        self.w_f = keras.layers.Dense(d, use_bias=False, name="W_F")

    def build(self, input_shape=None):
        if getattr(self, "w_c", None) is not None:
            return
        self.w_c = self.add_weight(shape=(self.n_sampled + 1,), name="W_C",
                                   initializer=keras.initializers.Constant(1.0 / (self.n_sampled + 1)))
        d = self.dim
        for layer in (self.w1, self.w2, self.w_ip, self.w_f):
            layer.build((None, d))
        self.built = True

    def similarity(self, q, m_i, k, m_j):
        """Eq. (3): projected (B, T, d) x (N, T, d) -> (B, N), the max over real position
        pairs (about -1e9 where either sequence is empty); one (B*T, d) x (d, N*T) product.
        ``q`` and ``k`` are unit vectors (cosine, see the class docstring)."""
        sim = tf.einsum("btd,nsd->bnts", q, k)
        key_bias = (tf.cast(m_j, sim.dtype) - 1.0) * 1e9  # (N, T): -1e9 on padding keys
        best = tf.reduce_max(sim + key_bias[None, :, None, :], axis=3)  # (B, N, T)
        query_bias = (tf.cast(m_i, sim.dtype) - 1.0) * 1e9  # (B, T)
        return tf.reduce_max(best + query_bias[:, None, :], axis=2)

    def self_similarity(self, q, m_i, k, m_o):
        """Eq. (3) between a user's two domains: (B, T, d) x (B, T, d) -> (B,)."""
        sim = tf.einsum("btd,bsd->bts", q, k)
        valid = m_i[:, :, None] & m_o[:, None, :]
        sim = tf.where(valid, sim, tf.fill(tf.shape(sim), tf.constant(-1e9, sim.dtype)))
        return tf.reduce_max(sim, axis=[1, 2])

    def group(self, a_raw):
        """Eq. (4) with a straight-through gradient."""
        soft = tf.sigmoid((a_raw - self.threshold) / self.tau)
        hard = tf.cast(a_raw >= self.threshold, a_raw.dtype)
        return hard + soft - tf.stop_gradient(soft)

    def project(self, layer, s):
        return tf.math.l2_normalize(layer(s), axis=-1)

    def call(self, s_i, m_i, banks, other, s_self, m_self):
        """Returns ``(S* (B, 2T, d), mask (B, 2T), group rate (scalar))``.

        ``banks``: per domain ``(S (N, T, d), mask (N, T))`` of the N sampled users; row
        ``i`` groups with the N users of its other domain ``other[i]`` (rows are
        partitioned by that domain, so each row is compared with N users, not 2N).
        ``s_self`` / ``m_self``: the user's own other-domain sequence (last ``W_C`` slot)."""
        if not self.built:
            self.build()
        n = self.n_sampled
        q = self.project(self.w1, s_i)
        part = tf.cast(other, tf.int32)
        rows = tf.dynamic_partition(tf.range(tf.shape(s_i)[0]), part, len(banks))
        aggs, covs, a_sum, a_cnt = [], [], 0.0, 0.0
        for z, (s_b, m_b) in enumerate(banks):
            qz, mz = tf.gather(q, rows[z]), tf.gather(m_i, rows[z])
            has = tf.cast(tf.reduce_any(m_b, axis=1), q.dtype)[None, :]  # (1, N)
            a = self.group(self.similarity(qz, mz, self.project(self.w2, s_b), m_b)) * has
            msg = self.w_ip(s_b * tf.cast(m_b, s_b.dtype)[..., None])  # Eq. (5), (N, T, d)
            aggs.append(tf.einsum("bn,ntd->btd", a * self.w_c[None, :n], msg))  # m' W_C
            covs.append(tf.matmul(tf.stop_gradient(a), tf.cast(m_b, a.dtype)))
            a_sum += tf.reduce_sum(tf.stop_gradient(a))
            a_cnt += tf.reduce_sum(has) * tf.cast(tf.shape(qz)[0], q.dtype)
        agg = tf.dynamic_stitch(rows, aggs)
        covered = tf.dynamic_stitch(rows, covs)
        has_self = tf.cast(tf.reduce_any(m_self, axis=1), s_i.dtype)
        a_self = self.group(self.self_similarity(q, m_i, self.project(self.w2, s_self), m_self)) * has_self
        msg_self = self.w_ip(s_self * tf.cast(m_self, s_self.dtype)[..., None])
        agg = agg + (a_self * self.w_c[n])[:, None, None] * msg_self
        covered = covered + tf.stop_gradient(a_self)[:, None] * tf.cast(m_self, a_self.dtype)
        s_star = self.w_f(tf.concat([s_i, agg], axis=1))  # Eq. (6)
        mask = tf.concat([m_i, covered > 0], axis=1)
        rate = (a_sum + tf.reduce_sum(tf.stop_gradient(a_self))) / \
            tf.maximum(a_cnt + tf.reduce_sum(has_self), 1.0)
        return s_star, mask, rate


class PairHead(keras.layers.Layer):
    """``g(Mean(S*) || v)``: an MLP and a 1-unit output on (..., 2d) -> (..., 1)."""

    def __init__(self, hidden_units, activation=None, **kwargs):
        super().__init__(**kwargs)
        self.mlp = MLP(hidden_units)
        self.out = keras.layers.Dense(1, activation=activation)

    def call(self, x, training=False):
        return self.out(self.mlp(x, training=training))


# -- the method model ------------------------------------------------------------------
@keras.saving.register_keras_serializable(package="tfdebias")
@register("amid")
class AMID(Backbone):
    """AMID around a registered sequential backbone (see the module docstring).

    Args:
      backbone: ``"gru4rec" | "sasrec" | "bert4rec"`` (any :class:`SequentialBackbone`).
      backbone_args: constructor arguments of the backbone (``num_blocks``, ...).
      mim: use MIM (Eq. 3-6); ``False`` transfers only the user's own other-domain
        sequence through ``W_ip`` (the IPSCDR-style cross-domain input).
      estimator: ``"dr"`` (AMID, Eq. 9/13/15), ``"ips"`` (IPSCDR-style), ``"none"``.
      n_sampled_users: ``N`` of Eq. (6).
      threshold, tau: ``k`` of Eq. (4) and the straight-through temperature.
      lambda_imputation: ``lambda_1`` of Eq. (13).
      l2: ``lambda_2..lambda_5`` of Eq. (13)/(15), one weight on the squared kernels.
      propensity_clip: lower clip of ``p_hat`` wherever it divides.
      bank_size: rows of the user bank per domain (:meth:`set_user_bank`).
    """

    def __init__(self, schema, backbone: str = "sasrec", backbone_args: dict | None = None,
                 mim: bool = True, estimator: str = "dr", n_sampled_users: int = 16,
                 threshold: float = 0.3, tau: float = 0.1, lambda_imputation: float = 0.1,
                 l2: float = 1e-6, propensity_clip: float = 0.05, bank_size: int = 1024,
                 embedding_dim: int = 32, **kwargs):
        super().__init__(schema, embedding_dim=embedding_dim, **kwargs)
        from tfdebias import models

        if estimator not in ESTIMATORS:
            raise UsageError(f"estimator={estimator!r}; expected one of {ESTIMATORS}")
        if not 0.0 < propensity_clip <= 1.0:
            raise UsageError(f"propensity_clip must be in (0, 1], got {propensity_clip}")
        if n_sampled_users < 1 or bank_size < n_sampled_users:
            raise UsageError(f"need 1 <= n_sampled_users <= bank_size, got "
                             f"{n_sampled_users} and {bank_size}")
        backbone_args = dict(backbone_args or {})
        backbone_args["embedding_dim"] = embedding_dim
        self.backbone = models.build(backbone, self.schema, **backbone_args)
        if not isinstance(self.backbone, SequentialBackbone):
            raise UsageError(f"AMID needs a sequential backbone ({', '.join(BACKBONES)}), got {backbone!r}")
        if self.backbone.n_domains != 2:
            raise UsageError("AMID needs exactly two domains (two item-history sequences)")
        self.backbone_name = backbone
        self.mim = bool(mim)
        self.estimator = estimator
        self.n_sampled_users = int(n_sampled_users)
        self.lambda_imputation = float(lambda_imputation)
        self.l2 = float(l2)
        self.propensity_clip = float(propensity_clip)
        self.bank_size = int(bank_size)
        self.remember(backbone=backbone, backbone_args=backbone_args, mim=self.mim,
                      estimator=estimator, n_sampled_users=self.n_sampled_users,
                      threshold=float(threshold), tau=float(tau),
                      lambda_imputation=self.lambda_imputation, l2=self.l2,
                      propensity_clip=self.propensity_clip, bank_size=self.bank_size)
        d = self.backbone.embedding_dim
        self.dim = d
        self.mim_module = MultiInterestModule(d, self.n_sampled_users, threshold, tau, name="mim")
        self.transfer = keras.layers.Dense(d, use_bias=False, name="W_ip_self")
        hidden = self.backbone.hidden_units
        self.imputation_model = PairHead(hidden, "softplus", name="imputation_model")
        self.propensity_model = PairHead(hidden, None, name="propensity_model")
        t = self.backbone.max_len
        self.user_bank = self.add_weight(shape=(2, self.bank_size, t), dtype="int64",
                                         initializer="zeros", trainable=False, name="user_bank")
        self.phase = 1
        self._phase_functions: dict = {}
        self.dr_optimizer = None

    build = build_on_first_call  # `build_amid` builds what the first call does not reach

    # -- the user bank (the N sampled users of Eq. 6) ------------------------------------
    def set_user_bank(self, columns, seed: int = 0):
        """Fill the bank with up to ``bank_size`` training histories per domain (rows with
        a real item in that domain; drawn without replacement, seeded)."""
        rng = np.random.default_rng(seed)
        bank = np.zeros((2, self.bank_size, self.backbone.max_len), np.int64)
        for z, name in enumerate(self.backbone.histories):
            h = np.asarray(columns[name], np.int64)
            h = np.unique(h[(h > 0).any(axis=1)], axis=0)
            if len(h) == 0:
                continue
            take = rng.permutation(len(h))[: self.bank_size]
            bank[z, : len(take)] = h[take]
            if len(take) < self.bank_size:  # repeat to fill
                bank[z, len(take):] = h[take[np.arange(self.bank_size - len(take)) % len(take)]]
        self.user_bank.assign(bank)

    def sampled_users(self, training):
        """(2, N, T) ids: a random N of the bank while training, its first N otherwise."""
        if training:
            idx = tf.random.shuffle(tf.range(self.bank_size))[: self.n_sampled_users]
            return tf.gather(self.user_bank, idx, axis=1)
        return self.user_bank[:, : self.n_sampled_users]

    # -- the enhanced sequence and the representation -----------------------------------
    def enhanced_sequence(self, features, training=False):
        """``(S* (B, 2T or T, d), mask, group rate)``: Eq. (6) (or the IPS variant)."""
        bb = self.backbone
        hs, ms = bb.encode_all(features, training=training)
        dom = bb.target_domain(features)
        other = 1 - dom
        s_i, m_i = bb.select(hs, dom), bb.select(ms, dom)
        s_o, m_o = bb.select(hs, other), bb.select(ms, other)
        if not self.mim:
            msg = self.transfer(s_o)
            return tf.concat([s_i, msg], 1), tf.concat([m_i, m_o], 1), tf.constant(0.0)
        bank = self.sampled_users(training)
        banks = [bb.encode(z, bank[z], training=training) for z in range(2)]
        return self.mim_module(s_i, m_i, banks, other, s_o, m_o)

    def user_representation(self, features, training=False):
        """``Mean(S*)`` of Eq. (7), (B, d)."""
        s, m, _ = self.enhanced_sequence(features, training=training)
        return masked_mean(s, m)

    def forward(self, features, training=False):
        if not self.imputation_model.built:  # every head exists once the model is called
            self.build_heads()
        u = self.user_representation(features, training=training)
        v = self.backbone.item_vectors(tf.reshape(features[self.backbone.item_feature], [-1]))
        return self.backbone.head(u, v, training=training), u

    def score_candidates(self, features, candidates, training=False):
        """Eq. (7) logits for (B, C) candidates; each user encoded once."""
        u = self.user_representation(features, training=training)
        v = self.backbone.item_vectors(candidates)
        return self.backbone.head(tf.broadcast_to(u[:, None, :], tf.shape(v)), v, training=training)

    def build_heads(self):
        z = tf.zeros([1, 2 * self.dim])
        self.imputation_model(z)
        self.propensity_model(z)
        self.transfer(tf.zeros([1, 1, self.dim]))

    # -- the losses (one function) ---------------------------------------------------------
    def loss_terms(self, features, phase: int = 1, training=False):
        """Named loss terms of one batch; ``loss`` is what the phase minimises.

        * phase 1, ``L_c`` (Eq. 13) on observed rows:
          ``1/|Z| sum_Z [mean_O e + lambda_1 mean_O (e_hat - e)^2 / p_hat] + l2 ||.||^2``
          (``estimator="none"``/``"ips"``: the first term only);
        * phase 2, ``L_r`` (Eq. 15) on ``D``: ``1/|Z| sum_Z mean_D [e_hat + o (e - e_hat) /
          p_hat] + l2 ||theta||^2`` (``"ips"``: ``e_hat = 0``), plus ``propensity_bce``
          fitting ``g_psi`` to ``o``.

        ``e`` is the per-pair BCE on the row's (positive, negative) pair; unobserved rows
        get a random item instead of their positive (their label is never read).
        """
        bb = self.backbone
        pos, neg = bb.training_pairs(features)
        dom = bb.target_domain(features)
        if "observed" in features:
            o = tf.reshape(tf.cast(features["observed"], tf.float32), [-1])
        else:
            o = tf.ones(tf.shape(pos), tf.float32)
        if phase == 2:
            # an unobserved row's positive is replaced by a second random item (no label)
            alt = neg if "neg_item_id_2" not in features else tf.reshape(
                tf.cast(features["neg_item_id_2"], tf.int64), [-1])
            pos = tf.where(o > 0, pos, alt)
        s, m, rate = self.enhanced_sequence(features, training=training)
        u = masked_mean(s, m)
        items = tf.stack([pos, neg], axis=1)
        v = bb.item_vectors(items)
        uu = tf.broadcast_to(u[:, None, :], tf.shape(v))
        logits = bb.head(uu, v, training=training)
        y = tf.broadcast_to(tf.constant([[1.0, 0.0]]), tf.shape(logits))
        e = tf.nn.sigmoid_cross_entropy_with_logits(y, logits)  # (B, 2)
        x = tf.concat([uu, v], axis=-1)
        e_hat = tf.squeeze(self.imputation_model(x, training=training), -1)  # (B, 2)
        p_logit = tf.squeeze(self.propensity_model(tf.stop_gradient(x), training=training), -1)
        p_hat = tf.sigmoid(p_logit)
        p_div = tf.stop_gradient(tf.clip_by_value(p_hat, self.propensity_clip, 1.0))
        reg = self.l2 * tf.add_n([tf.reduce_sum(tf.square(w)) for w in self._kernels()])
        terms = {"group_rate": rate, "bce": tf.reduce_mean(e)}
        if phase == 1:
            rec = _domain_mean(e, dom, 2)
            terms["recommendation"] = rec
            loss = rec + reg
            if self.estimator == "dr":
                imp = _domain_mean(tf.square(e_hat - tf.stop_gradient(e)) / p_div, dom, 2)
                terms["imputation"] = imp
                loss = loss + self.lambda_imputation * imp
        else:
            oo = o[:, None] * tf.ones_like(e)
            if self.estimator == "dr":
                risk = doubly_robust_estimate(e, e_hat, oo, p_div, clip=self.propensity_clip,
                                              domain=dom, n_domains=2)
            else:
                risk = ips_estimate(e, oo, p_div, clip=self.propensity_clip, domain=dom, n_domains=2)
            prop = tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(oo, p_logit))
            terms.update(dr_risk=risk, propensity_bce=prop)
            loss = risk + prop + reg
        terms["loss"] = loss
        return terms

    def _kernels(self):
        return [w for w in self.trainable_weights if len(w.shape) == 2 and "embedding" not in w.path]

    # -- which variables each phase updates (Algorithm 1) ---------------------------------
    def phase_variables(self, phase: int):
        """phase 1: theta + phi (not psi, whose gradient is zero there anyway);
        phase 2: theta + psi (phi frozen)."""
        imp = {id(w) for w in self.imputation_model.trainable_weights}
        prop = {id(w) for w in self.propensity_model.trainable_weights}
        skip = prop if phase == 1 else imp
        return [w for w in self.trainable_weights if id(w) not in skip]

    def set_phase(self, phase: int):
        """Switch the compiled train step between ``L_c`` (1) and ``L_r`` (2)."""
        if phase not in (1, 2):
            raise UsageError(f"phase must be 1 or 2, got {phase}")
        if self.train_function is not None:
            self._phase_functions[self.phase] = self.train_function
        self.phase = phase
        self.train_function = self._phase_functions.get(phase)

    def train_step(self, data):
        features = data[0]
        phase = self.phase
        variables = self.phase_variables(phase)
        with tf.GradientTape() as tape:
            terms = self.loss_terms(features, phase=phase, training=True)
        grads = tape.gradient(terms["loss"], variables)
        opt = self.optimizer if phase == 1 or self.dr_optimizer is None else self.dr_optimizer
        opt.apply_gradients([(g, v) for g, v in zip(grads, variables) if g is not None])
        return terms

    def test_step(self, data):
        return self.loss_terms(data[0], phase=1, training=False)

    serving_endpoints = SequentialBackbone.serving_endpoints

    def top_k(self, features, k: int = 10, item_domain=None):
        return SequentialBackbone.top_k(self, features, k, item_domain)

    # attributes top_k reads from a SequentialBackbone
    @property
    def histories(self):
        return self.backbone.histories

    @property
    def domain_feature(self):
        return self.backbone.domain_feature

    @property
    def n_items(self):
        return self.backbone.n_items

    def target_domain(self, features):
        return self.backbone.target_domain(features)

    def item_embedding(self, ids):
        return self.backbone.item_embedding(ids)

    def head(self, user, item, training=False):
        return self.backbone.head(user, item, training=training)


# -- fitting (Algorithm 1) ---------------------------------------------------------------
def build_amid(model, sample_features):
    """Build every sub-layer before an optimizer sees the variables."""
    model(sample_features, training=False)
    if isinstance(model, AMID):
        model.build_heads()
    return model


def fit_amid(model, train_columns, schema, *, unobserved_columns=None, epochs: int = 10,
             batch_size: int = 256, learning_rate: float = 1e-3, dr_lr_ratio: float = 0.1,
             seed: int = 0, pools=None, verbose=0, callbacks=()):
    """Train a sequential backbone, AMID or one of its variants (Algorithm 1).

    Per epoch: one pass of ``L_c`` (Eq. 13; the plain BCE for a backbone) over the
    observed rows; then, for ``estimator in ("dr", "ips")``, one pass of ``L_r``
    (Eq. 15) over ``D`` = observed + unobserved rows with a second optimizer at
    ``learning_rate * dr_lr_ratio``. Negatives are redrawn every epoch.
    Returns a dict of per-epoch histories and the wall time.
    """
    from tfdebias import data as tdata
    from tfdebias.data import samplers

    bb = model.backbone if isinstance(model, AMID) else model
    if pools is None:
        splits = {"train": train_columns}
        if unobserved_columns is not None:
            splits["unobserved"] = unobserved_columns
        pools = samplers.domain_item_pools(splits, bb.histories)
    sampler = samplers.NegativeSampler(pools)
    train_ds = tdata.make_dataset(train_columns, schema, batch_size=batch_size, shuffle=True, seed=seed)
    train_ds = samplers.add_negatives(train_ds, sampler, seed=seed)
    dr = isinstance(model, AMID) and model.estimator in ("dr", "ips") and unobserved_columns is not None
    if dr:
        dr_ds = make_dr_dataset(train_columns, unobserved_columns, schema, sampler,
                                batch_size=batch_size, seed=seed + 1)
        dr_epoch = dr_ds.epoch
    sample = next(iter(train_ds))[0]
    build_amid(model, sample)
    if isinstance(model, AMID):
        model.set_user_bank(train_columns, seed=seed)
    model.compile(optimizer=keras.optimizers.Adam(learning_rate))
    model.optimizer.build(model.trainable_variables)
    if dr:
        model.dr_optimizer = keras.optimizers.Adam(learning_rate * dr_lr_ratio)
        model.dr_optimizer.build(model.trainable_variables)
    history: dict[str, list] = {}
    t0 = time.time()
    for epoch in range(epochs):
        if isinstance(model, AMID):
            model.set_phase(1)
        train_ds.epoch.assign(epoch)
        h = model.fit(train_ds, epochs=epoch + 1, initial_epoch=epoch, verbose=verbose,
                      callbacks=list(callbacks))
        for k, v in h.history.items():
            history.setdefault(f"c/{k}", []).extend(v)
        if dr:
            model.set_phase(2)
            dr_epoch.assign(epoch)
            h = model.fit(dr_ds, epochs=epoch + 1, initial_epoch=epoch, verbose=verbose)
            for k, v in h.history.items():
                history.setdefault(f"r/{k}", []).extend(v)
    if isinstance(model, AMID):
        model.set_phase(1)
    return {"history": history, "train_seconds": time.time() - t0}


def make_dr_dataset(train_columns, unobserved_columns, schema, sampler, *, batch_size: int = 256,
                    seed: int = 1):
    """The ``L_r`` stream over ``D`` = observed + unobserved rows, shuffled per epoch, with
    two fresh negatives per row (``neg_item_id``; ``neg_item_id_2`` stands in for an
    unobserved row's unknown positive). ``.epoch`` is the variable to set each epoch."""
    from tfdebias import data as tdata
    from tfdebias.data import samplers

    both = {k: np.concatenate([train_columns[k], unobserved_columns[k]])
            for k in train_columns if k in unobserved_columns}
    ds = tdata.make_dataset(both, schema, batch_size=batch_size, shuffle=True, seed=seed)
    epoch = ds.epoch
    ds = samplers.add_negatives(ds, sampler, seed=seed + 7, count=2).map(_split_negatives)
    ds.epoch = epoch
    return ds


def _split_negatives(features, *rest):
    negs = features["neg_item_id"]
    features = dict(features)
    features["neg_item_id"] = negs[:, 0]
    features["neg_item_id_2"] = negs[:, 1]
    return (features,) + rest


# -- the sampled-negative ranking protocol ------------------------------------------------
from tfdebias.evaluation import protocols as _protocols  # noqa: E402

#: display names of the two domains (AMID's Cloth/Sport, Phone/Elec)
DOMAIN_NAMES = ("A", "B")
_NEGATIVES: dict = {}


def ranking_candidates(splits, histories, split: str, *, n_neg: int = 999, seed: int = 0,
                       user: str = "user_id", n_users: int | None = None):
    """(rows, 1 + n) candidates of ``split``: the positive at column 0, then the seeded
    negatives of :func:`tfdebias.data.samplers.evaluation_negatives` (cached per split
    array, so every model of a process ranks the same candidates)."""
    from tfdebias.data import samplers

    cols = splits[split]
    key = (id(cols["item_id"]), tuple(histories), n_neg, seed)
    if key not in _NEGATIVES:
        pools = samplers.domain_item_pools(splits, histories)
        n_users = n_users or int(max(np.max(c[user]) for c in splits.values())) + 1
        positives = samplers.user_positives(splits, histories, n_users, user=user)
        negs = samplers.evaluation_negatives(cols, pools, positives, n_neg=n_neg, seed=seed, user=user)
        _NEGATIVES[key] = np.concatenate([np.asarray(cols["item_id"], np.int64)[:, None], negs], 1)
    return _NEGATIVES[key]


def score_candidate_matrix(model, columns, candidates, *, batch_size: int = 256) -> np.ndarray:
    """``model.score_candidates`` over every row, in batches of ``batch_size`` users
    (one compiled call per batch scores ``batch_size x C`` pairs)."""
    names = list(model.histories) + [model.domain_feature or "item_id", "item_id"]
    n = len(candidates)
    pad = (-n) % batch_size  # pad to whole batches: one trace serves every batch
    feats = {k: np.concatenate([np.asarray(columns[k]), np.repeat(np.asarray(columns[k])[:1], pad, 0)])
             for k in dict.fromkeys(names)}
    cand = np.concatenate([candidates, np.repeat(candidates[:1], pad, 0)])
    ds = tf.data.Dataset.from_tensor_slices((feats, cand)).batch(batch_size)
    fn = getattr(model, "_score_fn", None)
    if fn is None:
        fn = tf.function(lambda f, c: model.score_candidates(f, c, training=False))
        object.__setattr__(model, "_score_fn", fn)
    return np.concatenate([fn(f, c).numpy() for f, c in ds], axis=0)[:n]


@_protocols.register("ranking")
def ranking_protocol(model, splits, schema, config=None, *, n_neg: int = 999, seed: int = 0,
                     k: int = 10, split_names: Sequence[str] = ("valid", "test"),
                     batch_size: int = 256) -> dict:
    """AMID Sec. 5.1: each row's positive ranked against ``n_neg`` sampled negatives the
    user never interacted with; NDCG@k and HR@k per domain (``"<split>/<A|B>/ndcg@10"``)
    and over all rows. Pessimistic ties (a tie never helps the positive, as the
    code's ``- 1e-7``)."""
    from tfdebias.evaluation import metrics as m

    out: dict[str, float] = {}
    n_users = schema["user_id"].vocab_size if "user_id" in schema else None
    for split in split_names:
        if split not in splits:
            continue
        cand = ranking_candidates(splits, model.histories, split, n_neg=n_neg, seed=seed,
                                  n_users=n_users)
        scores = score_candidate_matrix(model, splits[split], cand, batch_size=batch_size)
        dom = np.asarray(splits[split][model.domain_feature]) if model.domain_feature else \
            np.zeros(len(cand), np.int64)
        for z, name in enumerate(DOMAIN_NAMES[: len(model.histories)]):
            sel = dom == z
            if sel.any():
                out[f"{split}/{name}/ndcg@{k}"] = float(m.ndcg_at_k(None, scores[sel], k=k))
                out[f"{split}/{name}/hr@{k}"] = float(m.hit_rate_at_k(None, scores[sel], k=k))
        out[f"{split}/ndcg@{k}"] = float(m.ndcg_at_k(None, scores, k=k))
        out[f"{split}/hr@{k}"] = float(m.hit_rate_at_k(None, scores, k=k))
        out[f"{split}/n_negatives"] = float(cand.shape[1] - 1)
    return out


# -- tfdebias reproduce amid --------------------------------------------------------------
from tfdebias.methods import Reproducer, register_reproducer  # noqa: E402

DISPLAY = {"gru4rec": "GRU4Rec", "sasrec": "SASRec", "bert4rec": "BERT4Rec"}
#: (row name, model name, model args) for one backbone; {B} is the backbone's name
ROW_TEMPLATES = (
    ("{B}", "{b}", {}),
    ("{B} + IPSCDR", "amid", {"backbone": "{b}", "mim": False, "estimator": "ips"}),
    ("{B} + MIM", "amid", {"backbone": "{b}", "mim": True, "estimator": "none"}),
    ("{B} + AMID", "amid", {"backbone": "{b}", "mim": True, "estimator": "dr"}),
)
#: the cross-domain baselines (one row each, whatever the backbone)
CDSR_ROWS = (("STAR", "star", {}), ("Pi-Net", "pinet", {}), ("C2DSR", "c2dsr", {}))

#: the hyper-parameters every row shares (the code's bs 256, Adam; lr raised for the
#: simulator's small size; d = 32 instead of 128)
DEFAULTS = {"epochs": 20, "batch_size": 256, "learning_rate": 3e-3, "dr_lr_ratio": 0.1}
QUICK = {"epochs": 3}


def experiment_rows(backbones: Sequence[str]):
    rows = []
    for b in backbones:
        for name, model, args in ROW_TEMPLATES:
            args = {k: (v.format(b=b) if isinstance(v, str) else v) for k, v in args.items()}
            rows.append((name.format(B=DISPLAY[b]), model.format(b=b), args))
    return list(CDSR_ROWS) + rows


def k_u_configs(data: str) -> list[tuple[str, str]]:
    """``[(label, data set name)]``: both K_u of the simulator (25% and 75%)."""
    base, _, config = data.partition("/")
    if base == "cross_domain_sequences":
        config = (config or "small").removesuffix("_ku75")
        return [("Ku25", f"{base}/{config}"), ("Ku75", f"{base}/{config}_ku75")]
    return [("", data)]


def run_row(model_name, model_args, splits, schema, *, seed, epochs, batch_size, learning_rate,
            dr_lr_ratio, n_neg=999, eval_seed=0):
    """Train one row on one data set and return its test ranking metrics."""
    from tfdebias import models

    keras.utils.set_random_seed(seed)
    model = models.build(model_name, schema, **model_args)
    fit = fit_amid(model, splits["train"], schema, unobserved_columns=splits.get("unobserved"),
                   epochs=epochs, batch_size=batch_size, learning_rate=learning_rate,
                   dr_lr_ratio=dr_lr_ratio, seed=seed)
    metrics = ranking_protocol(model, splits, schema, n_neg=n_neg, seed=eval_seed,
                               split_names=("test",))
    metrics["train_seconds"] = fit["train_seconds"]
    rate = fit["history"].get("c/group_rate")
    if rate:  # share of (user, sampled user) pairs in one interest group, last epoch
        metrics["test/group_rate"] = float(rate[-1])
    return metrics


def _reproduce_args(p):
    p.add_argument("--backbone", choices=list(BACKBONES) + ["all"], default=None,
                   help="sequential backbone of the +IPSCDR/+MIM/+AMID rows (default: all; "
                        "sasrec with --quick)")
    p.add_argument("--epochs", type=int, default=None, help="epochs per row (default 20; 3 with --quick)")
    p.add_argument("--negatives", type=int, default=999, help="sampled negatives per test row")
    p.add_argument("--threshold", type=float, default=None,
                   help="MIM threshold k of Eq. (4) for the +MIM/+AMID rows (default 0.5)")
    p.add_argument("--rows", default=None,
                   help="comma-separated row names to run (default: every row)")


def reproduce(args):
    """``tfdebias reproduce amid``: Tables 1-2 in shape (rows x domain x K_u x metric)."""
    from pathlib import Path

    from tfdebias import data as tdata
    from tfdebias.evaluation.results import write_results

    data = args.data or "cross_domain_sequences"
    backbone = args.backbone or ("sasrec" if args.quick else "all")
    backbones = list(BACKBONES) if backbone == "all" else [backbone]
    hp = dict(DEFAULTS, **(QUICK if args.quick else {}))
    if args.epochs is not None:
        if args.epochs < 1:
            raise UsageError(f"--epochs must be >= 1, got {args.epochs}")
        hp["epochs"] = args.epochs
    if args.negatives < 1:
        raise UsageError(f"--negatives must be >= 1, got {args.negatives}")
    seeds = list(range(args.seeds))
    configs = k_u_configs(data)
    loaded = {}
    for label, name in configs:  # fail on a bad data set before any training
        loaded[label] = tdata.load(name, data_dir=args.data_dir, manual_dir=args.manual_dir)
    rows = experiment_rows(backbones)
    if args.threshold is not None:
        rows = [(n, m, dict(a, threshold=args.threshold) if a.get("mim") else a) for n, m, a in rows]
    if args.rows:
        wanted = [r.strip() for r in args.rows.split(",") if r.strip()]
        unknown = sorted(set(wanted) - {n for n, _, _ in rows})
        if unknown:
            raise UsageError(f"--rows: unknown rows {unknown}; rows are {[n for n, _, _ in rows]}")
        rows = [r for r in rows if r[0] in wanted]
    records, n_negs = [], set()
    t0 = time.time()
    for row_name, model_name, model_args in rows:
        for seed in seeds:
            metrics = {}
            for label, (splits, schema) in loaded.items():
                res = run_row(model_name, model_args, splits, schema, seed=seed, n_neg=args.negatives,
                              **hp)
                n_negs.add(int(res["test/n_negatives"]))
                for z in DOMAIN_NAMES:
                    for metric, key in (("NDCG@10", "ndcg@10"), ("HR@10", "hr@10")):
                        if f"test/{z}/{key}" in res:
                            col = f"{z} {label}/{metric}".replace("  ", " ").strip()
                            metrics[col] = 100.0 * res[f"test/{z}/{key}"]
                metrics[f"train_seconds {label}".strip()] = res["train_seconds"]
                if "test/group_rate" in res:
                    metrics[f"group_rate {label}".strip()] = res["test/group_rate"]
            records.append({"name": row_name, "seed": seed, "metrics": metrics})
            print(f"{row_name} seed {seed}: " + ", ".join(
                f"{k}={v:.2f}" for k, v in metrics.items() if "NDCG" in k), flush=True)
    order = [f"{z} {label}/{m}".replace("  ", " ").strip() for z in DOMAIN_NAMES
             for label, _ in configs for m in ("NDCG@10", "HR@10")]
    metric_cols = [c for c in order if any(c in r["metrics"] for r in records)]
    notes = (f"Values in %, mean ± std over {len(seeds)} seed(s); each test row's positive "
             f"ranked against {sorted(n_negs)} sampled negatives it never interacted with "
             f"(fixed across models). Data: {', '.join(n for _, n in configs)}. Training: "
             f"{hp}. Wall time {time.time() - t0:.0f} s.")
    out = write_results(Path(args.out), records, title=f"AMID reproduction on {data}",
                        metrics=metric_cols, plot_metric=metric_cols[0],
                        bold_best={c: "max" for c in metric_cols}, notes=notes,
                        extra={"hyper_parameters": hp, "negatives": sorted(n_negs),
                               "threshold": args.threshold})
    return out


register_reproducer(Reproducer(
    name="amid", help="AMID (WWW 2024): Tables 1-2, NDCG@10/HR@10 per domain and K_u",
    run=reproduce, add_arguments=_reproduce_args, default_data="cross_domain_sequences",
    default_seeds=5))


# -- the tuner's search space ---------------------------------------------------------------
SEARCH_SPACE = {
    "learning_rate": {"min": 1e-4, "max": 1e-2, "log": True, "step": 10, "default": 1e-3},
    "batch_size": [256, 128, 512],
    "embedding_dim": [32, 64, 128],
    "threshold": [0.3, 0.2, 0.4, 0.5],
    "n_sampled_users": [16, 32, 64],
    "lambda_imputation": {"min": 1e-3, "max": 1.0, "log": True, "step": 10, "default": 0.1},
    "propensity_clip": [0.05, 0.1, 0.01],
}
try:
    from tfdebias.tuning import register_space

    register_space("amid", SEARCH_SPACE)
except ImportError:  # the tuner is optional
    pass
