"""SASRec (Kang & McAuley, 2018): causal self-attention over the item history.

The sequential information encoder ``F`` of AMID Sec. 3.3 realised as ``num_blocks``
pre-LN transformer blocks with a learned position embedding. The attention mask
(:func:`~tfdebias.models.sequential.attention_mask`, ``causal=True``) lets position
``t`` attend only to real (non-padding) items at positions ``<= t``, so no output sees
a later item or a pad vector. The user is ``Mean`` of the outputs over real positions
and the score is Eq. (7) of AMID. Used alone it is the single-domain baseline.

>>> model = build("sasrec", schema, embedding_dim=32, num_blocks=2)   # doctest: +SKIP
"""

from __future__ import annotations

import keras

from tfdebias.models import register
from tfdebias.models.sequential import (SequentialBackbone, TransformerBlock, attention_mask,
                                         check_heads)


@keras.saving.register_keras_serializable(package="tfdebias")
@register("sasrec")
class SASRec(SequentialBackbone):
    """SASRec; ``num_blocks`` causal self-attention blocks with ``num_heads`` heads."""

    uses_positions = True
    causal = True

    def __init__(self, schema, num_blocks: int = 2, num_heads: int = 2, **kwargs):
        self.num_blocks, self.num_heads = int(num_blocks), int(num_heads)
        check_heads(self.num_heads, int(kwargs.get("embedding_dim", 32)))
        super().__init__(schema, **kwargs)
        self.remember(num_blocks=self.num_blocks, num_heads=self.num_heads)
        self.final_norm = [keras.layers.LayerNormalization(epsilon=1e-6)
                           for _ in range(self.n_domains)]

    def make_encoder(self, domain):
        return [TransformerBlock(self.embedding_dim, self.num_heads, self.dropout,
                                 name=f"block_{domain}_{i}") for i in range(self.num_blocks)]

    def attention_mask(self, mask):
        return attention_mask(mask, causal=self.causal)

    def run_encoder(self, domain, x, mask, training=False):
        att = self.attention_mask(mask)
        for block in self.encoders[domain]:
            x = block(x, att, training=training)
        return self.final_norm[domain](x)
