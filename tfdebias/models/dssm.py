"""Two-tower DSSM (Huang et al., 2013, "Learning Deep Structured Semantic Models for Web
Search using Clickthrough Data", Eq. (3)-(5)):

    y_U = tower_U(user-side features),  y_I = tower_I(item-side features)
    R(U, I) = cos(y_U, y_I) = y_U^T y_I / (||y_U|| ||y_I||)                  (4)
    logit   = temperature * R(U, I) + b

``temperature`` is the paper's smoothing factor gamma of Eq. (5), a multiplier: larger
is sharper. Each tower embeds its side's features (one set of tables, so a history on
the user side and ``item_id`` on the item side share the item table), flattens them,
and runs an MLP whose last layer is linear; the output is L2-normalised.

For retrieval, ``user_tower(features)`` and ``item_tower(features)`` give the unit
vectors (B, hidden_units[-1]); each reads only its side's features, so the item tower
can run over a catalogue dict. :meth:`DSSM.retrieval` wraps
``keras_rs.layers.BruteForceRetrieval`` over item-tower vectors.

Sides: ``user_features`` / ``item_features`` if given, else by name (see
:func:`tfdebias.models.base.split_sides`).

``representation`` is ``y_U * y_I`` (unit vectors, element-wise), whose sum is R(U, I).
"""

from __future__ import annotations

from typing import Sequence

import keras
import keras_rs
from keras import ops

from tfdebias.models import register
from tfdebias.models.base import DeepBackbone, split_sides


@register("dssm")
@keras.saving.register_keras_serializable(package="tfdebias")
class DSSM(DeepBackbone):
    """Two towers, cosine similarity times a temperature, plus a bias.

    Args:
      schema: the data set's schema.
      embedding_dim: width of every field embedding.
      hidden_units: widths of each tower; the last is the output vector size.
      activation, dropout, batch_norm, dnn_l2: tower MLP options (last layer linear).
      temperature: multiplier of the cosine (gamma).
      use_bias: add a learned scalar bias to the logit (calibrates a CTR head).
      user_features, item_features: the two sides (default: by name).
      embedding_l2: L2 penalty on looked-up embeddings.
    """

    def __init__(
        self,
        schema,
        temperature: float = 5.0,
        use_bias: bool = True,
        user_features: Sequence[str] | None = None,
        item_features: Sequence[str] | None = None,
        **kwargs,
    ):
        super().__init__(schema, **kwargs)
        if not self.mlp_options["hidden_units"]:
            raise ValueError("DSSM needs at least one tower layer (hidden_units)")
        self.remember(
            temperature=float(temperature), use_bias=bool(use_bias),
            user_features=None if user_features is None else list(user_features),
            item_features=None if item_features is None else list(item_features),
        )
        self.temperature = float(temperature)
        self.user_names, self.item_names = split_sides(self.schema, user_features, item_features)
        self.embed = self.feature_embedding(include=self.user_names + self.item_names, name="embed")
        self.user_mlp = self.deep_network("user_mlp", output_activation="linear")
        self.item_mlp = self.deep_network("item_mlp", output_activation="linear")
        self.bias = None
        if use_bias:
            self.bias = self.add_weight(name="bias", shape=(), initializer="zeros")

    def _tower(self, mlp, features, names, training):
        x = self.flat_inputs(self.embed(features, include=names))
        return ops.normalize(mlp(x, training=training), axis=-1, order=2)

    def user_tower(self, features, training=False):
        """Unit user vectors (B, hidden_units[-1]) from the user-side features."""
        return self._tower(self.user_mlp, features, self.user_names, training)

    def item_tower(self, features, training=False):
        """Unit item vectors (B, hidden_units[-1]) from the item-side features."""
        return self._tower(self.item_mlp, features, self.item_names, training)

    def forward(self, features, training=False):
        product = self.user_tower(features, training) * self.item_tower(features, training)
        logits = self.temperature * ops.sum(product, axis=1)
        if self.bias is not None:
            logits = logits + self.bias
        return logits, product

    def retrieval(self, item_features, k: int = 10, candidate_ids=None):
        """A ``keras_rs.layers.BruteForceRetrieval`` over the item tower's vectors.

        ``item_features``: a dict of item-side features for the candidates (N rows);
        ``candidate_ids`` default to ``item_features["item_id"]`` if present, else row
        numbers. Call the result on ``model.user_tower(batch)`` to get
        ``(top-k cosines (B, k), top-k ids (B, k))``.
        """
        if candidate_ids is None and "item_id" in item_features:
            candidate_ids = ops.reshape(item_features["item_id"], (-1,))
        return keras_rs.layers.BruteForceRetrieval(
            candidate_embeddings=self.item_tower(item_features),
            candidate_ids=candidate_ids,
            k=k,
            return_scores=True,
        )
