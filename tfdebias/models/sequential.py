"""The shared base of the sequential backbones (GRU4Rec, SASRec, BERT4Rec).

A :class:`SequentialBackbone` reads a row of a cross-domain sequential data set (one
``sequence`` feature per domain, e.g. ``history_a`` / ``history_b``, right-aligned with
0 = padding; a ``domain`` feature naming the target's domain; the target ``item_id``)
and scores the target the way AMID's Sec. 3.3 + Eq. (7) describe:

* **Embedding layer** (Sec. 3.3): one item table shared by every domain (the histories
  share the ``item_id`` table in the schema) plus, for the attention encoders, a learned
  position embedding; ``S_u = {h'_1..h'_T}``.
* **Sequential information encoder** ``F`` (Sec. 3.3): one encoder per domain (as in
  the authors' code: ``sac1``/``sac2``, ``gru1``/``gru2``), built by the subclass.
* **Single-domain baseline**: the user is represented by the encoded history of the
  target's own domain only; ``Mean`` is a mean over the non-padding positions (the
  authors' code averages over every position, padding included; we mask padding so a
  short history is not diluted by pad vectors).
* **Prediction layer**, Eq. (7): ``r = sigma(MLP(Mean(S) || v))``.

Training (Sec. 1.6 of the code notes): pointwise binary cross-entropy on the positive
and one negative per positive, resampled every step/epoch
(:mod:`tfdebias.data.samplers`). :meth:`loss_terms` is the one loss function
(``train_step``, ``test_step``, tests and the multi-worker loop call it).

Ranking (the sampled-negative protocol): :meth:`score_candidates` encodes each user
once and scores a (B, C) matrix of candidate items in one batched pass.
"""

from __future__ import annotations

import keras
import tensorflow as tf
from keras import ops

from tfdebias.errors import SchemaError, UsageError
from tfdebias.layers.mlp import MLP
from tfdebias.models.base import Backbone


def masked_mean(seq, mask):
    """Mean of ``seq`` (B, T, d) over positions where ``mask`` (B, T) is true; 0 if none."""
    m = tf.cast(mask, seq.dtype)[..., None]
    return tf.reduce_sum(seq * m, axis=1) / tf.maximum(tf.reduce_sum(m, axis=1), 1.0)


class SequentialBackbone(Backbone):
    """Base of GRU4Rec / SASRec / BERT4Rec (see the module docstring).

    Args:
      schema: a schema with one ``sequence`` feature per domain (sharing ``item_table``),
        a ``domain`` feature and the target ``item_feature``.
      embedding_dim: item embedding width ``d``.
      hidden_units: the prediction MLP of Eq. (7) (before its 1-unit output).
      dropout: dropout on the embeddings and inside the encoder.
      histories: the sequence features, in domain order (default: every sequence
        feature that shares the item table, in schema order; domain id i reads the i-th).
      item_feature, domain_feature: names of the target item and domain features.
    """

    #: uses a position embedding (attention encoders)
    uses_positions = False

    def __init__(self, schema, embedding_dim: int = 32, hidden_units=(32,), dropout: float = 0.2,
                 histories=None, item_feature: str = "item_id", domain_feature: str = "domain",
                 **kwargs):
        super().__init__(schema, embedding_dim=embedding_dim, **kwargs)
        s = self.schema
        if item_feature not in s:
            raise SchemaError(f"{type(self).__name__}: no target item feature {item_feature!r}")
        self.item_feature = item_feature
        self.domain_feature = domain_feature if domain_feature in s else None
        table = s[item_feature].table
        if histories is None:
            histories = [f.name for f in s.sequences if f.table == table]
        histories = list(histories)
        if not histories:
            raise SchemaError(f"{type(self).__name__}: the schema has no item-history sequence")
        for h in histories:
            if s[h].role != "sequence":
                raise SchemaError(f"{h!r} is not a sequence feature")
        self.histories = histories
        self.n_domains = len(histories)
        self.max_len = int(s[histories[0]].max_len)
        self.n_items = int(s[item_feature].vocab_size)
        #: id of the [MASK] token (one row past the item vocabulary; BERT4Rec)
        self.mask_id = self.n_items
        self.hidden_units = tuple(int(u) for u in hidden_units)
        self.dropout = float(dropout)
        self.remember(hidden_units=list(self.hidden_units), dropout=self.dropout,
                      histories=histories, item_feature=item_feature,
                      domain_feature=domain_feature)
        d = self.embedding_dim
        self.item_embedding = keras.layers.Embedding(
            self.n_items + 1, d, embeddings_initializer=keras.initializers.RandomNormal(stddev=0.05),
            name="item_embedding")
        if self.uses_positions:
            self.position_embedding = keras.layers.Embedding(self.max_len, d, name="position_embedding")
        self.embedding_dropout = keras.layers.Dropout(self.dropout)
        self.encoders = [self.make_encoder(i) for i in range(self.n_domains)]
        self.prediction_mlp = MLP(self.hidden_units, dropout=0.0, name="prediction_mlp")
        self.prediction_out = keras.layers.Dense(1, name="prediction_out")

    # -- to implement ----------------------------------------------------------------
    def make_encoder(self, domain: int):
        """The sequential information encoder ``F`` of one domain (Sec. 3.3)."""
        raise NotImplementedError

    def run_encoder(self, domain: int, x, mask, training=False):
        """``F(h'_1..h'_T) -> h_1..h_T``: (B, T, d) embeddings, (B, T) bool mask -> (B, T, d)."""
        raise NotImplementedError

    # -- pieces ----------------------------------------------------------------------
    def prepare_ids(self, ids, training=False):
        """Hook: transform a history's ids before embedding (BERT4Rec appends [MASK])."""
        return ids

    def embed_sequence(self, ids, training=False):
        """``S_u`` (Sec. 3.3): (B, T) ids -> ((B, T, d) embeddings, (B, T) mask)."""
        ids = tf.cast(ids, tf.int64)
        mask = ids > 0
        x = self.item_embedding(ids)
        if self.uses_positions:
            x = x + self.position_embedding(tf.range(tf.shape(ids)[1]))[None]
        x = self.embedding_dropout(x, training=training)
        return x * tf.cast(mask, x.dtype)[..., None], mask

    def encode(self, domain: int, ids, training=False):
        """Encode one domain's histories: (B, T) ids -> ((B, T, d), (B, T) mask)."""
        ids = self.prepare_ids(tf.cast(ids, tf.int64), training=training)
        x, mask = self.embed_sequence(ids, training=training)
        h = self.run_encoder(domain, x, mask, training=training)
        return h * tf.cast(mask, h.dtype)[..., None], mask

    def target_domain(self, features):
        if self.domain_feature is None:
            return tf.zeros_like(tf.reshape(tf.cast(features[self.item_feature], tf.int64), [-1]))
        return tf.reshape(tf.cast(features[self.domain_feature], tf.int64), [-1])

    def encode_all(self, features, training=False):
        """Every domain's encoded history of each row: lists of (B, T, d) and (B, T)."""
        hs, ms = [], []
        for i, name in enumerate(self.histories):
            h, m = self.encode(i, features[name], training=training)
            hs.append(h)
            ms.append(m)
        return hs, ms

    @staticmethod
    def select(values, index):
        """Row-wise pick: ``values`` a list of (B, ...) tensors, ``index`` (B,) -> (B, ...)."""
        if len(values) == 1:
            return values[0]
        stacked = tf.stack(values, axis=1)  # (B, D, ...)
        return tf.gather(stacked, index, axis=1, batch_dims=1)

    def user_sequence(self, features, training=False):
        """The sequence the user is represented by, ``(S (B, T', d), mask (B, T'))``.

        The single-domain backbone: the target domain's own encoded history."""
        hs, ms = self.encode_all(features, training=training)
        dom = self.target_domain(features)
        return self.select(hs, dom), self.select(ms, dom)

    def user_representation(self, features, training=False):
        """``Mean(S)`` of Eq. (7): (B, d)."""
        seq, mask = self.user_sequence(features, training=training)
        return masked_mean(seq, mask)

    def item_vectors(self, ids):
        return self.item_embedding(tf.cast(ids, tf.int64))

    def head(self, user, item, training=False):
        """Eq. (7) before the sigmoid: ``MLP(Mean(S) || v)``; user (..., d), item (..., d)."""
        user = tf.broadcast_to(user, tf.shape(item)) if user.shape.rank != item.shape.rank else user
        z = self.prediction_mlp(tf.concat([user, item], axis=-1), training=training)
        return tf.squeeze(self.prediction_out(z), -1)

    def pair_head(self, user, items, rows, training=False):
        """:meth:`head` of user ``n`` with each of the items of row ``rows[n]``: user (N, d),
        items (B, K, d), rows (N,) -> (N, K), without building the (N, K, 2d)
        concatenation: the MLP's first ``Dense`` is applied to the user and the item
        halves apart (each item once per row, not once per user) and their sum broadcast.
        The same function as :meth:`head`; what makes a many-negative loss affordable."""
        stack = self.prediction_mlp.stack
        if not stack or not isinstance(stack[0], keras.layers.Dense):  # no layer to split
            v = tf.gather(items, rows)  # (N, K, d)
            return self.head(tf.broadcast_to(user[:, None, :], tf.shape(v)), v, training=training)
        first, d = stack[0], user.shape[-1]
        item_half = tf.einsum("bkd,dh->bkh", items, first.kernel[d:])  # (B, K, h)
        x = tf.matmul(user, first.kernel[:d])[:, None, :] + tf.gather(item_half, rows)
        if first.use_bias:  # (without one, batch norm follows: it sees the same x)
            x = x + first.bias
        for layer in stack[1:]:
            x = layer(x, training=training)
        return tf.squeeze(self.prediction_out(x), -1)

    # -- the Backbone contract ----------------------------------------------------------
    def forward(self, features, training=False):
        u = self.user_representation(features, training=training)
        v = self.item_vectors(tf.reshape(features[self.item_feature], [-1]))
        return self.head(u, v, training=training), u

    def score_candidates(self, features, candidates, training=False):
        """Logits (B, C) of each row's user for each of its ``candidates`` (B, C) items.

        Each user is encoded once; the MLP runs on (B*C) pairs in one batched call."""
        u = self.user_representation(features, training=training)  # (B, d)
        v = self.item_vectors(candidates)  # (B, C, d)
        u = tf.broadcast_to(u[:, None, :], tf.shape(v))
        return self.head(u, v, training=training)

    # -- training -------------------------------------------------------------------
    def training_pairs(self, features):
        """``(positives (B,), negatives (B,))``: ``neg_item_id`` from the pipeline
        (:func:`tfdebias.data.samplers.add_negatives`), else uniform over the catalogue
        (never the positive), drawn here."""
        pos = tf.reshape(tf.cast(features[self.item_feature], tf.int64), [-1])
        if "neg_item_id" in features:
            return pos, tf.reshape(tf.cast(features["neg_item_id"], tf.int64), [-1])
        r = tf.random.uniform(tf.shape(pos), 0, self.n_items - 2, dtype=tf.int64)
        return pos, 1 + (pos - 1 + 1 + r) % (self.n_items - 1)

    def pair_logits(self, features, items, training=False):
        """Logits of one user for several item columns: items (B, K) -> (B, K), (B, d) user."""
        u = self.user_representation(features, training=training)
        v = self.item_vectors(items)
        return self.head(tf.broadcast_to(u[:, None, :], tf.shape(v)), v, training=training), u

    def loss_terms(self, features, training=False):
        """The backbone's named loss terms: pointwise BCE on (positive, negative) pairs."""
        pos, neg = self.training_pairs(features)
        logits, _ = self.pair_logits(features, tf.stack([pos, neg], axis=1), training=training)
        y = tf.constant([[1.0, 0.0]])
        bce = tf.nn.sigmoid_cross_entropy_with_logits(tf.broadcast_to(y, tf.shape(logits)), logits)
        loss = tf.reduce_mean(bce) + tf.add_n(self.losses) if self.losses else tf.reduce_mean(bce)
        return {"loss": loss, "bce": tf.reduce_mean(bce)}

    def train_step(self, data):
        features = data[0]
        with tf.GradientTape() as tape:
            terms = self.loss_terms(features, training=True)
        grads = tape.gradient(terms["loss"], self.trainable_variables)
        self.optimizer.apply_gradients(
            [(g, v) for g, v in zip(grads, self.trainable_variables) if g is not None])
        return terms

    def test_step(self, data):
        return self.loss_terms(data[0], training=False)

    # -- serving --------------------------------------------------------------------
    def serving_endpoints(self, schema):
        """``next_item_scores``: a user's two-domain history + candidate ids -> scores;
        ``top_k``: the 10 best items of the target domain (items seen by the model
        in that domain's histories at build time are not known here, so the whole
        catalogue minus the user's history is ranked)."""
        from tfdebias.models.predict import serving_specs

        names = list(self.histories) + ([self.domain_feature] if self.domain_feature else [])
        specs = serving_specs(schema, names)

        def scores(features, candidates):
            return {"scores": tf.sigmoid(self.score_candidates(features, candidates))}

        def top_k(features):
            return self.top_k(features, k=10)

        cand = tf.TensorSpec((None, None), tf.int64, name="candidates")
        return {"next_item_scores": (scores, [specs, cand]), "top_k": (top_k, [specs])}

    def top_k(self, features, k: int = 10, item_domain=None):
        """The ``k`` best items for each row's user (ids (B, k), scores (B, k)).

        ``item_domain`` (n_items,) int (domain of each id, -1 = none) restricts the
        ranking to the target's domain; already-seen history items are excluded."""
        n = self.n_items
        u = self.user_representation(features, training=False)
        v = self.item_embedding(tf.range(1, n, dtype=tf.int64))  # (V-1, d)
        b = tf.shape(u)[0]
        uu = tf.broadcast_to(u[:, None, :], [b, n - 1, self.embedding_dim])
        vv = tf.broadcast_to(v[None], [b, n - 1, self.embedding_dim])
        s = self.head(uu, vv)
        seen = tf.zeros([b, n - 1], tf.bool)
        for name in self.histories:
            ids = tf.cast(features[name], tf.int64)
            oh = tf.reduce_any(tf.equal(ids[:, :, None], tf.range(1, n, dtype=tf.int64)[None, None]), 1)
            seen = seen | oh
        s = tf.where(seen, tf.fill(tf.shape(s), -1e9), s)
        if item_domain is not None:
            dom = self.target_domain(features)
            ok = tf.equal(tf.cast(item_domain, tf.int64)[None, 1:], dom[:, None])
            s = tf.where(ok, s, tf.fill(tf.shape(s), -1e9))
        top = tf.math.top_k(s, k=k)
        return {"item_ids": tf.cast(top.indices, tf.int64) + 1, "scores": tf.sigmoid(top.values)}


def check_heads(num_heads: int, d: int):
    if num_heads < 1 or d % num_heads:
        raise UsageError(f"num_heads={num_heads} must divide embedding_dim={d}")


class TransformerBlock(keras.layers.Layer):
    """Pre-LN self-attention block with a point-wise feed-forward net (SASRec / BERT4Rec)."""

    def __init__(self, d: int, num_heads: int, dropout: float, **kwargs):
        super().__init__(**kwargs)
        self.attn = keras.layers.MultiHeadAttention(num_heads, d // num_heads, dropout=dropout)
        self.ln1 = keras.layers.LayerNormalization(epsilon=1e-6)
        self.ln2 = keras.layers.LayerNormalization(epsilon=1e-6)
        self.ff1 = keras.layers.Dense(d, activation="relu")
        self.ff2 = keras.layers.Dense(d)
        self.drop = keras.layers.Dropout(dropout)

    def call(self, x, attention_mask, training=False):
        q = self.ln1(x)
        x = x + self.drop(self.attn(q, x, attention_mask=attention_mask, training=training),
                          training=training)
        y = self.ln2(x)
        return x + self.drop(self.ff2(self.drop(self.ff1(y), training=training)), training=training)


def attention_mask(mask, causal: bool):
    """(B, T) key mask -> (B, T, T) boolean attention mask [query, key].

    A query may attend to a key only if the key is not padding and, when ``causal``,
    the key is not in the query's future. Every query may attend to itself, so no
    row of a padded query is empty (its output is masked out afterwards)."""
    t = tf.shape(mask)[1]
    allowed = tf.logical_and(mask[:, None, :], tf.ones([1, t, t], tf.bool))
    if causal:
        lower = tf.linalg.band_part(tf.ones([t, t], tf.bool), -1, 0)
        allowed = tf.logical_and(allowed, lower[None])
    eye = tf.eye(t, dtype=tf.bool)[None]
    return tf.logical_or(allowed, eye)
