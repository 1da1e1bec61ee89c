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

import keras
from keras import ops

from tfdebias.layers.fm_interaction import FMInteraction
from tfdebias.models import register
from tfdebias.models.mlp import DeepNetwork


@register("deepfm")
@keras.saving.register_keras_serializable(package="tfdebias")
class DeepFM(DeepNetwork):
    """FM and an MLP over shared embeddings; logits summed: the ``mlp`` backbone
    (:class:`~tfdebias.models.mlp.DeepNetwork`, whose arguments it takes) plus the FM
    component on its embeddings.

    Args: those of :class:`~tfdebias.models.mlp.DeepNetwork`: ``embedding_dim`` is also
    the FM factor size, ``hidden_units, activation, dropout, batch_norm, dnn_l2`` the
    deep component, ``embedding_l2`` the L2 penalty on looked-up embeddings and
    first-order weights.
    """

    first_order_ids = True

    def __init__(self, schema, *args, **kwargs):
        super().__init__(schema, *args, **kwargs)
        self.linear = self.shared_linear(self.embed)
        self.fm = FMInteraction(name="fm")

    def forward(self, features, training=False):
        embedded = self.embed(features)
        y_fm = self.linear(features, embedded) + self.fm(embedded["fields"])  # (B, 1)
        hidden = self.dnn(self.flat_inputs(embedded), training=training)
        y_dnn = self.head(hidden)
        return ops.reshape(y_fm + y_dnn, (-1,)), hidden
