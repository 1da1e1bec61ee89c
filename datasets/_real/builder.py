"""The real-data builder base: the packed storage and the TFDS builder class.

TFDS's per-example Python encoder writes about 2,000 rows/s for a row of 80 features,
which would take hours for KuaiRec's 17M rows, and a ``tf.train.Example`` repeats every
feature name in every row (~1.5 KB a row). The builders' features are therefore a
:class:`PackedFeatures` dict: reading gives one tensor per schema field, as usual, but each
stored example holds two byte strings (all int ids, all floats), so every row has the same
length and a block of rows is serialised by numpy in one pass (:func:`serialize_block`).
The rows are written as TFDS ``tfrecord`` shards with TFDS's own file names and split
metadata (:func:`write_split`); ``tfds.builder(...).as_dataset`` reads them like any other
TFDS data set, and :func:`read_packed_split` reads a whole split in bulk. Everything is
written inside TFDS's ``incomplete.*`` temporary directory, which is renamed on success
and deleted on failure; a failed first build also removes the empty
``<data_dir>/<name>/`` folder.
"""

from __future__ import annotations

import abc
import dataclasses
import json
import shutil
import sys
from pathlib import Path
from typing import Callable, Iterable, Iterator, Mapping

import numpy as np
import tensorflow_datasets as tfds
from tensorflow_datasets.core.dataset_builder import FileReaderBuilder

from tfdebias.errors import DataError, SchemaError
from tfdebias.schema import Feature, Schema

from .discovery import check_manual_dir, find_file

Columns = dict[str, np.ndarray]

VERSION = tfds.core.Version("1.0.0")
RELEASE_NOTES = {"1.0.0": "Initial release."}

#: Rows per serialised block (and per output shard). Bounds the memory of one block.
BLOCK_ROWS = 200_000
#: Rows serialised at once (bounds the byte matrix of :func:`serialize_block`).
SERIALIZE_ROWS = 50_000


# -- writing -------------------------------------------------------------------------------


def check_block(schema: Schema, cols: Mapping[str, np.ndarray], where: str) -> int:
    """Raise :class:`SchemaError` unless ``cols`` matches ``schema``; return the rows.

    Checks names, dtypes, shapes, equal lengths, ids inside ``[0, vocab_size)`` and
    finite floats (a builder bug, never a user error: raw-data problems are DataErrors
    raised while reading).
    """
    names, expected = set(cols), {f.name for f in schema}
    if names != expected:
        raise SchemaError(f"{where}: columns differ from the schema (missing "
                          f"{sorted(expected - names)}, extra {sorted(names - expected)})")
    lengths = {len(v) for v in cols.values()}
    if len(lengths) != 1:
        raise SchemaError(f"{where}: columns have different lengths {sorted(lengths)}")
    for f in schema:
        v = cols[f.name]
        if str(v.dtype) != f.dtype or tuple(v.shape[1:]) != f.shape:
            raise SchemaError(f"{where}: column {f.name!r} is {v.dtype}{list(v.shape[1:])}, "
                              f"the schema says {f.dtype}{list(f.shape)}")
        if f.vocab_size and v.size and (v.min() < 0 or v.max() >= f.vocab_size):
            raise SchemaError(f"{where}: column {f.name!r} has ids in [{v.min()}, {v.max()}], "
                              f"outside [0, {f.vocab_size})")
        if v.dtype.kind == "f" and v.size and not np.isfinite(v).all():
            raise SchemaError(f"{where}: column {f.name!r} has NaN or infinite values")
    return lengths.pop()


def _vbytes(x: int) -> bytes:
    """The protobuf varint of one non-negative int."""
    out = bytearray()
    while True:
        b, x = x & 0x7F, x >> 7
        out.append(b | (0x80 if x else 0))
        if not x:
            return bytes(out)


class PackedFeatures(tfds.features.FeaturesDict):
    """A ``FeaturesDict`` of the schema's fields, stored as two byte strings per example.

    Reading it (``builder.as_dataset``) gives exactly the dict a plain ``FeaturesDict``
    of the same ``Tensor`` features gives: one tensor per schema field with the
    schema's shape and dtype. On disk, though, each ``tf.train.Example`` holds just two
    ``bytes`` features: ``int64s`` (every int64 field, flattened in sorted name order,
    stored as raw little-endian int32: ids are remapped to ``0..V-1`` and a value that does
    not fit raises :class:`SchemaError` when writing) and ``float32s`` (every float32 field
    likewise, raw little-endian float32), decoded with ``tf.io.decode_raw``.

    Why: a ``tf.train.Example`` repeats every feature's name in every row, which for
    KuaiRec's 58 fields is ~1.5 KB per row (26 GB for 17M rows) and ~2,000 rows/s
    through TFDS's per-example encoder. Packed, a KuaiRec row is ~0.4 KB and every row of
    a data set has the same length and layout, so a block of rows is serialised by numpy
    in one pass (:func:`serialize_block`), and reading parses two features per row
    instead of 58.
    """

    # TFDS writes ``<__module__>.<name>`` into every prepared data set's features.json and
    # imports it back from there; keep the name the files have always held.
    __module__ = "tfdebias.datasets._real"

    INT_KEY = "int64s"
    FLOAT_KEY = "float32s"

    def __init__(self, feature_dict, **kwargs):
        super().__init__(feature_dict, **kwargs)
        self._layout = {self.INT_KEY: [], self.FLOAT_KEY: []}
        offsets = {self.INT_KEY: 0, self.FLOAT_KEY: 0}
        for name in sorted(self.keys()):
            f = self[name]
            dtype = np.dtype(f.np_dtype)
            key = self.INT_KEY if dtype == np.int64 else self.FLOAT_KEY if dtype == np.float32 else None
            if key is None:
                raise SchemaError(f"PackedFeatures: {name!r} is {dtype}; only int64 and float32 pack")
            shape = tuple(f.shape)
            width = int(np.prod(shape)) if shape else 1
            self._layout[key].append((name, offsets[key], width, shape))
            offsets[key] += width
        self._sizes = dict(offsets)

    @classmethod
    def from_schema(cls, schema: Schema) -> "PackedFeatures":
        return cls({f.name: tfds.features.Tensor(shape=f.shape, dtype=np.dtype(f.dtype)) for f in schema})

    def _keys_stored(self):
        return [k for k in (self.FLOAT_KEY, self.INT_KEY) if self._sizes[k]]

    def get_serialized_info(self):
        return {k: tfds.features.TensorInfo(shape=(), dtype=np.object_) for k in self._keys_stored()}

    def pack(self, cols: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """``{int64s: [n, k] int32, float32s: [n, m] float32}`` of a block of columns."""
        n = len(next(iter(cols.values())))
        out = {}
        for key, dtype in ((self.INT_KEY, "<i4"), (self.FLOAT_KEY, "<f4")):
            m = np.empty((n, self._sizes[key]), dtype)
            for name, off, width, _ in self._layout[key]:
                v = np.asarray(cols[name]).reshape(n, width)
                if key == self.INT_KEY and v.size and (v.min() < -2**31 or v.max() >= 2**31):
                    raise SchemaError(f"PackedFeatures: {name!r} has values outside int32")
                m[:, off:off + width] = v
            out[key] = m
        return out

    def encode_example(self, example_dict):
        packed = self.pack({k: np.asarray(v)[None] for k, v in example_dict.items()})
        return {k: packed[k][0].tobytes() for k in self._keys_stored()}

    def _unpack(self, raw: dict, decode):
        out = {}
        for key, dtype in ((self.INT_KEY, "int64"), (self.FLOAT_KEY, "float32")):
            if not self._sizes[key]:
                continue
            flat = decode(raw[key], dtype, self._sizes[key])
            for name, off, width, shape in self._layout[key]:
                out[name] = flat[off:off + width] if shape else flat[off]
                if len(shape) > 1:
                    out[name] = out[name].reshape(shape)
        return out

    def decode_example(self, serialized_example, *, decoders=None):
        import tensorflow as tf

        def decode(x, dtype, size):
            if dtype == "int64":
                return tf.cast(tf.reshape(tf.io.decode_raw(x, tf.int32), [size]), tf.int64)
            return tf.reshape(tf.io.decode_raw(x, tf.float32), [size])

        return self._unpack(serialized_example, decode)

    def decode_example_np(self, serialized_example, *, decoders=None):
        def decode(x, dtype, size):
            if dtype == "int64":
                return np.frombuffer(x, dtype="<i4").reshape(size).astype(np.int64)
            return np.frombuffer(x, dtype="<f4").reshape(size)

        return self._unpack(serialized_example, decode)


def _example_template(features: PackedFeatures) -> tuple[bytes, dict[str, int], int]:
    """The constant bytes of every packed ``tf.train.Example`` and where each payload goes.

    ``Example{features: Features{feature: {key: Feature{bytes_list: BytesList{value: [payload]}}}}}``
    with payloads of fixed sizes, so every varint length is a constant too.
    """
    body, where = b"", {}
    for key in features._keys_stored():  # noqa: SLF001
        size = features._sizes[key] * 4  # noqa: SLF001  (int32 and float32 values)
        blist = b"\x0a" + _vbytes(size)  # BytesList.value (field 1), then the payload
        feat = b"\x0a" + _vbytes(len(blist) + size)  # Feature.bytes_list (field 1)
        k = key.encode()
        entry = b"\x0a" + _vbytes(len(k)) + k + b"\x12" + _vbytes(len(feat) + len(blist) + size)
        head = b"\x0a" + _vbytes(len(entry) + len(feat) + len(blist) + size)  # map entry (field 1)
        prefix = head + entry + feat + blist
        where[key] = len(body) + len(prefix)
        body += prefix + bytes(size)
    header = b"\x0a" + _vbytes(len(body))  # Example.features (field 1)
    template = header + body
    return template, {k: v + len(header) for k, v in where.items()}, len(template)


def serialize_block(features: PackedFeatures, cols: Mapping[str, np.ndarray]) -> np.ndarray:
    """A block of rows as serialised packed ``tf.train.Example``s: ``[rows, length]`` uint8.

    Every row has the same length, so the block is one template row broadcast over the
    rows plus two column ranges holding the raw int64 and float32 values: vectorised,
    no per-row Python. TFDS's reader (``builder.as_dataset``) parses and decodes them
    (``tests/datasets/test_real_common.py`` checks the round trip and the bytes).
    """
    template, where, length = _example_template(features)
    packed = features.pack(cols)
    n = len(next(iter(packed.values())))
    rows = np.empty((n, length), np.uint8)
    rows[:] = np.frombuffer(template, np.uint8)
    for key, at in where.items():
        raw = np.ascontiguousarray(packed[key]).view(np.uint8).reshape(n, -1)
        rows[:, at:at + raw.shape[1]] = raw
    return rows


def read_packed_split(builder, split: str) -> dict[str, np.ndarray]:
    """Every row of a packed split as numpy columns, read in bulk.

    The inverse of :func:`serialize_block`: every stored row has the same length and
    layout, so the raw records are copied into one ``[rows, length]`` byte matrix and each
    field is a column slice of it, instead of parsing ``tf.train.Example``s one by one
    (``builder.as_dataset``), which is 10-20x slower. Rows come in shard order, the
    order they were written. The constant bytes of every row are checked against the
    layout, so a file that does not hold this layout is an error, not wrong numbers.
    """
    import tensorflow as tf

    features = builder.info.features
    info = builder.info.splits[split]
    template, where, length = _example_template(features)
    n = int(info.num_examples)
    rows = np.empty((n, length), np.uint8)
    at = 0
    try:
        for batch in tf.data.TFRecordDataset([str(f) for f in info.filepaths]).batch(1 << 16):
            records = batch.numpy()
            if any(len(r) != length for r in records):
                raise DataError(f"{builder.name} {split}: a stored record is not {length} bytes "
                                "long; the files do not hold this data set's packed layout",
                                path=info.filepaths[0])
            rows[at:at + len(records)] = np.frombuffer(b"".join(records), np.uint8).reshape(-1, length)
            at += len(records)
    except tf.errors.DataLossError:
        raise DataError(f"{builder.name} {split}: a stored record is corrupted (its checksum does not "
                        f"match); delete {builder.data_dir} and prepare the data set again",
                        path=info.filepaths[0]) from None
    if at != n:
        raise DataError(f"{builder.name} {split}: {at} rows stored, {n} expected", path=info.filepaths[0])
    constant = np.ones(length, bool)
    for key, start in where.items():
        constant[start:start + 4 * features._sizes[key]] = False  # noqa: SLF001
    if n and (rows[:, constant] != np.frombuffer(template, np.uint8)[constant]).any():
        raise DataError(f"{builder.name} {split}: stored rows do not match the packed layout",
                        path=info.filepaths[0])
    out = {}
    for key, dtype in ((features.INT_KEY, "<i4"), (features.FLOAT_KEY, "<f4")):
        size = features._sizes[key]  # noqa: SLF001
        if not size:
            continue
        flat = np.ascontiguousarray(rows[:, where[key]:where[key] + 4 * size]).view(dtype)
        for name, off, width, shape in features._layout[key]:  # noqa: SLF001
            col = flat[:, off:off + width].reshape((n, *shape))
            out[name] = col.astype(np.int64) if key == features.INT_KEY else col.astype(np.float32, copy=True)
        del flat
    return out


def _write_rows(writer, rows: np.ndarray) -> None:
    """Append fixed-length serialised rows to a ``tf.io.TFRecordWriter``.

    TFRecord framing needs a CRC-32C per record, which TensorFlow's writer computes in
    C++; one ``bytes`` slice per record is its fastest feed (faster than
    ``tf.strings.substr`` plus a ``tf.data`` writer, or a numpy CRC).
    """
    n, length = rows.shape
    data = rows.tobytes()
    write = writer.write
    for a in range(0, n * length, length):
        write(data[a:a + length])


def block_rows(schema: Schema, target_bytes: int = 48 << 20) -> int:
    """Rows per block so that one block of packed values is about ``target_bytes``
    (wide rows such as WeChat's 512-d embeddings get smaller blocks)."""
    values = sum(int(np.prod(f.shape)) if f.shape else 1 for f in schema)
    return int(np.clip(target_bytes // (4 * max(values, 1)), 10_000, BLOCK_ROWS))


def row_blocks(schema: Schema, encode: Callable[..., Columns], *rows: np.ndarray) -> Iterator[Columns]:
    """A split's column blocks, made lazily: ``encode(*(r[a:b] for r in rows))`` for
    consecutive ranges of :func:`block_rows` rows of the equally long arrays ``rows``
    (row indices, and any per-row values ``encode`` takes with them)."""
    step = block_rows(schema)
    for start in range(0, len(rows[0]), step):
        yield encode(*(r[start:start + step] for r in rows))


def categorical(sizes: Mapping[str, int] | None, name: str, description: str, **kwargs) -> Feature:
    """A ``categorical`` feature whose vocabulary size ``sizes[name]`` is known once the data
    are read; 1 (a placeholder) while :meth:`RealDataBuilder.schema` declares the fields
    without ``sizes``. ``kwargs`` go to :class:`~tfdebias.schema.Feature` (e.g. ``vocab``)."""
    return Feature(name, "categorical", vocab_size=(sizes or {}).get(name, 1), description=description,
                   **kwargs)


def write_split(builder, split: str, blocks: Iterable[Mapping[str, np.ndarray]], schema: Schema,
                *, shard_bytes: int = 256 << 20):
    """Write ``blocks`` (column dicts) as the TFDS tfrecord shards of ``split``.

    Blocks are appended to a shard until it holds about ``shard_bytes``; returns the
    ``tfds.core.SplitInfo``.
    """
    import tensorflow as tf

    import time

    template = builder._get_filename_template(split_name=split)  # noqa: SLF001  (TFDS's own naming)
    features = builder.info.features
    tmp_paths, lengths, sizes = [], [], []
    t0 = last = time.monotonic()
    where = f"{builder.name} {split}"
    writer = None
    try:
        for block in blocks:
            n = check_block(schema, block, where)
            if n == 0:
                continue
            if writer is None or sizes[-1] >= shard_bytes:
                if writer is not None:
                    writer.close()
                tmp_paths.append(Path(template.data_dir) / f"{builder.name}-{split}.partial-{len(tmp_paths):05d}")
                writer = tf.io.TFRecordWriter(str(tmp_paths[-1]))
                lengths.append(0)
                sizes.append(0)
            for a in range(0, n, SERIALIZE_ROWS):
                rows = serialize_block(features, {k: v[a:a + SERIALIZE_ROWS] for k, v in block.items()})
                _write_rows(writer, rows)
                sizes[-1] += rows.size + 16 * rows.shape[0]  # + TFRecord framing
            lengths[-1] += n
            if time.monotonic() - last > 5.0:  # a person sees a long prepare move
                last = time.monotonic()
                done = sum(lengths)
                print(f"  {builder.name} {split}: {done:,d} rows written ({done / (last - t0):,.0f} rows/s)",
                      file=sys.stderr, flush=True)
    finally:
        if writer is not None:
            writer.close()
    final = template.sharded_filepaths(len(tmp_paths))
    for tmp, dst in zip(tmp_paths, final):
        tmp.rename(Path(dst))
    return tfds.core.SplitInfo(name=split, shard_lengths=lengths, num_bytes=sum(sizes),
                               filename_template=template)


# -- the builder base ----------------------------------------------------------------------


class PrepareMessages:
    """A builder mixin: one line when preparing starts and one when it ends (rows and
    time), on standard error, instead of TFDS's download-size lines on standard output
    (a data set read from disk or simulated downloads nothing)."""

    def _log_download_bytes(self) -> None:
        import time

        self._prepare_t0 = time.monotonic()
        print(f"Preparing {self.name}/{self.builder_config.name} {self.version} in {self.data_dir_root} ...",
              file=sys.stderr, flush=True)

    def _log_download_done(self) -> None:
        import time

        rows = sum(int(s.num_examples) for s in self.info.splits.values())
        seconds = time.monotonic() - getattr(self, "_prepare_t0", time.monotonic())
        print(f"Prepared {self.name}/{self.builder_config.name}: {rows:,d} rows in {seconds:.1f} s",
              file=sys.stderr, flush=True)


@dataclasses.dataclass(eq=False)
class RealConfig(tfds.core.BuilderConfig):
    """Base config of a real builder; subclasses add the preprocessing fields."""

    def params(self) -> dict:
        skip = {f.name for f in dataclasses.fields(tfds.core.BuilderConfig)}
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in skip}


class RealDataBuilder(PrepareMessages, FileReaderBuilder, skip_registration=True):
    """Base TFDS builder of a real data set read from ``manual_dir``.

    Subclasses set ``BUILDER_CONFIGS``, ``HOMEPAGE``, ``DOWNLOAD_PAGE``,
    ``REQUIRED_FILES`` and ``MANUAL_DOWNLOAD_INSTRUCTIONS``, and implement
    :meth:`schema` (the fields with their static shapes; vocabulary sizes may be
    placeholders until the data are read) and :meth:`generate` (the final schema and,
    per split, an iterable of column blocks).
    """

    VERSION = VERSION
    RELEASE_NOTES = RELEASE_NOTES
    HOMEPAGE: str = ""

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        # tfdebias.datasets is the top-level datasets/ folder mapped into the package
        # (setup.py package_dir); TFDS would look for README/CITATIONS/dummy_data under
        # tfdebias/datasets/<name>/, so point it at the builder's real folder.
        from etils import epath

        module_file = Path(sys.modules[cls.__module__].__file__)
        cls.pkg_dir_path = epath.Path(module_file.parent)
        cls.code_path = epath.Path(module_file)

    DOWNLOAD_PAGE: str = ""
    REQUIRED_FILES: tuple[str, ...] = ()

    @abc.abstractmethod
    def schema(self) -> Schema:
        """The fields (static shapes) before the data are read."""

    @abc.abstractmethod
    def generate(self, manual_dir: Path) -> tuple[Schema, dict[str, Iterable[Columns]]]:
        """Read the raw files; return the final schema and each split's column blocks."""

    @property
    def params(self) -> dict:
        cfg = self.builder_config
        return cfg.params() if isinstance(cfg, RealConfig) else {}

    def _info(self) -> tfds.core.DatasetInfo:
        schema = self.schema()
        doc = (sys.modules[type(self).__module__].__doc__ or "").strip()
        return self.dataset_info_from_configs(
            description=doc,
            features=PackedFeatures.from_schema(schema),
            metadata=tfds.core.MetadataDict(schema=schema.to_json(),
                                            params=json.dumps(self.params, sort_keys=True)),
            homepage=self.HOMEPAGE,
            disable_shuffling=True,
        )

    def _download_and_prepare(self, dl_manager, download_config=None):
        import tempfile

        manual_dir = check_manual_dir(dl_manager, files=self.REQUIRED_FILES, page=self.DOWNLOAD_PAGE)
        with tempfile.TemporaryDirectory(prefix="tfdebias-scratch-", dir=str(self.data_dir_root)) as tmp:
            self._scratch_dir = Path(tmp)
            try:
                schema, splits = self.generate(manual_dir)
                template = self.schema()
                shapes = {f.name: (f.role, f.shape) for f in template}
                if {f.name: (f.role, f.shape) for f in schema} != shapes:
                    raise SchemaError(f"{self.name}: the generated schema differs from the declared one")
                infos = [write_split(self, name, blocks, schema) for name, blocks in splits.items()]
            finally:
                self._scratch_dir = None
        empty = [i.name for i in infos if i.num_examples == 0]
        if len(empty) == len(infos):
            raise DataError(f"{self.name}: no rows are left after preprocessing; the raw files hold "
                            "too little data for this config", path=manual_dir)
        if empty:  # TFDS cannot read a split without data; leave it out, and say so
            import logging

            logging.getLogger("tfdebias").warning("%s: splits %s are empty and left out", self.name, empty)
        infos = [i for i in infos if i.num_examples > 0]
        self.info.set_splits(tfds.core.SplitDict(infos))
        self.info.metadata["schema"] = schema.to_json()

    def required_paths(self, manual_dir: Path) -> dict[str, Path]:
        """Each of ``REQUIRED_FILES`` found below ``manual_dir`` (:func:`find_file`), by its
        entry in ``REQUIRED_FILES``; a missing one raises one :class:`DataError` naming it
        and ``DOWNLOAD_PAGE``."""
        return {f: find_file(manual_dir, f, page=self.DOWNLOAD_PAGE) for f in self.REQUIRED_FILES}

    def scratch(self, name: str, shape: tuple, dtype=np.float32) -> np.ndarray:
        """A zero-filled array on disk (``np.memmap``) for large per-item tables, deleted
        when preparing ends (so item vectors need not fit in memory)."""
        if getattr(self, "_scratch_dir", None) is None:
            return np.zeros(shape, dtype)
        return np.memmap(self._scratch_dir / f"{name}.bin", dtype=dtype, mode="w+", shape=shape)

    def download_and_prepare(self, *args, **kwargs):
        """TFDS's ``download_and_prepare``; a failed first build leaves no folder behind."""
        root = Path(self.data_dir_root) / self.name
        existed = root.exists()
        try:
            return super().download_and_prepare(*args, **kwargs)
        except BaseException:
            if not existed and root.exists() and not any(root.rglob("dataset_info.json")):
                shutil.rmtree(root, ignore_errors=True)
            raise

