"""Logistic regression: one weight per id plus a linear map of the dense inputs.

    logit = b + sum_f w_f[x_f] + sum_s mean_{j in s} w[x_j] + sum_k u_k x_k

(:class:`~tfdebias.layers.FeatureLinear`). It has no hidden layer, so
``representation`` raises ``UsageError``.
"""

from __future__ import annotations

import keras
from keras import ops

from tfdebias.layers.feature_linear import FeatureLinear
from tfdebias.models import register
from tfdebias.models.base import Backbone


@register("lr")
@keras.saving.register_keras_serializable(package="tfdebias")
class LogisticRegression(Backbone):
    """Logistic regression over every model input of the schema.

    Args:
      schema: the data set's schema.
      embedding_dim: unused (kept so every model takes the same arguments).
      embedding_l2: L2 penalty on the looked-up id weights.
    """

    def __init__(self, schema, embedding_dim: int = 16, embedding_l2: float = 0.0, **kwargs):
        super().__init__(schema, embedding_dim, embedding_l2, **kwargs)
        self.linear = FeatureLinear(self.schema, l2=self.embedding_l2, name="linear")

    def forward(self, features, training=False):
        return ops.reshape(self.linear(features), (-1,)), None
