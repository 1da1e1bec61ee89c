"""Deep Interest Network (Zhou et al., 2018, "Deep Interest Network for Click-Through
Rate Prediction", Eq. (3)):

    v_U(A) = f(v_A, e_1, ..., e_H) = sum_j a(e_j, v_A) e_j

Every ``sequence`` feature of the schema (a behaviour history) is pooled by the shared
activation unit :class:`~tfdebias.layers.AttentionPooling` with the candidate as the
query: the scalar id feature that shares the sequence's embedding table (a history with
``vocab="item_id"`` is queried by ``item_id``). A sequence with no such candidate is
mean-pooled. DIN's weights are not normalised (``attention_normalize=False``, as the
paper says); the pooled interests, every other field embedding and the dense inputs are
concatenated and fed to an MLP (the paper's PReLU/Dice are replaced by ``activation``).

``representation`` is the MLP's last hidden layer.
"""

from __future__ import annotations

from typing import Sequence

import keras
from keras import ops

from tfdebias.layers.attention_pooling import AttentionPooling
from tfdebias.models import register
from tfdebias.models.base import DeepBackbone


@register("din")
@keras.saving.register_keras_serializable(package="tfdebias")
class DIN(DeepBackbone):
    """DIN: attention pooling of each behaviour sequence against the candidate, then an MLP.

    Args:
      schema: the data set's schema.
      embedding_dim: width of every embedding.
      hidden_units, activation, dropout, batch_norm, dnn_l2: the MLP.
      attention_units, attention_activation: the activation unit's MLP.
      attention_normalize: softmax weights instead of DIN's raw ones.
      embedding_l2: L2 penalty on looked-up embeddings.

    Example:

    >>> model = DIN(schema, embedding_dim=8, hidden_units=(32,))   # doctest: +SKIP
    """

    def __init__(
        self,
        schema,
        attention_units: Sequence[int] = (80, 40),
        attention_activation: str = "sigmoid",
        attention_normalize: bool = False,
        **kwargs,
    ):
        super().__init__(schema, **kwargs)
        self.remember(
            attention_units=[int(u) for u in attention_units],
            attention_activation=attention_activation,
            attention_normalize=bool(attention_normalize),
        )
        self.embed = self.feature_embedding(name="embed")
        self.sequence_names = [f.name for f in self.schema.sequences]
        #: sequence -> the candidate feature that queries it (None = mean pooling)
        self.queries = {}
        for s in self.sequence_names:
            table = self.schema[s].table
            cands = [f.name for f in self.schema.categorical if f.table == table]
            self.queries[s] = cands[0] if cands else None
        self.attention = {
            s: AttentionPooling(attention_units, attention_activation,
                                normalize=attention_normalize, name=f"attention_{s}")
            for s in self.sequence_names if self.queries[s] is not None
        }
        self.dnn = self.deep_network("dnn")
        self.head = keras.layers.Dense(1, name="head")

    def interests(self, features, training=False):
        """Pooled user interest per sequence: ``{name: (B, d)}`` (Eq. (3))."""
        out = {}
        for s in self.sequence_names:
            q = self.queries[s]
            if q is None:
                out[s] = self.embed.pooled(features, s)
                continue
            keys, mask = self.embed.sequence(features, s)
            out[s] = self.attention[s](self.embed.lookup(features, q), keys, mask=mask,
                                       training=training)
        return out

    def forward(self, features, training=False):
        emb = self.embed(features, exclude=self.sequence_names)
        pooled = list(self.interests(features, training).values())
        x = self.flat_inputs(emb)
        if pooled:
            x = ops.concatenate([x] + [ops.cast(p, x.dtype) for p in pooled], axis=1)
        hidden = self.dnn(x, training=training)
        return ops.reshape(self.head(hidden), (-1,)), hidden
