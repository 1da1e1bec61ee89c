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

While a gradient is being recorded, a lookup also finds the distinct ids of the
batch (one ``tf.unique``, computed beside the forward pass rather than after the
backward one) and its gradient sums the rows of repeated ids itself, so the sparse
optimizers receive one row per id and skip their own deduplication
(:func:`tfdebias.optimizers.distinct_slices`). With ``first_order=True`` the layer
also keeps one scalar weight per id (an FM's ``w``, Rendle 2010, Eq. (1); DeepFM's
first-order term) in a second variable ``first_order`` with the same row layout,
looked up with the same ids and the same ``unique``: :class:`FeatureLinear` built on
such a layer needs no lookup of its own.

What a call returns (``B`` = batch, ``d`` = ``embedding_dim``)::

    {"fields": (B, F, d)   one row per categorical feature (categorical, domain,
                           categorical proxy) and per sequence (mean of its non-padding
                           ids; id 0 is padding), in schema order;
     "dense":  (B, n)      dense scalars (dense, dense proxy) then vectors, concatenated
                           in schema order (n = number of scalars + sum of vector widths),
     "first_order": (B, F, 1)  only with ``first_order=True``: the id weights of the
                           same fields (sequences: mean over non-padding ids)}

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
from tfdebias.optimizers import distinct_slices, gather_rows, sum_duplicates, summing_matrix
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
      first_order: also keep a scalar weight per id (variable ``first_order``, zeros
        at start, the same ``l2``) and return the fields' weights as ``first_order``;
        :class:`~tfdebias.layers.FeatureLinear` can then share this layer's lookups.

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
        first_order: bool = False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.schema = as_schema(schema)
        self.first_order = bool(first_order)
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
        self.first_order_weights = None

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
            if self.first_order:
                self.first_order_weights = self.add_weight(
                    name="first_order", shape=(self.total_rows, 1), initializer="zeros",
                    autocast=False,
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

    def _gather(self, ids, tables: Sequence[str], first_order: bool = False) -> list:
        """Rows for ``ids`` (..., k): ``ids[..., j]`` indexes table ``tables[j]`` (a
        single table broadcasts). Checks every id against its table's size, shifts it
        by the table's offset and gathers once per variable: ``[embeddings (..., d)]``,
        plus ``first_order (..., 1)`` if asked."""
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
        variables = [self.embeddings] + ([self.first_order_weights] if first_order else [])
        frozen_cols = [j for j, t in enumerate(tables) if t in self.frozen]
        if not frozen_cols:
            return _lookup(variables, ids)
        if len(frozen_cols) == len(tables):
            return [tf.gather(_still(v), ids) for v in variables]
        # Gather the live and the frozen columns apart (a mask on one gather would
        # still hand the optimizer zero-gradient frozen rows, which Adam's momentum
        # moves), then put the columns back in order.
        live_cols = [j for j in range(len(tables)) if j not in frozen_cols]
        live = _lookup(variables, tf.gather(ids, live_cols, axis=-1))
        order = np.argsort(live_cols + frozen_cols)
        frozen_ids = tf.gather(ids, frozen_cols, axis=-1)
        return [tf.gather(tf.concat([rows, tf.gather(_still(v), frozen_ids)], axis=-2),
                          order, axis=-2)
                for v, rows in zip(variables, live)]

    def lookup(self, features, name: str):
        """Embedding of a scalar id feature: (B, d)."""
        if not self.schema[name].is_categorical:
            raise SchemaError(
                f"lookup({name!r}): a {self.schema[name].role} feature is not a scalar id"
            )
        ids = ops.reshape(self._get(features, name), (-1,))
        emb = ops.cast(self._gather(ids, [self.table(name).name])[0], self.compute_dtype)
        self._penalise(emb)
        return emb

    def sequence(self, features, name: str):
        """Per-position embeddings (B, L, d) of a sequence and its mask (B, L), bool,
        ``True`` where the id is not padding (0). Padding rows are zeroed."""
        ids = self._get(features, name)
        ids = ops.reshape(ids, (-1, self.schema[name].max_len))
        mask = ops.not_equal(ids, 0)
        emb = ops.cast(self._gather(ids, [self.table(name).name])[0], self.compute_dtype)
        emb = emb * ops.cast(mask, emb.dtype)[..., None]
        self._penalise(emb)
        return emb, mask

    def pooled(self, features, name: str):
        """Mean of a sequence's non-padding embeddings: (B, d); zeros if all padding."""
        emb, mask = self.sequence(features, name)
        count = ops.maximum(ops.sum(ops.cast(mask, emb.dtype), axis=1, keepdims=True), 1.0)
        return ops.sum(emb, axis=1) / count

    def _penalise(self, emb):
        if self.l2:
            per_row = ops.sum(ops.reshape(ops.square(emb), (ops.shape(emb)[0], -1)), axis=1)
            self.add_loss(self.l2 * ops.mean(per_row))

    # -- the call ---------------------------------------------------------------------
    def call(self, features, include=None, exclude=None, roles=None):
        chosen = self.select(include, exclude, roles)
        widths = [self.embedding_dim] + ([1] if self.first_order else [])
        batch = self._batch_size(features, chosen)
        # Every id of every embedded field, scalar ids and sequence positions alike, in
        # one (B, K) matrix and one lookup (one `unique` for the whole call).
        embedded = [f for f in chosen if f.is_categorical or f.role == "sequence"]
        if embedded:
            columns = [ops.reshape(ops.cast(self._get(features, f.name), self._id_dtype),
                                   (-1, f.max_len if f.role == "sequence" else 1))
                       for f in embedded]
            tables = [f.table for f, c in zip(embedded, columns) for _ in range(c.shape[1])]
            ids = ops.concatenate(columns, axis=1) if len(columns) > 1 else columns[0]
            rows = [ops.cast(r, self.compute_dtype)
                    for r in self._gather(ids, tables, self.first_order)]
            if any(f.role == "sequence" for f in embedded):
                rows = self._pool_sequences(embedded, columns, rows)
            else:
                for r in rows:
                    self._penalise(r)
            fields = rows  # [(B, F, d)] (+ [(B, F, 1)]) in schema order
        else:
            fields = [ops.zeros((batch, 0, w), dtype=self.compute_dtype) for w in widths]
        dense = [
            ops.reshape(ops.cast(self._get(features, f.name), self.compute_dtype), (-1, 1))
            for f in chosen
            if f.is_dense
        ] + [
            ops.reshape(ops.cast(self._get(features, f.name), self.compute_dtype), (-1, f.width))
            for f in chosen
            if f.role == "vector"
        ]
        if dense:
            dense = ops.concatenate(dense, axis=1) if len(dense) > 1 else dense[0]
        else:
            dense = ops.zeros((batch, 0), dtype=self.compute_dtype)
        out = {"fields": fields[0], "dense": dense}
        if self.first_order:
            out["first_order"] = fields[1]
        return out

    def _pool_sequences(self, embedded, columns, rows):
        """Per field: a scalar id's row, or the mean of a sequence's non-padding rows.
        Penalises the rows looked up (padding positions are zero and add nothing)."""
        pieces = [[] for _ in rows]
        looked_up = [[] for _ in rows]
        start = 0
        for f, column in zip(embedded, columns):
            width = column.shape[1]
            keep = None
            if f.role == "sequence":
                keep = ops.cast(ops.not_equal(column, 0), rows[0].dtype)[..., None]  # (B, L, 1)
                count = ops.maximum(ops.sum(keep, axis=1), 1.0)
            for k, r in enumerate(rows):
                part = r[:, start:start + width]
                if keep is None:
                    pieces[k].append(part[:, 0])
                else:
                    part = part * keep
                    pieces[k].append(ops.sum(part, axis=1) / count)
                looked_up[k].append(part)
            start += width
        if self.l2:
            for parts in looked_up:
                self._penalise(ops.concatenate(parts, axis=1))
        return [ops.stack(p, axis=1) for p in pieces]

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
            first_order=self.first_order,
        )
        return config


def _still(variable):
    """The whole variable as a tensor through ``stop_gradient`` (frozen tables)."""
    return tf.stop_gradient(ops.convert_to_tensor(variable))


def _recording() -> bool:
    """True if a gradient tape may record the ops built now (``False`` when tracing
    for inference or export, where a lookup needs no gradient)."""
    try:
        from tensorflow.python.eager import record
    except ImportError:  # pragma: no cover - TF moved it; always prepare the gradient
        return True
    return bool(record.could_possibly_record())


def _lookup(variables, ids) -> list:
    """``variable[ids]`` for each variable, with one ``tf.unique`` of the ids for all.

    Forward: one sparse ``ResourceGather`` per variable with ``ids`` as they are.
    Backward: the rows of repeated ids are summed (:func:`sum_duplicates`, with a
    summing matrix built in the forward pass, off the backward's critical path) and
    the gradient is a :func:`distinct_slices` over the distinct ids, so a sparse
    optimizer does not deduplicate again. The same sums as ``tf.gather``'s gradient
    (an ``IndexedSlices`` with one row per occurrence), in a different order of
    additions. Without a recording tape this is a plain ``tf.gather``.
    """
    if not _recording():
        return [gather_rows(v, ids) for v in variables]
    flat = tf.reshape(ids, [-1])
    unique, position = tf.unique(flat)
    n_unique = tf.size(unique)
    # one matrix for all: a layer's variables share its dtype (sum_duplicates would
    # fall back to the segment sum for any other)
    matrix = summing_matrix(position, n_unique, variables[0].dtype)
    out = []
    for variable in variables:
        rows = _distinct_gather(variable, flat, unique, position, n_unique, matrix)
        out.append(tf.reshape(rows, tf.concat([tf.shape(ids), [int(variable.shape[-1])]], 0)))
    return out


def _distinct_gather(variable, flat, unique, position, n_unique, matrix):
    dense_shape = tf.constant([int(n) for n in variable.shape], tf.int64)

    @tf.custom_gradient
    def gather(ids):
        rows = gather_rows(variable, ids)  # read here, so the gradient reaches it

        def grad(dy, variables=None):
            summed = sum_duplicates(dy, position, n_unique, matrix)
            return None, [distinct_slices(summed, unique, dense_shape)] * len(variables or ())

        return rows, grad

    return gather(flat)
