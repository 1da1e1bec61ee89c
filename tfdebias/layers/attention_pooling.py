"""The activation unit of Deep Interest Network (Zhou et al., 2018, "Deep Interest
Network for Click-Through Rate Prediction", Eq. (3)):

    v_U(A) = sum_j a(e_j, v_A) e_j

where ``a`` is a small MLP over ``[v_A, e_j, v_A - e_j, v_A * e_j]`` (the paper's outer
product is replaced by the element-wise product, as in its released code). DIN leaves
the weights un-normalised ("the normalization with softmax is abandoned"); set
``normalize=True`` for softmax weights that sum to one over the valid positions.
Padding positions get exactly zero weight either way.

Other papers feed the activation unit a different concatenation; ``terms`` picks it
from ``query`` (v_A), ``key`` (e_j), ``difference`` (v_A - e_j), ``product``
(v_A * e_j) and ``context`` (a per-row vector such as the user embedding, passed as
``context=`` to the call). DADIN's item-level attention (the DADIN paper, Eq. (3)),
``h^T ReLU(W [r || q || p || r * q])`` followed by a softmax (Eq. (2)), is
``AttentionPooling([d], activation="relu", normalize=True,
terms=("key", "query", "context", "product"))``.
"""

from __future__ import annotations

from typing import Sequence

import keras
from keras import ops

from tfdebias.layers.mlp import MLP

#: the pieces the activation unit may read
TERMS = ("query", "key", "difference", "product", "context")
#: DIN's activation unit input (Zhou et al., 2018, Fig. 2 / Eq. (3))
TERMS_DIN = ("query", "key", "difference", "product")


@keras.saving.register_keras_serializable(package="tfdebias")
class AttentionPooling(keras.layers.Layer):
    """Query-aware, mask-aware pooling of a sequence of keys.

    Args:
      hidden_units: widths of the activation unit's MLP.
      activation: its activation (DIN uses PReLU/Dice; ``"sigmoid"`` as in DeepCTR).
      normalize: ``False`` = DIN's raw weights (a linear output, masked to 0);
        ``True`` = softmax over the valid positions.
      dropout: dropout inside the activation unit.
      terms: what the activation unit reads, concatenated in this order (see the module
        docstring); the default is DIN's ``("query", "key", "difference", "product")``.

    Call: ``layer(query, keys, mask=None, return_weights=False, training=None,
    context=None)`` with
    ``query`` (B, d) or (B, 1, d), ``keys`` (B, L, d), ``mask`` (B, L) bool (``True`` =
    real position). Returns the pooled (B, d), and the weights (B, L) if asked. A row
    whose positions are all padding pools to zeros.

    Example:

    >>> import numpy as np
    >>> att = AttentionPooling([8], normalize=True)
    >>> q = np.ones((2, 4), "float32"); k = np.ones((2, 3, 4), "float32")
    >>> mask = np.array([[True, True, False], [True, False, False]])
    >>> pooled, w = att(q, k, mask=mask, return_weights=True)
    >>> np.round(w.numpy(), 3).tolist()
    [[0.5, 0.5, 0.0], [1.0, 0.0, 0.0]]
    """

    def __init__(
        self,
        hidden_units: Sequence[int] = (80, 40),
        activation="sigmoid",
        normalize: bool = False,
        dropout: float = 0.0,
        terms: Sequence[str] = TERMS_DIN,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.terms = tuple(str(t) for t in terms)
        bad = [t for t in self.terms if t not in TERMS]
        if bad or not self.terms:
            raise ValueError(f"AttentionPooling terms={list(terms)}: each must be one of {TERMS}")
        self.hidden_units = [int(u) for u in hidden_units]
        self.activation = activation
        self.normalize = bool(normalize)
        self.dropout = float(dropout)
        self.unit = MLP(self.hidden_units, activation=activation, dropout=self.dropout)
        self.score = keras.layers.Dense(1)
        self.supports_masking = True  # consumes the key mask; the output carries none

    def compute_mask(self, inputs, mask=None):
        return None

    def call(self, query, keys, mask=None, return_weights=False, training=None, context=None):
        length = ops.shape(keys)[1]
        q = ops.reshape(query, (-1, 1, ops.shape(keys)[-1]))
        q = ops.broadcast_to(q, ops.shape(keys))
        parts = {"query": q, "key": keys}
        if "difference" in self.terms:
            parts["difference"] = q - keys
        if "product" in self.terms:
            parts["product"] = q * keys
        if "context" in self.terms:
            if context is None:
                raise ValueError("AttentionPooling with the 'context' term needs context=")
            c = ops.reshape(context, (-1, 1, ops.shape(context)[-1]))
            parts["context"] = ops.broadcast_to(
                c, (ops.shape(keys)[0], length, ops.shape(context)[-1]))
        h = ops.concatenate([parts[t] for t in self.terms], axis=-1)
        scores = ops.squeeze(self.score(self.unit(h, training=training)), axis=-1)  # (B, L)
        if mask is None:
            mask = ops.ones((ops.shape(keys)[0], length), dtype="bool")
        mask = ops.cast(mask, "bool")
        valid = ops.cast(mask, scores.dtype)
        if self.normalize:
            scores = ops.where(mask, scores, ops.full_like(scores, -1e9))
            weights = ops.softmax(scores, axis=-1) * valid  # all-padding rows -> 0
        else:
            weights = scores * valid
        pooled = ops.sum(weights[..., None] * keys, axis=1)
        return (pooled, weights) if return_weights else pooled

    def get_config(self):
        config = super().get_config()
        config.update(
            hidden_units=list(self.hidden_units),
            activation=self.activation,
            normalize=self.normalize,
            dropout=self.dropout,
            terms=list(self.terms),
        )
        return config
