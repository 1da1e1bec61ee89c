"""AMID: adaptive multi-interest debiasing for open-world cross-domain sequential
recommendation (Xu et al., WWW 2024).

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
   unobserved users' pairs inform the recommender. ``fit_amid(steps=N)`` stops after
   exactly ``N`` updates of either optimizer; ``tfdebias reproduce amid`` gives every
   row (backbone, +MIM, +IPSCDR, +AMID, skyline) the same ``N``.
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
             seed: int = 0, pools=None, verbose=0, callbacks=(), steps: int | None = None,
             reuse_optimizer: bool = False):
    """Train a sequential backbone, AMID or one of its variants (Algorithm 1).

    Per epoch: one pass of ``L_c`` (Eq. 13; the plain BCE for a backbone) over the
    observed rows; then, for ``estimator in ("dr", "ips")``, one pass of ``L_r``
    (Eq. 15) over ``D`` = observed + unobserved rows with a second optimizer at
    ``learning_rate * dr_lr_ratio``. Negatives are redrawn every epoch.

    ``steps``: a fixed budget of optimizer steps instead of ``epochs``, counting the
    ``L_c`` and the ``L_r`` steps alike: the passes above repeat until exactly ``steps``
    updates were applied (the last pass cut short). So a backbone and an ``L_r`` row can
    be given the same number of updates (``tfdebias reproduce amid`` does).
    ``reuse_optimizer``: on a model an earlier ``fit_amid`` call compiled, keep its
    optimizer(s), and so its traced train steps, with their state reset to a fresh
    optimizer's (:func:`reset_optimizer`); the caller resets the weights. A reproduce
    run traces each row once instead of once per data seed.
    Returns a dict of per-pass histories, the wall time and ``steps`` (the updates
    applied, both optimizers), ``steps_c`` and ``steps_r`` (per phase).
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
    reuse = reuse_optimizer and getattr(model, "optimizer", None) is not None and (
        not dr or getattr(model, "dr_optimizer", None) is not None)
    if not reuse:
        build_amid(model, next(iter(train_ds))[0])
    if isinstance(model, AMID):
        model.set_user_bank(train_columns, seed=seed)
    if reuse:  # the compiled steps stay (traced once); the optimizers start afresh
        for opt, lr in ((model.optimizer, learning_rate), (model.dr_optimizer if dr else None,
                                                           learning_rate * dr_lr_ratio)):
            if opt is not None:
                reset_optimizer(opt, lr)
    else:
        model.compile(optimizer=keras.optimizers.Adam(learning_rate))
        model.optimizer.build(model.trainable_variables)
        if dr:
            model.dr_optimizer = keras.optimizers.Adam(learning_rate * dr_lr_ratio)
            model.dr_optimizer.build(model.trainable_variables)
    n_c = math.ceil(len(train_columns[bb.item_feature]) / batch_size)  # L_c steps per pass
    n_r = math.ceil((len(train_columns[bb.item_feature]) + len(unobserved_columns[bb.item_feature]))
                    / batch_size) if dr else 0  # L_r steps per pass
    if steps is None:
        steps = epochs * (n_c + n_r)
    if steps < 1:
        raise UsageError(f"fit_amid: steps must be >= 1, got {steps}")
    history: dict[str, list] = {}
    done = {"c": 0, "r": 0}
    t0 = time.time()
    epoch = 0
    while done["c"] + done["r"] < steps:
        if isinstance(model, AMID):
            model.set_phase(1)
        train_ds.epoch.assign(epoch)
        n = min(n_c, steps - done["c"] - done["r"])
        h = model.fit(train_ds, epochs=epoch + 1, initial_epoch=epoch, verbose=verbose,
                      steps_per_epoch=n, callbacks=list(callbacks))
        done["c"] += n
        for k, v in h.history.items():
            history.setdefault(f"c/{k}", []).extend(v)
        n = min(n_r, steps - done["c"] - done["r"])
        if dr and n > 0:
            model.set_phase(2)
            dr_epoch.assign(epoch)
            h = model.fit(dr_ds, epochs=epoch + 1, initial_epoch=epoch, verbose=verbose,
                          steps_per_epoch=n)
            done["r"] += n
            for k, v in h.history.items():
                history.setdefault(f"r/{k}", []).extend(v)
        epoch += 1
    if isinstance(model, AMID):
        model.set_phase(1)
    applied = int(model.optimizer.iterations.numpy())
    if dr:
        applied += int(model.dr_optimizer.iterations.numpy())
    return {"history": history, "train_seconds": time.time() - t0, "steps": applied,
            "steps_c": done["c"], "steps_r": done["r"], "passes": epoch}


def reset_optimizer(optimizer, learning_rate: float) -> None:
    """A built Keras optimizer back to its state before the first step: ``iterations``
    and every slot (Adam's moments) zero, the learning rate ``learning_rate``."""
    lr = optimizer._learning_rate
    for v in optimizer.variables:
        if v is lr:
            v.assign(learning_rate)
        else:
            v.assign(np.zeros(v.shape, v.dtype))


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
#: (row name, model name, model args, role) for one backbone; {B} is the backbone's name.
#: The backbone trained on the selected log is the evidence table's floor, the same
#: backbone trained on `train_unbiased` its skyline.
ROW_TEMPLATES = (
    ("{B}", "{b}", {}, "floor"),
    ("{B} on train_unbiased", "{b}", {}, "skyline"),
    ("{B} + IPSCDR", "amid", {"backbone": "{b}", "mim": False, "estimator": "ips"}, "baseline"),
    ("{B} + MIM", "amid", {"backbone": "{b}", "mim": True, "estimator": "none"}, "baseline"),
    ("{B} + AMID", "amid", {"backbone": "{b}", "mim": True, "estimator": "dr"}, "method"),
)
#: the cross-domain baselines (one row each, whatever the backbone; not with --quick)
CDSR_ROWS = (("STAR", "star", {}, "baseline"), ("Pi-Net", "pinet", {}, "baseline"),
             ("C2DSR", "c2dsr", {}, "baseline"))
#: the simple baselines every evidence table carries (tfdebias.evaluation.baselines)
SIMPLE_ROWS = ("popularity", "item-kNN")
#: the row trained on this split instead of `train`
TRAIN_SPLIT = {"skyline": "train_unbiased"}

#: the headline metric: NDCG@10 of domain A's test users (the paper's Cloth), one value
#: per test user, each user a bootstrap unit
HEADLINE = "test/A/ndcg@10"
#: the user groups AMID's claims are about (test rows; `overlap`/`observed` columns)
GROUPS = ("overlapping", "observed_non_overlapping", "unobserved_non_overlapping")

#: the hyper-parameters every row shares (the code's bs 256, Adam; lr raised for the
#: simulator's small size; d = 32 instead of 128)
DEFAULTS = {"epochs": 20, "batch_size": 256, "learning_rate": 3e-3, "dr_lr_ratio": 0.1}
QUICK = {"epochs": 1}


def experiment_rows(backbones: Sequence[str], *, quick: bool = False):
    """``[(name, model, args, role)]``: per backbone the floor, the skyline and the three
    AMID rows; the cross-domain baselines unless ``quick``. With several backbones only
    the first gives the floor and the skyline (the others' rows are baselines)."""
    rows = [] if quick else list(CDSR_ROWS)
    for i, b in enumerate(backbones):
        for name, model, args, role in ROW_TEMPLATES:
            if i and role == "skyline":
                continue  # one skyline per table
            if i and role == "floor":
                role = "baseline"
            args = {k: (v.format(b=b) if isinstance(v, str) else v) for k, v in args.items()}
            rows.append((name.format(B=DISPLAY[b]), model.format(b=b), args, role))
    order = {"floor": 0, "skyline": 1}
    return sorted(rows, key=lambda r: order.get(r[3], 2))  # stable: floor, skyline, the rest


def step_budget(splits, epochs: int, batch_size: int) -> int:
    """Optimizer steps every row of a table gets: ``epochs`` passes of Algorithm 1, i.e.
    per pass ``ceil(|train| / bs)`` ``L_c`` steps plus ``ceil(|train + unobserved| / bs)``
    ``L_r`` steps (what an IPS/DR row takes in ``epochs`` epochs). The backbone-only
    rows take the same number of ``L_c`` steps (about 3 passes over `train` per epoch at
    K_u 25%)."""
    n = len(splits["train"]["item_id"])
    n_d = n + len(splits["unobserved"]["item_id"]) if "unobserved" in splits else n
    return epochs * (math.ceil(n / batch_size) + math.ceil(n_d / batch_size))


def user_groups(columns) -> dict[str, np.ndarray]:
    """Masks of the test rows of each group in :data:`GROUPS`."""
    overlap = np.asarray(columns["overlap"]) > 0.5
    observed = np.asarray(columns["observed"]) > 0.5
    return {"overlapping": overlap, "observed_non_overlapping": ~overlap & observed,
            "unobserved_non_overlapping": ~overlap & ~observed}


def ranking_evidence(scores: np.ndarray, columns, *, k: int = 10):
    """``(metrics, scores)`` of one model on the test rows: NDCG@k and HR@k over all rows,
    per domain (``test/A/ndcg@10``) and per domain and user group
    (``test/A/ndcg@10/unobserved_non_overlapping``); ``scores`` hold the per-row values as
    :func:`tfdebias.evaluation.evidence.row_mean` with the user id as the unit."""
    from tfdebias.evaluation.evidence import row_mean
    from tfdebias.evaluation.metrics import sampled_rank

    rank = sampled_rank(scores)  # pessimistic ties: a tie never helps the positive
    hit = (rank < k).astype(np.float64)
    values = {f"ndcg@{k}": hit / np.log2(rank + 2.0), f"hr@{k}": hit}
    units = np.asarray(columns["user_id"], np.int64)
    dom = np.asarray(columns["domain"], np.int64)
    groups = user_groups(columns) if {"overlap", "observed"} <= set(columns) else {}
    masks = {"test": np.ones(len(rank), bool)}
    for z, zname in enumerate(DOMAIN_NAMES):
        masks[f"test/{zname}"] = dom == z
        for g, gm in groups.items():
            masks[f"test/{zname}/@/{g}"] = (dom == z) & gm
    metrics, out = {}, {}
    for prefix, sel in masks.items():
        if not sel.any():
            continue
        for name, v in values.items():
            key = prefix.replace("@", name) if "/@/" in prefix else f"{prefix}/{name}"
            out[key] = row_mean(v[sel], units[sel])
            metrics[key] = float(v[sel].mean())
    metrics["test/n_negatives"] = float(scores.shape[1] - 1)
    return metrics, out


def simple_scores(name: str, splits, schema, candidates) -> np.ndarray:
    """Candidate scores of a simple baseline fitted on `train` (the biased log):
    ``popularity`` (how often the item occurs in train's histories and targets) or
    ``item-kNN`` (cosine item-item neighbours of the train users' items, scored against
    the test row's histories of both domains)."""
    from tfdebias.evaluation import baselines

    train, test = splits["train"], splits["test"]
    n_items = int(schema["item_id"].vocab_size)
    hist = np.concatenate([np.asarray(train[h], np.int64) for h in ("history_a", "history_b")], 1)
    users = np.repeat(np.asarray(train["user_id"], np.int64), hist.shape[1] + 1)
    items = np.concatenate([hist, np.asarray(train["item_id"], np.int64)[:, None]], 1).reshape(-1)
    keep = items > 0
    if name == "popularity":
        pop = baselines.popularity(items[keep], n_items)
        return pop[candidates]
    if name == "item-kNN":
        knn = baselines.ItemKNN(users[keep], items[keep], n_items)
        th = np.concatenate([np.asarray(test[h], np.int64) for h in ("history_a", "history_b")], 1)
        out = np.empty(candidates.shape, np.float64)
        for a in range(0, len(th), 2048):  # blocks bound the dense [rows, n_items] scores
            s = knn.score(th[a:a + 2048])
            out[a:a + 2048] = np.take_along_axis(s, candidates[a:a + 2048], axis=1)
        return out
    raise UsageError(f"unknown simple baseline {name!r}; expected one of {SIMPLE_ROWS}")


def run_row(model_name, model_args, splits, schema, *, seed, steps, batch_size, learning_rate,
            dr_lr_ratio, candidates, train_split="train", pools=None, epochs=None,
            models_cache: dict | None = None):
    """Train one row for exactly ``steps`` optimizer steps on ``splits[train_split]`` and
    score the test rows' ``candidates``. Returns ``(metrics, scores)`` as
    :func:`ranking_evidence`, plus ``steps``, ``train_seconds`` and the MIM group rate.

    ``models_cache`` (a dict the caller keeps): a row already trained in this process
    with the same model, arguments, seed and schema is not built again; its model gets its
    initial weights and a fresh optimizer back (``fit_amid(reuse_optimizer=True)``), so
    its train and score steps are traced once per run, not once per data seed (tracing
    costs about as much CPU as 100 training steps)."""
    from tfdebias import models

    keras.utils.set_random_seed(seed)
    key = (model_name, repr(sorted(model_args.items())), seed, _schema_key(schema))
    cached = models_cache.get(key) if models_cache is not None else None
    if cached is None:
        model = models.build(model_name, schema, **model_args)
        build_amid(model, {k: tf.constant(v[:2]) for k, v in splits[train_split].items()})
        if models_cache is not None:
            models_cache[key] = (model, model.get_weights())
    else:  # the same model, its initial weights back: its train step is traced already
        model, weights = cached
        model.set_weights(weights)
    fit = fit_amid(model, splits[train_split], schema, unobserved_columns=splits.get("unobserved"),
                   steps=steps, epochs=epochs or 1, batch_size=batch_size,
                   learning_rate=learning_rate, dr_lr_ratio=dr_lr_ratio, seed=seed, pools=pools,
                   reuse_optimizer=cached is not None)
    metrics, scores = ranking_evidence(
        score_candidate_matrix(model, splits["test"], candidates), splits["test"])
    metrics.update(steps=float(fit["steps"]), steps_c=float(fit["steps_c"]),
                   steps_r=float(fit["steps_r"]), train_seconds=fit["train_seconds"])
    rate = fit["history"].get("c/group_rate")
    if rate:  # share of (user, sampled user) pairs in one interest group, last pass
        metrics["group_rate"] = float(rate[-1])
    return metrics, scores


def _schema_key(schema) -> str:
    return schema.to_json() if hasattr(schema, "to_json") else repr(schema)


def _reproduce_args(p):
    p.add_argument("--backbone", choices=list(BACKBONES) + ["all"], default=None,
                   help="sequential backbone of the floor, skyline and +IPSCDR/+MIM/+AMID rows "
                        "(default sasrec; all: every backbone's rows, SASRec's floor and skyline)")
    p.add_argument("--epochs", type=int, default=None,
                   help="budget in passes of Algorithm 1 (default 20; 1 with --quick): every row "
                        "gets the optimizer steps an IPS/DR row takes in that many epochs")
    p.add_argument("--steps", type=int, default=None,
                   help="optimizer steps per row (overrides --epochs)")
    p.add_argument("--negatives", type=int, default=999, help="sampled negatives per test row")
    p.add_argument("--threshold", type=float, default=None,
                   help="MIM threshold k of Eq. (4) for the +MIM/+AMID rows (default 0.3)")
    p.add_argument("--rows", default=None,
                   help="comma-separated names of the baseline/method rows to run (default: "
                        "all); the floor, skyline and simple baselines always run")


def _load_draw(name, args, data_seed):
    from tfdebias import data as tdata

    return tdata.load(name, data_dir=args.data_dir, manual_dir=args.manual_dir, data_seed=data_seed)


def reproduce(args):
    """``tfdebias reproduce amid``: the evidence table of AMID (Tables 1-2 in shape) on
    one scenario, over data seeds x model seeds (see ``docs/methods/amid.md``)."""
    from pathlib import Path

    from tfdebias import data as tdata
    from tfdebias.evaluation import evidence
    from tfdebias.evaluation.results import write_results

    data = tdata.evidence_data(args.data or "cross_domain_sequences")
    if getattr(args, "stopping", "fixed") != "fixed":
        raise UsageError(
            "amid: --stopping snips does not apply: the rows' labels are all positive "
            "(sampled-negative ranking, no logged negatives), and selection is per user, so "
            "there is no IPS-weighted validation log loss to stop on; use --stopping fixed")
    backbone = args.backbone or "sasrec"
    backbones = list(BACKBONES) if backbone == "all" else [backbone]
    if backbone == "all":
        backbones = ["sasrec"] + [b for b in backbones if b != "sasrec"]
    hp = dict(DEFAULTS, **(QUICK if args.quick else {}))
    if args.epochs is not None:
        if args.epochs < 1:
            raise UsageError(f"--epochs must be >= 1, got {args.epochs}")
        hp["epochs"] = args.epochs
    steps_arg = getattr(args, "steps", None)
    if steps_arg is not None and steps_arg < 1:
        raise UsageError(f"--steps must be >= 1, got {steps_arg}")
    if args.negatives < 1:
        raise UsageError(f"--negatives must be >= 1, got {args.negatives}")
    rows = experiment_rows(backbones, quick=args.quick)
    if args.threshold is not None:
        rows = [(n, m, dict(a, threshold=args.threshold) if a.get("mim") else a, r)
                for n, m, a, r in rows]
    if args.rows:
        wanted = [r.strip() for r in args.rows.split(",") if r.strip()]
        optional = [n for n, _, _, role in rows if role not in ("floor", "skyline")]
        unknown = sorted(set(wanted) - set(optional))
        if unknown:
            raise UsageError(f"--rows: unknown rows {unknown}; rows are {optional}")
        rows = [r for r in rows if r[3] in ("floor", "skyline") or r[0] in wanted]
    seeds = list(range(args.seeds or 1))

    n_data = getattr(args, "data_seeds", None) or (3 if args.quick else 5)
    data_seeds = tdata.data_seeds(data, n_data)  # [None]: a real data set, one draw
    simulator = data_seeds != [None]
    # the first draw, loaded before any training, fails fast on a bad data set
    first = _load_draw(data, args, data_seeds[0])
    if simulator and "train_unbiased" not in first[0]:
        raise UsageError(f"{data}: the simulator wrote no train_unbiased split (rebuild it)")
    if not simulator:
        rows = [r for r in rows if r[3] != "skyline"]
    trained = len(rows) * len(seeds)
    progress = evidence.Progress(len(data_seeds) * (trained + len(SIMPLE_ROWS)))
    records, n_negs, budgets, models_cache = [], set(), {}, {}
    t0 = time.time()
    for d in data_seeds:
        splits, schema = first if first is not None else _load_draw(data, args, d)
        first = None
        _NEGATIVES.clear()  # keyed by array id: never reuse across draws
        n_users = schema["user_id"].vocab_size if "user_id" in schema else None
        cand = ranking_candidates(splits, ["history_a", "history_b"], "test", n_neg=args.negatives,
                                  seed=0, n_users=n_users)
        n_negs.add(int(cand.shape[1] - 1))
        pools = samplers_pools(splits)
        steps = steps_arg or step_budget(splits, hp["epochs"], hp["batch_size"])
        budgets[d] = steps
        tag = "" if d is None else f"data seed {d}"
        for name in SIMPLE_ROWS:
            metrics, scores = ranking_evidence(simple_scores(name, splits, schema, cand), splits["test"])
            records.append({"name": name, "role": "simple", "data_seed": d or 0, "seed": 0,
                            "metrics": metrics, "scores": scores})
            progress.step(f"{name} {tag}: {HEADLINE} {metrics.get(HEADLINE, math.nan):.4f}")
        for row_name, model_name, model_args, role in rows:
            for seed in seeds:
                metrics, scores = run_row(
                    model_name, model_args, splits, schema, seed=seed, steps=steps,
                    batch_size=hp["batch_size"], learning_rate=hp["learning_rate"],
                    dr_lr_ratio=hp["dr_lr_ratio"], candidates=cand, pools=pools,
                    train_split=TRAIN_SPLIT.get(role, "train"), models_cache=models_cache)
                if int(metrics["steps"]) != steps:
                    raise RuntimeError(f"{row_name} took {metrics['steps']:.0f} optimizer steps, "
                                       f"the budget is {steps}")
                records.append({"name": row_name, "role": role, "data_seed": d or 0, "seed": seed,
                                "metrics": metrics, "scores": scores})
                progress.step(f"{row_name} {tag} seed {seed}: {HEADLINE} "
                              f"{metrics.get(HEADLINE, math.nan):.4f} ({steps} steps)")
        del splits, cand
        _NEGATIVES.clear()
    shown = [HEADLINE] + [f"{HEADLINE}/{g}" for g in GROUPS] + ["test/B/ndcg@10"] + \
        [f"test/B/ndcg@10/{g}" for g in GROUPS[2:]] + ["test/A/hr@10"]
    budget = sorted(set(budgets.values()))
    how = (f"{steps_arg} optimizer steps per row" if steps_arg else
           f"{hp['epochs']} epoch(s) of Algorithm 1 = {'/'.join(map(str, budget))} optimizer steps "
           f"per row (per data seed)")
    stopping = (f"fixed budget, no early stopping: {how}; an IPS/DR row's L_r steps (second "
                f"optimizer) count, the other rows take as many L_c steps")
    notes = (f"Headline: NDCG@10 of domain A's test users (`{HEADLINE}`), one value per test user "
             f"(each user a bootstrap unit); each test row's positive ranked against "
             f"{sorted(n_negs)} sampled negatives it never interacted with (the same for every row "
             f"of a data seed). Groups: overlapping users, observed non-overlapping users (in "
             f"`train`), unobserved non-overlapping users (never in `train`). Floor: the backbone "
             f"trained on `train` (the users the selection observed); skyline: the same backbone, "
             f"budget and number of rows trained on `train_unbiased` (as many users drawn at random "
             f"instead of by the selection). The simple baselines are fitted on `train`. No truth "
             f"row: the simulator ships no true scores. Data: {data}, data seeds "
             f"{[x for x in data_seeds if x is not None] or 'one draw'}, model seeds {seeds}. "
             f"Training: {hp}. Wall time {time.time() - t0:.0f} s.")
    extra = {"hyper_parameters": hp, "negatives": sorted(n_negs), "threshold": args.threshold,
             "steps_per_row": {str(k): v for k, v in budgets.items()}, "data": data}
    title = f"AMID reproduction on {data}"
    names = {r[0] for r in rows}
    main_baseline, method = (f"{DISPLAY[backbones[0]]} + {x}" for x in ("IPSCDR", "AMID"))
    if simulator:
        out = evidence.write_evidence(
            Path(args.out), records, title=title, metric=HEADLINE,
            main_baseline=main_baseline if main_baseline in names else None,
            method=method if method in names else None,
            stopping=stopping, metrics=shown, notes=notes, extra=extra)
        return out
    plain = [{k: v for k, v in r.items() if k != "scores"} for r in records]
    return write_results(Path(args.out), plain, title=title, metrics=shown, plot_metric=HEADLINE,
                         notes=notes + " A real data set has no unbiased sample: no skyline, "
                         "no headroom.", extra=extra)


def samplers_pools(splits):
    """Training-negative pools of a draw: the items of every level-0 row (`train` and
    `unobserved`; `train_unbiased` is a subset of them), the same for every row."""
    from tfdebias.data import samplers

    level0 = {k: splits[k] for k in ("train", "unobserved") if k in splits}
    return samplers.domain_item_pools(level0, ["history_a", "history_b"])


register_reproducer(Reproducer(
    name="amid", help="AMID (WWW 2024): evidence table of Tables 1-2 (NDCG@10/HR@10 per domain "
                      "and user group) with headroom, over data seeds",
    run=reproduce, add_arguments=_reproduce_args, default_data="cross_domain_sequences",
    default_seeds=1))


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
