"""Neural Collaborative Filtering, NeuMF (He et al., 2017, "Neural Collaborative
Filtering", Section 3.4, Eq. (11)-(12)):

    phi_GMF = p_u^G * q_i^G                                   (element-wise product)
    phi_MLP = a_L(W_L^T ( ... a_2(W_2^T [p_u^M ; q_i^M] + b_2) ... ) + b_L)
    y_hat   = sigmoid(h^T [phi_GMF ; phi_MLP])

GMF and MLP have separate embeddings (the paper's fusion). The user latent vector is
built from the *user-side* features and the item vector from the *item-side* features,
so ``user_id`` / ``item_id`` alone gives the paper's model and extra side features give
a feature-based variant:

* GMF side vector = sum of the side's field embeddings (+ a bias-free projection of the
  side's dense inputs, if any) -> (B, d);
* MLP side input = ``concat(flatten(side fields), side dense)``.

Which features are user-side and which item-side: ``user_features`` / ``item_features``
if given, else by name (``user``/``user_*`` and behaviour-history sequences: user side;
``item``/``item_*``: item side), see :func:`tfdebias.models.base.split_sides`. Inputs
on neither side (context, domain, proxies) are not used by NCF.

``representation`` is ``[phi_GMF ; phi_MLP]``.
"""

from __future__ import annotations

from typing import Sequence

import keras
from keras import ops

from tfdebias.models import register
from tfdebias.models.base import DeepBackbone, split_sides


@register("ncf")
@keras.saving.register_keras_serializable(package="tfdebias")
class NeuMF(DeepBackbone):
    """GMF and MLP over user-side and item-side features, fused by one output layer.

    Args:
      schema: the data set's schema.
      embedding_dim: width of the GMF and MLP embeddings.
      hidden_units, activation, dropout, batch_norm, dnn_l2: the MLP tower.
      user_features, item_features: the two sides (default: by name, see module doc).
      embedding_l2: L2 penalty on looked-up embeddings.
    """

    def __init__(
        self,
        schema,
        user_features: Sequence[str] | None = None,
        item_features: Sequence[str] | None = None,
        **kwargs,
    ):
        super().__init__(schema, **kwargs)
        self.remember(
            user_features=None if user_features is None else list(user_features),
            item_features=None if item_features is None else list(item_features),
        )
        self.user_names, self.item_names = split_sides(self.schema, user_features, item_features)
        both = self.user_names + self.item_names
        self.gmf_embed = self.feature_embedding(include=both, name="gmf_embed")
        self.mlp_embed = self.feature_embedding(include=both, name="mlp_embed")
        self.gmf_dense = {}
        for side, names in (("user", self.user_names), ("item", self.item_names)):
            width = self.gmf_embed.dense_width(include=names)
            if width:
                proj = keras.layers.Dense(
                    self.embedding_dim, use_bias=False, name=f"gmf_{side}_dense"
                )
                self.gmf_dense[side] = proj
        self.dnn = self.deep_network("dnn")
        self.head = keras.layers.Dense(1, name="head")

    def _gmf_side(self, features, side, names):
        embedded = self.gmf_embed(features, include=names)
        vector = ops.sum(embedded["fields"], axis=1)  # (B, d)
        if side in self.gmf_dense:
            vector = vector + self.gmf_dense[side](embedded["dense"])
        return vector

    def forward(self, features, training=False):
        phi_gmf = self._gmf_side(features, "user", self.user_names) * self._gmf_side(
            features, "item", self.item_names
        )
        mlp_in = ops.concatenate(
            [
                self.flat_inputs(self.mlp_embed(features, include=self.user_names)),
                self.flat_inputs(self.mlp_embed(features, include=self.item_names)),
            ],
            axis=1,
        )
        return self.tower(phi_gmf, mlp_in, training=training)

    def tower(self, phi_gmf, mlp_in, training=False):
        """The prediction tower on given inputs: ``phi_GMF`` (B, d), already the
        element-wise product of the user and item vectors, and the MLP input (B, n);
        Eq. (11)-(12) after the embeddings. Returns ``(logits (B,), representation)``.

        Methods that build the inputs themselves (CP2Rec's ``[c, z']``) reuse it.
        """
        phi_mlp = self.dnn(mlp_in, training=training)
        combined = ops.concatenate([phi_gmf, phi_mlp], axis=1)
        return ops.reshape(self.head(combined), (-1,)), combined
