"""SavedModel export: raw features by name in, the served prediction out.

The ``serving_default`` signature takes every model-input feature of the schema as a
batched tensor (batch dimension ``None``, dtype and per-example shape from the
:class:`~tfdebias.schema.Schema`) and returns ``{"prediction": (batch,)}``: the
probability the model serves at inference, i.e. ``model(features)[:, 0]`` (for a
method, whatever its ``call`` returns: its debiased head).

**Extra serving endpoints (the hook).** A model may define

.. code-block:: python

    def serving_endpoints(self, schema):
        specs = tfdebias.export.serving_specs(schema, self.user_features)
        return {"user_tower": (lambda f: {"user_embedding": self.user_tower(f)}, [specs])}

returning ``name -> (fn, input_signature)``. ``fn`` takes the arguments described by
``input_signature`` (a list with one dict of ``tf.TensorSpec`` is the convention: raw
features by name) and returns a dict of named output tensors. Every entry becomes a
signature of the SavedModel; an entry named ``serving_default`` replaces the default.
The variables ``fn`` reads must belong to the model (they are tracked through it).

:func:`export_saved_model` writes one SavedModel atomically;
:mod:`tfdebias.export.serving` builds the TF Serving layout (versions, warm-up
requests, ``models.config``) on top of :func:`write_saved_model`.
"""

from __future__ import annotations

import os
from pathlib import Path

from tfdebias.atomic import staging_dir
from tfdebias.errors import UsageError
from tfdebias.models.predict import serving_specs

#: the signature TF Serving uses when a request names none
DEFAULT_SIGNATURE = "serving_default"
#: the output key of ``serving_default``
PREDICTION = "prediction"


def default_endpoint(model, schema):
    """``(fn, input_signature)`` of ``serving_default``: ``{"prediction": model(x)[:, 0]}``."""
    import tensorflow as tf

    def serve(features):
        out = model(features, training=False)
        return {PREDICTION: tf.reshape(tf.cast(out, tf.float32), [-1])}

    return serve, [serving_specs(schema)]


def collect_endpoints(model, schema, endpoints: dict | None = None) -> dict:
    """Every signature to export: ``serving_default``, then the model's
    ``serving_endpoints(schema)`` (if it defines one), then ``endpoints``; later
    entries of the same name win."""
    out = {DEFAULT_SIGNATURE: default_endpoint(model, schema)}
    hook = getattr(model, "serving_endpoints", None)
    if callable(hook):
        declared = hook(schema) or {}
        if not isinstance(declared, dict):
            raise UsageError(
                f"{type(model).__name__}.serving_endpoints must return a dict "
                f"name -> (fn, input_signature), got {type(declared).__name__}")
        out.update(declared)
    out.update(endpoints or {})
    for name, value in out.items():
        if not (isinstance(value, tuple) and len(value) == 2 and callable(value[0])):
            raise UsageError(f"serving endpoint {name!r} must be (fn, input_signature)")
    return out


def write_saved_model(model, schema, path, *, endpoints: dict | None = None) -> dict:
    """Write the SavedModel into the (new or empty) directory ``path``; not atomic.

    Returns the endpoints that were written (name -> (fn, input_signature)).
    """
    import keras

    eps = collect_endpoints(model, schema, endpoints)
    archive = keras.export.ExportArchive()
    archive.track(model)
    for name, (fn, sig) in eps.items():
        archive.add_endpoint(name=name, fn=fn, input_signature=list(sig))
    archive.write_out(str(path), verbose=False)
    return eps


def export_saved_model(model, schema, path: str | os.PathLike, *, endpoints: dict | None = None,
                       overwrite: bool = True) -> Path:
    """Write ``model`` as a SavedModel at ``path`` (temporary sibling, then rename).

    Args:
      endpoints: extra signatures, name -> ``(fn, input_signature)`` (see the module
        docstring); added to the model's own ``serving_endpoints``.
      overwrite: replace an existing ``path``; otherwise :class:`UsageError`.

    For TF Serving (versions, warm-up requests, ``models.config``) use
    :func:`tfdebias.export.export_model` or ``tfdebias export``.
    """
    path = Path(path).absolute()
    if path.exists() and not overwrite:
        raise UsageError(f"{path} already exists; pass overwrite=True to replace it")
    with staging_dir(path) as tmp:
        write_saved_model(model, schema, tmp, endpoints=endpoints)
    return path
