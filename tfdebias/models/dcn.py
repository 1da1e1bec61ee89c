"""Deep & Cross Network (Wang et al., 2017, "Deep & Cross Network for Ad Click
Predictions", Eq. (1)-(5)), with the cross layers of DCN V2 (Wang et al., 2021, Eq. (1)):

    x_0      = [flatten(field embeddings), dense inputs]                    (1)
    x_{l+1}  = x_0 * (W_l x_l + b_l) + x_l          (cross network, V2 form)
    h        = MLP(x_0)                             (deep network)          (4)
    logit    = w^T [x_L ; h] + b                    (combination layer)     (5)

The cross network is :class:`~tfdebias.layers.CrossNetwork` (``keras_rs`` FeatureCross
layers); ``projection_dim`` makes ``W_l`` low-rank (DCN-M). The two networks run in
parallel on the same ``x_0`` (the "stacked" variant of V2 is not built).

``representation`` is ``[x_L ; h]``, the input of the combination layer.
"""

from __future__ import annotations

import keras
from keras import ops

from tfdebias.layers.cross_network import CrossNetwork
from tfdebias.models import register
from tfdebias.models.base import DeepBackbone


@register("dcn")
@keras.saving.register_keras_serializable(package="tfdebias")
class DeepCrossNetwork(DeepBackbone):
    """Cross network in parallel with a deep network, combined by one dense layer.

    Args:
      schema: the data set's schema.
      embedding_dim: width of every field embedding.
      num_cross_layers: depth ``L`` of the cross network.
      projection_dim: rank of the cross kernels (``None`` = full).
      hidden_units, activation, dropout, batch_norm, dnn_l2: the deep network.
      embedding_l2: L2 penalty on looked-up embeddings.
    """

    def __init__(
        self,
        schema,
        num_cross_layers: int = 3,
        projection_dim: int | None = None,
        **kwargs,
    ):
        super().__init__(schema, **kwargs)
        self.remember(
            num_cross_layers=int(num_cross_layers),
            projection_dim=None if projection_dim is None else int(projection_dim),
        )
        self.embed = self.feature_embedding(name="embed")
        self.cross = CrossNetwork(num_cross_layers, projection_dim, l2=self.mlp_options["l2"], name="cross")
        self.dnn = self.deep_network("dnn")
        self.head = keras.layers.Dense(1, name="head")

    def forward(self, features, training=False):
        return self.tower(self.flat_inputs(self.embed(features)), training=training)

    def tower(self, x0, training=False):
        """The prediction tower on a given ``x_0`` (B, n): cross + deep + combination,
        Eq. (1)-(5) after the embedding. Returns ``(logits (B,), representation)``.

        Methods that build ``x_0`` themselves (CP2Rec's ``[c, z']``) reuse it; the cross
        and deep kernels are sized by the first ``x_0`` they see.
        """
        combined = ops.concatenate([self.cross(x0), self.dnn(x0, training=training)], axis=1)
        return ops.reshape(self.head(combined), (-1,)), combined
