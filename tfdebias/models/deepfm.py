"""DeepFM (Guo et al., 2017, "DeepFM: A Factorization-Machine based Neural Network for
CTR Prediction", Eq. (1)-(5)):

    y_hat = sigmoid(y_FM + y_DNN)                                           (1)
    y_FM  = <w, x> + sum_{i<j} <V_i, V_j> x_i x_j                           (2)
    a^(0) = [e_1, ..., e_m],  a^(l+1) = relu(W^(l) a^(l) + b^(l))           (3)-(4)
    y_DNN = W^(H+1) a^(H) + b^(H+1)                                         (5)

The FM and the deep component share one set of field embeddings (the paper's point);
the first-order term is :class:`~tfdebias.layers.FeatureLinear`. Dense inputs enter the
linear term and the MLP, not the pairwise term.

``representation`` is the MLP's last hidden layer.
"""

from __future__ import annotations

from typing import Sequence

import keras
from keras import ops

from tfdebias.layers.feature_linear import FeatureLinear
from tfdebias.layers.fm_interaction import FMInteraction
from tfdebias.layers.mlp import MLP
from tfdebias.models import register
from tfdebias.models.base import Backbone


@register("deepfm")
@keras.saving.register_keras_serializable(package="tfdebias")
class DeepFM(Backbone):
    """FM and an MLP over shared embeddings; logits summed.

    Args:
      schema: the data set's schema.
      embedding_dim: width of every field embedding (the FM factor size).
      hidden_units, activation, dropout, batch_norm, dnn_l2: the deep component's MLP.
      embedding_l2: L2 penalty on looked-up embeddings and first-order weights.
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
        self.linear = FeatureLinear(self.schema, l2=self.embedding_l2, name="linear")
        self.embed = self.feature_embedding(name="embed")
        self.fm = FMInteraction(name="fm")
        self.dnn = MLP(hidden_units, activation, dropout, batch_norm, dnn_l2, name="dnn")
        self.head = keras.layers.Dense(1, name="head")

    def forward(self, features, training=False):
        embedded = self.embed(features)
        y_fm = self.linear(features) + self.fm(embedded["fields"])  # (B, 1)
        hidden = self.dnn(self.flat_inputs(embedded), training=training)
        y_dnn = self.head(hidden)
        return ops.reshape(y_fm + y_dnn, (-1,)), hidden
