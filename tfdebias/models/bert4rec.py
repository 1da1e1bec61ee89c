"""BERT4Rec (Sun et al., 2019): bidirectional self-attention with a [MASK] token.

The sequential information encoder ``F`` of AMID Sec. 3.3 realised as ``num_blocks``
transformer blocks **without** the causal mask: every real position attends to every
real position (padding hidden by the key mask,
:func:`~tfdebias.models.sequential.attention_mask` with ``causal=False``).

As in BERT4Rec's next-item inference, the history is shifted left by one and the
[MASK] token (id ``n_items``, one row past the vocabulary) is appended at the most
recent position, whose output is the prediction slot. During training a fraction
``mask_prob`` of the real items is also replaced by [MASK] (the Cloze corruption,
:meth:`BERT4Rec.corrupt`); the score is Eq. (7) of AMID on ``Mean`` over real positions.
Trained alone it takes the same pointwise loss as the other backbones (as in the
authors' code, which trains every backbone through the same BCE head); inside AMID with
``position_negatives`` the recommendation term adds BERT4Rec's Cloze objective: each
hidden item is predicted from its own position's output (a sampled softmax, see
:class:`tfdebias.methods.amid.AMID`).

>>> model = build("bert4rec", schema, embedding_dim=32)   # doctest: +SKIP
"""

from __future__ import annotations

import keras
import tensorflow as tf

from tfdebias.models import register
from tfdebias.models.sasrec import SASRec


@keras.saving.register_keras_serializable(package="tfdebias")
@register("bert4rec")
class BERT4Rec(SASRec):
    """BERT4Rec; bidirectional blocks, [MASK] appended, Cloze masking at ``mask_prob``."""

    causal = False

    def __init__(self, schema, mask_prob: float = 0.2, **kwargs):
        self.mask_prob = float(mask_prob)
        super().__init__(schema, **kwargs)
        self.remember(mask_prob=self.mask_prob)

    #: whether :meth:`prepare_ids` draws the Cloze corruption itself; a caller that needs
    #: to know which positions were hidden (AMID's Cloze term) sets it to ``False`` and
    #: corrupts the histories with :meth:`corrupt` before encoding them
    corrupt_in_encoder = True

    def corrupt(self, ids):
        """The Cloze corruption: ``(ids with [MASK] at the hidden positions, hidden (B, T))``,
        each real item hidden with probability ``mask_prob``."""
        ids = tf.cast(ids, tf.int64)
        hide = (tf.random.uniform(tf.shape(ids)) < self.mask_prob) & (ids > 0)
        return tf.where(hide, tf.fill(tf.shape(ids), tf.cast(self.mask_id, ids.dtype)), ids), hide

    def prepare_ids(self, ids, training=False):
        b = tf.shape(ids)[0]
        if training and self.mask_prob > 0 and self.corrupt_in_encoder:
            ids, _ = self.corrupt(ids)
        # the history is empty for a domain the user does not have: keep it empty
        has = tf.reduce_any(ids > 0, axis=1, keepdims=True)
        last = tf.where(has, tf.fill([b, 1], tf.cast(self.mask_id, ids.dtype)),
                        tf.zeros([b, 1], ids.dtype))
        return tf.concat([ids[:, 1:], last], axis=1)
