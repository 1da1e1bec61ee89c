"""Wide & Deep (Cheng et al., 2016, "Wide & Deep Learning for Recommender Systems",
Eq. (3)):

    P(Y=1|x) = sigmoid(w_wide^T [x, phi(x)] + w_deep^T a^(l_f) + b)

The wide part is :class:`~tfdebias.layers.FeatureLinear` over the raw inputs (the
paper's hand-made cross-product transformations ``phi(x)`` are not built; add a crossed
feature to the data set to get one). The deep part embeds every field and runs an MLP.
The two parts have separate parameters, trained jointly.

``representation`` is the deep part's last hidden layer ``a^(l_f)``.
"""

from __future__ import annotations

from typing import Sequence

import keras
from keras import ops

from tfdebias.layers.feature_linear import FeatureLinear
from tfdebias.layers.mlp import MLP
from tfdebias.models import register
from tfdebias.models.base import Backbone


@register("wide_deep")
@keras.saving.register_keras_serializable(package="tfdebias")
class WideDeep(Backbone):
    """Wide (linear) + deep (embedding + MLP) logits, summed.

    Args:
      schema: the data set's schema.
      embedding_dim: width of every field embedding.
      hidden_units, activation, dropout, batch_norm, dnn_l2: the deep part's MLP.
      embedding_l2: L2 penalty on looked-up embeddings and wide weights.
    """

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
        self.wide = FeatureLinear(self.schema, l2=self.embedding_l2, name="wide")
        self.embed = self.feature_embedding(name="embed")
        self.dnn = MLP(hidden_units, activation, dropout, batch_norm, dnn_l2, name="dnn")
        self.head = keras.layers.Dense(1, name="head")

    def forward(self, features, training=False):
        hidden = self.dnn(self.flat_inputs(self.embed(features)), training=training)
        logits = ops.reshape(self.wide(features) + self.head(hidden), (-1,))
        return logits, hidden
