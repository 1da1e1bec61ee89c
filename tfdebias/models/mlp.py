"""A plain deep network: ``concat(flatten(field embeddings), dense)`` -> MLP -> logit.

``representation`` is the last hidden layer (B, hidden_units[-1]).
"""

from __future__ import annotations

from typing import Sequence

import keras
from keras import ops

from tfdebias.layers.mlp import MLP
from tfdebias.models import register
from tfdebias.models.base import Backbone


@register("mlp")
@keras.saving.register_keras_serializable(package="tfdebias")
class DeepNetwork(Backbone):
    """Embedding + MLP.

    Args:
      schema: the data set's schema.
      embedding_dim: width of every field embedding.
      hidden_units: MLP widths.
      activation, dropout, batch_norm, dnn_l2: MLP options (see :class:`~tfdebias.layers.MLP`).
      embedding_l2: L2 penalty on looked-up embeddings.
    """

    #: whether ``embed`` also keeps first-order id weights (subclasses with a
    #: linear part, which they build with :meth:`shared_linear`)
    first_order_ids = False

    def __init__(
        self,
        schema,
        embedding_dim: int = 16,
        hidden_units: Sequence[int] = (256, 128),
        activation: str = "relu",
        dropout: float = 0.0,
        batch_norm: bool = False,
        dnn_l2: float = 0.0,
        embedding_l2: float = 0.0,
        **kwargs,
    ):
        super().__init__(schema, embedding_dim, embedding_l2, **kwargs)
        self.remember(
            hidden_units=[int(u) for u in hidden_units], activation=activation,
            dropout=float(dropout), batch_norm=bool(batch_norm), dnn_l2=float(dnn_l2),
        )
        self.embed = self.feature_embedding(name="embed", first_order=self.first_order_ids)
        self.dnn = MLP(hidden_units, activation, dropout, batch_norm, dnn_l2, name="dnn")
        self.head = keras.layers.Dense(1, name="head")

    def forward(self, features, training=False):
        hidden = self.dnn(self.flat_inputs(self.embed(features)), training=training)
        return ops.reshape(self.head(hidden), (-1,)), hidden
