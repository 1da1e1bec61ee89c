"""Training precision: float32 (the default) or Keras mixed precision with bfloat16.

``precision="mixed_bfloat16"`` (``tfdebias train --precision mixed_bfloat16``,
``TrainConfig(precision=...)``) builds a model under Keras' ``mixed_bfloat16`` dtype
policy: its matmuls, activations and looked-up embedding rows are computed in
bfloat16, while every variable (embedding tables, kernels, optimizer slots) stays
float32 and so does the loss (``Backbone.call`` casts the logits back to float32).
bfloat16 keeps float32's exponent range, so no loss scaling is needed (float16 would
need it, and is not offered).

When it pays: on CPUs with native bfloat16 arithmetic (AVX512-BF16, AMX) and on GPUs
and TPUs, where the dense layers' matmuls run faster. On the benchmark's DeepFM
(``benchmarks/ctr_throughput.py``, variant ``lazy_adam_spe8_bf16``; a 2-core CPU with
AVX512-BF16) it trains on less CPU time per example than float32 at the same
validation AUC (figures in ``benchmarks/README.md``). On CPUs without bfloat16
instructions the arithmetic may be emulated and slower: measure first. It changes the
arithmetic (8 significant bits in the activations), so it is an explicit choice, never
a default.

Which models: those trained with the engine's loss (``compile(loss=...)``: the CTR
backbones of :mod:`tfdebias.models` and the cross-domain CTR baselines, e.g.
``deepfm``, ``dcn``, ``ncf``, ``din``, ``conet``; ``tests/test_precision.py`` trains
each). Models that compute their own loss (the debiasing methods, the sequential
recommenders) mix float32 tensors (propensities, weights, targets) into it and are
trained in float32 only; asking for another precision raises
:class:`~tfdebias.errors.UsageError`.

Keras captures a layer's dtype policy when the layer is *constructed*, and a model's
sub-layers do not inherit the model's policy. So a model is built inside
:func:`policy_scope` (:func:`tfdebias.training.build_model` does it), and
``Backbone.from_config`` rebuilds a saved model under the policy it was saved with.
"""

from __future__ import annotations

import contextlib

from tfdebias.errors import UsageError

#: the values ``TrainConfig.precision`` and ``tfdebias train --precision`` accept
PRECISIONS = ("float32", "mixed_bfloat16")


def check(precision: str) -> str:
    """``precision`` if it is one of :data:`PRECISIONS`, else :class:`UsageError`."""
    if precision not in PRECISIONS:
        raise UsageError(f"precision must be one of {list(PRECISIONS)}, got {precision!r}")
    return precision


@contextlib.contextmanager
def policy_scope(policy):
    """Make ``policy`` (a name or a ``keras.DTypePolicy``) Keras' global dtype policy
    while the block runs, and restore the previous one after it (also on error).
    Layers constructed inside the block keep ``policy``."""
    import keras

    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)
