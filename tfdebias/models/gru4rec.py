"""GRU4Rec (Hidasi et al., 2015): a GRU over the item history, one per domain.

The sequential information encoder ``F`` of AMID Sec. 3.3 realised as a GRU: padding
positions are masked (Keras skips them and carries the state), so a left-padded
history starts from the zero state at its first real item. ``h_t`` is the GRU output
after item ``t``; the user is ``Mean`` of the outputs over real positions and the score
is Eq. (7) of AMID (see :mod:`tfdebias.models.sequential`). Used alone it is the
single-domain baseline (the target domain's history only).

>>> model = build("gru4rec", schema, embedding_dim=32)    # doctest: +SKIP
"""

from __future__ import annotations

import keras

from tfdebias.models import register
from tfdebias.models.sequential import SequentialBackbone


@keras.saving.register_keras_serializable(package="tfdebias")
@register("gru4rec")
class GRU4Rec(SequentialBackbone):
    """GRU4Rec; ``num_layers`` stacked GRUs of width ``embedding_dim``."""

    def __init__(self, schema, num_layers: int = 1, **kwargs):
        self.num_layers = int(num_layers)
        super().__init__(schema, **kwargs)
        self.remember(num_layers=self.num_layers)

    def make_encoder(self, domain):
        return [keras.layers.GRU(self.embedding_dim, return_sequences=True, dropout=0.0,
                                 name=f"gru_{domain}_{i}") for i in range(self.num_layers)]

    def run_encoder(self, domain, x, mask, training=False):
        for gru in self.encoders[domain]:
            x = gru(x, mask=mask, training=training)
        return x
