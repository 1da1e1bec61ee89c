"""Choosing a ``tf.distribute`` strategy by name.

``auto``       Mirrored over all GPUs when there are several, else the default strategy.
``default``    one device.
``mirrored``   ``MirroredStrategy`` over all GPUs, or over every logical CPU device when
               there is no GPU (tests split the CPU into 2 logical devices).
``multi-worker`` ``MultiWorkerMirroredStrategy`` from ``TF_CONFIG``. Keras 3 ``fit()`` does
               not run under it (keras-team/keras#20585): use
               :func:`tfdebias.training.distributed.fit_distributed`.
"""

from __future__ import annotations

import json
import os

from tfdebias.errors import UsageError

STRATEGIES = ("auto", "default", "mirrored", "multi-worker")


def get_strategy(name: str = "auto"):
    import tensorflow as tf

    if name not in STRATEGIES:
        raise UsageError(f"unknown strategy {name!r}; expected one of {STRATEGIES}")
    if name == "multi-worker":
        # Before anything initialises TensorFlow's runtime (list_logical_devices does):
        # collective ops must be configured at program startup.
        return _multi_worker()
    gpus = tf.config.list_logical_devices("GPU")
    if name == "auto":
        return tf.distribute.MirroredStrategy() if len(gpus) > 1 else tf.distribute.get_strategy()
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        devices = [d.name for d in gpus] or [d.name for d in tf.config.list_logical_devices("CPU")]
        return tf.distribute.MirroredStrategy(devices=devices)
    raise AssertionError(name)


def _multi_worker():
    import tensorflow as tf

    tf_config = os.environ.get("TF_CONFIG")
    if not tf_config:
        raise UsageError("--strategy multi-worker needs the TF_CONFIG environment variable")
    try:
        json.loads(tf_config)
    except json.JSONDecodeError as e:
        raise UsageError(f"TF_CONFIG is not valid JSON: {e}") from None
    return tf.distribute.MultiWorkerMirroredStrategy()


def split_cpu(n: int = 2) -> None:
    """Split the physical CPU into ``n`` logical devices (before TF initialises)."""
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(n)]
    )
