"""Second-order term of a factorization machine (Rendle, 2010, "Factorization Machines",
Eq. (1) and the O(kn) form of Lemma 3.1):

    sum_{i<j} <v_i, v_j> = 1/2 sum_f [ (sum_i v_{i,f})^2 - sum_i v_{i,f}^2 ]

for one-hot fields (x_i = 1), i.e. the sum over ``d`` of :class:`BiInteraction`."""

from __future__ import annotations

import keras
from keras import ops

from tfdebias.layers.bi_interaction import BiInteraction


@keras.saving.register_keras_serializable(package="tfdebias")
class FMInteraction(keras.layers.Layer):
    """FM pairwise-interaction logit: (B, F, d) -> (B, 1).

    Example:

    >>> import numpy as np
    >>> v = np.array([[[1.0, 2.0], [3.0, 4.0], [0.0, 1.0]]], "float32")
    >>> FMInteraction()(v).numpy().tolist()    # <v1,v2> + <v1,v3> + <v2,v3> = 11 + 2 + 4
    [[17.0]]
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.pooling = BiInteraction()

    def call(self, inputs):
        return ops.sum(self.pooling(inputs), axis=1, keepdims=True)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], 1)
