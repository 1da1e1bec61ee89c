"""The linear (first-order, "wide") part of LR / FM / Wide & Deep / DeepFM:

    y_linear = b + sum_f w_f[x_f] + sum_s mean_{j in s} w_s[x_j] + sum_k u_k x_k

one scalar weight per id (a :class:`FeatureEmbedding` of width 1, so sequences share
the item weights and gradients stay sparse) plus a linear map of the dense inputs.
Rendle (2010), Eq. (1), first two terms; Cheng et al. (2016), Eq. (1)."""

from __future__ import annotations

from typing import Sequence

import keras
from keras import ops

from tfdebias.layers.feature_embedding import FeatureEmbedding, as_schema


@keras.saving.register_keras_serializable(package="tfdebias")
class FeatureLinear(keras.layers.Layer):
    """Logistic-regression logit of a feature dict: -> (B, 1).

    Args:
      schema: the data set's schema (or its ``to_dict()``).
      include, exclude, roles: restrict the features (as in ``FeatureEmbedding``).
      l2: L2 penalty on the looked-up id weights.
      use_bias: add a global bias ``b``.

    Example:

    >>> import numpy as np
    >>> from tfdebias.schema import Feature, Schema
    >>> schema = Schema([Feature("user_id", "categorical", vocab_size=5),
    ...                  Feature("price", "dense")])
    >>> linear = FeatureLinear(schema)
    >>> linear({"user_id": np.array([1, 2]), "price": np.array([0.5, 1.0], "float32")}).numpy()
    array([[0.],
           [0.]], dtype=float32)
    """

    def __init__(
        self,
        schema,
        include: Sequence[str] | None = None,
        exclude: Sequence[str] | None = None,
        roles: Sequence[str] | None = None,
        l2: float = 0.0,
        use_bias: bool = True,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.schema = as_schema(schema)
        self.include = list(include) if include is not None else None
        self.exclude = list(exclude) if exclude is not None else None
        self.roles = list(roles) if roles is not None else None
        self.l2 = float(l2)
        self.use_bias = bool(use_bias)
        self.id_weights = FeatureEmbedding(
            self.schema, 1, include=self.include, exclude=self.exclude, roles=self.roles,
            l2=self.l2, embeddings_initializer="zeros", name="id_weights",
        )
        width = self.id_weights.dense_width()
        self.dense_weights = None
        if width:
            self.dense_weights = keras.layers.Dense(
                1, use_bias=False, kernel_initializer="zeros", name="dense_weights"
            )
        self.bias = None

    def build(self, input_shape=None):
        if self.use_bias:
            self.bias = self.add_weight(name="bias", shape=(1,), initializer="zeros")
        self.built = True

    def call(self, features):
        embedded = self.id_weights(features)
        out = ops.sum(embedded["fields"], axis=1)  # (B, 1)
        if self.dense_weights is not None:
            out = out + self.dense_weights(embedded["dense"])
        if self.bias is not None:
            out = out + self.bias
        return out

    def get_config(self):
        config = super().get_config()
        config.update(
            schema=self.schema.to_dict(), include=self.include, exclude=self.exclude,
            roles=self.roles, l2=self.l2, use_bias=self.use_bias,
        )
        return config
