"""The shared machinery of the real-data builders (``datasets/_real/``), and helpers the
per-builder tests use: corrupted copies of dummy data, the CLI run in this process."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import numpy as np
import pytest

from tfdebias.datasets import _real
from tfdebias.errors import DataError
from tfdebias.schema import Feature, Schema

REPO = Path(__file__).resolve().parents[2]


def tfds_test_case():
    """``tfds.testing.DatasetBuilderTestCase``, or ``None`` when its dependency ``dill`` is
    missing (``test_tfds_testing_available`` then fails, saying so, instead of every
    builder test file failing to import)."""
    try:
        import dill  # noqa: F401
    except ModuleNotFoundError:
        return None
    import tensorflow_datasets as tfds

    return tfds.testing.DatasetBuilderTestCase


def test_tfds_testing_available():
    assert tfds_test_case() is not None, (
        "tfds.testing.DatasetBuilderTestCase needs the package `dill` (pip install dill); "
        "the real-data builder tests use it")


# -- helpers for the builder tests ---------------------------------------------------------


def dummy_dir(name: str) -> Path:
    return REPO / "datasets" / name / "dummy_data"


def corrupt_copy(name: str, tmp_path: Path, rel: str, edit) -> Path:
    """A copy of ``name``'s dummy data with file ``rel`` passed through ``edit(text) -> text``
    (``.gz`` files are decompressed and recompressed); ``edit=None`` deletes the file."""
    dst = tmp_path / f"{name}-raw"
    shutil.copytree(dummy_dir(name), dst)
    path = dst / rel
    if edit is None:
        path.unlink()
    elif path.suffix == ".gz":
        text = gzip.decompress(path.read_bytes()).decode("utf-8")
        path.write_bytes(gzip.compress(edit(text).encode("utf-8")))
    else:
        path.write_text(edit(path.read_text(encoding="utf-8")), encoding="utf-8")
    return dst


def replace_line(lineno: int, fn):
    """An ``edit`` that replaces 1-based line ``lineno`` by ``fn(line)``."""

    def edit(text):
        lines = text.split("\n")
        lines[lineno - 1] = fn(lines[lineno - 1])
        return "\n".join(lines)

    return edit


def set_field(lineno: int, column: int, value: str, sep: str = ","):
    """An ``edit`` setting field ``column`` (0-based, no quoted separators before it) of a line."""

    def fn(line):
        parts = line.split(sep)
        parts[column] = value
        return sep.join(parts)

    return replace_line(lineno, fn)


def expect_data_error(name: str, manual: Path, data_dir: Path, *fragments: str) -> str:
    """Preparing ``name`` raises one :class:`DataError` whose message holds ``fragments``,
    and leaves no data set folder behind."""
    from tfdebias import data

    with pytest.raises(DataError) as info:
        data.prepare(name, data_dir=str(data_dir), manual_dir=str(manual))
    msg = str(info.value)
    assert "\n" not in msg
    for frag in fragments:
        assert frag in msg, (frag, msg)
    base = name.split("/")[0]
    assert not (data_dir / base).exists(), sorted(p.name for p in data_dir.iterdir())
    return msg


def cli_main(capsys, *args: str) -> tuple[int, str, str]:
    """``tfdebias ...`` in this process (no new TensorFlow import): ``(exit code, out, err)``."""
    from tfdebias.cli import main

    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("tfdebias: error:")]


def prepare_dummy(tmp_path_factory, name: str):
    """``name`` prepared from its dummy data into a fresh folder:
    ``(builder, schema, {"train"|"valid"|"test": columns})``."""
    from tfdebias import data

    base = name.split("/")[0]
    b = data.prepare(name, data_dir=str(tmp_path_factory.mktemp(base)),
                     manual_dir=str(dummy_dir(base)))
    return b, data.load_schema(b), {s: data.read_split(b, s) for s in ("train", "valid", "test")}


def cli_prepare_dummy(capsys, name: str, data_dir: Path) -> str:
    """``tfdebias datasets prepare NAME`` on its dummy data, in this process: asserts
    exit 0 and returns what it printed."""
    code, out, err = cli_main(capsys, "datasets", "prepare", name, "--manual-dir",
                              str(dummy_dir(name.split("/")[0])), "--data-dir", str(data_dir))
    assert code == 0, err
    return out


def cli_rejects(name: str, manual: Path, data_dir: Path) -> str:
    """``tfdebias datasets prepare NAME`` on bad raw files, in this process: asserts exit 2,
    exactly one error line and no data set folder left behind; returns the error line."""
    import contextlib
    import io

    from tfdebias.cli import main

    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = main(["datasets", "prepare", name, "--manual-dir", str(manual),
                     "--data-dir", str(data_dir)])
    assert code == 2, err.getvalue()[-2000:]
    (line,) = error_lines(err.getvalue())
    assert not (data_dir / name.split("/")[0]).exists()
    return line


# -- serialisation ---------------------------------------------------------------------------


def _random_block(n, rng):
    schema = Schema([
        Feature("user_id", "categorical", vocab_size=200_000),
        Feature("small", "categorical", vocab_size=5),
        Feature("history", "sequence", vocab_size=200_000, max_len=7, vocab="user_id"),
        Feature("dense_x", "dense"),
        Feature("visual", "vector", width=5),
        Feature("long_history", "sequence", vocab_size=2**31, max_len=70),
        Feature("signed", "proxy", vocab_size=2**31),
        Feature("click", "label"),
    ])
    cols = {
        "user_id": rng.integers(0, 200_000, n),
        "small": rng.integers(0, 5, n),
        "history": rng.integers(0, 200_000, (n, 7)) * (rng.random((n, 7)) < 0.6),
        "dense_x": rng.standard_normal(n).astype(np.float32),
        "visual": rng.standard_normal((n, 5)).astype(np.float32),
        "long_history": rng.integers(0, 2**31, (n, 70)),
        # ids are never negative, but the packing must still be right for them
        "signed": rng.integers(-(2**31), 2**31, n),
        "click": (rng.random(n) < 0.3).astype(np.float32),
    }
    return schema, {k: v.astype(np.int64) if v.dtype.kind == "i" else v for k, v in cols.items()}


def test_packed_rows_parse_like_tfds():
    """serialize_block's rows decode, through TFDS's own parser, to the input rows, and
    equal TFDS's per-example path (encode_example + ExampleSerializer) on the same rows."""
    from tensorflow_datasets.core import example_parser

    schema, cols = _random_block(300, np.random.default_rng(0))
    feats = _real.PackedFeatures.from_schema(schema)
    rows = _real.serialize_block(feats, cols)
    assert rows.dtype == np.uint8 and rows.shape[0] == 300
    parser = example_parser.ExampleParser(feats.get_serialized_info())
    for r in (0, 1, 150, 299):
        row = {k: v[r] for k, v in cols.items()}
        got = feats.decode_example(parser.parse_example(rows[r].tobytes()))
        ref = feats.decode_example(parser.parse_example(feats.serialize_example(row)))
        assert sorted(got) == sorted(f.name for f in schema)
        for k in cols:
            np.testing.assert_array_equal(np.asarray(got[k]), row[k], err_msg=k)
            np.testing.assert_array_equal(np.asarray(ref[k]), row[k], err_msg=k)
            assert np.asarray(got[k]).dtype == np.dtype(schema[k].dtype)
        np_got = feats.decode_example_np({k: parser.parse_example(rows[r].tobytes())[k].numpy()
                                          for k in feats.get_serialized_info()})
        np.testing.assert_array_equal(np_got["history"], row["history"])


def test_packed_rows_are_canonical_protobuf():
    """The bytes are protobuf's own encoding of the Example (compared as parsed protos)."""
    import tensorflow as tf

    schema, cols = _random_block(20, np.random.default_rng(1))
    feats = _real.PackedFeatures.from_schema(schema)
    rows = _real.serialize_block(feats, cols)
    packed = feats.pack(cols)
    for r in range(20):
        ex = tf.train.Example()
        ex.features.feature["int64s"].bytes_list.value.append(packed["int64s"][r].astype("<i4").tobytes())
        ex.features.feature["float32s"].bytes_list.value.append(packed["float32s"][r].astype("<f4").tobytes())
        parsed = tf.train.Example.FromString(rows[r].tobytes())
        assert parsed == ex
        assert parsed.SerializeToString(deterministic=True) == rows[r].tobytes()  # keys sorted


def test_packing_rejects_ids_beyond_int32():
    from tfdebias.errors import SchemaError

    schema = Schema([Feature("x", "categorical", vocab_size=2**40), Feature("y", "label")])
    feats = _real.PackedFeatures.from_schema(schema)
    with pytest.raises(SchemaError, match="outside int32"):
        _real.serialize_block(feats, {"x": np.array([2**33]), "y": np.zeros(1, np.float32)})


def test_write_split_shards_read_back(tmp_path):
    """write_split: shards of whole blocks (empty blocks skipped), TFDS's file names, CRCs valid."""
    import tensorflow as tf

    from tfdebias.datasets.kuairec.kuairec_dataset_builder import Builder

    schema, cols = _random_block(50, np.random.default_rng(2))
    cols["signed"] = np.abs(cols["signed"])  # ids are never negative
    builder = Builder(data_dir=str(tmp_path))
    builder.info._features = _real.PackedFeatures.from_schema(schema)  # this schema, not kuairec's
    builder._data_dir = str(tmp_path)  # write straight here, no incomplete dir
    blocks = [{k: v[:20] for k, v in cols.items()}, {k: v[20:20] for k, v in cols.items()},
              {k: v[20:] for k, v in cols.items()}]
    info = _real.write_split(builder, "train", blocks, schema, shard_bytes=1)  # a shard per block
    assert info.shard_lengths == [20, 30] and info.num_examples == 50
    files = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("kuairec-"))
    assert files == ["kuairec-train.tfrecord-00000-of-00002", "kuairec-train.tfrecord-00001-of-00002"]
    n = sum(1 for _ in tf.data.TFRecordDataset([str(tmp_path / f) for f in files]))  # checks CRCs
    assert n == 50
    one = _real.write_split(builder, "valid", blocks, schema)  # small blocks share one shard
    assert one.shard_lengths == [50]


def test_row_blocks_and_categorical():
    """The builders' shared helpers: lazy blocks of block_rows rows over parallel arrays, and
    categorical features sized by the data (1 before it is read)."""
    schema = Schema([Feature("x", "categorical", vocab_size=3), Feature("y", "label")])
    step = _real.block_rows(schema)
    rows, cold = np.arange(2 * step + 5), np.arange(2 * step + 5) % 2
    calls = []
    gen = _real.row_blocks(schema, lambda r, c: calls.append((r.copy(), c.copy())) or len(r), rows, cold)
    assert calls == []  # nothing is encoded before the writer asks
    assert list(gen) == [step, step, 5]
    np.testing.assert_array_equal(np.concatenate([r for r, _ in calls]), rows)
    np.testing.assert_array_equal(np.concatenate([c for _, c in calls]), cold)
    assert list(_real.row_blocks(schema, len, np.arange(0))) == []
    assert _real.categorical(None, "x", "d").vocab_size == 1
    f = _real.categorical({"x": 7}, "x", "d", vocab="t")
    assert (f.role, f.vocab_size, f.vocab, f.description) == ("categorical", 7, "t", "d")


# -- reading helpers ---------------------------------------------------------------------------


def test_read_csv_names_line_and_column(tmp_path):
    p = tmp_path / "t.csv"
    p.write_text("a,b,c\n1,2,x\n3,4,y\n5,abc,z\n")
    cols = [_real.Col("a"), _real.Col("b"), _real.Col("c", "str")]
    with pytest.raises(DataError, match=r"t.csv, line 4, column 'b': bad value 'abc' \(expected a non-empty integer"):
        list(_real.read_csv(p, cols))
    p.write_text("a,b,c\n1,2,x\n3,4,y,9\n")
    with pytest.raises(DataError, match=r"t.csv, line 3: malformed row"):
        list(_real.read_csv(p, cols))
    p.write_text("a,c\n1,x\n")
    with pytest.raises(DataError, match=r"line 1, column 'b': missing column"):
        list(_real.read_csv(p, cols))
    p.write_text("a,b,c\n1,,x\n")
    with pytest.raises(DataError, match=r"line 2, column 'b': empty value"):
        list(_real.read_csv(p, cols))
    p.write_text("a,b,c\n1,2.0,x\n3,4,y\n")  # a whole float, as pandas writes ints with gaps
    assert _real.read_csv_all(p, cols)["b"].tolist() == [2, 4]
    p.write_text("a,b,c\n1,2,x\n3,4.5,y\n")
    with pytest.raises(DataError, match=r"line 3, column 'b': bad value 4.5"):
        list(_real.read_csv(p, cols))
    p.write_text("1\t2\tx\n3\t4\ty\n")
    out = _real.read_csv_all(p, cols, delimiter="\t", header=False, names=["a", "b", "c"])
    assert out["b"].tolist() == [2, 4] and out["c"].to_pylist() == ["x", "y"]


def test_find_file_names_the_download_page(tmp_path):
    (tmp_path / "sub dir").mkdir()
    (tmp_path / "sub dir" / "x.csv").write_text("a\n")
    assert _real.find_file(tmp_path, "x.csv", page="P") == tmp_path / "sub dir" / "x.csv"
    with pytest.raises(DataError, match=r"y\.csv.*not found.*download it from P"):
        _real.find_file(tmp_path, "y.csv", page="P")


def test_lists_and_padding():
    import pyarrow as pa

    arr = pa.array(["1^2^3", "", None, "4", "5^6^7^8^9"])
    m = _real.parse_int_lists(arr, "^", 3, path="f", first_line=2, column="c")
    assert m.tolist() == [[1, 2, 3], [0, 0, 0], [0, 0, 0], [0, 0, 4], [7, 8, 9]]
    m = _real.parse_int_lists(arr, "^", 3, path="f", first_line=2, column="c", keep="first", align="left")
    assert m.tolist() == [[1, 2, 3], [0, 0, 0], [0, 0, 0], [4, 0, 0], [5, 6, 7]]
    with pytest.raises(DataError, match=r"f, line 3, column 'c': bad list element 'x'"):
        _real.parse_int_lists(pa.array(["1", "2^x"]), "^", 3, path="f", first_line=2, column="c")
    v, ok = _real.parse_float_vectors(pa.array(["1 2 ", "", "0.5 -1e3"]), " ", 2, path="f",
                                      first_line=2, column="e")
    assert ok.tolist() == [True, False, True] and v[2].tolist() == [0.5, -1000.0]
    with pytest.raises(DataError, match=r"f, line 2, column 'e': 3 numbers \(expected 2"):
        _real.parse_float_vectors(pa.array(["1 2 3"]), " ", 2, path="f", first_line=2, column="e")


def test_ids_reserve_zero():
    ids, size, vocab = _real.encode_ids(np.array([30, 10, 10, 20]))
    assert ids.tolist() == [3, 1, 1, 2] and size == 4 and vocab.tolist() == [10, 20, 30]
    assert _real.lookup_ids(np.array([20, 99, 10]), vocab).tolist() == [2, 0, 1]
    ids, size, _ = _real.encode_ids(np.array(["b", "", "a"]), missing="")
    assert ids.tolist() == [2, 0, 1] and size == 3


def test_history_before_matches_brute_force():
    rng = np.random.default_rng(3)
    n_ev, n = 300, 200
    ev_u, ev_t, ev_i = rng.integers(0, 15, n_ev), rng.integers(0, 50, n_ev), rng.integers(1, 99, n_ev)
    u, t = rng.integers(0, 17, n), rng.integers(0, 50, n)
    got = _real.history_before(u, t, ev_u, ev_t, ev_i, 4)
    order = np.lexsort((np.arange(n_ev), ev_t, ev_u))
    for r in range(n):
        before = [ev_i[j] for j in order if ev_u[j] == u[r] and ev_t[j] < t[r]][-4:]
        want = [0] * (4 - len(before)) + before
        assert got[r].tolist() == want, r


def test_chronological_split_per_user():
    user = np.array([5, 5, 5, 5, 5, 9, 9, 7])
    time = np.array([4, 0, 3, 1, 2, 1, 0, 0])
    part = _real.chronological_split(user, [time], [0.6, 0.2, 0.2])
    # user 5: times 0,1,2 train (round(3.0)), 3 valid (round(4.0)), 4 test
    assert part[[1, 3, 4, 2, 0]].tolist() == [0, 0, 0, 1, 2]
    assert part[[6, 5]].tolist() == [0, 1] and part[7] == 0


def test_asof_index_matches_brute_force():
    rng = np.random.default_rng(4)
    ev_u, ev_t = rng.integers(0, 6, 80), rng.integers(0, 30, 80)
    u, t = rng.integers(0, 8, 60), rng.integers(0, 30, 60)
    got = _real.asof_index(u, t, ev_u, ev_t)
    for r in range(60):
        cand = [j for j in range(80) if ev_u[j] == u[r] and ev_t[j] <= t[r]]
        if not cand:
            assert got[r] == -1
        else:
            best = max(cand, key=lambda j: (ev_t[j], j))
            assert got[r] == best, r


@pytest.mark.parametrize("name", ["kuairec", "wechat_channels"])
def test_bulk_read_equals_tfds_reader_and_rejects_other_bytes(tmp_path_factory, name):
    """read_split's bulk path gives exactly what TFDS's own Example parser gives, and a
    shard whose bytes do not hold the packed layout is an error, not wrong numbers."""
    import tensorflow_datasets as tfds

    from tfdebias.datasets._real import read_packed_split

    b, _, splits = prepare_dummy(tmp_path_factory, name)
    for split, got in splits.items():
        want = tfds.as_numpy(b.as_dataset(split=split, batch_size=-1))
        assert set(got) == set(want)
        for k, v in want.items():
            assert got[k].dtype == v.dtype and got[k].shape == v.shape, k
            np.testing.assert_array_equal(got[k], v, err_msg=f"{split}/{k}")
    import tensorflow as tf

    path = Path(b.info.splits["test"].filepaths[0])
    good = path.read_bytes()
    records = [r.numpy() for r in tf.data.TFRecordDataset([str(path)])]
    with tf.io.TFRecordWriter(str(path)) as w:  # valid checksums, another header byte
        for r in records:
            w.write(r[:3] + bytes([r[3] ^ 0xFF]) + r[4:])
    with pytest.raises(DataError, match="packed layout"):
        read_packed_split(b, "test")
    raw = bytearray(good)
    raw[20] ^= 0xFF  # a byte of the first record: its checksum no longer matches
    path.write_bytes(bytes(raw))
    with pytest.raises(DataError, match="corrupted"):
        read_packed_split(b, "test")
