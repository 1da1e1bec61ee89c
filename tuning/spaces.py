"""Search spaces as data: one dict per method, registered by name.

A space maps a hyper-parameter name to what it may take:

====================================  =================================================
spec                                  keras-tuner hyper-parameter
====================================  =================================================
``[a, b, c]``                         ``hp.Choice`` (first value is the default); values
                                      may be lists (``hidden_units``), stored as JSON
``{"choices": [...], "default": b}``  ``hp.Choice`` with an explicit default
``{"min": 1e-4, "max": 1e-2,          ``hp.Float(..., sampling="log", step=10)``: the
"log": True, "step": 10}``            powers of ten 1e-4, 1e-3, 1e-2 (``step`` is a
                                      factor on a log scale; omit it for a continuous
                                      range, which the grid tuner cannot enumerate)
``{"min": 1, "max": 4}``              ``hp.Int`` when both ends are ints (``step``
                                      defaults to 1), else ``hp.Float``
``{"fixed": v}`` or a bare scalar     ``hp.Fixed``: recorded, never searched
====================================  =================================================

Names that are :class:`~tfdebias.training.TrainConfig` fields (:data:`CONFIG_KEYS`:
``learning_rate``, ``batch_size``, ``optimizer``, ...) set the training config; every
other name is a constructor argument of the model (``embedding_dim``, ``hidden_units``,
a method's loss weight, ...). Use ``"log": True`` where the paper searches powers of ten.

A backbone's space is registered here with :func:`register_space`; a method declares its
paper's table as data on its ``tfdebias reproduce`` entry, and :func:`get_space` reads it
from there (the methods never import the tuner)::

    register_reproducer(Reproducer("cp2rec", ..., search_space={
        "lambda_c": {"min": 1e-3, "max": 1.0, "log": True, "step": 10}}))

This module imports neither keras-tuner nor TensorFlow.
"""

from __future__ import annotations

import copy
import json
from typing import Any

from tfdebias.errors import UsageError

#: TrainConfig fields a space may tune; every other key is a model constructor argument.
CONFIG_KEYS = ("learning_rate", "batch_size", "optimizer", "epochs", "patience", "weight")

#: name -> space (see the module docstring)
SEARCH_SPACES: dict[str, dict[str, Any]] = {}

#: What every neural backbone tunes (the grids of the DeepFM/DCN/NCF papers, narrowed to
#: the values that matter on CTR logs).
BACKBONE_COMMON: dict[str, Any] = {
    "learning_rate": {"min": 1e-4, "max": 1e-2, "log": True, "step": 10, "default": 1e-3},
    "batch_size": [1024, 256, 512, 2048, 4096],
    "embedding_dim": [16, 8, 32, 64],
}
_DNN = {
    "hidden_units": [[256, 128], [128, 64], [400, 400, 400], [512, 256, 128]],
    "dropout": [0.0, 0.1, 0.3, 0.5],
    "dnn_l2": {"min": 1e-7, "max": 1e-3, "log": True, "step": 10, "default": 1e-7},
}


def _validate(name: str, space: dict) -> dict:
    if not isinstance(space, dict) or not space:
        raise UsageError(f"search space {name!r} must be a non-empty dict name -> spec")
    for key, spec in space.items():
        if not isinstance(key, str) or not key or key.startswith("tuner/"):
            raise UsageError(f"search space {name!r}: bad parameter name {key!r}")
        describe(key, spec)  # raises on a malformed spec
    return space


def register_space(name: str, space: dict[str, Any], *, replace: bool = True) -> dict:
    """Register ``space`` under ``name`` (the name ``tfdebias tune NAME`` uses).

    Registering a name again replaces the space unless ``replace=False``.
    """
    key = str(name).strip().lower().replace("-", "_")
    if key in SEARCH_SPACES and not replace:
        raise UsageError(f"search space {key!r} is already registered")
    SEARCH_SPACES[key] = _validate(key, copy.deepcopy(space))
    return SEARCH_SPACES[key]


def _method_spaces() -> None:
    """Register the paper grid each method declares on its ``tfdebias reproduce`` entry
    (``Reproducer.search_space``) under the method's name, unless already registered."""
    from tfdebias import methods

    for rep in methods.REPRODUCERS.values():
        if rep.search_space and rep.name not in SEARCH_SPACES:
            register_space(rep.name, rep.search_space)


def get_space(name: str) -> dict[str, Any]:
    """The space registered as ``name`` (a backbone's, or a method's paper grid)."""
    key = str(name).strip().lower().replace("-", "_")
    if key not in SEARCH_SPACES:
        _method_spaces()
    if key not in SEARCH_SPACES:
        raise UsageError(f"no search space for {name!r}; registered: {', '.join(sorted(SEARCH_SPACES))} "
                         "(a method declares its grid as Reproducer.search_space)")
    return copy.deepcopy(SEARCH_SPACES[key])


def available() -> list[str]:
    """Every name with a search space: the backbones' and the methods'."""
    _method_spaces()
    return sorted(SEARCH_SPACES)


# -- specs -> keras-tuner ------------------------------------------------------------------


_TAG = "__choice__"


def _encode(v):
    """Choice values keras-tuner can hold: lists/dicts become JSON strings."""
    return json.dumps(v) if isinstance(v, (list, tuple, dict)) else v


def _encode_choices(values) -> list:
    """A choice list keras-tuner can hold: it takes one value type per ``Choice``, so a
    list mixing types (``["domain_median", 0.2]``) is stored as tagged JSON strings."""
    encoded = [_encode(v) for v in values]
    if len({type(v) for v in encoded}) > 1:
        return [json.dumps({_TAG: v}) for v in values]
    return encoded


def decode(v):
    """The inverse of :func:`_encode` / :func:`_encode_choices` for a value read back
    from keras-tuner."""
    if isinstance(v, str) and v[:1] in "[{":
        try:
            out = json.loads(v)
        except json.JSONDecodeError:
            return v
        return out[_TAG] if isinstance(out, dict) and set(out) == {_TAG} else out
    return v


def describe(key: str, spec) -> dict:
    """Normalise one spec to ``{"kind": choice|int|float|fixed, ...}``."""
    if isinstance(spec, (list, tuple)):
        if not spec:
            raise UsageError(f"{key}: an empty list of choices")
        values = _encode_choices(spec)
        return {"kind": "choice", "values": values, "default": values[0]}
    if isinstance(spec, dict):
        unknown = set(spec) - {"choices", "default", "min", "max", "log", "step", "fixed"}
        if unknown:
            raise UsageError(f"{key}: unknown spec keys {sorted(unknown)}")
        if "fixed" in spec:
            return {"kind": "fixed", "value": _encode(spec["fixed"])}
        if "choices" in spec:
            choices = list(spec["choices"])
            default = spec.get("default", choices[0] if choices else None)
            if not choices or default not in choices:
                raise UsageError(f"{key}: default {spec.get('default')!r} is not among the choices")
            values = _encode_choices(choices)
            default = values[choices.index(default)]
            if not values or default not in values:
                raise UsageError(f"{key}: default {spec.get('default')!r} is not among the choices")
            return {"kind": "choice", "values": values, "default": default}
        if "min" in spec and "max" in spec:
            lo, hi = spec["min"], spec["max"]
            if not (isinstance(lo, (int, float)) and isinstance(hi, (int, float)) and lo < hi):
                raise UsageError(f"{key}: need numbers min < max, got {lo!r}, {hi!r}")
            log = bool(spec.get("log", False))
            if log and lo <= 0:
                raise UsageError(f"{key}: a log-scale range needs min > 0")
            is_int = all(isinstance(v, int) and not isinstance(v, bool) for v in (lo, hi))
            out = {"kind": "int" if is_int else "float", "min": lo, "max": hi, "log": log,
                   "step": spec.get("step", 1 if is_int else None)}
            if "default" in spec:
                out["default"] = spec["default"]
            return out
        raise UsageError(f"{key}: a spec dict needs 'choices', 'min'/'max' or 'fixed'")
    if spec is None or isinstance(spec, (int, float, str, bool)):
        return {"kind": "fixed", "value": spec}
    raise UsageError(f"{key}: cannot read the spec {spec!r}")


def declare(hp, space: dict) -> dict:
    """Declare every parameter of ``space`` on the keras-tuner ``hp``; returns the
    decoded values of this trial, name -> value."""
    values = {}
    for key, spec in space.items():
        d = describe(key, spec)
        if d["kind"] == "choice":
            v = hp.Choice(key, d["values"], default=d["default"])
        elif d["kind"] == "fixed":
            v = hp.Fixed(key, d["value"])
        elif d["kind"] == "int":
            v = hp.Int(key, d["min"], d["max"], step=d["step"], sampling="log" if d["log"] else "linear",
                       default=d.get("default"))
        else:
            v = hp.Float(key, d["min"], d["max"], step=d["step"],
                         sampling="log" if d["log"] else "linear", default=d.get("default"))
            v = float(f"{v:.12g}")  # 9.999999999999999e-06 -> 1e-05
        values[key] = decode(v)
    return values


def split_values(values: dict) -> tuple[dict, dict]:
    """``(config overrides, model_args)`` of one trial's values."""
    cfg = {k: v for k, v in values.items() if k in CONFIG_KEYS}
    args = {k: v for k, v in values.items() if k not in CONFIG_KEYS and not k.startswith("tuner/")}
    return cfg, args


def check_grid(space: dict) -> None:
    """The grid tuner needs every range to have a step."""
    for key, spec in space.items():
        d = describe(key, spec)
        if d["kind"] == "float" and not d["step"]:
            raise UsageError(f"the grid tuner cannot enumerate the continuous range {key!r}; "
                             "give it a 'step' (a factor when 'log' is set)")


# -- the backbones' spaces -----------------------------------------------------------------

register_space("lr", {"learning_rate": BACKBONE_COMMON["learning_rate"],
                      "batch_size": BACKBONE_COMMON["batch_size"],
                      "embedding_l2": _DNN["dnn_l2"]})
register_space("fm", {**BACKBONE_COMMON, "embedding_l2": _DNN["dnn_l2"]})
for _name in ("deepfm", "mlp", "wide_deep", "ncf"):
    register_space(_name, {**BACKBONE_COMMON, **_DNN})
register_space("dcn", {**BACKBONE_COMMON, **_DNN, "num_cross_layers": [3, 1, 2, 4]})
register_space("dssm", {**BACKBONE_COMMON, **_DNN, "temperature": [5.0, 1.0, 10.0, 20.0]})
