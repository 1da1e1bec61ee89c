"""Cross-domain baselines of AMID's Tables 1-2: Pi-Net, C2DSR (CDSR) and STAR (multi-domain).

Each is a :class:`~tfdebias.models.sequential.SequentialBackbone` (same embedding,
encoders, Eq. (7)-style head, training pairs and ranking interface as the backbones),
so the ranking protocol and ``fit_amid`` treat them alike. They are compact
re-implementations of each paper's *core* idea, sized for the simulator, not line-by-line
ports (see ``docs/methods/amid.md``):

* **Pi-Net** (Ma et al., SIGIR 2019) - GRU encoders per domain and a gated
  cross-domain transfer unit: ``u = Mean(h^Z) + g * W_t Mean(h^Z')`` with
  ``g = sigmoid(W_g [Mean(h^Z); Mean(h^Z')])``. The shared-account filter (several
  latent users per account) is omitted: the simulator's accounts are single users.
  Transfer happens only where the user has the other domain (overlapping users).
* **C2DSR** (Cao et al., CIKM 2022) - self-attention encoders of the target-domain,
  other-domain and *mixed* (both domains) sequences; the user is
  ``Mean(single) + Mean(mixed)``, and a contrastive infomax term (weight
  ``infomax_weight``) scores the mixed representation against the user's own
  single-domain one (positive) and a batch-shuffled user's (negative). The item-graph
  GNN that produces C2DSR's item embeddings is omitted (plain ID embeddings).
* **STAR** (Sheng et al., CIKM 2021) - one model for every domain whose prediction
  MLP is a star topology: each layer's weight is ``W_shared * W_domain`` (element-wise)
  and its bias ``b_shared + b_domain``, plus a domain-indicator auxiliary logit, on top
  of a SASRec encoder of the target-domain history (partitioned normalisation omitted).
"""

from __future__ import annotations

import keras
import tensorflow as tf

from tfdebias.models import register
from tfdebias.models.sequential import TransformerBlock, attention_mask, masked_mean
from tfdebias.models.gru4rec import GRU4Rec
from tfdebias.models.sasrec import SASRec


@keras.saving.register_keras_serializable(package="tfdebias")
@register("pinet")
class PiNet(GRU4Rec):
    """Pi-Net: GRU4Rec encoders + the gated cross-domain transfer unit."""

    def __init__(self, schema, **kwargs):
        super().__init__(schema, **kwargs)
        d = self.embedding_dim
        self.transfer_gate = keras.layers.Dense(d, activation="sigmoid", name="transfer_gate")
        self.transfer = keras.layers.Dense(d, use_bias=False, name="transfer")

    def user_representation(self, features, training=False):
        hs, ms = self.encode_all(features, training=training)
        dom = self.target_domain(features)
        own = masked_mean(self.select(hs, dom), self.select(ms, dom))
        m_o = self.select(ms, 1 - dom)
        other = masked_mean(self.select(hs, 1 - dom), m_o)
        has = tf.cast(tf.reduce_any(m_o, axis=1), own.dtype)[:, None]
        g = self.transfer_gate(tf.concat([own, other], axis=1))
        return own + has * g * self.transfer(other)


@keras.saving.register_keras_serializable(package="tfdebias")
@register("c2dsr")
class C2DSR(SASRec):
    """C2DSR: single- and mixed-sequence attention encoders + contrastive infomax."""

    def __init__(self, schema, infomax_weight: float = 0.1, **kwargs):
        self.infomax_weight = float(infomax_weight)
        super().__init__(schema, **kwargs)
        self.remember(infomax_weight=self.infomax_weight)
        d = self.embedding_dim
        self.mixed_position = keras.layers.Embedding(self.n_domains * self.max_len, d,
                                                     name="mixed_position")
        self.mixed_blocks = [TransformerBlock(d, self.num_heads, self.dropout, name=f"mixed_{i}")
                             for i in range(self.num_blocks)]
        self.mixed_norm = keras.layers.LayerNormalization(epsilon=1e-6)
        self.discriminator = keras.layers.Dense(d, use_bias=False, name="infomax_bilinear")

    def _reps(self, features, training=False):
        hs, ms = self.encode_all(features, training=training)
        dom = self.target_domain(features)
        single = masked_mean(self.select(hs, dom), self.select(ms, dom))
        ids = tf.concat([tf.cast(features[h], tf.int64) for h in self.histories], axis=1)
        mask = ids > 0
        x = self.item_embedding(ids) + self.mixed_position(tf.range(tf.shape(ids)[1]))[None]
        x = self.embedding_dropout(x, training=training) * tf.cast(mask, tf.float32)[..., None]
        att = attention_mask(mask, causal=False)
        for block in self.mixed_blocks:
            x = block(x, att, training=training)
        mixed = masked_mean(self.mixed_norm(x), mask)
        if not self.discriminator.built:  # built with the model (before any optimizer)
            self.discriminator(mixed)
        return single, mixed

    def user_representation(self, features, training=False):
        single, mixed = self._reps(features, training=training)
        return single + mixed

    def loss_terms(self, features, training=False):
        pos, neg = self.training_pairs(features)
        single, mixed = self._reps(features, training=training)
        u = single + mixed
        v = self.item_vectors(tf.stack([pos, neg], axis=1))
        logits = self.head(tf.broadcast_to(u[:, None, :], tf.shape(v)), v, training=training)
        y = tf.broadcast_to(tf.constant([[1.0, 0.0]]), tf.shape(logits))
        bce = tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(y, logits))
        # infomax: the mixed representation against own (1) and a shuffled user's (0) single one
        z = self.discriminator(mixed)
        shuffled = tf.roll(single, shift=1, axis=0)
        s_pos = tf.reduce_sum(z * single, axis=1)
        s_neg = tf.reduce_sum(z * shuffled, axis=1)
        infomax = tf.reduce_mean(tf.nn.softplus(-s_pos) + tf.nn.softplus(s_neg))
        return {"loss": bce + self.infomax_weight * infomax, "bce": bce, "infomax": infomax}


class StarLayer(keras.layers.Layer):
    """One STAR fully connected layer: ``act((W_shared * W_z) x + b_shared + b_z)``."""

    def __init__(self, units: int, n_domains: int, activation="relu", **kwargs):
        super().__init__(**kwargs)
        self.units, self.n_domains = int(units), int(n_domains)
        self.activation = keras.activations.get(activation)

    def build(self, input_shape):
        n = int(input_shape[-1])
        self.w_shared = self.add_weight(shape=(n, self.units), initializer="glorot_uniform", name="w_shared")
        self.b_shared = self.add_weight(shape=(self.units,), initializer="zeros", name="b_shared")
        self.w_dom = self.add_weight(shape=(self.n_domains, n, self.units), initializer="ones", name="w_domain")
        self.b_dom = self.add_weight(shape=(self.n_domains, self.units), initializer="zeros", name="b_domain")

    def call(self, x, domain):
        w = self.w_shared[None] * tf.gather(self.w_dom, domain)  # (B, n, units)
        b = self.b_shared[None] + tf.gather(self.b_dom, domain)  # (B, units)
        # x: (B, ..., n)
        shape = tf.shape(x)
        flat = tf.reshape(x, [shape[0], -1, x.shape[-1]])
        out = tf.einsum("bkn,bnu->bku", flat, w) + b[:, None, :]
        out = tf.reshape(out, tf.concat([shape[:-1], [self.units]], 0))
        return self.activation(out)


@keras.saving.register_keras_serializable(package="tfdebias")
@register("star")
class STAR(SASRec):
    """STAR: SASRec encoder + star-topology prediction MLP + domain auxiliary logit."""

    def __init__(self, schema, **kwargs):
        super().__init__(schema, **kwargs)
        self.star_layers = [StarLayer(u, self.n_domains, name=f"star_{i}")
                            for i, u in enumerate(self.hidden_units)]
        self.star_out = StarLayer(1, self.n_domains, activation=None, name="star_out")
        self.domain_aux = keras.layers.Embedding(self.n_domains, 1, name="domain_aux")
        self._domain_for_head = None

    def top_k(self, features, k: int = 10, item_domain=None):
        self._domain_for_head = self.target_domain(features)
        return super().top_k(features, k, item_domain)

    def forward(self, features, training=False):
        self._domain_for_head = self.target_domain(features)
        return super().forward(features, training=training)

    def score_candidates(self, features, candidates, training=False):
        self._domain_for_head = self.target_domain(features)
        return super().score_candidates(features, candidates, training=training)

    def pair_logits(self, features, items, training=False):
        self._domain_for_head = self.target_domain(features)
        return super().pair_logits(features, items, training=training)

    def head(self, user, item, training=False):
        dom = self._domain_for_head
        z = tf.concat([user, item], axis=-1)
        for layer in self.star_layers:
            z = layer(z, dom)
        logit = tf.squeeze(self.star_out(z, dom), -1)
        aux = tf.reshape(self.domain_aux(dom), [-1])
        return logit + tf.reshape(aux, tf.concat([[-1], tf.ones([tf.rank(logit) - 1], tf.int32)], 0))
