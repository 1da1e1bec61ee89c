"""Shared machinery of the built-in simulators: config, base TFDS builder, numpy helpers.

Every simulator module in this package has the same three parts:

* ``schema(params) -> tfdebias.Schema``: the fields it writes (roles, vocabularies).
* ``simulate(params) -> {split: {column: np.ndarray}}``: a pure, vectorised numpy
  generator. The same ``params`` (``seed`` included) give the same arrays, bit for bit.
* a :class:`SimulatorBuilder` subclass that wraps the two for TFDS. Its configs carry
  the ``params`` dict; ``small`` is always the first (default) config.

Conventions shared by all simulators:

* Id 0 is padding/unknown in every table; real ids start at 1.
* Ids are ``int64``; every other column is ``float32``.
* Sequences are **right-aligned** (left-padded): the most recent item sits in the last
  column, padding (0) fills the front. ``[0, 0, 7, 3, 9]`` means 7, then 3, then 9.

Splits are written through the packed storage of the real builders
(:class:`tfdebias.datasets._real.PackedFeatures`, :func:`~tfdebias.datasets._real.write_split`):
one storage format for every data set, serialised by numpy a block at a time, so a
simulator regenerated for each data seed of an evidence table builds in seconds.
Blocks of whole users (:func:`user_blocks`) bound memory in the ``paper`` configs;
each block is vectorised.

A *data seed* is a config with another ``seed``: :func:`seeded_config` makes it, and
the data pipeline's ``load(name, data_seed=d)`` builds and caches it as ``<config>-seed<d>``.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from typing import Callable, Iterator, Mapping

import numpy as np
import tensorflow_datasets as tfds
from etils import epath
from tensorflow_datasets.core import utils as tfds_utils

from tensorflow_datasets.core.dataset_builder import FileReaderBuilder

from tfdebias.errors import SchemaError, UsageError
from tfdebias.schema import Schema

from .._real import PackedFeatures, PrepareMessages, check_block, rank_within_groups, write_split  # noqa: F401

Columns = dict[str, np.ndarray]
Splits = dict[str, Columns]

VERSION = tfds.core.Version("1.1.0")
RELEASE_NOTES = {
    "1.0.0": "Initial release. Frozen: under 1.0.0 the generator and its parameters "
    "never change, so a (config, seed) pair always gives the same data.",
    "1.1.0": "Packed storage (the real builders' format, rows in generation order); "
    "adds each scenario's unbiased training sample (split ``train_unbiased``) and the "
    "``medium`` config sized for evidence tables. Every 1.0.0 split of every config keeps "
    "its values bit for bit.",
}


@dataclasses.dataclass(eq=False)
class SimulatorConfig(tfds.core.BuilderConfig):
    """A simulator config: a name plus the ``params`` passed to ``simulate``.

    ``params`` may be partial; each simulator fills the rest from its ``DEFAULTS``.
    ``params["seed"]`` fixes every random draw.
    """

    params: dict = dataclasses.field(default_factory=dict)


def make_configs(configs: Mapping[str, Mapping]) -> list[SimulatorConfig]:
    """One :class:`SimulatorConfig` per ``name -> overrides`` (order kept: ``small`` first)."""
    out = []
    for name, overrides in configs.items():
        shown = ", ".join(f"{k}={v}" for k, v in overrides.items()) or "the defaults"
        out.append(SimulatorConfig(name=name, params=dict(overrides),
                                   description=f"{name}: {shown}"))
    return out


def merge_params(defaults: Mapping, params: Mapping | None, where: str) -> dict:
    """``defaults`` updated with ``params``; unknown keys raise :class:`UsageError`."""
    params = dict(params or {})
    unknown = sorted(set(params) - set(defaults))
    if unknown:
        raise UsageError(
            f"{where}: unknown parameter(s) {unknown}; expected some of {sorted(defaults)}"
        )
    out = dict(defaults)
    out.update(params)
    return out


def check_fraction(params: Mapping, *names: str, where: str) -> None:
    for n in names:
        v = params[n]
        if not 0.0 <= float(v) <= 1.0:
            raise UsageError(f"{where}: parameter {n!r} must be in [0, 1], got {v!r}")


def check_positive(params: Mapping, *names: str, where: str) -> None:
    for n in names:
        if not params[n] > 0:
            raise UsageError(f"{where}: parameter {n!r} must be > 0, got {params[n]!r}")


# -- numpy helpers ---------------------------------------------------------------------
def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(x, -40.0, 40.0)))


def calibrate_intercept(logits: np.ndarray, target_mean: float, iters: int = 60) -> float:
    """The ``b`` with ``mean(sigmoid(logits + b)) == target_mean`` (bisection).

    The loop runs over bisection steps, never over rows; each step is one vectorised mean.
    """
    if not 0.0 < target_mean < 1.0:
        raise UsageError(f"a target rate must be in (0, 1), got {target_mean!r}")
    lo, hi = -40.0 - float(np.max(logits)), 40.0 - float(np.min(logits))
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        if sigmoid(logits + mid).mean() < target_mean:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def latent(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    """``n`` latent vectors whose pairwise dot products have unit variance."""
    return rng.standard_normal((n, dim)) / dim**0.25


def zipf_weights(n: int, exponent: float, rng: np.random.Generator) -> np.ndarray:
    """Popularity weights ``rank^-exponent`` in a random order; they sum to 1."""
    w = np.arange(1, n + 1, dtype=np.float64) ** -float(exponent)
    w = w[rng.permutation(n)]
    return w / w.sum()


def quantile_bucket(x: np.ndarray, n_buckets: int) -> np.ndarray:
    """Ids 1..n_buckets by the empirical quantile of ``x`` (ties broken by position)."""
    rank = np.argsort(np.argsort(x, kind="stable"), kind="stable")
    return (1 + rank * n_buckets // max(len(x), 1)).astype(np.int64)


def pad_right_aligned(
    groups: np.ndarray, items: np.ndarray, n_groups: int, max_len: int
) -> np.ndarray:
    """``[n_groups, max_len]`` int64 matrix of each group's last ``max_len`` items.

    ``groups`` must be sorted (stable in time order): row ``g`` of the result holds the
    items of group ``g`` in order, right-aligned, 0-padded at the front; older items
    beyond ``max_len`` are dropped.
    """
    out = np.zeros((n_groups, max_len), dtype=np.int64)
    if len(groups) == 0:
        return out
    rank = rank_within_groups(groups)
    counts = np.bincount(groups, minlength=n_groups)
    from_end = counts[groups] - 1 - rank
    keep = from_end < max_len
    out[groups[keep], max_len - 1 - from_end[keep]] = items[keep]
    return out


def user_blocks(n_users: int, n_cols: int, max_cells: int = 4_000_000) -> Iterator[slice]:
    """Slices of whole users so that one block holds at most ``max_cells`` pairs.

    Bounds memory when a simulator scores every (user, item) pair of a ``paper``
    config; ``small`` configs are one block. Each block is processed vectorised.
    """
    step = max(1, max_cells // max(n_cols, 1))
    for start in range(0, n_users, step):
        yield slice(start, min(n_users, start + step))


def take(cols: Mapping[str, np.ndarray], index) -> Columns:
    """Every column indexed by the same rows (a boolean mask or integer index)."""
    return {k: v[index] for k, v in cols.items()}


def concat(parts: list[Mapping[str, np.ndarray]]) -> Columns:
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def cast_to_schema(schema: Schema, cols: Mapping[str, np.ndarray]) -> Columns:
    """Columns in schema order with the schema's dtypes (int64 ids, float32 otherwise)."""
    return {f.name: np.ascontiguousarray(cols[f.name], dtype=f.dtype) for f in schema}


# -- TFDS builder ----------------------------------------------------------------------
class SimulatorBuilder(PrepareMessages, FileReaderBuilder, skip_registration=True):
    """Base TFDS builder of a simulator: ``simulate(params)`` in, packed TFDS splits out.

    Subclasses set ``BUILDER_CONFIGS`` (``small`` first) and the two hooks
    ``_schema_fn`` and ``_simulate_fn`` (the module's ``schema`` and ``simulate``).
    ``info.metadata`` carries ``schema`` (the tfdebias schema as JSON) and ``params``
    (the full parameter dict as JSON, defaults filled in). Rows are stored and read in
    the order ``simulate`` made them.
    """

    VERSION = VERSION
    RELEASE_NOTES = RELEASE_NOTES
    BUILDER_CONFIGS: list = []
    #: the config an evidence table (``tfdebias reproduce``) reads when ``--data`` names
    #: the simulator without a config: the scenario its method is measured on
    EVIDENCE_CONFIG = "medium"

    _schema_fn: Callable[[Mapping], Schema]
    _simulate_fn: Callable[[Mapping], Splits]
    _defaults: Mapping
    _citation: str = ""

    @tfds_utils.classproperty
    @classmethod
    def code_path(cls) -> epath.Path:
        # TFDS 4.9.10 resolves this through `importlib_resources` (an optional extra of
        # etils that may be absent) for builders outside its own package; the module
        # file is what it would find.
        return epath.Path(sys.modules[cls.__module__].__file__)

    @property
    def params(self) -> dict:
        return merge_params(self._defaults, self.builder_config.params, self.name)

    def _info(self) -> tfds.core.DatasetInfo:
        schema = type(self)._schema_fn(self.params)
        doc = (sys.modules[type(self).__module__].__doc__ or "").strip()
        return tfds.core.DatasetInfo(
            builder=self,
            description=doc,
            features=PackedFeatures.from_schema(schema),
            metadata=tfds.core.MetadataDict(
                schema=schema.to_json(),
                params=json.dumps(self.params, sort_keys=True),
            ),
            citation=self._citation,
            disable_shuffling=True,
        )

    def _download_and_prepare(self, dl_manager, download_config=None):
        del dl_manager, download_config  # simulators download nothing
        params = self.params
        schema = type(self)._schema_fn(params)
        data = type(self)._simulate_fn(params)
        infos = []
        for split, cols in data.items():
            where = f"{self.name}/{self.builder_config.name} {split}"
            if check_block(schema, cols, where) == 0:
                raise SchemaError(f"{where}: the simulator produced an empty split")
            infos.append(write_split(self, split, [cols], schema))
        self.info.set_splits(tfds.core.SplitDict(infos))


def seeded_config(cls, config_name: str | None, data_seed: int) -> SimulatorConfig:
    """``cls``'s config ``config_name`` (default: the first) with ``params["seed"] = data_seed``.

    The config keeps its name when ``data_seed`` is its own seed (the same data), and is
    named ``<config>-seed<d>`` otherwise, so every data seed is cached on its own.
    """
    configs = {c.name: c for c in cls.BUILDER_CONFIGS}
    name = config_name or cls.BUILDER_CONFIGS[0].name
    if name not in configs:
        raise UsageError(f"{cls.name}: unknown config {name!r}; expected one of {sorted(configs)}")
    base = configs[name]
    if not isinstance(data_seed, (int, np.integer)) or data_seed < 0:
        raise UsageError(f"a data seed must be a non-negative integer, got {data_seed!r}")
    own = merge_params(cls._defaults, base.params, cls.name)["seed"]
    if int(data_seed) == own:
        return base
    return SimulatorConfig(name=f"{name}-seed{int(data_seed)}", params={**base.params, "seed": int(data_seed)},
                           description=f"{base.description}; data seed {int(data_seed)}")
