"""Wide & Deep (Cheng et al., 2016, "Wide & Deep Learning for Recommender Systems",
Eq. (3)):

    P(Y=1|x) = sigmoid(w_wide^T [x, phi(x)] + w_deep^T a^(l_f) + b)

The wide part is :class:`~tfdebias.layers.FeatureLinear` over the raw inputs (the
paper's hand-made cross-product transformations ``phi(x)`` are not built; add a crossed
feature to the data set to get one). The deep part embeds every field and runs an MLP.
The two parts have separate parameters, trained jointly.

``representation`` is the deep part's last hidden layer ``a^(l_f)``.
"""

from __future__ import annotations

import keras
from keras import ops

from tfdebias.models import register
from tfdebias.models.mlp import DeepNetwork


@register("wide_deep")
@keras.saving.register_keras_serializable(package="tfdebias")
class WideDeep(DeepNetwork):
    """Wide (linear) + deep (embedding + MLP) logits, summed: the ``mlp`` backbone
    (:class:`~tfdebias.models.mlp.DeepNetwork`, whose arguments it takes) plus a wide
    :class:`~tfdebias.layers.FeatureLinear` part.

    Args: those of :class:`~tfdebias.models.mlp.DeepNetwork` (``embedding_l2`` also
    penalises the wide weights).
    """

    first_order_ids = True

    def __init__(self, schema, *args, **kwargs):
        super().__init__(schema, *args, **kwargs)
        self.wide = self.shared_linear(self.embed, name="wide")

    def forward(self, features, training=False):
        embedded = self.embed(features)
        hidden = self.dnn(self.flat_inputs(embedded), training=training)
        logits = ops.reshape(self.wide(features, embedded) + self.head(hidden), (-1,))
        return logits, hidden
