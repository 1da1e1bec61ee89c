"""Embeds a feature dict according to a :class:`~tfdebias.schema.Schema`.

One embedding *table* per ``Feature.table``: a behaviour history declared with
``vocab="item_id"`` looks its ids up in the same table as the candidate ``item_id``,
so both read (and train) the same rows.

All tables of one layer live in **one variable** ``embeddings`` of shape
``(sum of table sizes, d)``; table ``t`` owns the rows ``offset_t ... offset_t +
size_t - 1`` (:class:`Table` is the view of one of them). A call looks up every
categorical field with *one* ``tf.gather`` on the variable (ids shifted by their
table's offset), so the gradient is one ``tf.IndexedSlices`` holding only the rows in
the batch, and a sparse optimizer (:mod:`tfdebias.optimizers`) updates all tables in
one pass. That is the layout industrial CTR trainers use ("fused" or "shared"
embedding storage): on the DeepFM benchmark of ``benchmarks/ctr_throughput.py`` it
cuts the training step from 52 per-table lookups and optimizer updates (26 fields,
embeddings and first-order weights) to 2, which is most of tfdebias' speed-up over
DeepCTR. Lookups read the variable with a sparse ``ResourceGather``, never the whole
table, so an update after the lookup does not copy the table either. Ids outside a
table's vocabulary raise an error (a shifted id must not silently read the next table).

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
import numpy as np
import tensorflow as tf
from keras import ops

from tfdebias.errors import SchemaError
from tfdebias.optimizers import gather_rows
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


class Table:
    """One embedding table of a :class:`FeatureEmbedding`: rows ``offset ... offset +
    input_dim - 1`` of the layer's fused ``embeddings`` variable.

    ``table(ids)`` looks ids up (``(..., d)``); ``table.embeddings`` is a read-only
    copy of its rows (``(input_dim, d)``), for inspection; ``table.variable`` is the
    fused variable the rows live in (what an optimizer or a gradient tape sees).
    """

    def __init__(self, layer: "FeatureEmbedding", name: str, offset: int, input_dim: int):
        self.layer = layer
        self.name = name
        self.offset = int(offset)
        self.input_dim = int(input_dim)

    @property
    def output_dim(self) -> int:
        return self.layer.embedding_dim

    @property
    def variable(self):
        return self.layer.embeddings

    @property
    def embeddings(self):
        return ops.convert_to_tensor(self.layer.embeddings)[
            self.offset:self.offset + self.input_dim]

    def __call__(self, ids):
        return self.layer._gather(ops.convert_to_tensor(ids), [self.name])

    def __repr__(self):
        return (f"Table({self.name!r}, rows {self.offset}..{self.offset + self.input_dim - 1}"
                f" of {self.layer.name}/embeddings)")


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
        # One table per distinct `Feature.table` among the owned embedded features,
        # each a row range of the one fused variable (module docstring).
        self.tables: dict[str, Table] = {}
        rows = 0
        for f in self.features:
            if (f.is_categorical or f.role == "sequence") and f.table not in self.tables:
                size = int(self.schema.table_sizes[f.table])
                self.tables[f.table] = Table(self, f.table, rows, size)
                rows += size
        self.total_rows = rows
        #: ids are shifted in int32 unless the fused table is too tall for it
        self._id_dtype = "int32" if rows < 2**31 else "int64"
        #: tables whose rows receive no gradient (see :meth:`freeze`)
        self.frozen: set[str] = set()
        self.embeddings = None

    def build(self, input_shape=None):
        # The variable exists before the first call, so an optimizer can be built
        # from a model right after construction (``Backbone.build_for``).
        if self.total_rows and self.embeddings is None:
            # autocast off: under a mixed-precision policy the lookup must still read
            # the float32 variable sparsely (rows are cast after the gather).
            self.embeddings = self.add_weight(
                name="embeddings", shape=(self.total_rows, self.embedding_dim),
                initializer=self.embeddings_initializer, autocast=False,
            )
        self.built = True

    def freeze(self, tables: Iterable[str], frozen: bool = True):
        """Stop (or restart) training the given tables (table or feature names).

        Their lookups read the variable through ``stop_gradient``, so the gradient,
        and therefore any optimizer, never touches their rows; the other tables of
        the fused variable train as before.
        """
        names = {self.table(t).name for t in tables}
        self.frozen = (self.frozen | names) if frozen else (self.frozen - names)

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

    def table(self, name: str) -> Table:
        """The :class:`Table` of a table name or a feature name."""
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

    def _gather(self, ids, tables: Sequence[str]):
        """Rows of the fused variable for ``ids`` (..., k): ``ids[..., j]`` indexes
        table ``tables[j]`` (a single table broadcasts). Checks every id against
        its table's size, shifts it by the table's offset and gathers once."""
        if not self.built:
            self.build()
        sizes = np.array([self.tables[t].input_dim for t in tables], self._id_dtype)
        offsets = np.array([self.tables[t].offset for t in tables], self._id_dtype)
        if len(tables) == 1:  # one table for every id, whatever the shape of ids
            sizes, offsets = sizes[0], offsets[0]
        ids = ops.cast(ids, self._id_dtype)
        # As unsigned integers a negative id is huge, so one comparison checks both ends.
        unsigned = "uint32" if self._id_dtype == "int32" else "uint64"
        check = tf.debugging.assert_less(
            tf.bitcast(ids, unsigned), tf.cast(sizes, unsigned),
            message=f"{self.name}: an id is negative or not below its table's size; "
                    f"tables {list(tables)} have sizes {np.atleast_1d(sizes).tolist()}")
        with tf.control_dependencies([check]):
            ids = ids + offsets
        frozen_cols = [j for j, t in enumerate(tables) if t in self.frozen]
        if not frozen_cols:
            return gather_rows(self.embeddings, ids)
        still_table = tf.stop_gradient(ops.convert_to_tensor(self.embeddings))
        if len(frozen_cols) == len(tables):
            return tf.gather(still_table, ids)
        # Gather the live and the frozen columns apart (a mask on one gather would
        # still hand the optimizer zero-gradient frozen rows, which Adam's momentum
        # moves), then put the columns back in order.
        live_cols = [j for j in range(len(tables)) if j not in frozen_cols]
        live = gather_rows(self.embeddings, tf.gather(ids, live_cols, axis=-1))
        still = tf.gather(still_table, tf.gather(ids, frozen_cols, axis=-1))
        order = np.argsort(live_cols + frozen_cols)
        return tf.gather(tf.concat([live, still], axis=-2), order, axis=-2)

    def lookup(self, features, name: str):
        """Embedding of a scalar id feature: (B, d)."""
        if not self.schema[name].is_categorical:
            raise SchemaError(
                f"lookup({name!r}): a {self.schema[name].role} feature is not a scalar id"
            )
        ids = ops.reshape(self._get(features, name), (-1,))
        emb = ops.cast(self._gather(ids, [self.table(name).name]), self.compute_dtype)
        self._penalise(emb)
        return emb

    def sequence(self, features, name: str):
        """Per-position embeddings (B, L, d) of a sequence and its mask (B, L), bool,
        ``True`` where the id is not padding (0). Padding rows are zeroed."""
        ids = self._get(features, name)
        ids = ops.reshape(ids, (-1, self.schema[name].max_len))
        mask = ops.not_equal(ids, 0)
        emb = ops.cast(self._gather(ids, [self.table(name).name]), self.compute_dtype)
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
        # every scalar id field in one lookup: (B, k) ids -> (B, k, d)
        scalar = [f for f in chosen if f.is_categorical]
        if scalar:
            ids = ops.stack([ops.reshape(ops.cast(self._get(features, f.name), self._id_dtype),
                                         (-1,)) for f in scalar], axis=1)
            emb = ops.cast(self._gather(ids, [f.table for f in scalar]), self.compute_dtype)
            self._penalise(emb)
        fields = []
        if any(f.role == "sequence" for f in chosen):  # interleave pooled sequences
            column = {f.name: k for k, f in enumerate(scalar)}
            fields = [self.pooled(features, f.name) if f.role == "sequence"
                      else emb[:, column[f.name]]
                      for f in chosen if f.role == "sequence" or f.is_categorical]
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
        elif scalar:
            fields = emb  # only scalar ids: already (B, F, d) in schema order
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
