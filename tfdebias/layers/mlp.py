"""A multi-layer perceptron: ``Dense -> [BatchNorm] -> activation -> [Dropout]`` per layer."""

from __future__ import annotations

from typing import Sequence

import keras


@keras.saving.register_keras_serializable(package="tfdebias")
class MLP(keras.layers.Layer):
    """Stacked fully connected layers (the "deep" part of most CTR models).

    Args:
      hidden_units: widths of the hidden layers, e.g. ``(256, 128)``; empty = identity.
      activation: activation after each layer (any Keras activation name).
      dropout: dropout rate after each layer (0 = none).
      batch_norm: insert ``BatchNormalization`` between each ``Dense`` and activation.
      l2: L2 penalty on the kernels.
      output_activation: activation of the *last* layer if different (``None`` = same).

    Input (B, ..., n) -> output (B, ..., hidden_units[-1]).

    Example:

    >>> import numpy as np
    >>> mlp = MLP([8, 4], dropout=0.1)
    >>> tuple(mlp(np.zeros((2, 5), "float32")).shape)
    (2, 4)
    """

    def __init__(
        self,
        hidden_units: Sequence[int] = (256, 128),
        activation="relu",
        dropout: float = 0.0,
        batch_norm: bool = False,
        l2: float = 0.0,
        output_activation=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.hidden_units = [int(u) for u in hidden_units]
        self.activation = activation
        self.dropout = float(dropout)
        self.batch_norm = bool(batch_norm)
        self.l2 = float(l2)
        self.output_activation = output_activation
        reg = keras.regularizers.L2(self.l2) if self.l2 else None
        self.stack = []
        for i, units in enumerate(self.hidden_units):
            last = i == len(self.hidden_units) - 1
            act = output_activation if (last and output_activation is not None) else activation
            self.stack.append(
                keras.layers.Dense(units, use_bias=not self.batch_norm, kernel_regularizer=reg)
            )
            if self.batch_norm:
                self.stack.append(keras.layers.BatchNormalization())
            self.stack.append(keras.layers.Activation(act))
            if self.dropout:
                self.stack.append(keras.layers.Dropout(self.dropout))

    def call(self, inputs, training=None):
        x = inputs
        for layer in self.stack:
            x = layer(x, training=training)
        return x

    def compute_output_shape(self, input_shape):
        if not self.hidden_units:
            return input_shape
        return tuple(input_shape[:-1]) + (self.hidden_units[-1],)

    def get_config(self):
        config = super().get_config()
        config.update(
            hidden_units=list(self.hidden_units),
            activation=_serialize_activation(self.activation),
            dropout=self.dropout,
            batch_norm=self.batch_norm,
            l2=self.l2,
            output_activation=_serialize_activation(self.output_activation),
        )
        return config


def _serialize_activation(activation):
    """Names stay names; callables go through Keras serialisation."""
    if activation is None or isinstance(activation, str):
        return activation
    return keras.activations.serialize(keras.activations.get(activation))
