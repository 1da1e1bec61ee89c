"""Bi-interaction pooling (He & Chua, 2017, "Neural Factorization Machines", Eq. (4)):

    f_BI(V) = 1/2 [ (sum_i v_i)^2 - sum_i v_i^2 ]          (element-wise squares)

which equals ``sum_{i<j} v_i * v_j`` in O(F d) instead of O(F^2 d). Its gradient has the
same closed form, ``d f_BI / d v_j = sum_i v_i - v_j`` (per element): the layer hands it
to TensorFlow directly (two element-wise ops on (B, F, d)) instead of letting autodiff
broadcast and multiply its way back through both sums, which is most of an FM's backward
pass in the CTR benchmark."""

from __future__ import annotations

import keras
import tensorflow as tf
from keras import ops


@tf.custom_gradient
def bi_interaction(v):
    """``0.5 * ((sum_i v_i)**2 - sum_i v_i**2)`` over axis 1 of (B, F, d), with its
    closed-form gradient ``upstream * (sum_i v_i - v_j)``."""
    total = tf.reduce_sum(v, axis=1)  # (B, d)
    out = 0.5 * (tf.square(total) - tf.reduce_sum(tf.square(v), axis=1))

    def grad(upstream):
        return upstream[:, None, :] * (total[:, None, :] - v)

    return out, grad


@keras.saving.register_keras_serializable(package="tfdebias")
class BiInteraction(keras.layers.Layer):
    """Pools field embeddings (B, F, d) into their pairwise interactions (B, d).

    Args:
      field_weights: learn one scalar per field, ``v_i <- h_i v_i`` (initialised to 1),
        before pooling; needs a fixed ``F`` at build time.

    Example:

    >>> import numpy as np
    >>> v = np.array([[[1.0, 2.0], [3.0, 4.0]]], "float32")   # B=1, F=2, d=2
    >>> BiInteraction()(v).numpy().tolist()                    # v_1 * v_2
    [[3.0, 8.0]]
    """

    def __init__(self, field_weights: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.field_weights = bool(field_weights)
        self.weight_per_field = None

    def build(self, input_shape):
        if self.field_weights:
            self.weight_per_field = self.add_weight(
                name="field_weights", shape=(input_shape[1],), initializer="ones"
            )

    def call(self, inputs):
        v = inputs
        if self.weight_per_field is not None:
            v = v * ops.cast(self.weight_per_field, v.dtype)[None, :, None]
        return bi_interaction(v)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[2])

    def get_config(self):
        config = super().get_config()
        config.update(field_weights=self.field_weights)
        return config
