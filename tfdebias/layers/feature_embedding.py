"""Embeds a feature dict according to a :class:`~tfdebias.schema.Schema`.

One :class:`keras.layers.Embedding` per *table* (``Feature.table``): a behaviour history
declared with ``vocab="item_id"`` looks its ids up in the same table as the candidate
``item_id``, so both read (and train) one variable. Lookups are plain
``keras.layers.Embedding`` calls, i.e. ``tf.gather`` on the TensorFlow backend, so the
gradient of every table is a ``tf.IndexedSlices`` (only the rows in the batch), which the
sparse/lazy optimisers rely on.

What a call returns (``B`` = batch, ``d`` = ``embedding_dim``)::

    {"fields": (B, F, d)   one row per categorical feature (categorical, domain,
                           categorical proxy) and per sequence (mean of its non-padding
                           ids; id 0 is padding), in schema order;
     "dense":  (B, n)      dense scalars (dense, dense proxy) then vectors, concatenated
                           in schema order (n = number of scalars + sum of vector widths)}

``F`` or ``n`` may be 0; the tensors are then empty, not missing. Keys of the feature
dict that are not model inputs (labels, exposures, truths, anything unknown) are ignored.
"""

from __future__ import annotations

from typing import Iterable, Sequence

import keras
from keras import ops

from tfdebias.errors import SchemaError
from tfdebias.schema import INPUT_ROLES, Feature, Schema


def as_schema(schema) -> Schema:
    """A :class:`Schema` from a ``Schema``, its ``to_dict()`` or its JSON."""
    if isinstance(schema, Schema):
        return schema
    if isinstance(schema, dict):
        return Schema.from_dict(schema)
    if isinstance(schema, str):
        return Schema.from_json(schema)
    raise SchemaError(f"expected a tfdebias Schema, got {type(schema).__name__}")


@keras.saving.register_keras_serializable(package="tfdebias")
class FeatureEmbedding(keras.layers.Layer):
    """Field embeddings and dense inputs for every model input of a schema.

    Args:
      schema: the data set's :class:`Schema` (or its ``to_dict()``).
      embedding_dim: width ``d`` of every embedding.
      include: feature names this layer owns (tables are built only for them);
        ``None`` = every model input of the schema.
      exclude: feature names to leave out of what this layer owns.
      roles: if given, own only features with these roles (e.g. ``["proxy"]``).
      l2: L2 penalty on the *looked-up* rows: ``l2 * mean_batch(sum ||e||^2)``, added with
        ``add_loss`` on every call. Penalising only the rows in the batch keeps the
        gradient sparse (a table-wide regulariser would make it dense).
      embeddings_initializer: initializer of every table.

    A call (``layer(features, include=None, exclude=None, roles=None)``) can narrow the
    owned features further, so one layer (one set of tables) can embed, say, the proxy
    features and the rest separately (CP2Rec's partition). For attention over a history
    use :meth:`sequence`, which returns the per-position embeddings and the padding mask.

    Example:

    >>> from tfdebias.schema import Feature, Schema
    >>> schema = Schema([
    ...     Feature("user_id", "categorical", vocab_size=10),
    ...     Feature("item_id", "categorical", vocab_size=20),
    ...     Feature("history", "sequence", vocab_size=20, max_len=3, vocab="item_id"),
    ...     Feature("age", "dense"),
    ...     Feature("click", "label")])
    >>> import numpy as np
    >>> embed = FeatureEmbedding(schema, embedding_dim=4)
    >>> out = embed({"user_id": np.array([1, 2]), "item_id": np.array([3, 4]),
    ...              "history": np.array([[3, 5, 0], [0, 0, 0]]),
    ...              "age": np.array([0.5, 0.1], "float32"), "click": np.array([1.0, 0.0])})
    >>> tuple(out["fields"].shape), tuple(out["dense"].shape)
    ((2, 3, 4), (2, 1))
    >>> sorted(embed.tables)   # the history shares the item table
    ['item_id', 'user_id']
    """

    def __init__(
        self,
        schema,
        embedding_dim: int = 16,
        include: Sequence[str] | None = None,
        exclude: Sequence[str] | None = None,
        roles: Sequence[str] | None = None,
        l2: float = 0.0,
        embeddings_initializer="uniform",
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.schema = as_schema(schema)
        self.embedding_dim = int(embedding_dim)
        self.include = list(include) if include is not None else None
        self.exclude = list(exclude) if exclude is not None else None
        self.roles = list(roles) if roles is not None else None
        self.l2 = float(l2)
        self.embeddings_initializer = keras.initializers.get(embeddings_initializer)
        if self.embedding_dim < 1:
            raise SchemaError(f"embedding_dim must be >= 1, got {embedding_dim}")

        inputs = [f for f in self.schema.features if f.role in INPUT_ROLES]
        self.features: list[Feature] = self._resolve(
            inputs, self.include, self.exclude, self.roles, what="schema inputs"
        )
        # One table per distinct `Feature.table` among the owned embedded features.
        self.tables: dict[str, keras.layers.Embedding] = {}
        for f in self.features:
            if (f.is_categorical or f.role == "sequence") and f.table not in self.tables:
                table = keras.layers.Embedding(
                    input_dim=self.schema.table_sizes[f.table],
                    output_dim=self.embedding_dim,
                    embeddings_initializer=self.embeddings_initializer,
                    name=f"table_{f.table}",
                )
                self.tables[f.table] = table

    def build(self, input_shape=None):
        # All tables at once (not on first use), inside this layer's name scope, so
        # variable paths are unique (``<model>/<layer>/table_<name>/embeddings``).
        for table in self.tables.values():
            if not table.built:
                table.build()
        self.built = True

    # -- selecting features ---------------------------------------------------------
    @staticmethod
    def _resolve(pool, include, exclude, roles, what):
        names = [f.name for f in pool]
        for arg, given in (("include", include), ("exclude", exclude)):
            unknown = [n for n in (given or []) if n not in names]
            if unknown:
                raise SchemaError(
                    f"FeatureEmbedding {arg}={unknown}: not among the {what} {names}"
                )
        chosen = pool
        if include is not None:
            wanted = set(include)
            chosen = [f for f in chosen if f.name in wanted]
        if exclude:
            drop = set(exclude)
            chosen = [f for f in chosen if f.name not in drop]
        if roles is not None:
            bad = [r for r in roles if r not in INPUT_ROLES]
            if bad:
                raise SchemaError(
                    f"FeatureEmbedding roles={bad}: model inputs have roles {INPUT_ROLES}"
                )
            chosen = [f for f in chosen if f.role in set(roles)]
        return chosen

    def select(
        self,
        include: Iterable[str] | None = None,
        exclude: Iterable[str] | None = None,
        roles: Iterable[str] | None = None,
    ) -> list[Feature]:
        """The owned features left after ``include`` / ``exclude`` / ``roles``, in order."""
        return self._resolve(
            self.features,
            list(include) if include is not None else None,
            list(exclude) if exclude is not None else None,
            list(roles) if roles is not None else None,
            what="features this layer embeds",
        )

    def field_names(self, include=None, exclude=None, roles=None) -> list[str]:
        """Names along the ``F`` axis of ``fields`` for the same selection."""
        return [
            f.name
            for f in self.select(include, exclude, roles)
            if f.is_categorical or f.role == "sequence"
        ]

    def dense_names(self, include=None, exclude=None, roles=None) -> list[str]:
        """Names concatenated into ``dense`` (scalars first, then vectors)."""
        chosen = self.select(include, exclude, roles)
        return [f.name for f in chosen if f.is_dense] + [
            f.name for f in chosen if f.role == "vector"
        ]

    def dense_width(self, include=None, exclude=None, roles=None) -> int:
        """Width ``n`` of ``dense`` for the same selection."""
        return sum(self.schema[n].width for n in self.dense_names(include, exclude, roles))

    def table(self, name: str) -> keras.layers.Embedding:
        """The embedding layer for a table name or a feature name."""
        if name in self.tables:
            return self.tables[name]
        if name in self.schema and self.schema[name].table in self.tables:
            return self.tables[self.schema[name].table]
        raise SchemaError(f"no embedding table for {name!r}; tables: {sorted(self.tables)}")

    # -- lookups --------------------------------------------------------------------
    def _get(self, features, name):
        if name not in features:
            raise SchemaError(
                f"feature {name!r} is missing from the batch (it has {sorted(features)})"
            )
        return ops.convert_to_tensor(features[name])

    def lookup(self, features, name: str):
        """Embedding of a scalar id feature: (B, d)."""
        if not self.schema[name].is_categorical:
            raise SchemaError(
                f"lookup({name!r}): a {self.schema[name].role} feature is not a scalar id"
            )
        ids = ops.reshape(self._get(features, name), (-1,))
        emb = self.table(name)(ids)
        self._penalise(emb)
        return emb

    def sequence(self, features, name: str):
        """Per-position embeddings (B, L, d) of a sequence and its mask (B, L), bool,
        ``True`` where the id is not padding (0). Padding rows are zeroed."""
        ids = self._get(features, name)
        ids = ops.reshape(ids, (-1, self.schema[name].max_len))
        mask = ops.not_equal(ids, 0)
        emb = self.table(name)(ids)
        emb = emb * ops.cast(mask, emb.dtype)[..., None]
        self._penalise(emb)
        return emb, mask

    def pooled(self, features, name: str):
        """Mean of a sequence's non-padding embeddings: (B, d); zeros if all padding."""
        emb, mask = self.sequence(features, name)
        count = ops.sum(ops.cast(mask, emb.dtype), axis=1, keepdims=True)
        return ops.sum(emb, axis=1) / ops.maximum(count, 1.0)

    def _penalise(self, emb):
        if self.l2:
            per_row = ops.sum(ops.reshape(ops.square(emb), (ops.shape(emb)[0], -1)), axis=1)
            self.add_loss(self.l2 * ops.mean(per_row))

    # -- the call ---------------------------------------------------------------------
    def call(self, features, include=None, exclude=None, roles=None):
        chosen = self.select(include, exclude, roles)
        fields = []
        for f in chosen:
            if f.role == "sequence":
                fields.append(self.pooled(features, f.name))
            elif f.is_categorical:
                fields.append(self.lookup(features, f.name))
        dense = [
            ops.reshape(ops.cast(self._get(features, f.name), self.compute_dtype), (-1, 1))
            for f in chosen
            if f.is_dense
        ] + [
            ops.reshape(ops.cast(self._get(features, f.name), self.compute_dtype), (-1, f.width))
            for f in chosen
            if f.role == "vector"
        ]
        batch = self._batch_size(features, chosen)
        if fields:
            fields = ops.stack(fields, axis=1)
        else:
            fields = ops.zeros((batch, 0, self.embedding_dim), dtype=self.compute_dtype)
        if dense:
            dense = ops.concatenate(dense, axis=1) if len(dense) > 1 else dense[0]
        else:
            dense = ops.zeros((batch, 0), dtype=self.compute_dtype)
        return {"fields": fields, "dense": dense}

    def _batch_size(self, features, chosen):
        names = [f.name for f in chosen if f.name in features] or [
            f.name for f in self.features if f.name in features
        ]
        if not names:
            raise SchemaError(
                f"the batch has none of this layer's features {[f.name for f in self.features]}"
            )
        return ops.shape(self._get(features, names[0]))[0]

    def get_config(self):
        config = super().get_config()
        config.update(
            schema=self.schema.to_dict(),
            embedding_dim=self.embedding_dim,
            include=self.include,
            exclude=self.exclude,
            roles=self.roles,
            l2=self.l2,
            embeddings_initializer=keras.initializers.serialize(self.embeddings_initializer),
        )
        return config
