"""The base class of every backbone: built from a schema, called on a feature dict.

The contract (what methods, protocols and the trainer may rely on):

* ``Model(schema, embedding_dim=16, **model_kwargs)``; ``schema`` may also be the
  ``Schema.to_dict()`` that ``get_config`` stores, so ``from_config`` rebuilds the model.
* The input is a dict of tensors keyed by feature name, shaped as the schema says
  (scalars (B,), sequences (B, max_len), vectors (B, width); (B, 1) scalars are accepted).
  Keys that are not model inputs (labels, exposure, truth, anything else) are ignored.
* ``logits(features, training=False)`` -> (B,) float32, the pre-sigmoid score.
* ``call(features, training=False)`` -> (B, 1) probabilities, ``sigmoid(logits)``: what
  ``compile(loss="binary_crossentropy")`` trains and what is served.
* ``representation(features, training=False)`` -> (B, h): the last hidden vector that
  feeds the output layer (documented per model). Methods reuse it as a tower output
  (a domain classifier on top of it, a purifier applied to it).
* ``forward(features, training=False)`` -> ``(logits, representation)`` in one pass.

A subclass implements ``forward`` (preferred: one pass gives both) or just ``logits``;
``representation`` raises :class:`~tfdebias.errors.UsageError` on a model without one.
Constructor arguments are recorded with :meth:`Backbone.remember` so ``get_config``
stores them all.
"""

from __future__ import annotations

from typing import Sequence

import keras
from keras import ops

from tfdebias.errors import SchemaError, UsageError
from tfdebias.layers.feature_embedding import FeatureEmbedding, as_schema
from tfdebias.precision import policy_scope
from tfdebias.schema import Schema


@keras.saving.register_keras_serializable(package="tfdebias")
class Backbone(keras.Model):
    """A CTR backbone built from a :class:`~tfdebias.schema.Schema`.

    Args:
      schema: the data set's schema (or its ``to_dict()``).
      embedding_dim: width of every field embedding.
      embedding_l2: L2 penalty on looked-up embedding rows (see ``FeatureEmbedding``).
      **kwargs: Keras ``Model`` arguments (``name``, ``dtype``, ``trainable``).

    Example (any registered model; ``build`` looks names up):

    >>> from tfdebias import models                                     # doctest: +SKIP
    >>> model = models.build("deepfm", schema, hidden_units=(256, 128)) # doctest: +SKIP
    >>> model.compile(optimizer="adam", loss="binary_crossentropy")     # doctest: +SKIP
    >>> model.fit(features, labels)                                     # doctest: +SKIP
    """

    #: the registry name, set by ``tfdebias.models.register``
    model_name: str = ""
    #: ``None`` if ``tfdebias train`` can fit the model on one split's batches; else why
    #: not and what trains it instead (``train`` refuses such a model before any work)
    engine_unsupported: str | None = None

    def __init__(self, schema, embedding_dim: int = 16, embedding_l2: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self.schema: Schema = as_schema(schema)
        if not self.schema.inputs:
            raise SchemaError(f"{type(self).__name__}: the schema has no model inputs")
        self.embedding_dim = int(embedding_dim)
        self.embedding_l2 = float(embedding_l2)
        if self.embedding_dim < 1:
            raise UsageError(f"embedding_dim must be >= 1, got {embedding_dim}")
        self._model_args: dict = {}

    # -- config -------------------------------------------------------------------
    def remember(self, **args):
        """Record constructor arguments for ``get_config`` (JSON-friendly values)."""
        self._model_args.update(args)

    def get_config(self):
        return {
            "name": self.name,
            "trainable": self.trainable,
            "dtype": keras.dtype_policies.serialize(self.dtype_policy),
            "schema": self.schema.to_dict(),
            "embedding_dim": self.embedding_dim,
            "embedding_l2": self.embedding_l2,
            **self._model_args,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        if isinstance(config.get("dtype"), dict):
            config["dtype"] = keras.dtype_policies.deserialize(config["dtype"])
        if config.get("dtype") is None:
            return cls(**config)
        # Keras gives a model's policy to the model only, not to the sub-layers its
        # constructor creates: rebuild them under the policy the model was saved with.
        with policy_scope(config["dtype"]):
            return cls(**config)

    # -- helpers for subclasses ----------------------------------------------------------
    def feature_embedding(self, embedding_dim: int | None = None, **kwargs) -> FeatureEmbedding:
        """A ``FeatureEmbedding`` over this model's schema (defaults: model's dim and L2)."""
        kwargs.setdefault("l2", self.embedding_l2)
        return FeatureEmbedding(
            self.schema, self.embedding_dim if embedding_dim is None else embedding_dim, **kwargs
        )

    def shared_linear(self, embed: FeatureEmbedding, name: str = "linear"):
        """The first-order part (:class:`~tfdebias.layers.FeatureLinear`) of this model's
        inputs, its id weights kept in ``embed`` (built with ``first_order=True``) and
        looked up with the embeddings in one pass; call it as ``linear(features,
        embedded)`` with ``embedded = embed(features)``. The id weights take ``embed``'s
        L2 (the model's ``embedding_l2``)."""
        from tfdebias.layers.feature_linear import FeatureLinear

        return FeatureLinear(self.schema, l2=self.embedding_l2, embedding=embed, name=name)

    @staticmethod
    def flat_inputs(embedded: dict):
        """``concat(flatten(fields), dense)``: (B, F*d + n), the usual deep input."""
        fields, dense = embedded["fields"], embedded["dense"]
        width = fields.shape[1] * fields.shape[2]
        if width == 0:
            return dense
        flat = ops.reshape(fields, (-1, width))
        if dense.shape[1] == 0:
            return flat
        return ops.concatenate([flat, ops.cast(dense, flat.dtype)], axis=1)

    # -- the contract -----------------------------------------------------------------
    def forward(self, features, training=False):
        """``(logits (B,), representation (B, h) or None)`` in one pass."""
        if type(self).logits is Backbone.logits:
            raise NotImplementedError(
                f"{type(self).__name__} implements neither forward nor logits"
            )
        return self.logits(features, training=training), None

    def logits(self, features, training=False):
        """Pre-sigmoid scores, (B,)."""
        if type(self).forward is Backbone.forward:
            raise NotImplementedError(
                f"{type(self).__name__} implements neither forward nor logits"
            )
        return self.forward(features, training=training)[0]

    def representation(self, features, training=False):
        """The hidden vector that feeds the output layer, (B, h)."""
        rep = self.forward(features, training=training)[1]
        if rep is None:
            name = self.model_name or type(self).__name__
            raise UsageError(f"model {name!r} has no hidden representation")
        return rep

    def call(self, features, training=False):
        logits = ops.cast(ops.reshape(self.logits(features, training=training), (-1,)), "float32")
        return ops.sigmoid(logits)[:, None]


class DeepBackbone(Backbone):
    """A backbone with a deep part: the MLP options every such model takes, in one place.

    Args:
      schema, embedding_dim, embedding_l2: see :class:`Backbone`.
      hidden_units: MLP widths.
      activation, dropout, batch_norm, dnn_l2: MLP options (see :class:`~tfdebias.layers.MLP`;
        ``dnn_l2`` is its ``l2``).

    Subclasses build their MLPs with :meth:`deep_network` and read the options from
    ``self.mlp_options``.
    """

    def __init__(self, schema, embedding_dim: int = 16, hidden_units: Sequence[int] = (256, 128),
                 activation: str = "relu", dropout: float = 0.0, batch_norm: bool = False,
                 dnn_l2: float = 0.0, embedding_l2: float = 0.0, **kwargs):
        super().__init__(schema, embedding_dim, embedding_l2, **kwargs)
        #: the :class:`~tfdebias.layers.MLP` arguments of this model's deep part
        self.mlp_options = dict(hidden_units=[int(u) for u in hidden_units], activation=activation,
                                dropout=float(dropout), batch_norm=bool(batch_norm), l2=float(dnn_l2))
        self.remember(hidden_units=self.mlp_options["hidden_units"], activation=activation,
                      dropout=float(dropout), batch_norm=bool(batch_norm), dnn_l2=float(dnn_l2))

    def deep_network(self, name: str = "dnn", **overrides):
        """An :class:`~tfdebias.layers.MLP` with this model's options (``overrides`` win)."""
        from tfdebias.layers.mlp import MLP

        return MLP(**{**self.mlp_options, **overrides}, name=name)


def build_on_first_call(self, input_shape=None):
    """A ``build`` for a model whose first call builds its sub-layers (some through
    helpers such as ``amid.build_amid`` or ``LabelGenerator.build_all``, since one call
    does not reach them all): nothing to create here. Assign it as ``build =
    build_on_first_call``; without a build method Keras first traces a symbolic call
    and warns about the sub-layers that call leaves unbuilt."""
    self.built = True


def _is_side(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + "_")


def split_sides(
    schema: Schema,
    user_features: Sequence[str] | None = None,
    item_features: Sequence[str] | None = None,
) -> tuple[list[str], list[str]]:
    """Which model inputs describe the user and which the item (for NCF, DSSM, ...).

    Explicit lists win. Otherwise, by name: ``user`` / ``user_*`` go to the user side,
    ``item`` / ``item_*`` to the item side, and a ``sequence`` (a behaviour history)
    not named ``item_*`` to the user side. Other inputs (context, domain, proxies)
    belong to neither side. Raises :class:`SchemaError` if a side ends up empty.
    """
    names = [f.name for f in schema.inputs]
    for what, given in (("user_features", user_features), ("item_features", item_features)):
        unknown = [n for n in (given or []) if n not in names]
        if unknown:
            raise SchemaError(f"{what}={unknown}: not among the schema's inputs {names}")
    if user_features is None:
        user_features = [
            f.name
            for f in schema.inputs
            if _is_side(f.name, "user")
            or (f.role == "sequence" and not _is_side(f.name, "item")
                and f.name not in (item_features or []))
        ]
    if item_features is None:
        item_features = [
            f.name
            for f in schema.inputs
            if _is_side(f.name, "item") and f.name not in user_features
        ]
    user_features, item_features = list(user_features), list(item_features)
    overlap = sorted(set(user_features) & set(item_features))
    if overlap:
        raise SchemaError(f"features {overlap} are on both the user and the item side")
    for side, got in (("user", user_features), ("item", item_features)):
        if not got:
            raise SchemaError(
                f"no {side}-side features: name them {side}_* (e.g. {side}_id) or pass "
                f"{side}_features=[...]; the schema's inputs are {names}"
            )
    return user_features, item_features
