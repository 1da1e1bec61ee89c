"""Backbones: one file per model, all built from a schema and called on a feature dict.

>>> from tfdebias import models
>>> {"deepfm", "dcn", "sasrec"} <= set(models.available())
True
>>> model = models.build("deepfm", schema, hidden_units=(256, 128))   # doctest: +SKIP

Every model is a :class:`~tfdebias.models.base.Backbone`: ``call(features)`` returns
probabilities (B, 1), ``logits(features)`` (B,), ``representation(features)`` (B, h).
A new model registers itself with ``@register("name")``; every module of this package
is imported on first use; method models register when :mod:`tfdebias.plugins` loads
the method packages.
"""

from __future__ import annotations

from tfdebias import plugins
from tfdebias.errors import UsageError

#: name -> Backbone subclass
MODELS: dict[str, type] = {}


def _normalise(name: str) -> str:
    return str(name).strip().lower().replace("-", "_")


def register(name: str):
    """Class decorator: ``@register("deepfm")`` adds the class to :data:`MODELS`."""

    def decorator(cls):
        key = _normalise(name)
        if key in MODELS and MODELS[key] is not cls:
            raise ValueError(f"model name {key!r} is already registered by {MODELS[key]}")
        MODELS[key] = cls
        cls.model_name = key
        return cls

    return decorator


def available() -> list[str]:
    """Registered model names, sorted."""
    return sorted(MODELS)


def get(name: str) -> type:
    """The class registered as ``name``; :class:`UsageError` naming the choices if none."""
    key = _normalise(name)
    if key not in MODELS:
        plugins.load()  # method packages register their models
    if key not in MODELS:
        raise UsageError(f"unknown model {name!r}; available models: {', '.join(available())}")
    return MODELS[key]


def build(name: str, schema, **kwargs):
    """Build the model registered as ``name`` for ``schema``.

    ``kwargs`` go to the model's constructor (``embedding_dim``, ``hidden_units``, ...);
    an argument the model does not take raises :class:`UsageError`.
    """
    cls = get(name)
    try:
        return cls(schema, **kwargs)
    except (TypeError, ValueError) as e:
        if isinstance(e, ValueError) and "keyword argument" not in str(e):
            raise
        import inspect

        params = list(dict.fromkeys(
            p for c in cls.__mro__ if "__init__" in vars(c) and c.__module__.startswith("tfdebias")
            for p in inspect.signature(c.__init__).parameters
            if p not in ("self", "schema", "kwargs")
        ))
        raise UsageError(f"model {cls.model_name!r}: {e}; it takes {params}") from None


from tfdebias.models.base import Backbone, split_sides  # noqa: E402
from tfdebias.models.predict import predict, serving_specs  # noqa: E402


def _import_all():
    """Import every model module in this package (importing registers them)."""
    import importlib
    import pkgutil

    for m in pkgutil.iter_modules(__path__):
        if m.name not in ("base", "predict") and not m.name.startswith("_"):
            importlib.import_module(f"{__name__}.{m.name}")


_import_all()

__all__ = ["MODELS", "Backbone", "available", "build", "get", "predict", "register", "serving_specs", "split_sides"]
