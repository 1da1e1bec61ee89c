"""From a TFDS split to model batches: the one input path every model and method uses.

A split is read once into memory as a dict of numpy columns (``read_split``), then
served by :func:`make_dataset`, which shuffles *indices*, cuts each epoch's order into
batches by slicing and gathers whole batches (one gather per group of like columns).
Gathering a batch in one op is an order of magnitude faster than batching examples one
by one, so the pipeline stays ahead of the model (``benchmarks/ctr_throughput.py``
trains through it and prints both rates).

Batches are ``(features, label)`` or ``(features, label, sample_weight)`` tuples; the
feature dict holds every column except the label and the simulators' ground truth, so
methods can read exposures while backbones read only their input roles; a column of
role ``truth`` enters only when asked for by name (``make_dataset(..., truth=[...])``).

Example:

>>> splits, schema = load("confounded_ctr", ["train", "valid"])   # doctest: +SKIP
>>> train = make_dataset(splits["train"], schema, batch_size=1024, shuffle=True)  # doctest: +SKIP
"""

from __future__ import annotations

import os
from typing import Iterable, Mapping, Sequence

import numpy as np

from tfdebias.errors import DataError, UsageError
from tfdebias.schema import Schema

Columns = dict[str, np.ndarray]

#: Batches :func:`make_dataset` gathers at once, and batches it keeps ready ahead of
#: the model. One batch's gather costs under a millisecond of CPU (about 1.3 million
#: examples per CPU-second, ``benchmarks/ctr_throughput.py``'s ``pipeline`` row), so
#: two of each keep any model that trains slower than that fed.
PARALLEL_BATCHES = 2
PREFETCH_BATCHES = 2


def _tfds():
    import tensorflow_datasets as tfds

    import tfdebias.datasets  # noqa: F401  (registers every builder)

    return tfds


def default_data_dir() -> str:
    """``$TFDEBIAS_DATA_DIR`` or TFDS's own default (``~/tensorflow_datasets``)."""
    return os.environ.get("TFDEBIAS_DATA_DIR") or os.path.expanduser("~/tensorflow_datasets")


def available() -> list[str]:
    """Names of every tfdebias data set (simulators and real data)."""
    return sorted(_registered_here())


def _registered_here() -> set[str]:
    from tensorflow_datasets.core import registered

    import tfdebias.datasets  # noqa: F401

    out = set()
    for name in registered.list_imported_builders():
        cls = registered.imported_builder_cls(name)
        if cls.__module__.startswith("tfdebias."):
            out.add(name)
    return out


def get_builder(name: str, *, data_dir: str | None = None, data_seed: int | None = None):
    """The TFDS builder for ``name`` (``"confounded_ctr"`` or ``"confounded_ctr/medium"``).

    ``data_seed`` draws a simulator anew: the named config (default: its first) with
    ``params["seed"] = data_seed``, cached as its own config ``<config>-seed<d>``. Real data
    sets have one draw, so a ``data_seed`` for them is a :class:`UsageError`.
    """
    tfds = _tfds()
    base = name.split("/")[0].split(":")[0]
    known = _registered_here()
    if base not in known:
        raise UsageError(f"unknown data set {name!r}; expected one of {sorted(known)}")
    try:
        if data_seed is None:
            return tfds.builder(name, data_dir=data_dir or default_data_dir())
        from tfdebias.datasets.synthetic._base import seeded_config

        if not is_simulator(base):
            raise UsageError(f"data set {name!r} is real data with one draw; data seeds apply to "
                             "the simulators only (use one data seed)")
        cls = tfds.builder_cls(base)
        config = name.split("/")[1].split(":")[0] if "/" in name else None
        return cls(config=seeded_config(cls, config, data_seed), data_dir=data_dir or default_data_dir())
    except (ValueError, KeyError) as e:  # unknown config name, bad version
        raise UsageError(f"data set {name!r}: {e}") from None


def is_simulator(name: str) -> bool:
    """Whether ``name`` is one of the built-in simulators (which can be drawn anew per seed)."""
    from tfdebias.datasets.synthetic import SimulatorBuilder

    base = name.split("/")[0].split(":")[0]
    if base not in _registered_here():
        raise UsageError(f"unknown data set {name!r}; expected one of {sorted(_registered_here())}")
    return issubclass(_tfds().builder_cls(base), SimulatorBuilder)


def evidence_data(name: str) -> str:
    """``name`` as a ``reproduce`` table reads it: a simulator named without a config
    means the config its builder declares as ``EVIDENCE_CONFIG`` (the scenario its method
    is measured on, sized for the tables' power); anything else as given
    (``confounded_ctr`` -> ``confounded_ctr/<its EVIDENCE_CONFIG>``; ``kuairec`` stays)."""
    base, sep, rest = name.partition("/")
    plain, colon, version = base.partition(":")
    if sep or not is_simulator(plain):
        return name
    config = _tfds().builder_cls(plain).EVIDENCE_CONFIG
    return f"{plain}/{config}" + (f":{version}" if colon else "")


def data_seeds(name: str, n: int) -> list[int | None]:
    """The ``data_seed`` of each draw of an evidence table: ``0..n-1`` for a simulator,
    ``[None]`` for a real data set, which has one draw whatever ``n`` says."""
    if n < 1:
        raise UsageError(f"the number of data seeds must be >= 1, got {n}")
    return list(range(n)) if is_simulator(name) else [None]


def prepare(name: str, *, data_dir: str | None = None, manual_dir: str | None = None,
            data_seed: int | None = None):
    """Build ``name`` (for ``data_seed``, see :func:`get_builder`) into ``data_dir`` if it
    is not there yet; return the builder.

    TFDS writes into a temporary directory and renames it when complete, so an
    interrupted prepare leaves nothing half-written behind.
    """
    tfds = _tfds()
    builder = get_builder(name, data_dir=data_dir, data_seed=data_seed)
    if manual_dir is not None and not os.path.isdir(manual_dir):
        page = getattr(builder, "DOWNLOAD_PAGE", "")
        raise DataError("manual directory does not exist", path=manual_dir,
                        expected="a directory holding the raw files"
                        + (f"; download them from {page}" if page else ""))
    config = tfds.download.DownloadConfig(manual_dir=manual_dir) if manual_dir else None
    builder.download_and_prepare(download_config=config)
    return builder


def load_schema(name_or_builder) -> Schema:
    """Read a data set's :class:`Schema` from its TFDS metadata."""
    builder = get_builder(name_or_builder) if isinstance(name_or_builder, str) else name_or_builder
    meta = builder.info.metadata
    if meta is None or "schema" not in meta:
        raise DataError(f"data set {builder.name!r} declares no tfdebias schema in its metadata")
    return Schema.from_json(meta["schema"])


def read_split(builder, split: str) -> Columns:
    """One split as a dict of numpy columns, in stored row order (packed splits are read
    in bulk, :func:`tfdebias.datasets._real.read_packed_split`)."""
    tfds = _tfds()
    if split not in builder.info.splits:
        raise UsageError(
            f"data set {builder.info.full_name!r} has no split {split!r}; "
            f"it has {sorted(builder.info.splits)}"
        )
    from tfdebias.datasets._real import PackedFeatures, read_packed_split

    if isinstance(builder.info.features, PackedFeatures):  # every tfdebias data set
        return read_packed_split(builder, split)
    ds = builder.as_dataset(split=split, batch_size=-1)
    return {k: np.asarray(v) for k, v in tfds.as_numpy(ds).items()}


def load(
    name: str,
    splits: Iterable[str] | None = None,
    *,
    data_dir: str | None = None,
    manual_dir: str | None = None,
    data_seed: int | None = None,
) -> tuple[dict[str, Columns], Schema]:
    """Prepare ``name`` if needed and read ``splits`` (default: all) into memory.

    ``data_seed`` regenerates a simulator with another seed (see :func:`get_builder`).
    Returns ``({split: columns}, schema)``.
    """
    builder = prepare(name, data_dir=data_dir, manual_dir=manual_dir, data_seed=data_seed)
    names = list(splits) if splits is not None else sorted(builder.info.splits)
    return {s: read_split(builder, s) for s in names}, load_schema(builder)


def num_rows(columns: Mapping[str, np.ndarray]) -> int:
    return len(next(iter(columns.values())))


def make_dataset(
    columns: Mapping[str, np.ndarray],
    schema: Schema,
    *,
    batch_size: int = 1024,
    shuffle: bool = False,
    seed: int = 0,
    label: str | None = None,
    weight: str | np.ndarray | None = None,
    drop_remainder: bool = False,
    repeat: bool = False,
    epoch=None,
    autotune: bool = False,
    truth: Sequence[str] = (),
):
    """A ``tf.data.Dataset`` of ``(features, label[, weight])`` batches.

    The feature dict holds every column but the label, except the schema's ``truth``
    columns (a simulator's true relevance, latent confounders, ...): those stay out of
    model inputs unless named in ``truth``, so no model trains on the answer by accident.

    Batch ``i`` of an epoch holds rows ``order[i * batch_size:(i + 1) * batch_size]``,
    where ``order`` is ``range(n)``, or with ``shuffle`` the permutation
    ``tf.random.experimental.stateless_shuffle(range(n), seed=(seed, epoch))``.

    How (``benchmarks/ctr_throughput.py`` measures it): each epoch's ``order`` is cut
    into batches by slicing, never by batching single indices, and each batch is one
    ``tf.gather`` per group of columns with the same dtype and per-row shape (the
    columns of a group are stacked once into an ``(n, k, ...)`` matrix), split back
    into columns. Only batches pass through ``tf.data``; batching scalar indices and
    gathering column by column took about 3x the CPU per batch
    (``benchmarks/pipeline_ab.py``).

    Fixed sizes, no autotuning: :data:`PARALLEL_BATCHES` batches are gathered at a
    time and :data:`PREFETCH_BATCHES` wait ready, and the stream's ``tf.data``
    autotuning is off (``tf.data.Options().autotune.enabled = False``; stages a caller
    adds downstream inherit it). With autotuning on, the ``tf.data`` default, some
    epochs of the ``ctr_throughput`` workload took about 1.5x as long for the same CPU
    time on the 2-core development machine: the training step (about 16 ms of CPU)
    waited on an input stream that costs under 1 ms of CPU per batch. Without it the
    epochs are even (``benchmarks/pipeline_ab.py``, rows ``make_dataset`` and
    ``autotuned``).

    Args:
      columns: numpy columns of one split (see :func:`read_split`).
      schema: the data set's schema; ``label`` defaults to ``schema.label``.
      weight: a column name or an array of per-row sample weights (e.g. IPS weights).
      shuffle: reshuffle every epoch; the order of epoch ``e`` depends only on
        ``(seed, e)``, so a resumed run sees the same batches as an unbroken one. The
        stream counts its own epochs (each pass reads ``epoch`` and adds one).
      drop_remainder: leave out each epoch's last, partial batch.
      repeat: epoch after epoch without end (each ends with its own last batch).
      epoch: a ``tf.Variable`` holding the epoch the next pass will play (one is made
        when omitted and exposed as ``dataset.epoch``; assign it to replay an epoch).
      autotune: let ``tf.data`` tune the stream's parallelism and buffers instead
        (``tf.data.AUTOTUNE``, autotuning on), e.g. for a pipeline extended with costly
        stages of its own.
    """
    import tensorflow as tf

    if batch_size < 1:
        raise UsageError(f"batch_size must be >= 1, got {batch_size}")
    label = label or schema.label.name
    if label not in columns:
        raise DataError(f"no label column {label!r}; columns are {sorted(columns)}")
    n = num_rows(columns)
    hidden = {f.name for f in schema.by_role("truth")} - set(truth)
    unknown = sorted(set(truth) - {f.name for f in schema.by_role("truth")})
    if unknown:
        raise UsageError(f"truth={unknown}: not truth columns of the schema; they are "
                         f"{schema.names('truth')}")
    names = [k for k in columns if k != label and k not in hidden]
    y = tf.constant(np.asarray(columns[label], np.float32))
    w = None
    if weight is not None:
        warr = columns[weight] if isinstance(weight, str) else weight
        warr = np.asarray(warr, np.float32)
        if warr.shape != (n,):
            raise DataError(f"sample weights have shape {warr.shape}, expected ({n},)")
        w = tf.constant(warr)
    groups = _stacked_groups({k: np.asarray(columns[k]) for k in names})

    def gather(idx):
        batch = {}
        for group, matrix in groups:
            rows = tf.gather(matrix, idx)  # (b, k, ...)
            if len(group) == 1:
                parts = [rows[:, 0]]
            elif rows.shape.rank == 2:  # scalars: unstack the contiguous transpose
                parts = tf.unstack(tf.transpose(rows), num=len(group))
            else:
                parts = tf.unstack(rows, num=len(group), axis=1)
            batch.update(zip(group, parts))
        out = ({k: batch[k] for k in names}, tf.gather(y, idx))
        return out + (tf.gather(w, idx),) if w is not None else out

    stops = n - n % batch_size if drop_remainder else n
    starts = tf.range(0, stops, batch_size, dtype=tf.int64)

    def batches(order):
        return tf.data.Dataset.from_tensor_slices(starts).map(
            lambda s: order[s:tf.minimum(s + batch_size, n)])

    if shuffle:
        # The order of epoch e is a pure function of (seed, e). Each pass over the data
        # (a new iterator, or the next round of `repeat`) reads `epoch` and advances it,
        # so plain `model.fit` reshuffles every epoch; setting `epoch` before a pass (the
        # engine's SetEpoch callback) makes a resumed run see exactly its batches.
        epoch = epoch if epoch is not None else tf.Variable(0, dtype=tf.int64, trainable=False)

        def permutation(_):
            current = epoch.assign_add(1, read_value=True) - 1
            key = tf.stack([tf.constant(seed, tf.int64), tf.cast(current, tf.int64)])
            return batches(tf.random.experimental.stateless_shuffle(
                tf.range(n, dtype=tf.int64), seed=key))

        ds = tf.data.Dataset.from_tensors(0).flat_map(permutation)
    else:
        ds = batches(tf.range(n, dtype=tf.int64))
    ds = ds.apply(tf.data.experimental.assert_cardinality(
        -(-stops // batch_size) if stops else 0))
    if repeat:
        ds = ds.repeat()
    parallel, ready = ((tf.data.AUTOTUNE,) * 2 if autotune
                       else (PARALLEL_BATCHES, PREFETCH_BATCHES))
    ds = ds.map(gather, num_parallel_calls=parallel, deterministic=True).prefetch(ready)
    options = tf.data.Options()
    options.autotune.enabled = autotune
    ds = ds.with_options(options)
    if shuffle:
        ds.epoch = epoch  # advanced by each pass; set by the engine's SetEpoch to resume
    return ds


def _stacked_groups(feats: dict[str, np.ndarray]) -> list:
    """``[(names, tensor (n, k, ...))]``: the columns of each (dtype, per-row shape)
    stacked side by side, so a batch is one gather per group."""
    import tensorflow as tf

    groups: dict[tuple, list[str]] = {}
    for k, v in feats.items():
        groups.setdefault((v.dtype.str, v.shape[1:]), []).append(k)
    return [(g, tf.constant(np.stack([feats[k] for k in g], axis=1))) for g in groups.values()]


def features_only(columns: Mapping[str, np.ndarray], schema: Schema) -> dict[str, np.ndarray]:
    """The model-input columns of a split (what a serving request carries)."""
    return {f.name: columns[f.name] for f in schema.inputs if f.name in columns}
