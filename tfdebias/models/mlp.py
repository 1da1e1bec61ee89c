"""A plain deep network: ``concat(flatten(field embeddings), dense)`` -> MLP -> logit.

``representation`` is the last hidden layer (B, hidden_units[-1]).
"""

from __future__ import annotations

import keras
from keras import ops

from tfdebias.models import register
from tfdebias.models.base import DeepBackbone


@register("mlp")
@keras.saving.register_keras_serializable(package="tfdebias")
class DeepNetwork(DeepBackbone):
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
        **kwargs,
    ):
        super().__init__(schema, **kwargs)
        self.remember(
        )
        self.embed = self.feature_embedding(name="embed", first_order=self.first_order_ids)
        self.dnn = self.deep_network("dnn")
        self.head = keras.layers.Dense(1, name="head")

    def forward(self, features, training=False):
        hidden = self.dnn(self.flat_inputs(self.embed(features)), training=training)
        return ops.reshape(self.head(hidden), (-1,)), hidden
