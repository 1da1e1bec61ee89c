"""Factorization machine (Rendle, 2010, "Factorization Machines", Eq. (1)):

    logit = w_0 + sum_i w_i x_i + sum_{i<j} <v_i, v_j> x_i x_j

The first-order part is :class:`~tfdebias.layers.FeatureLinear` (ids and dense inputs);
the pairwise part runs over the field embeddings (categorical features and mean-pooled
sequences), computed in O(F d) by :class:`~tfdebias.layers.BiInteraction` (Lemma 3.1).
Dense inputs enter the linear part only (as in DeepCTR).

``representation`` is the bi-interaction vector (B, d) whose sum is the pairwise term.
"""

from __future__ import annotations

import keras
from keras import ops

from tfdebias.layers.bi_interaction import BiInteraction
from tfdebias.models import register
from tfdebias.models.base import Backbone


@register("fm")
@keras.saving.register_keras_serializable(package="tfdebias")
class FactorizationMachine(Backbone):
    """FM with a linear part over all inputs and pairwise field interactions.

    Args:
      schema: the data set's schema.
      embedding_dim: the factor dimension ``k``.
      embedding_l2: L2 penalty on looked-up embeddings and id weights.
    """

    def __init__(self, schema, embedding_dim: int = 16, embedding_l2: float = 0.0, **kwargs):
        super().__init__(schema, embedding_dim, embedding_l2, **kwargs)
        self.embed = self.feature_embedding(name="embed", first_order=True)
        self.linear = self.shared_linear(self.embed)
        self.interaction = BiInteraction(name="bi_interaction")

    def forward(self, features, training=False):
        embedded = self.embed(features)
        bi = self.interaction(embedded["fields"])  # (B, d)
        logits = ops.reshape(self.linear(features, embedded), (-1,)) + ops.sum(bi, axis=1)
        return logits, bi
