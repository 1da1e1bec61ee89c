"""Reusable Keras layers. Each has ``get_config`` and a docstring example.

========================  ============================================================
``FeatureEmbedding``      schema -> field embeddings (B, F, d) + dense inputs (B, n)
``GradientReversal``      identity forward, gradient x (-scale) backward
``BiInteraction``         FM bi-interaction pooling (B, F, d) -> (B, d)
``FeatureLinear``         first-order (LR / wide) logit of a feature dict -> (B, 1)
``FMInteraction``         FM second-order logit (B, F, d) -> (B, 1)
``CrossNetwork``          DCN cross layers (B, n) -> (B, n), via keras_rs FeatureCross
``MLP``                   Dense/BatchNorm/activation/Dropout stack
``AttentionPooling``      DIN activation unit: query vs keys, mask-aware
========================  ============================================================
"""

from tfdebias.layers.attention_pooling import AttentionPooling
from tfdebias.layers.bi_interaction import BiInteraction
from tfdebias.layers.cross_network import CrossNetwork
from tfdebias.layers.feature_embedding import FeatureEmbedding, as_schema
from tfdebias.layers.feature_linear import FeatureLinear
from tfdebias.layers.fm_interaction import FMInteraction
from tfdebias.layers.gradient_reversal import GradientReversal, reverse_gradient
from tfdebias.layers.mlp import MLP

__all__ = [
    "AttentionPooling",
    "BiInteraction",
    "CrossNetwork",
    "FeatureEmbedding",
    "FeatureLinear",
    "FMInteraction",
    "GradientReversal",
    "MLP",
    "as_schema",
    "reverse_gradient",
]
