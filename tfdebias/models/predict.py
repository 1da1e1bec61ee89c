"""Calling a model on whole column sets: batch prediction and serving input specs.

>>> import numpy as np
>>> predict(lambda b: b["x"] * 2.0, {"x": np.arange(5.0)}, batch_size=2)
array([0., 2., 4., 6., 8.])
>>> predict(lambda b: np.stack([b["x"], -b["x"]], 1), {"x": np.arange(3.0)}, full=True).shape
(3, 2)
"""

from __future__ import annotations

import weakref
from typing import Callable, Mapping, Sequence

import numpy as np

_COMPILED: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def _compiled(model) -> Callable:
    import tensorflow as tf

    fn = _COMPILED.get(model)
    if fn is None:
        fn = tf.function(lambda x: model(x, training=False), reduce_retracing=True)
        _COMPILED[model] = fn
    return fn


def predict(model, columns: Mapping[str, np.ndarray], *, inputs: Sequence[str] | None = None,
            batch_size: int = 8192, compiled: bool = False, full: bool = False,
            dtype=np.float64) -> np.ndarray:
    """The model's first output for every row of ``columns``, as a float64 array (n,);
    with ``full=True`` the whole per-row output (n, ...) (e.g. a tower's vectors), in
    ``dtype``.

    ``model`` is a Keras model (called as ``model(batch, training=False)``) or any function
    of a batch dict returning (B,) or (B, 1). Batches are numpy slices of the ``inputs``
    columns (default: all), converted to tensors and handed over eagerly: several times
    faster than a ``tf.data`` pipeline for the sizes an evaluation scores. ``compiled``
    wraps a Keras model in one cached ``tf.function`` (worth it for many small calls,
    e.g. every validation of a custom training loop).
    """
    import keras
    import tensorflow as tf

    names = list(columns) if inputs is None else list(inputs)
    cols = {k: np.asarray(columns[k]) for k in names}
    n = len(cols[names[0]]) if names else 0
    if not n:
        return np.zeros(0, dtype)
    if isinstance(model, keras.Model):
        fn = _compiled(model) if compiled else (lambda x: model(x, training=False))
    else:
        fn = model
    out = []
    for a in range(0, n, batch_size):
        batch = {k: tf.convert_to_tensor(v[a:a + batch_size]) for k, v in cols.items()}
        y = np.asarray(fn(batch), dtype)
        if not full:
            y = y.reshape(len(y), -1)[:, 0] if y.ndim > 1 else y.reshape(-1)
        out.append(y)
    return np.concatenate(out)


def serving_specs(schema, names: Sequence[str] | None = None) -> dict:
    """``tf.TensorSpec`` per model-input feature (or per name in ``names``), batch ``None``.

    The spec's ``name`` is the feature name, so it is also a serving signature's input key.
    """
    import tensorflow as tf

    feats = schema.inputs if names is None else [schema[n] for n in names]
    return {f.name: tf.TensorSpec((None, *f.shape), f.dtype, name=f.name) for f in feats}


__all__ = ["predict", "serving_specs"]
