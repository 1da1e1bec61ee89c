"""Neural Factorization Machine (He & Chua, 2017, "Neural Factorization Machines for
Sparse Predictive Analytics", Eq. (1)-(5)):

    logit = w_0 + sum_i w_i x_i + h^T MLP(f_BI(V_x)),
    f_BI(V_x) = 1/2 [ (sum_i v_i)^2 - sum_i v_i^2 ]                        (Eq. (4))

The first-order part is :class:`~tfdebias.layers.FeatureLinear`; the bi-interaction
pooling (:class:`~tfdebias.layers.BiInteraction`) runs over the field embeddings
(categorical features and mean-pooled sequences); dense inputs enter the linear part
only (as in DeepCTR). The paper's dropout on the bi-interaction vector is ``bi_dropout``.

``representation`` is the MLP's last hidden layer.
"""

from __future__ import annotations

import keras
from keras import ops

from tfdebias.layers.bi_interaction import BiInteraction
from tfdebias.models import register
from tfdebias.models.base import DeepBackbone


@register("nfm")
@keras.saving.register_keras_serializable(package="tfdebias")
class NFM(DeepBackbone):
    """NFM: linear part + MLP over bi-interaction pooling.

    Args:
      schema: the data set's schema.
      embedding_dim: width of every field embedding.
      hidden_units, activation, dropout, batch_norm, dnn_l2: the MLP above the pooling.
      bi_dropout: dropout on the bi-interaction vector (the paper's Sec. 3.2.2).
      embedding_l2: L2 penalty on looked-up embeddings and id weights.

    Example:

    >>> model = NFM(schema, embedding_dim=8, hidden_units=(32,))   # doctest: +SKIP
    """

    def __init__(
        self,
        schema,
        bi_dropout: float = 0.0,
        **kwargs,
    ):
        super().__init__(schema, **kwargs)
        self.remember(bi_dropout=float(bi_dropout))
        self.embed = self.feature_embedding(name="embed", first_order=True)
        self.linear = self.shared_linear(self.embed)
        self.interaction = BiInteraction(name="bi_interaction")
        self.bi_drop = keras.layers.Dropout(float(bi_dropout), name="bi_dropout")
        self.dnn = self.deep_network("dnn")
        self.head = keras.layers.Dense(1, use_bias=False, name="head")

    def forward(self, features, training=False):
        embedded = self.embed(features)
        bi = self.interaction(embedded["fields"])
        hidden = self.dnn(self.bi_drop(bi, training=training), training=training)
        logits = ops.reshape(self.linear(features, embedded) + self.head(hidden), (-1,))
        return logits, hidden
