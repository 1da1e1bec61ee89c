"""Gradient reversal layer (Ganin & Lempitsky, 2015, "Unsupervised Domain Adaptation by
Backpropagation", Eq. (13)-(14)): identity on the forward pass, gradient multiplied by
``-scale`` on the backward pass, so the layers below *maximise* the loss of whatever
sits above (a domain classifier, a proxy predictor)."""

from __future__ import annotations

import keras
import tensorflow as tf


@tf.custom_gradient
def reverse_gradient(x, scale):
    """``R_scale(x) = x`` forward; ``dR/dx = -scale * I`` backward (Eq. (14))."""

    def grad(dy):
        return -tf.cast(scale, dy.dtype) * dy, None

    return tf.identity(x), grad


@keras.saving.register_keras_serializable(package="tfdebias")
class GradientReversal(keras.layers.Layer):
    """Identity forward, gradient times ``-scale`` backward.

    ``scale`` (the paper's lambda) lives in a non-trainable variable so a schedule can
    change it during training without retracing: ``layer.set_scale(0.3)``.

    Example:

    >>> import tensorflow as tf
    >>> grl = GradientReversal(scale=0.5)
    >>> x = tf.constant([1.0, 2.0])
    >>> with tf.GradientTape() as tape:
    ...     tape.watch(x)
    ...     y = tf.reduce_sum(3.0 * grl(x))
    >>> tape.gradient(y, x).numpy().tolist()
    [-1.5, -1.5]
    """

    def __init__(self, scale: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        self._scale = self.add_weight(
            name="scale",
            shape=(),
            initializer=keras.initializers.Constant(float(scale)),
            trainable=False,
            dtype="float32",
        )

    @property
    def scale(self) -> float:
        return float(keras.ops.convert_to_numpy(self._scale))

    def set_scale(self, value: float) -> None:
        """Change lambda (e.g. the schedule 2/(1+exp(-10 p)) - 1 of the paper)."""
        self._scale.assign(float(value))

    def call(self, inputs):
        return reverse_gradient(inputs, tf.convert_to_tensor(self._scale))

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(scale=self.scale)
        return config
