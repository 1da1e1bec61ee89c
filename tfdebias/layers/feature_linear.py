"""The linear (first-order, "wide") part of LR / FM / Wide & Deep / DeepFM:

    y_linear = b + sum_f w_f[x_f] + sum_s mean_{j in s} w_s[x_j] + sum_k u_k x_k

one scalar weight per id (a :class:`FeatureEmbedding` of width 1, so sequences share
the item weights and gradients stay sparse) plus a linear map of the dense inputs.
Rendle (2010), Eq. (1), first two terms; Cheng et al. (2016), Eq. (1).

A model that also embeds the same features (FM, DeepFM, NFM, xDeepFM, Wide & Deep)
builds its :class:`FeatureEmbedding` with ``first_order=True`` and passes it as
``embedding``: the id weights then live in that layer, are looked up in the same pass
as the embeddings (one ``tf.unique`` per batch for both), and the model hands the
embedding's output to ``call(features, embedded=...)``."""

from __future__ import annotations

import weakref
from typing import Sequence

import keras
from keras import ops

from tfdebias.errors import SchemaError
from tfdebias.layers.feature_embedding import FeatureEmbedding, as_schema
from tfdebias.schema import INPUT_ROLES


@keras.saving.register_keras_serializable(package="tfdebias")
class FeatureLinear(keras.layers.Layer):
    """Logistic-regression logit of a feature dict: -> (B, 1).

    Args:
      schema: the data set's schema (or its ``to_dict()``).
      include, exclude, roles: restrict the features (as in ``FeatureEmbedding``).
      l2: L2 penalty on the looked-up id weights.
      use_bias: add a global bias ``b``.
      embedding: a ``FeatureEmbedding(..., first_order=True)`` over the same features,
        whose ``first_order`` weights this layer uses instead of its own (the model
        owns that layer; this one only refers to it).

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
        embedding: FeatureEmbedding | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.schema = as_schema(schema)
        self.include = list(include) if include is not None else None
        self.exclude = list(exclude) if exclude is not None else None
        self.roles = list(roles) if roles is not None else None
        self.l2 = float(l2)
        self.use_bias = bool(use_bias)
        self.id_weights = None
        self._embedding = None
        if embedding is None:
            self.id_weights = FeatureEmbedding(
                self.schema, 1, include=self.include, exclude=self.exclude, roles=self.roles,
                l2=self.l2, embeddings_initializer="zeros", name="id_weights",
            )
            width = self.id_weights.dense_width()
        else:
            self._check_shared(embedding)
            # a weak reference: the model tracks (and saves) the layer once, not twice
            self._embedding = weakref.ref(embedding)
            width = embedding.dense_width()
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

    def _check_shared(self, embedding):
        if not isinstance(embedding, FeatureEmbedding) or not embedding.first_order:
            raise SchemaError(
                "FeatureLinear(embedding=...) needs a FeatureEmbedding built with "
                f"first_order=True, got {embedding!r}")
        inputs = [f for f in self.schema.features if f.role in INPUT_ROLES]
        mine = [f.name for f in FeatureEmbedding._resolve(
            inputs, self.include, self.exclude, self.roles, what="schema inputs")]
        theirs = [f.name for f in embedding.features]
        if mine != theirs:
            raise SchemaError(
                f"FeatureLinear(embedding={embedding.name!r}): the embedding owns {theirs}, "
                f"this layer's features are {mine}")

    @property
    def embedding(self) -> FeatureEmbedding | None:
        """The shared ``FeatureEmbedding`` (``None`` if this layer has its own ids)."""
        return None if self._embedding is None else self._embedding()

    def call(self, features, embedded=None):
        """The logit (B, 1). With a shared ``embedding``, pass its output for this
        batch as ``embedded`` (otherwise the embedding is looked up again)."""
        if self._embedding is None:
            embedded = self.id_weights(features)
            ids = embedded["fields"]
        else:
            if embedded is None:
                embedded = self.embedding(features)
            ids = embedded["first_order"]
        out = ops.sum(ids, axis=1)  # (B, 1)
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
