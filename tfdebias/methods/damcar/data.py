"""DAMCAR's data preparation from the splits (numpy): scaled features and the item table
(:class:`CascadeData`), the target domain ``S_sam`` (:func:`target_domain`, Eq. (1)-(3)),
the hybrid training set (:func:`hybrid_columns`) and batches.

**Item features live once per item.** Every model input that is a function of the item
(a 512-d feed embedding, text ids, the author, ...) is kept in one table indexed by item
id (``CascadeData.items``). Training sets, target domains and evaluation candidates
carry only ``(user_id, item_id)`` per row (:meth:`CascadeData.ids`,
:meth:`CascadeData.rows`), and the item features are gathered from the table per batch
(:meth:`CascadeData.expand_batch`, :meth:`CascadeData.predict`): the same batches, with
the same values, as per-row copies would give, without memory that grows with rows x
feature width (at WeChat Channels' size, 512-d embeddings copied for every exposed and
target-domain row were tens of GB; ``benchmarks/damcar_scale.py``)."""

from __future__ import annotations

import dataclasses

import numpy as np

from tfdebias.errors import DataError
from tfdebias.methods.damcar.losses import DOMAIN, ITEM, RANK, TARGET, USER, WEIGHT


# =============================================================================================
# Data: item table, scaling, pair features
# =============================================================================================


@dataclasses.dataclass
class CascadeData:
    """Splits with dense scalars scaled (:func:`prepare_cascade`), the item table and the
    feature sides. ``scaling[name] = (log, lo, hi)``: what was applied to a dense input
    (``log1p`` first when ``log``, then ``(v - lo) / (hi - lo)``), so a client can
    reproduce it."""

    splits: dict
    schema: object  # the model schema: user + item features + label
    label: str
    user_names: list
    item_names: list
    items: dict  # item feature name -> (n_item_ids, ...) array indexed by item id
    present: np.ndarray  # item ids that occur in the data
    n_users: int
    n_items: int
    weight_column: str | None
    scaling: dict = dataclasses.field(default_factory=dict)
    #: every split's item-side columns equal the item table at their item ids (checked by
    #: :func:`prepare_cascade`), so a split's rows can be given as ids alone
    #: (:meth:`rows`); False: :meth:`rows` returns the split's own feature columns
    rows_match_items: bool = False
    _tensors: dict = dataclasses.field(default_factory=dict, repr=False, compare=False)

    def pairs(self, users, items) -> dict:
        """Model features of (user, item) pairs (ids as in the data, 1-based), every item
        feature copied per row; :meth:`ids` is the memory-light form of the same rows."""
        return self.expand(self.ids(users, items))

    def ids(self, users, items) -> dict:
        """(user, item) pairs as id columns only (1-based): what the training functions,
        :meth:`predict` and :meth:`expand` take, the item features being looked up in the
        item table (per batch) instead of copied per row."""
        return {USER: np.asarray(users, np.int64), ITEM: np.asarray(items, np.int64)}

    def rows(self, split: str) -> dict:
        """The model inputs of a split's rows: the ``(user, item)`` id columns when the
        split's item features are the item table's (:attr:`rows_match_items`), else the
        split's user and item feature columns."""
        cols = self.splits[split]
        if self.rows_match_items:
            return {k: cols[k] for k in self.user_names + [ITEM]}
        return {k: cols[k] for k in self.user_names + self.item_names}

    def missing_item_features(self, columns) -> list:
        """Item features the model needs that ``columns`` lacks (to gather by item id)."""
        return [n for n in self.item_names if n not in columns]

    def expand(self, columns: dict) -> dict:
        """``columns`` with every missing item feature gathered from the item table (numpy;
        a copy per row: for a block of rows, not for a whole training set)."""
        missing = self.missing_item_features(columns)
        ids = np.asarray(columns[ITEM], np.int64)
        return _ordered({**columns, **{n: self.items[n][ids] for n in missing}},
                        self.user_names + self.item_names)

    def expand_batch(self, batch: dict, names=None) -> dict:
        """A batch of tensors with the item features ``names`` (default: the missing ones)
        gathered from the item table by the batch's item ids (inside ``tf.data`` or a
        model call)."""
        names = self.missing_item_features(batch) if names is None else list(names)
        return gather_items(batch, self.items, names, self._tensors,
                            self.user_names + self.item_names)

    def predict(self, model, columns: dict, **kwargs) -> np.ndarray:
        """:func:`tfdebias.models.predict` of ``model`` (a Keras model or a function of a
        batch) on ``columns``, gathering the missing item features per batch: the same
        batches and outputs as on :meth:`expand`-ed columns."""
        return predict_gathered(model, columns, self.items, self.missing_item_features(columns),
                                self._tensors, self.user_names + self.item_names, **kwargs)

    def corpus(self) -> dict:
        return {n: self.items[n][self.present] for n in self.item_names}


#: rows compared at a time by the item-table checks (bounds their temporary memory)
CHECK_BLOCK_ROWS = 65_536


def _rows_equal(values, ref_rows, ref, block: int = CHECK_BLOCK_ROWS) -> bool:
    """Whether ``values[r] == ref[ref_rows[r]]`` for every row ``r``, compared in blocks
    of rows (no full-size temporary copy of a wide column)."""
    values = np.asarray(values)
    n = len(values)
    for a in range(0, n, block):
        v = values[a:a + block].reshape(min(block, n - a), -1)
        r = np.asarray(ref[ref_rows[a:a + block]]).reshape(len(v), -1)
        if not np.array_equal(v, r):
            return False
    return True


def _ordered(columns: dict, first) -> dict:
    """``columns`` with the keys of ``first`` (those present) first, in that order: the
    key order of full feature columns (``{k: split[k] for k in user_names + item_names}``)."""
    head = [k for k in first if k in columns]
    return {**{k: columns[k] for k in head},
            **{k: v for k, v in columns.items() if k not in head}}


def gather_items(batch: dict, table: dict, names, cache: dict, first=()) -> dict:
    """``batch`` (tensors) plus the item features ``names`` gathered from ``table`` (item
    id -> row arrays) by ``batch[ITEM]``; the table columns become TensorFlow constants
    once, kept in ``cache``. Keys ordered as :func:`_ordered` with ``first``."""
    import tensorflow as tf

    names = list(names)
    if not names:
        return batch
    with tf.init_scope():  # eager even while a tf.data or tf.function graph is traced:
        for n in names:    # the table is captured by reference, never put in a graph
            if n not in cache:
                cache[n] = tf.constant(table[n])
    ids = tf.cast(batch[ITEM], tf.int64)
    return _ordered({**batch, **{n: tf.gather(cache[n], ids) for n in names}}, first)


def predict_gathered(model, columns: dict, table: dict, names, cache: dict, first=(),
                     **kwargs) -> np.ndarray:
    """:func:`tfdebias.models.predict` of ``model`` on ``columns`` with the item features
    ``names`` gathered from ``table`` per batch (:func:`gather_items`): the outputs of
    ``predict`` on columns holding those features row by row, without the copy."""
    import keras

    from tfdebias.models import predict

    names = list(names)
    if not names:
        return predict(model, columns, **kwargs)
    fn = (lambda b: model(b, training=False)) if isinstance(model, keras.Model) else model
    return predict(lambda b: fn(gather_items(b, table, names, cache, first)), columns, **kwargs)


def item_side_names(columns: dict, schema, user_names) -> list[str]:
    """Model inputs that are a function of the item (constant within an item id): each
    row equals the first row of its item (compared in blocks of rows)."""
    ids = np.asarray(columns[ITEM]).reshape(-1)
    _, first, inverse = np.unique(ids, return_index=True, return_inverse=True)
    first_row = first[inverse.reshape(-1)]  # per row, the first row with its item id
    out = []
    for f in schema.inputs:
        if f.name in user_names:
            continue
        if f.name == ITEM or _rows_equal(columns[f.name], first_row, np.asarray(columns[f.name])):
            out.append(f.name)
    return out


def prepare_cascade(splits: dict, schema, log_scale: bool = True) -> CascadeData:
    """Scale dense scalars with the train split's range, build the item table.

    With ``log_scale`` (default) a non-negative dense input (a duration in seconds:
    log-normal, heavy-tailed) is ``log1p``-transformed before the min-max scaling, so
    its values spread over [0, 1] instead of crowding near 0 (the authors min-max scale
    the raw value; ``log_scale=False``)."""
    for need in (USER, ITEM):
        if need not in schema:
            raise DataError(f"DAMCAR needs {USER!r} and {ITEM!r} features; the data set has "
                            f"{[f.name for f in schema.inputs]}")
    for need in ("train", "valid", "test"):
        if need not in splits:
            raise DataError(f"DAMCAR needs train/valid/test splits; got {sorted(splits)}")
    label = schema.label.name
    user_names = [USER]
    item_names = item_side_names(splits["train"], schema, user_names)
    splits = {k: dict(v) for k, v in splits.items()}
    scaling = {}
    for f in schema.by_role("dense"):
        if f.name not in item_names:
            continue
        raw = np.asarray(splits["train"][f.name], np.float64)
        use_log = bool(log_scale) and len(raw) > 0 and float(np.min(raw)) >= 0.0
        tf_ = np.log1p if use_log else (lambda v: v)
        lo, hi = float(np.min(tf_(raw))), float(np.max(tf_(raw)))
        scaling[f.name] = (use_log, lo, hi)
        for cols in splits.values():
            v = tf_(np.maximum(np.asarray(cols[f.name], np.float64), 0.0)) if use_log else \
                np.asarray(cols[f.name], np.float64)
            cols[f.name] = ((v - lo) / max(hi - lo, 1e-9)).astype(np.float32)
    n_ids = schema[ITEM].vocab_size
    items = {}
    for n in item_names:
        f = schema[n]
        items[n] = np.zeros((n_ids, *f.shape), np.dtype(f.dtype))
    seen = np.zeros(n_ids, bool)
    for cols in splits.values():
        ids = np.asarray(cols[ITEM], np.int64)
        seen[ids] = True
        for n in item_names:
            items[n][ids] = cols[n]
    items[ITEM] = np.arange(n_ids, dtype=np.int64)
    # can a split's rows be given as ids (their item features looked up in the table)?
    match = all(np.asarray(cols[n]).dtype == items[n].dtype
                and _rows_equal(cols[n], np.asarray(cols[ITEM], np.int64), items[n])
                for cols in splits.values() for n in item_names if n != ITEM)
    model_schema = schema.select(user_names + item_names + [label])
    weight = "play_seconds" if "play_seconds" in splits["train"] else None
    return CascadeData(splits, model_schema, label, user_names, item_names, items,
                       np.nonzero(seen)[0], schema[USER].vocab_size, n_ids, weight, scaling,
                       rows_match_items=bool(match))


def hybrid_columns(features_e: dict, target_e, rank_e, features_t: dict | None = None,
                   target_t=None, rank_t=None, weight_t: float = 1.0) -> dict:
    """The training set ``S_T = S_exp u S_sam`` as columns (Eq. (12)-(17))."""
    ne = len(target_e)
    cols = {k: np.asarray(v) for k, v in features_e.items()}
    cols[TARGET] = np.asarray(target_e, np.float32)
    cols[RANK] = np.asarray(rank_e, np.float32)
    cols[WEIGHT] = np.ones(ne, np.float32)
    cols[DOMAIN] = np.ones(ne, np.float32)
    if features_t is None:
        return cols
    nt = len(rank_t)
    tt = np.zeros(nt, np.float32) if target_t is None else np.asarray(target_t, np.float32)
    add = {k: np.asarray(features_t[k]) for k in features_e}
    add[TARGET] = tt
    add[RANK] = np.asarray(rank_t, np.float32)
    add[WEIGHT] = np.full(nt, weight_t, np.float32)
    add[DOMAIN] = np.zeros(nt, np.float32)
    return {k: np.concatenate([cols[k], add[k]]) for k in cols}


def target_domain(data: CascadeData, radius, walks, seed, random_sampling=False,
                  like: tuple | None = None):
    """``S_sam`` (1-based ids): Eq. (1)-(3) on the train exposures, watch time as
    ``v_ui``; train and valid exposures are never chosen. ``random_sampling``: the
    w/o TDG ablation, as many random unexposed items per user as ``like`` has."""
    from tfdebias.data import random_walk as rw

    tr = data.splits["train"]
    u0 = np.asarray(tr[USER], np.int64) - 1
    i0 = np.asarray(tr[ITEM], np.int64) - 1
    w = np.asarray(tr[data.weight_column], np.float64) if data.weight_column else \
        np.asarray(tr[data.label], np.float64) + 0.1
    nu, ni = data.n_users - 1, data.n_items - 1
    logged = np.unique(np.concatenate([
        (np.asarray(data.splits[s][USER], np.int64) - 1) * ni
        + np.asarray(data.splits[s][ITEM], np.int64) - 1 for s in ("train", "valid")]))
    if random_sampling:
        per_user = np.bincount(np.asarray(like[0]) - 1, minlength=nu)
        tu, ti = rw.random_unexposed(nu, ni, per_user, logged, seed)
        return tu + 1, ti + 1, {"target_pairs": int(len(tu))}
    tu, ti, stats = rw.generate_target_domain(u0, i0, w, nu, ni, radius=radius, walks=walks,
                                              seed=seed, exclude_keys=logged)
    return tu + 1, ti + 1, stats
