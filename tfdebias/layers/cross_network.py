"""Cross network of Deep & Cross Network (Wang et al., 2021, "DCN V2", Eq. (1)):

    x_{l+1} = x_0 * (W_l x_l + b_l) + x_l

built from ``keras_rs.layers.FeatureCross`` (one per layer). With ``projection_dim``
``W_l = U_l V_l`` is low-rank (DCN-M, Eq. (2)). The original DCN's vector weights
(Wang et al., 2017, Eq. (3): ``x_0 x_l^T w_l + b_l + x_l``) are the rank-1 special case
in spirit; this is the V2 form.
"""

from __future__ import annotations

import keras
import keras_rs


@keras.saving.register_keras_serializable(package="tfdebias")
class CrossNetwork(keras.layers.Layer):
    """``num_layers`` explicit feature-cross layers: (B, n) -> (B, n).

    Args:
      num_layers: number of cross layers.
      projection_dim: rank of each ``W_l`` (``None`` = full matrix).
      diag_scale: added to the diagonal of ``W_l`` (``keras_rs`` option, 0 = none).
      l2: L2 penalty on the kernels.

    Example:

    >>> import numpy as np
    >>> tuple(CrossNetwork(num_layers=2)(np.ones((3, 6), "float32")).shape)
    (3, 6)
    """

    def __init__(
        self,
        num_layers: int = 3,
        projection_dim: int | None = None,
        diag_scale: float = 0.0,
        l2: float = 0.0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.num_layers = int(num_layers)
        self.projection_dim = None if projection_dim is None else int(projection_dim)
        self.diag_scale = float(diag_scale)
        self.l2 = float(l2)
        self.crosses = [
            keras_rs.layers.FeatureCross(
                projection_dim=self.projection_dim,
                diag_scale=self.diag_scale,
                kernel_regularizer=keras.regularizers.L2(self.l2) if self.l2 else None,
            )
            for _ in range(self.num_layers)
        ]

    def call(self, inputs):
        x0 = inputs
        x = x0
        for cross in self.crosses:
            x = cross(x0, x)
        return x

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(
            num_layers=self.num_layers,
            projection_dim=self.projection_dim,
            diag_scale=self.diag_scale,
            l2=self.l2,
        )
        return config
