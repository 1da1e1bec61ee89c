"""Feature schema: every data set declares its fields once, every model reads them.

A :class:`Schema` is an ordered tuple of :class:`Feature`s. Each feature has a *role*
that says how models treat it:

==============  ==================================================================
role            meaning (dtype, shape of one example)
==============  ==================================================================
``categorical`` an id embedded by a table (int64, scalar); ids 0..vocab_size-1
``dense``       a real-valued scalar fed to the dense part (float32, scalar)
``sequence``    a variable-length id list, 0-padded to ``max_len`` (int64, [max_len]);
                ``vocab`` names the table it shares (a behaviour history shares the
                ``item_id`` table)
``vector``      a pre-computed embedding such as visual features (float32, [width])
``domain``      which domain a row comes from (int64, scalar; 0 = source, 1 = target)
``exposure``    a propensity P(observed) when the data knows it (float32, scalar)
``label``       a training target (float32, scalar); the first label is the default
``proxy``       a confounding proxy (float32 scalar, or int64 id if ``vocab_size``)
``truth``       simulator-only ground truth (e.g. true relevance); never a model input
==============  ==================================================================

Id 0 is reserved in every table for padding and unknown values, so real ids start at 1
and a sequence's padding never collides with an item.

The schema travels as JSON inside each TFDS builder's ``info.metadata["schema"]`` and is
read back with :func:`tfdebias.data.load_schema`. Models build their embeddings from it,
so a model built for one data set runs on any other with the same roles.

Example:

>>> s = Schema([Feature("user_id", "categorical", vocab_size=10),
...             Feature("click", "label")])
>>> [f.name for f in s.inputs]
['user_id']
>>> Schema.from_json(s.to_json()) == s
True
"""

from __future__ import annotations

import dataclasses
import json
from typing import Iterable, Sequence

from tfdebias.errors import SchemaError

ROLES = (
    "categorical",
    "dense",
    "sequence",
    "vector",
    "domain",
    "exposure",
    "label",
    "proxy",
    "truth",
)
#: Roles a model may read as inputs (labels, exposures and truths never are).
INPUT_ROLES = ("categorical", "dense", "sequence", "vector", "domain", "proxy")
_INT_ROLES = ("categorical", "sequence", "domain")


@dataclasses.dataclass(frozen=True)
class Feature:
    """One field of a data set.

    Args:
      name: column name, also the key in every example dict.
      role: one of :data:`ROLES`.
      vocab_size: number of ids (categorical, sequence, domain, categorical proxy).
      width: vector width (``vector`` role); 1 otherwise.
      max_len: padded length (``sequence`` role).
      vocab: name of the embedding table to share; defaults to ``name``. A sequence of
        item ids sets ``vocab="item_id"`` so its ids and the candidate's share one table.
      description: one line for humans (README tables, ``datasets list``).
    """

    name: str
    role: str
    vocab_size: int | None = None
    width: int = 1
    max_len: int | None = None
    vocab: str | None = None
    description: str = ""

    def __post_init__(self):
        if self.role not in ROLES:
            raise SchemaError(f"feature {self.name!r}: role {self.role!r} is not one of {ROLES}")
        if self.role in ("categorical", "sequence", "domain") and not self.vocab_size:
            raise SchemaError(f"feature {self.name!r}: role {self.role!r} needs vocab_size > 0")
        if self.role == "sequence" and not self.max_len:
            raise SchemaError(f"feature {self.name!r}: a sequence needs max_len > 0")
        if self.role == "vector" and self.width < 1:
            raise SchemaError(f"feature {self.name!r}: a vector needs width >= 1")

    @property
    def dtype(self) -> str:
        if self.role in _INT_ROLES or (self.role == "proxy" and self.vocab_size):
            return "int64"
        return "float32"

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of one example (no batch dimension)."""
        if self.role == "sequence":
            return (self.max_len,)
        if self.role == "vector":
            return (self.width,)
        return ()

    @property
    def table(self) -> str:
        """Name of the embedding table this feature looks ids up in."""
        return self.vocab or self.name

    @property
    def is_categorical(self) -> bool:
        """Embedded by a table (categorical, domain, or a categorical proxy)."""
        return self.role in ("categorical", "domain") or (
            self.role == "proxy" and bool(self.vocab_size)
        )

    @property
    def is_dense(self) -> bool:
        """A real-valued scalar input (dense, or a dense proxy)."""
        return self.role == "dense" or (self.role == "proxy" and not self.vocab_size)


class Schema:
    """An ordered, named collection of :class:`Feature`s."""

    def __init__(self, features: Iterable[Feature]):
        self.features: tuple[Feature, ...] = tuple(features)
        names = [f.name for f in self.features]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise SchemaError(f"duplicate feature names: {dupes}")
        self._by_name = {f.name: f for f in self.features}
        sizes: dict[str, int] = {}
        for f in self.features:
            if f.vocab_size:
                if f.table in sizes and sizes[f.table] != f.vocab_size:
                    raise SchemaError(
                        f"feature {f.name!r} shares table {f.table!r} with vocab_size "
                        f"{f.vocab_size}, but another feature declares {sizes[f.table]}"
                    )
                sizes[f.table] = f.vocab_size
        self.table_sizes: dict[str, int] = sizes

    # -- lookup -------------------------------------------------------------------
    def __getitem__(self, name: str) -> Feature:
        try:
            return self._by_name[name]
        except KeyError:
            raise SchemaError(
                f"no feature named {name!r}; the schema has {sorted(self._by_name)}"
            ) from None

    def __contains__(self, name: str) -> bool:
        return name in self._by_name

    def __iter__(self):
        return iter(self.features)

    def __len__(self):
        return len(self.features)

    def __eq__(self, other):
        return isinstance(other, Schema) and self.features == other.features

    def __repr__(self):
        return f"Schema({[f'{f.name}:{f.role}' for f in self.features]})"

    def by_role(self, *roles: str) -> list[Feature]:
        for r in roles:
            if r not in ROLES:
                raise SchemaError(f"unknown role {r!r}; expected one of {ROLES}")
        return [f for f in self.features if f.role in roles]

    def names(self, *roles: str) -> list[str]:
        return [f.name for f in self.by_role(*roles)]

    @property
    def inputs(self) -> list[Feature]:
        """Features a model may read."""
        return self.by_role(*INPUT_ROLES)

    @property
    def categorical(self) -> list[Feature]:
        """Scalar ids embedded by a table: categorical, domain, categorical proxies."""
        return [f for f in self.features if f.is_categorical]

    @property
    def dense(self) -> list[Feature]:
        """Real scalars: dense and dense proxies."""
        return [f for f in self.features if f.is_dense]

    @property
    def sequences(self) -> list[Feature]:
        return self.by_role("sequence")

    @property
    def vectors(self) -> list[Feature]:
        return self.by_role("vector")

    @property
    def proxies(self) -> list[Feature]:
        return self.by_role("proxy")

    @property
    def label(self) -> Feature:
        labels = self.by_role("label")
        if not labels:
            raise SchemaError("the schema has no feature with role 'label'")
        return labels[0]

    @property
    def exposure(self) -> Feature | None:
        exp = self.by_role("exposure")
        return exp[0] if exp else None

    def select(self, names: Sequence[str]) -> "Schema":
        """A sub-schema with only ``names`` (order kept as given)."""
        return Schema([self[n] for n in names])

    def without(self, *roles: str) -> "Schema":
        return Schema([f for f in self.features if f.role not in roles])

    # -- serialisation --------------------------------------------------------------
    def to_dict(self) -> dict:
        return {
            "features": [
                {k: v for k, v in dataclasses.asdict(f).items() if v not in (None, "")}
                for f in self.features
            ]
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict) -> "Schema":
        try:
            return cls(Feature(**f) for f in d["features"])
        except (KeyError, TypeError) as e:
            raise SchemaError(f"not a tfdebias schema ({e})") from None

    @classmethod
    def from_json(cls, s: str) -> "Schema":
        try:
            return cls.from_dict(json.loads(s))
        except json.JSONDecodeError as e:
            raise SchemaError(f"schema JSON does not parse: {e}") from None

    # -- TFDS -----------------------------------------------------------------------
    def tfds_features(self):
        """The ``tfds.features.FeaturesDict`` a builder declares for this schema."""
        import numpy as np
        import tensorflow_datasets as tfds

        return tfds.features.FeaturesDict(
            {
                f.name: tfds.features.Tensor(shape=f.shape, dtype=np.dtype(f.dtype))
                for f in self.features
            }
        )

    def check_compatible(self, needed: "Schema", what: str = "model") -> None:
        """Raise :class:`SchemaError` unless every feature of ``needed`` is here
        with the same role, shape and a vocabulary at least as large."""
        problems = []
        for f in needed:
            if f.name not in self:
                problems.append(f"{f.name!r} is missing")
                continue
            g = self[f.name]
            if g.role != f.role or g.shape != f.shape:
                problems.append(
                    f"{f.name!r} is {g.role}{list(g.shape)} here, {what} expects "
                    f"{f.role}{list(f.shape)}"
                )
            elif (f.vocab_size or 0) < (g.vocab_size or 0):
                problems.append(
                    f"{f.name!r} has {g.vocab_size} ids here, {what} was built for {f.vocab_size}"
                )
        if problems:
            raise SchemaError(f"data does not match the {what}'s schema: " + "; ".join(problems))
