"""xDeepFM (Lian et al., 2018, "xDeepFM: Combining Explicit and Implicit Feature
Interactions for Recommender Systems", Eq. (6)-(9)):

    X^k_{h,*} = sum_{i=1}^{H_{k-1}} sum_{j=1}^{m} W^{k,h}_{ij} (X^{k-1}_{i,*} o X^0_{j,*})   (Eq. (6))
    p^k_h = sum_{d} X^k_{h,d}   (sum pooling, Eq. (7));   p+ = [p^1, ..., p^T]
    logit = w_linear(x) + w_dnn^T MLP(flat(X^0)) + w_cin^T p+ + b              (Eq. (9))

The Compressed Interaction Network (CIN) is one ``einsum`` per layer: the outer
product ``z^k = X^{k-1} (x) X^0`` of shape (B, H_{k-1}, m, d) is contracted with the
layer's filters ``W^k`` (H_{k-1}, m, H_k) -- the paper's 1x1 convolution. With
``cin_split_half`` (the paper's default in its released code) half of each hidden
layer's feature maps go to the output and half to the next layer.

``representation`` is ``[p+ || MLP output]``.
"""

from __future__ import annotations

from typing import Sequence

import keras
from keras import ops

from tfdebias.models import register
from tfdebias.models.base import DeepBackbone


@keras.saving.register_keras_serializable(package="tfdebias")
class CompressedInteraction(keras.layers.Layer):
    """CIN of xDeepFM (Eq. (6)-(7)): field embeddings (B, m, d) -> p+ (B, sum H_k).

    Example:

    >>> import numpy as np
    >>> cin = CompressedInteraction([4, 4], split_half=False)
    >>> tuple(cin(np.ones((2, 3, 5), "float32")).shape)
    (2, 8)
    """

    def __init__(self, layer_sizes: Sequence[int] = (128, 128), split_half: bool = True,
                 activation="linear", **kwargs):
        super().__init__(**kwargs)
        self.layer_sizes = [int(u) for u in layer_sizes]
        self.split_half = bool(split_half)
        self.activation = keras.activations.get(activation)
        self._activation_name = activation if isinstance(activation, str) else "linear"
        self.filters = []
        self.biases = []

    def build(self, input_shape):
        m = int(input_shape[1])
        prev = m
        for k, size in enumerate(self.layer_sizes):
            self.filters.append(self.add_weight(name=f"filter_{k}", shape=(prev, m, size),
                                                initializer="glorot_uniform"))
            self.biases.append(self.add_weight(name=f"bias_{k}", shape=(size,), initializer="zeros"))
            last = k == len(self.layer_sizes) - 1
            prev = size // 2 if (self.split_half and not last) else size
        self.built = True

    def call(self, x0):
        xk = x0
        pooled = []
        for k, (w, b) in enumerate(zip(self.filters, self.biases)):
            # z^k_{b,i,j,d} = X^{k-1}_{b,i,d} X^0_{b,j,d};  X^k_{b,h,d} = sum_ij W_{ijh} z_{b,i,j,d}
            z = ops.einsum("bid,bjd->bijd", xk, x0)
            out = ops.einsum("bijd,ijh->bhd", z, w) + b[None, :, None]
            out = self.activation(out)
            last = k == len(self.filters) - 1
            if self.split_half and not last:
                half = self.layer_sizes[k] // 2
                xk, direct = out[:, :half, :], out[:, half:, :]
            else:
                xk, direct = out, out
            pooled.append(ops.sum(direct, axis=-1))  # Eq. (7): sum over the embedding dim
        return ops.concatenate(pooled, axis=1)

    def output_width(self) -> int:
        n = len(self.layer_sizes)
        return sum(s - s // 2 if (self.split_half and k < n - 1) else s
                   for k, s in enumerate(self.layer_sizes))

    def get_config(self):
        config = super().get_config()
        config.update(layer_sizes=list(self.layer_sizes), split_half=self.split_half,
                      activation=self._activation_name)
        return config


@register("xdeepfm")
@keras.saving.register_keras_serializable(package="tfdebias")
class XDeepFM(DeepBackbone):
    """xDeepFM: linear + CIN + DNN over shared field embeddings (Eq. (9)).

    Args:
      schema: the data set's schema.
      embedding_dim: width of every field embedding.
      cin_layer_sizes: feature maps per CIN layer (H_1, ..., H_T).
      cin_split_half: the released code's split of each hidden CIN layer.
      hidden_units, activation, dropout, batch_norm, dnn_l2: the DNN part.
      embedding_l2: L2 penalty on looked-up embeddings and id weights.
    """

    def __init__(
        self,
        schema,
        cin_layer_sizes: Sequence[int] = (128, 128),
        cin_split_half: bool = True,
        **kwargs,
    ):
        super().__init__(schema, **kwargs)
        self.remember(
            cin_layer_sizes=[int(u) for u in cin_layer_sizes], cin_split_half=bool(cin_split_half),
        )
        self.embed = self.feature_embedding(name="embed", first_order=True)
        self.linear = self.shared_linear(self.embed)
        self.cin = CompressedInteraction(cin_layer_sizes, cin_split_half, name="cin")
        self.dnn = self.deep_network("dnn")
        self.cin_head = keras.layers.Dense(1, use_bias=False, name="cin_head")
        self.dnn_head = keras.layers.Dense(1, name="dnn_head")

    def forward(self, features, training=False):
        emb = self.embed(features)
        p = self.cin(emb["fields"])
        hidden = self.dnn(self.flat_inputs(emb), training=training)
        logits = self.linear(features, emb) + self.cin_head(p) + self.dnn_head(hidden)
        return ops.reshape(logits, (-1,)), ops.concatenate([p, hidden], axis=1)
