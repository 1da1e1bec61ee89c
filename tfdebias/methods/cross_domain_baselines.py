"""DADIN's cross-domain baselines (the DADIN paper, Sec. 4.3, Table 1): MV-DNN, MLP++, CSN,
CoNet and MiNet, for mixed batches of both domains.

Every row belongs to one domain (the schema's ``domain`` feature: 0 = source, 1 =
target). The two-tower models keep one tower per domain over shared embeddings and
score a row with the tower of its domain; the cross units (CSN, CoNet) run both towers
on every row so that knowledge flows between them. They are trained with plain binary
cross-entropy on the rows of both domains (the paper: "cross entropy loss is used as
the loss function for ... cross-domain models") and evaluated on the target domain.

Inputs: ``user_*`` and ``item_*`` categorical features and the two behaviour histories
(mean-pooled, except in MiNet), embedded by one shared
:class:`~tfdebias.layers.FeatureEmbedding`; the domain feature only selects the tower.
Table 2's hidden units ``[512, 128, 64]`` are the default towers.

==========  ==================================================================
MLP++       Hu et al. (2018, CoNet paper, Sec. 4.1.3): two independent MLP towers
            over shared user embeddings, no cross connections.
CSN         Misra et al. (2016), Eq. (1): after every layer
            ``[h_s; h_t] <- [[a_ss, a_st], [a_ts, a_tt]] [h_s; h_t]`` with learned
            scalars (initialised 0.9 / 0.1).
CoNet       Hu et al. (2018), Eq. (2)-(3): ``a_s^{l+1} = relu(W_s^l a_s^l + H^l a_t^l)``,
            ``a_t^{l+1} = relu(W_t^l a_t^l + H^l a_s^l)``, one ``H^l`` shared by both
            directions.
MV-DNN      Elkahky et al. (2015), Eq. (4)-(5): a user view and one item view per
            domain map into one semantic space; the score is their cosine. As DADIN
            does (Sec. 4.3), the second stage is a CTR loss: ``logit = gamma cos + beta``.
MiNet       Ouyang et al. (2020): item-level attention over both histories
            (Eq. (2)-(3) of DADIN, which takes it from MiNet, via the shared
            :class:`~tfdebias.layers.AttentionPooling`), interest-level attention
            (:class:`~tfdebias.methods.dadin.InterestAttention`, MiNet Eq. (6)), the
            concatenation feeding one MLP per domain.
==========  ==================================================================
"""

from __future__ import annotations

from typing import Sequence

import keras
from keras import ops

from tfdebias.errors import SchemaError
from tfdebias.layers.attention_pooling import AttentionPooling
from tfdebias.layers.mlp import MLP
from tfdebias.methods.dadin import InterestAttention, field_names
from tfdebias.models import register
from tfdebias.models.base import Backbone

#: registry names of the baselines, in Table 1's order
CROSS_DOMAIN_BASELINES = ("mv_dnn", "mlp_plus_plus", "csn", "conet", "minet")


class _CrossDomain(Backbone):
    """Shared plumbing: feature lists, one embedding, the domain selector."""

    def __init__(self, schema, embedding_dim=16, hidden_units=(512, 128, 64), dropout=0.0,
                 user_features=None, item_features=None, histories=None, domain_feature=None,
                 embedding_l2=0.0, **kwargs):
        super().__init__(schema, embedding_dim, embedding_l2, **kwargs)
        sch = self.schema
        self.user_features = field_names(sch, user_features, "user", "user_features")
        self.item_features = field_names(sch, item_features, "item", "item_features")
        self.histories = list(histories) if histories is not None else sch.names("sequence")
        if domain_feature is None:
            doms = sch.by_role("domain")
            if not doms:
                raise SchemaError(f"{type(self).__name__} needs a feature with role 'domain'")
            domain_feature = doms[0].name
        self.domain_feature = domain_feature
        self.hidden_units = [int(u) for u in hidden_units]
        self.dropout = float(dropout)
        self.remember(hidden_units=self.hidden_units, dropout=self.dropout,
                      user_features=self.user_features, item_features=self.item_features,
                      histories=self.histories, domain_feature=domain_feature)
        self.embed = self.feature_embedding(
            include=self.user_features + self.item_features + self.histories, name="embed")

    def build(self, input_shape=None):
        # Sub-layers build on the first call (engine.build_model calls the model once).
        self.built = True

    def inputs_flat(self, features):
        return self.flat_inputs(self.embed(features))

    def select(self, features, logit_s, logit_t):
        """The logit of the row's own domain (B,)."""
        dom = ops.reshape(features[self.domain_feature], (-1,))
        return ops.where(ops.equal(dom, 1), ops.reshape(logit_t, (-1,)), ops.reshape(logit_s, (-1,)))

    def select_rep(self, features, h_s, h_t):
        dom = ops.reshape(features[self.domain_feature], (-1, 1))
        return ops.where(ops.equal(dom, 1), h_t, h_s)


def _dense_stack(units, prefix):
    return [keras.layers.Dense(u, name=f"{prefix}_{i}") for i, u in enumerate(units)]


@register("mlp_plus_plus")
@keras.saving.register_keras_serializable(package="tfdebias")
class MLPPlusPlus(_CrossDomain):
    """MLP++: two independent towers over shared embeddings (see the module docstring)."""

    def __init__(self, schema, embedding_dim: int = 16, hidden_units: Sequence[int] = (512, 128, 64),
                 dropout: float = 0.0, **kwargs):
        super().__init__(schema, embedding_dim, hidden_units, dropout, **kwargs)
        self.tower_s = MLP(self.hidden_units, "relu", self.dropout, name="tower_source")
        self.tower_t = MLP(self.hidden_units, "relu", self.dropout, name="tower_target")
        self.head_s = keras.layers.Dense(1, name="head_source")
        self.head_t = keras.layers.Dense(1, name="head_target")

    def forward(self, features, training=False):
        x = self.inputs_flat(features)
        h_s, h_t = self.tower_s(x, training=training), self.tower_t(x, training=training)
        return self.select(features, self.head_s(h_s), self.head_t(h_t)), self.select_rep(features, h_s, h_t)


@keras.saving.register_keras_serializable(package="tfdebias")
class CrossStitch(keras.layers.Layer):
    """Cross-stitch unit (Misra et al., 2016, Eq. (1)): mixes two activations with a
    learned 2x2 matrix of scalars.

    Example:

    >>> import numpy as np
    >>> a, b = CrossStitch()(np.ones((1, 2), "float32"), np.zeros((1, 2), "float32"))
    >>> [round(float(v), 2) for v in a.numpy()[0]], [round(float(v), 2) for v in b.numpy()[0]]
    ([0.9, 0.9], [0.1, 0.1])
    """

    def build(self, *shapes):
        self.alpha = self.add_weight(
            name="alpha", shape=(2, 2),
            initializer=keras.initializers.Constant([[0.9, 0.1], [0.1, 0.9]]))
        self.built = True

    def call(self, h_s, h_t):
        a = self.alpha
        return a[0, 0] * h_s + a[0, 1] * h_t, a[1, 0] * h_s + a[1, 1] * h_t


@register("csn")
@keras.saving.register_keras_serializable(package="tfdebias")
class CSN(_CrossDomain):
    """Cross-stitch network: two towers mixed after every layer (module docstring)."""

    def __init__(self, schema, embedding_dim: int = 16, hidden_units: Sequence[int] = (512, 128, 64),
                 dropout: float = 0.0, **kwargs):
        super().__init__(schema, embedding_dim, hidden_units, dropout, **kwargs)
        self.layers_s = _dense_stack(self.hidden_units, "source")
        self.layers_t = _dense_stack(self.hidden_units, "target")
        self.stitches = [CrossStitch(name=f"cross_stitch_{i}") for i in range(len(self.hidden_units))]
        self.drop = keras.layers.Dropout(self.dropout)
        self.head_s = keras.layers.Dense(1, name="head_source")
        self.head_t = keras.layers.Dense(1, name="head_target")

    def forward(self, features, training=False):
        x = self.inputs_flat(features)
        h_s = h_t = x
        for ls, lt, cs in zip(self.layers_s, self.layers_t, self.stitches):
            h_s, h_t = cs(ops.relu(ls(h_s)), ops.relu(lt(h_t)))
            h_s, h_t = self.drop(h_s, training=training), self.drop(h_t, training=training)
        return self.select(features, self.head_s(h_s), self.head_t(h_t)), self.select_rep(features, h_s, h_t)


@register("conet")
@keras.saving.register_keras_serializable(package="tfdebias")
class CoNet(_CrossDomain):
    """Collaborative cross network: shared cross-connection matrices ``H^l`` (module docstring)."""

    def __init__(self, schema, embedding_dim: int = 16, hidden_units: Sequence[int] = (512, 128, 64),
                 dropout: float = 0.0, **kwargs):
        super().__init__(schema, embedding_dim, hidden_units, dropout, **kwargs)
        self.layers_s = _dense_stack(self.hidden_units, "source")
        self.layers_t = _dense_stack(self.hidden_units, "target")
        # H^0 would map the (identical) inputs; cross connections start at the 2nd layer.
        self.cross = [keras.layers.Dense(u, use_bias=False, name=f"cross_{i}")
                      for i, u in enumerate(self.hidden_units[1:], start=1)]
        self.drop = keras.layers.Dropout(self.dropout)
        self.head_s = keras.layers.Dense(1, name="head_source")
        self.head_t = keras.layers.Dense(1, name="head_target")

    def forward(self, features, training=False):
        x = self.inputs_flat(features)
        h_s = ops.relu(self.layers_s[0](x))
        h_t = ops.relu(self.layers_t[0](x))
        for ls, lt, H in zip(self.layers_s[1:], self.layers_t[1:], self.cross):
            h_s, h_t = ops.relu(ls(h_s) + H(h_t)), ops.relu(lt(h_t) + H(h_s))  # Eq. (2)-(3)
            h_s, h_t = self.drop(h_s, training=training), self.drop(h_t, training=training)
        return self.select(features, self.head_s(h_s), self.head_t(h_t)), self.select_rep(features, h_s, h_t)


@register("mv_dnn")
@keras.saving.register_keras_serializable(package="tfdebias")
class MVDNN(_CrossDomain):
    """Multi-view DNN: a user view and one item view per domain, scored by cosine."""

    def __init__(self, schema, embedding_dim: int = 16, hidden_units: Sequence[int] = (512, 128, 64),
                 dropout: float = 0.0, **kwargs):
        super().__init__(schema, embedding_dim, hidden_units, dropout, **kwargs)
        self.user_view = MLP(self.hidden_units, "tanh", self.dropout, name="user_view")
        self.item_view_s = MLP(self.hidden_units, "tanh", self.dropout, name="item_view_source")
        self.item_view_t = MLP(self.hidden_units, "tanh", self.dropout, name="item_view_target")
        self.scale = keras.layers.Dense(1, name="cosine_to_logit")  # gamma cos + beta

    def forward(self, features, training=False):
        user = self.flat_inputs(self.embed(features, include=self.user_features + self.histories))
        item = self.flat_inputs(self.embed(features, include=self.item_features))
        y_u = self.user_view(user, training=training)
        y_i = self.select_rep(features, self.item_view_s(item, training=training),
                              self.item_view_t(item, training=training))
        cos = ops.sum(y_u * y_i, axis=1, keepdims=True) / (
            ops.norm(y_u, axis=1, keepdims=True) * ops.norm(y_i, axis=1, keepdims=True) + 1e-8)
        return ops.reshape(self.scale(cos), (-1,)), ops.concatenate([y_u, y_i], axis=1)


@register("minet")
@keras.saving.register_keras_serializable(package="tfdebias")
class MiNet(_CrossDomain):
    """Mixed interest network: item- and interest-level attention, one MLP per domain."""

    def __init__(self, schema, embedding_dim: int = 16, hidden_units: Sequence[int] = (512, 128, 64),
                 dropout: float = 0.0, target_history: str = "history_target",
                 source_history: str = "history_source", **kwargs):
        kwargs.pop("histories", None)  # from get_config: always the two histories below
        super().__init__(schema, embedding_dim, hidden_units, dropout,
                         histories=[target_history, source_history], **kwargs)
        self.remember(target_history=target_history, source_history=source_history)
        d = self.embedding_dim
        self.attention = [AttentionPooling([d], activation="relu", normalize=True,
                                           terms=("key", "query", "context", "product"),
                                           name=f"item_attention_{h}") for h in self.histories]
        self.interest_attention = InterestAttention(name="interest_attention")
        self.tower_s = MLP(self.hidden_units, "relu", self.dropout, name="tower_source")
        self.tower_t = MLP(self.hidden_units, "relu", self.dropout, name="tower_target")
        self.head_s = keras.layers.Dense(1, name="head_source")
        self.head_t = keras.layers.Dense(1, name="head_target")

    def forward(self, features, training=False):
        p = sum(self.embed.lookup(features, n) for n in self.user_features)
        q = sum(self.embed.lookup(features, n) for n in self.item_features)
        pooled = []
        for h, att in zip(self.histories, self.attention):
            keys, mask = self.embed.sequence(features, h)
            pooled.append(att(q, keys, mask=mask, context=p, training=training))
        a, b = pooled
        v = self.interest_attention(ops.stack([q, p, a, b], axis=1))
        m = ops.concatenate([q, v[:, 0:1] * p, v[:, 1:2] * a, v[:, 2:3] * b], axis=1)
        h_s, h_t = self.tower_s(m, training=training), self.tower_t(m, training=training)
        return self.select(features, self.head_s(h_s), self.head_t(h_t)), self.select_rep(features, h_s, h_t)
