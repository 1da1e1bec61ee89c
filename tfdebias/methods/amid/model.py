"""AMID's layers and model: MIM (Eq. 3-6), the pair heads ``g_phi``/``g_psi`` and the
registered ``"amid"`` model (Eq. 7, the ``L_c``/``L_r`` terms of Eq. 13/15, the phases of
Algorithm 1)."""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from tfdebias.errors import UsageError
from tfdebias.layers.mlp import MLP
from tfdebias.methods.amid.losses import domain_mean, doubly_robust_estimate, ips_estimate
from tfdebias.models import register
from tfdebias.models.sequential import SequentialBackbone, masked_mean
from tfdebias.models.base import Backbone, build_on_first_call

ESTIMATORS = ("dr", "ips", "none")
BACKBONES = ("gru4rec", "sasrec", "bert4rec")
#: N of Eq. (6): the sampled users MIM compares each row with (decision 4)
N_SAMPLED_USERS = 64


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
      with ``group_size = n > 0`` instead (a deviation, decision 17 of
      ``docs/methods/amid.md``) ``k`` is per row: her ``n``-th largest ``a'_ij``, so she
      groups with her ``n`` most similar sampled users whatever the scale of ``a'``;
    * Eq. (5): ``m_{i<-j} = a_ij (S_j W_ip)``;
    * Eq. (6): ``S*_i = Concat_time(S_i, Squeeze(m'_i W_C)) W_F`` with ``W_C`` (N+1, 1);
      returned with its (B, 2T) mask (an aggregated position is real when some
      selected user has a real item there).
    """

    def __init__(self, dim: int, n_sampled: int, threshold: float = 0.3, tau: float = 0.1,
                 group_size: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.dim, self.n_sampled = int(dim), int(n_sampled)
        self.threshold, self.tau = float(threshold), float(tau)
        self.group_size = int(group_size)
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

    def group(self, a_raw, axis: int = 1):
        """Eq. (4) with a straight-through gradient; ``axis`` runs over the N sampled
        users. With ``group_size = n`` a row groups with the ``n`` users of largest ``a'``
        along ``axis``, the straight-through gradient centred on her ``n``-th largest
        (gradient stopped), and a row without a real position (every ``a'`` about -1e9)
        groups with nobody, as under a fixed ``k``."""
        if not self.group_size:
            soft = tf.sigmoid((a_raw - self.threshold) / self.tau)
            hard = tf.cast(a_raw >= self.threshold, a_raw.dtype)
            return hard + soft - tf.stop_gradient(soft)
        move = tf.experimental.numpy.moveaxis
        top = tf.math.top_k(move(a_raw, axis, -1), self.group_size, sorted=True)
        # exactly n users: equal a' (two bank histories can share the item and position
        # that give the max) are taken in bank order, as top_k breaks ties
        hard = move(tf.reduce_sum(tf.one_hot(top.indices, tf.shape(a_raw)[axis],
                                             dtype=a_raw.dtype), axis=-2), -1, axis)
        k = tf.stop_gradient(move(top.values[..., -1:], -1, axis))
        soft = tf.sigmoid((a_raw - k) / self.tau)
        return (hard + soft - tf.stop_gradient(soft)) * tf.cast(a_raw > -1e8, a_raw.dtype)

    def project(self, layer, s):
        return tf.math.l2_normalize(layer(s), axis=-1)

    def call(self, s_i, m_i, banks, other, s_self, m_self):
        """Returns ``(S* (B, 2T, d), mask (B, 2T), group rate (scalar))``.

        ``banks``: per domain ``(S (N, T, d), mask (N, T))`` of the N sampled users; row
        ``i`` groups with the N users of its other domain ``other[i]`` (rows are
        partitioned by that domain, so each row is compared with N users, not 2N).
        ``s_self`` / ``m_self``: the user's own other-domain sequence (last ``W_C`` slot),
        propagated whenever she has one, never thresholded (Sec. 4.1: "the message from
        the same user in a different domain will also be propagated"). The group rate
        is the share of (row, sampled user) pairs in one group (the own message is not
        counted: it is always in)."""
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
        msg_self = self.w_ip(s_self * tf.cast(m_self, s_self.dtype)[..., None])
        agg = agg + self.w_c[n] * msg_self  # zero where she has no other domain
        covered = covered + tf.cast(m_self, covered.dtype)
        s_star = self.w_f(tf.concat([s_i, agg], axis=1))  # Eq. (6)
        mask = tf.concat([m_i, covered > 0], axis=1)
        return s_star, mask, a_sum / tf.maximum(a_cnt, 1.0)

    def prefix_messages(self, s_i, m_i, banks, other, s_self, m_self):
        """The message half of Eq. (6) for every prefix of the target sequence (the
        groups of Eq. 3 taken over positions ``<= t`` only, so the message that helps
        predict item ``t + 1`` never saw it): ``(sum (B, T, d), count (B, T), rate)``,
        ``sum`` the sum over the aggregated positions before ``W_F`` and ``count`` how
        many of them are real. At the last position it is :meth:`call`'s message half."""
        if not self.built:
            self.build()
        n = self.n_sampled
        t = tf.shape(s_i)[1]
        q = self.project(self.w1, s_i)
        part = tf.cast(other, tf.int32)
        rows = tf.dynamic_partition(tf.range(tf.shape(s_i)[0]), part, len(banks))
        upto = tf.linalg.band_part(tf.ones([t, t]), -1, 0)  # [t, s]: s <= t
        m_self_f = tf.cast(m_self, s_i.dtype)
        sums, covs, a_sum, a_cnt = [], [], 0.0, 0.0
        for z, (s_b, m_b) in enumerate(banks):
            qz, mz = tf.gather(q, rows[z]), tf.gather(m_i, rows[z])
            k = self.project(self.w2, s_b)
            sim = tf.einsum("btd,nsd->bnts", qz, k)
            key_bias = (tf.cast(m_b, sim.dtype) - 1.0) * 1e9
            best = tf.reduce_max(sim + key_bias[None, :, None, :], axis=3)  # (b, N, T)
            best = best + ((tf.cast(mz, sim.dtype) - 1.0) * 1e9)[:, None, :]
            # a'_ij(t) = max over query positions s <= t (a cumulative max)
            pre = tf.reduce_max(best[:, :, None, :] + (upto[None, None] - 1.0) * 1e9, axis=3)
            has = tf.cast(tf.reduce_any(m_b, axis=1), q.dtype)[None, :, None]
            a = self.group(pre, axis=1) * has  # (b, N, T)
            mb = tf.cast(m_b, s_b.dtype)
            msg_sum = tf.reduce_sum(self.w_ip(s_b * mb[..., None]), axis=1)  # (N, d)
            sums.append(tf.einsum("bnt,nd->btd", a * self.w_c[None, :n, None], msg_sum))
            self_m = tf.gather(m_self_f, rows[z])  # (b, T) positions of her own message
            cover = tf.einsum("bnt,np->btp", tf.stop_gradient(a), mb) + self_m[:, None, :]
            covs.append(tf.reduce_sum(tf.cast(cover > 0, s_i.dtype), axis=2))  # (b, T)
            last = tf.stop_gradient(a[:, :, -1])
            a_sum += tf.reduce_sum(last)
            a_cnt += tf.reduce_sum(has) * tf.cast(tf.shape(qz)[0], q.dtype)
        total = tf.dynamic_stitch(rows, sums)
        count = tf.dynamic_stitch(rows, covs)
        msg_self = tf.reduce_sum(self.w_ip(s_self * m_self_f[..., None]), axis=1)  # (B, d)
        total = total + self.w_c[n] * msg_self[:, None, :]
        return total, count, a_sum / tf.maximum(a_cnt, 1.0)


class PairHead(keras.layers.Layer):
    """``g(Mean(S*) || v)``: an MLP and a 1-unit output on (..., 2d) -> (..., 1)."""

    def __init__(self, hidden_units, activation=None, **kwargs):
        super().__init__(**kwargs)
        self.mlp = MLP(hidden_units)
        self.out = keras.layers.Dense(1, activation=activation)

    def call(self, x, training=False):
        return self.out(self.mlp(x, training=training))


# -- the method model ------------------------------------------------------------------
PROPENSITIES = ("learned", "true")
#: how Eq. (7)'s ``Mean(S*)`` pools the user's own positions and the cross-domain ones
POOLINGS = ("mean", "balanced")


@keras.saving.register_keras_serializable(package="tfdebias")
@register("amid")
class AMID(Backbone):
    """AMID around a registered sequential backbone (see :mod:`tfdebias.methods.amid`).

    Args:
      backbone: ``"gru4rec" | "sasrec" | "bert4rec"`` (any :class:`SequentialBackbone`).
      backbone_args: constructor arguments of the backbone (``num_blocks``, ...).
      mim: use MIM (Eq. 3-6); ``False`` transfers only the user's own other-domain
        sequence through ``W_ip`` (the IPSCDR-style cross-domain input).
      transfer: with ``mim=False``, whether the own other-domain sequence is transferred
        at all (``False`` = the plain single-domain backbone, trained the same way).
      estimator: ``"dr"`` (AMID, Eq. 9/13/15), ``"ips"`` (IPSCDR-style), ``"none"``.
      propensity: ``"learned"`` (the user-level ``g_psi``) or ``"true"`` (the data's
        ``propensity`` column: the true-propensity positive control, simulators only).
      interest_features: names of columns holding a per-user vector appended to the
        user's sequence as one more (projected) position: the hidden-truth positive
        control of the cross-domain headroom (a simulator's shared interest); ``None``.
      n_sampled_users: ``N`` of Eq. (6).
      threshold, tau: ``k`` of Eq. (4) and the straight-through temperature.
      group_size: ``0`` groups by the threshold ``k`` (Eq. 4); ``n`` in ``[1, N)`` groups
        each row with its ``n`` most similar sampled users instead (a per-row ``k``, a
        deviation for a backbone whose ``a'`` has no threshold that keeps the groups open
        on every draw; decision 17 of ``docs/methods/amid.md``).
      lambda_imputation: ``lambda_1`` of Eq. (13).
      l2: ``lambda_2..lambda_5`` of Eq. (13)/(15), one weight on the squared kernels.
      propensity_clip: lower clip of ``p_hat`` wherever it divides.
      bank_size: rows of the user bank per domain (:meth:`set_user_bank`).
      dot_head: add the inner product ``<Mean(S*), v>`` to the logit of Eq. (7). The MLP
        over the concatenation learns item biases fast and the user-item interaction
        slowly (at 1,000 steps a SASRec scored below an item-kNN on the simulator); the
        inner product gives the interaction directly, and the MLP can still learn the
        rest. Every row of a table uses the same head.
      position_loss: ``L_c``'s recommendation term at every position of the target
        history (next-item prediction from each prefix) instead of the row's target only;
        applies to the causal backbones (SASRec, GRU4Rec), BERT4Rec always uses the last.
      position_negatives: ``K >= 1`` makes that term a sampled softmax: the
        cross-entropy of the next item against ``K`` negatives of the row's domain (drawn
        per row, shared by its positions, never an item of its sequence) instead of the
        BCE against one negative; ``0`` keeps the BCE. With ``position_loss`` every
        position is scored, else (BERT4Rec) the last one, whose next item is the row's
        target. The terms the estimators read (``e`` of Eq. 9-15, on the row's target
        pair) stay BCE.
      pooling: ``"mean"`` (Eq. 7: ``Mean`` over every real position of ``S*``, the user's
        own items and the covered message positions alike) or ``"balanced"`` (a
        deviation, for rows with a cross-domain input: the mean of her own positions and
        the mean of the cross-domain positions, half each, so a short own history is not
        outnumbered by up to ``T`` message positions; either mean alone where the other
        part is empty).
    """

    def __init__(self, schema, backbone: str = "sasrec", backbone_args: dict | None = None,
                 mim: bool = True, estimator: str = "dr", n_sampled_users: int = N_SAMPLED_USERS,
                 threshold: float = 0.3, tau: float = 0.1, lambda_imputation: float = 0.1,
                 l2: float = 1e-4, propensity_clip: float = 0.01, bank_size: int = 1024,
                 embedding_dim: int = 32, transfer: bool = True, propensity: str = "learned",
                 interest_features=None, position_loss: bool = True, dot_head: bool = True,
                 position_negatives: int = 0, pooling: str = "mean", group_size: int = 0,
                 **kwargs):
        super().__init__(schema, embedding_dim=embedding_dim, **kwargs)
        from tfdebias import models

        if estimator not in ESTIMATORS:
            raise UsageError(f"estimator={estimator!r}; expected one of {ESTIMATORS}")
        if propensity not in PROPENSITIES:
            raise UsageError(f"propensity={propensity!r}; expected one of {PROPENSITIES}")
        if not 0.0 < propensity_clip <= 1.0:
            raise UsageError(f"propensity_clip must be in (0, 1], got {propensity_clip}")
        if pooling not in POOLINGS:
            raise UsageError(f"pooling={pooling!r}; expected one of {POOLINGS}")
        if position_negatives < 0:
            raise UsageError(f"position_negatives must be >= 0, got {position_negatives}")
        if n_sampled_users < 1 or bank_size < n_sampled_users:
            raise UsageError(f"need 1 <= n_sampled_users <= bank_size, got "
                             f"{n_sampled_users} and {bank_size}")
        if not 0 <= group_size < n_sampled_users:
            raise UsageError(f"group_size must be 0 (threshold k) or in [1, n_sampled_users = "
                             f"{n_sampled_users}), got {group_size}")
        interest_features = list(interest_features or [])
        missing = [f for f in interest_features if f not in self.schema]
        if missing:
            raise UsageError(f"interest_features {missing} are not in the schema")
        backbone_args = dict(backbone_args or {})
        backbone_args["embedding_dim"] = embedding_dim
        self.backbone = models.build(backbone, self.schema, **backbone_args)
        if not isinstance(self.backbone, SequentialBackbone):
            raise UsageError(f"AMID needs a sequential backbone ({', '.join(BACKBONES)}), got {backbone!r}")
        if self.backbone.n_domains != 2:
            raise UsageError("AMID needs exactly two domains (two item-history sequences)")
        self.backbone_name = backbone
        self.mim = bool(mim)
        self.transfer_own = bool(transfer) or self.mim
        self.estimator = estimator
        self.propensity_source = propensity
        self.interest_features = interest_features
        self.n_sampled_users = int(n_sampled_users)
        self.lambda_imputation = float(lambda_imputation)
        self.l2 = float(l2)
        self.propensity_clip = float(propensity_clip)
        self.bank_size = int(bank_size)
        # prefix (every-position) loss only where position t's output never saw t + 1
        self.position_loss = bool(position_loss) and getattr(self.backbone, "causal", True)
        self.dot_head = bool(dot_head)
        self.position_negatives = int(position_negatives)
        # BERT4Rec's Cloze objective joins the sampled softmax: the loss corrupts the
        # histories itself, so it knows which items to predict (decision 16)
        self.cloze = (self.position_negatives > 0 and not self.position_loss
                      and hasattr(self.backbone, "corrupt")
                      and getattr(self.backbone, "mask_prob", 0.0) > 0)
        if self.cloze:
            self.backbone.corrupt_in_encoder = False
        self.pooling = pooling
        self.remember(backbone=backbone, backbone_args=backbone_args, mim=self.mim,
                      estimator=estimator, n_sampled_users=self.n_sampled_users,
                      threshold=float(threshold), tau=float(tau),
                      lambda_imputation=self.lambda_imputation, l2=self.l2,
                      propensity_clip=self.propensity_clip, bank_size=self.bank_size,
                      transfer=bool(transfer), propensity=propensity,
                      interest_features=interest_features, position_loss=bool(position_loss),
                      dot_head=self.dot_head, position_negatives=int(position_negatives),
                      pooling=pooling, group_size=int(group_size))
        d = self.backbone.embedding_dim
        self.dim = d
        self.mim_module = MultiInterestModule(d, self.n_sampled_users, threshold, tau,
                                              group_size=group_size, name="mim")
        self.transfer = keras.layers.Dense(d, use_bias=False, name="W_ip_self")
        self.interest_projection = keras.layers.Dense(d, name="interest_projection")
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
        """(2, N, T) ids: a random N of the bank while training, its first N otherwise
        (the bank is a seeded random draw of the training users)."""
        if training:
            idx = tf.random.shuffle(tf.range(self.bank_size))[: self.n_sampled_users]
            return tf.gather(self.user_bank, idx, axis=1)
        return self.user_bank[:, : self.n_sampled_users]

    # -- the enhanced sequence and the representation -----------------------------------
    def _encoded(self, features, training=False):
        bb = self.backbone
        hs, ms = bb.encode_all(features, training=training)
        dom = bb.target_domain(features)
        other = 1 - dom
        return (bb.select(hs, dom), bb.select(ms, dom), bb.select(hs, other),
                bb.select(ms, other), other)

    def _interest(self, features):
        g = tf.stack([tf.reshape(tf.cast(features[f], tf.float32), [-1])
                      for f in self.interest_features], axis=1)
        return self.interest_projection(g)

    def enhanced_sequence(self, features, training=False):
        """``(S* (B, L, d), mask, group rate)``: Eq. (6) (MIM, ``L = 2T``), the target
        sequence and the transferred own other-domain sequence (IPSCDR-style, ``2T``) or
        the target sequence alone (the plain backbone, ``T``); the interest position,
        when asked for, last."""
        s_i, m_i, s_o, m_o, other = self._encoded(features, training=training)
        rate = tf.constant(0.0)
        if self.mim:
            bank = self.sampled_users(training)
            banks = [self.backbone.encode(z, bank[z], training=training) for z in range(2)]
            s, m, rate = self.mim_module(s_i, m_i, banks, other, s_o, m_o)
        elif self.transfer_own:
            s, m = tf.concat([s_i, self.transfer(s_o)], 1), tf.concat([m_i, m_o], 1)
        else:
            s, m = s_i, m_i
        if self.interest_features:
            tok = self._interest(features)
            if self.mim:
                tok = self.mim_module.w_f(tok)
            s = tf.concat([s, tok[:, None, :]], 1)
            m = tf.concat([m, tf.ones_like(m[:, :1])], 1)
        return s, m, rate

    def prefix_representations(self, features, training=False, encoded=None):
        """``(u (B, T, d), valid (B, T), rate)``: ``Mean(S*)`` of Eq. (7) after each
        position ``t`` of the target history (its items ``<= t``, the messages grouped on
        them), ``valid`` where the user has at least one item or message to be read.
        ``u[:, -1]`` is :meth:`user_representation`. ``encoded``: :meth:`_encoded`'s
        output when the caller already has it."""
        s_i, m_i, s_o, m_o, other = encoded or self._encoded(features, training=training)
        mf = tf.cast(m_i, s_i.dtype)
        own_sum = tf.cumsum(s_i * mf[..., None], axis=1)
        own_cnt = tf.cumsum(mf, axis=1)
        rate = tf.constant(0.0)
        if self.mim:
            bank = self.sampled_users(training)
            banks = [self.backbone.encode(z, bank[z], training=training) for z in range(2)]
            rest, rest_cnt, rate = self.mim_module.prefix_messages(s_i, m_i, banks, other, s_o, m_o)
        elif self.transfer_own:
            mo = tf.cast(m_o, s_o.dtype)
            rest = tf.reduce_sum(self.transfer(s_o) * mo[..., None], axis=1)[:, None, :]
            rest_cnt = tf.reduce_sum(mo, axis=1)[:, None]
        else:
            rest, rest_cnt = tf.zeros_like(own_sum[:, :1]), tf.zeros_like(own_cnt[:, :1])
        if self.interest_features:
            rest = rest + self._interest(features)[:, None, :]
            rest_cnt = rest_cnt + 1.0
        cnt = own_cnt + rest_cnt
        if self.pooling == "balanced" and self.transfer_own:
            own_cnt, rest_cnt = own_cnt + tf.zeros_like(cnt), rest_cnt + tf.zeros_like(cnt)
            w = tf.where(rest_cnt > 0, tf.where(own_cnt > 0, 0.5, 0.0), 1.0)[..., None]
            u = (w * own_sum / tf.maximum(own_cnt, 1.0)[..., None]
                 + (1.0 - w) * rest / tf.maximum(rest_cnt, 1.0)[..., None])
        else:  # Eq. (7)
            u = (own_sum + rest) / tf.maximum(cnt, 1.0)[..., None]
        if self.mim:
            u = self.mim_module.w_f(u)  # W_F is linear: Mean(x W_F) = Mean(x) W_F
        return u, cnt > 0, rate

    def user_representation(self, features, training=False):
        """``Mean(S*)`` of Eq. (7), (B, d)."""
        u, _, _ = self.prefix_representations(features, training=training)
        return u[:, -1]

    def forward(self, features, training=False):
        if not self.imputation_model.built:  # every head exists once the model is called
            self.build_heads()
        u = self.user_representation(features, training=training)
        v = self.backbone.item_vectors(tf.reshape(features[self.backbone.item_feature], [-1]))
        return self.head(u, v, training=training), u

    def score_candidates(self, features, candidates, training=False):
        """Eq. (7) logits for (B, C) candidates; each user encoded once."""
        u = self.user_representation(features, training=training)
        v = self.backbone.item_vectors(candidates)
        return self.head(tf.broadcast_to(u[:, None, :], tf.shape(v)), v, training=training)

    def propensity_logit(self, u, training=False):
        """``g_psi`` on the user alone (observation is per user): (B, d) -> (B,)."""
        return tf.squeeze(self.propensity_model(tf.stop_gradient(u), training=training), -1)

    def build_heads(self):
        z = tf.zeros([1, 2 * self.dim])
        self.imputation_model(z)
        self.propensity_model(z[:, : self.dim])
        self.transfer(tf.zeros([1, 1, self.dim]))
        if self.interest_features:
            self.interest_projection(tf.zeros([1, len(self.interest_features)]))

    # -- the losses (one function) ---------------------------------------------------------
    def next_items(self, features):
        """(B, T) the item that follows each position of the target history (the next
        history item, the row's target after the last); 0 where none."""
        bb = self.backbone
        hist = tf.stack([tf.cast(features[h], tf.int64) for h in bb.histories], axis=1)
        own = tf.gather(hist, bb.target_domain(features), axis=1, batch_dims=1)  # (B, T)
        target = tf.reshape(tf.cast(features[bb.item_feature], tf.int64), [-1, 1])
        return tf.concat([own[:, 1:], target], axis=1)

    def loss_terms(self, features, phase: int = 1, training=False):
        """Named loss terms of one batch; ``loss`` is what the phase minimises.

        * phase 1, ``L_c`` (Eq. 13) on observed rows:
          ``1/|Z| sum_Z [mean e + lambda_1 mean_O (e_hat - e)^2 / p_hat] + l2 ||.||^2``
          (``estimator="none"``/``"ips"``: the first term only). With ``position_loss``
          the first ``e`` is the next-item BCE at every position of the target history
          (one fresh negative per position, ``neg_positions``), the rest on the row's
          target;
        * phase 2, ``L_r`` (Eq. 15) on ``D``: ``1/|Z| sum_Z mean_D [e_hat + o (e - e_hat) /
          p_hat] + l2 ||theta||^2`` (``"ips"``: ``e_hat = 0``), plus ``propensity_bce``
          fitting the user-level ``g_psi`` to ``o`` (with the learned propensity).

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
        read, hidden = features, None  # what the encoders read: corrupted for the Cloze term
        if training and self.cloze:
            read, hidden = self._corrupt(features)
        encoded = self._encoded(read, training=training)
        u_all, valid, rate = self.prefix_representations(read, training=training,
                                                         encoded=encoded)
        u = u_all[:, -1]
        items = tf.stack([pos, neg], axis=1)
        v = bb.item_vectors(items)
        uu = tf.broadcast_to(u[:, None, :], tf.shape(v))
        logits = self.head(uu, v, training=training)
        y = tf.broadcast_to(tf.constant([[1.0, 0.0]]), tf.shape(logits))
        e = tf.nn.sigmoid_cross_entropy_with_logits(y, logits)  # (B, 2)
        x = tf.concat([uu, v], axis=-1)
        e_hat = tf.squeeze(self.imputation_model(x, training=training), -1)  # (B, 2)
        p_logit = self.propensity_logit(u, training=training)
        if self.propensity_source == "true":
            p_hat = tf.reshape(tf.cast(features["propensity"], tf.float32), [-1])
        else:
            p_hat = tf.sigmoid(p_logit)
        p_div = tf.stop_gradient(tf.clip_by_value(p_hat, self.propensity_clip, 1.0))[:, None]
        reg = self.l2 * tf.add_n([tf.reduce_sum(tf.square(w)) for w in self._kernels()])
        terms = {"group_rate": rate, "bce": tf.reduce_mean(e)}
        if phase == 1:
            if self.position_negatives and "neg_softmax" in features:
                cloze = None if hidden is None else (encoded[0], hidden)
                rec = self._position_softmax(features, u_all, valid, dom, training, cloze)
            elif self.position_loss and "neg_positions" in features:
                rec = self._position_bce(features, u_all, valid, dom, training)
            else:
                rec = domain_mean(e, dom, 2)
            terms["recommendation"] = rec
            loss = rec + reg
            if self.estimator == "dr":
                imp = domain_mean(tf.square(e_hat - tf.stop_gradient(e)) / p_div, dom, 2)
                terms["imputation"] = imp
                loss = loss + self.lambda_imputation * imp
        else:
            oo = o[:, None] * tf.ones_like(e)
            pp = p_div * tf.ones_like(e)
            if self.estimator == "dr":
                risk = doubly_robust_estimate(e, e_hat, oo, pp, clip=self.propensity_clip,
                                              domain=dom, n_domains=2)
            else:
                risk = ips_estimate(e, oo, pp, clip=self.propensity_clip, domain=dom, n_domains=2)
            prop = tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(o, p_logit))
            terms.update(dr_risk=risk, propensity_bce=prop)
            loss = risk + reg + (prop if self.propensity_source == "learned" else 0.0)
        terms["loss"] = loss
        return terms

    def _position_bce(self, features, u_all, valid, dom, training):
        """``1/|Z| sum_Z`` (mean over the domain's real positions) of the next-item BCE
        of every prefix: positive = :meth:`next_items`, negative = ``neg_positions``."""
        bb = self.backbone
        nxt = self.next_items(features)
        negs = tf.cast(features["neg_positions"], tf.int64)[:, : tf.shape(nxt)[1]]
        w = tf.cast((nxt > 0) & valid, tf.float32)  # a real next item, something to read
        v = bb.item_vectors(tf.stack([nxt, negs], axis=2))  # (B, T, 2, d)
        uu = tf.broadcast_to(u_all[:, :, None, :], tf.shape(v))
        logits = self.head(uu, v, training=training)
        y = tf.broadcast_to(tf.constant([1.0, 0.0]), tf.shape(logits))
        e = tf.reduce_sum(tf.nn.sigmoid_cross_entropy_with_logits(y, logits), axis=2) * w  # (B, T)
        oh = tf.one_hot(tf.cast(dom, tf.int32), 2)  # (B, 2)
        sums = tf.reduce_sum(oh * tf.reduce_sum(e, 1, keepdims=True), 0)
        counts = tf.reduce_sum(oh * tf.reduce_sum(w, 1, keepdims=True), 0)
        present = tf.cast(counts > 0, tf.float32)
        return 0.5 * tf.reduce_sum(sums / tf.maximum(counts, 1.0)) / tf.maximum(tf.reduce_sum(present), 1.0)

    def _corrupt(self, features):
        """BERT4Rec's Cloze corruption of both histories (:meth:`BERT4Rec.corrupt`):
        ``(a copy of features with [MASK] at the hidden positions, hidden (B, T) of the
        target-domain history)``; ``features`` is left as it was."""
        bb = self.backbone
        out, hidden = dict(features), []
        for name in bb.histories:
            out[name], hide = bb.corrupt(features[name])
            hidden.append(hide)
        return out, bb.select(hidden, bb.target_domain(features))

    def _position_softmax(self, features, u_all, valid, dom, training, cloze=None):
        """``1/|Z| sum_Z`` (mean over the domain's scored positions) of the sampled-softmax
        next-item loss: ``-log softmax`` of the next item among itself and the row's
        ``neg_softmax`` (B, K) negatives (``position_negatives``). With ``position_loss``
        every real prefix is scored (about 40 % of the positions on ``open_world``);
        without it (BERT4Rec, whose outputs see every position) only the last, whose next
        item is the row's target. ``cloze = (own outputs (B, T, d), hidden (B, T))`` adds
        BERT4Rec's Cloze term: every hidden item is scored from its own position's output
        against the same negatives. The encoder input is shifted left by one, so output
        ``t`` holds the history's position ``t + 1``, the item :meth:`next_items` gives at
        ``t`` (``features`` are the uncorrupted ones)."""
        bb = self.backbone
        nxt = self.next_items(features)  # (B, T)
        negs = tf.cast(features["neg_softmax"], tf.int64)  # (B, K)
        scored = (nxt > 0) & valid
        if not self.position_loss:
            t = tf.shape(nxt)[1]
            scored &= tf.range(t)[None, :] == t - 1
        at = tf.where(scored)  # (N, 2): (row, position) of every scored position
        rows = at[:, 0]
        u = tf.gather_nd(u_all, at)  # (N, d)
        items = tf.gather_nd(nxt, at)
        if cloze is not None:
            s_own, hidden = cloze
            if self.mim:
                s_own = self.mim_module.w_f(s_own)  # the space Mean(S*) lives in
            at_c = tf.where(hidden[:, 1:])  # the shift drops position 0: it is never read
            rows = tf.concat([rows, at_c[:, 0]], 0)
            u = tf.concat([u, tf.gather_nd(s_own, at_c)], 0)
            items = tf.concat([items, tf.gather_nd(nxt, at_c)], 0)  # position t + 1's item
        pos = self.head(u, bb.item_vectors(items), training=training)  # (N,)
        neg = self.pair_head(u, bb.item_vectors(negs), rows, training=training)  # (N, K)
        logits = tf.concat([pos[:, None], neg], axis=1)  # the next item at column 0
        e = tf.nn.sparse_softmax_cross_entropy_with_logits(tf.zeros_like(rows, tf.int32), logits)
        return domain_mean(e, tf.gather(dom, rows), 2)  # each position's domain is its row's

    def _kernels(self):
        return [w for w in self.trainable_weights if len(w.shape) == 2 and "embedding" not in w.path]

    # -- which variables each phase updates (Algorithm 1) ---------------------------------
    def phase_variables(self, phase: int):
        """phase 1: theta + phi (not psi, whose gradient is zero there anyway);
        phase 2: theta + psi (phi frozen). With the true propensity psi is never
        trained; an unused cross-domain layer gets no update either."""
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
        """Eq. (7) before the sigmoid, ``MLP(Mean(S*) || v)``, plus ``<Mean(S*), v>`` with
        ``dot_head`` (see the class docstring)."""
        logit = self.backbone.head(user, item, training=training)
        if self.dot_head:
            user = tf.broadcast_to(user, tf.shape(item)) if user.shape.rank != item.shape.rank else user
            logit = logit + tf.reduce_sum(user * item, axis=-1)
        return logit


    def pair_head(self, user, items, rows, training=False):
        """:meth:`head` of user ``n`` with each item of row ``rows[n]``: (N, d) x (B, K, d)
        -> (N, K) (see :meth:`SequentialBackbone.pair_head`)."""
        logit = self.backbone.pair_head(user, items, rows, training=training)
        if self.dot_head:
            logit = logit + tf.einsum("nd,nkd->nk", user, tf.gather(items, rows))
        return logit


# -- building --------------------------------------------------------------------------
def build_amid(model, sample_features):
    """Build every sub-layer before an optimizer sees the variables."""
    model(sample_features, training=False)
    if isinstance(model, AMID):
        model.build_heads()
    return model
