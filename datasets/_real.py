"""Shared machinery of the real-data TFDS builders (KuaiRec, WeChat, TikTok, Amazon, DIGIX).

Each real builder reads the raw files exactly as their owners publish them from TFDS's
``manual_dir`` and writes the same schema roles as its simulator. They share four
things, all here:

* **Finding files** (:func:`find_file`): a file is looked up by its published name
  anywhere below ``manual_dir`` (archives unpack into folders such as
  ``KuaiRec 2.0/data/`` or ``wechat_algo_data1/``). A missing directory or file raises
  one :class:`~tfdebias.errors.DataError` naming the file and the download page.
* **Reading tables** (:func:`read_csv`, :func:`read_text_lines`, :func:`parse_int_lists`,
  ...): columns are read by header name (or by the documented order for headerless
  files), streamed in blocks by pyarrow (JSON lines as text lines with vectorised regular
  expressions), and type-checked. A malformed row, a missing column or a value of the
  wrong type raises one ``DataError`` naming the file, the line, the column and what was
  expected.
* **Ids**: every id column is remapped to ``1..V`` (:func:`encode_ids`); 0 is padding
  and unknown, as everywhere in tfdebias.
* **Writing** (:class:`RealDataBuilder`): TFDS's per-example Python encoder writes about
  2,000 rows/s for a row of 80 features, which would take hours for KuaiRec's 17M rows,
  and a ``tf.train.Example`` repeats every feature name in every row (~1.5 KB a row).
  The builders' features are therefore a :class:`PackedFeatures` dict: reading gives one
  tensor per schema field, as usual, but each stored example holds two byte strings (all
  int ids, all floats), so every row has the same length and a block of rows is
  serialised by numpy in one pass (:func:`serialize_block`). The rows are written as
  TFDS ``tfrecord`` shards with TFDS's own file names and split metadata;
  ``tfds.builder(...).as_dataset`` reads them like any other TFDS data set. Everything
  is written inside TFDS's ``incomplete.*`` temporary directory, which is renamed on
  success and deleted on failure; a failed first build also removes the empty
  ``<data_dir>/<name>/`` folder.

The tfdebias schema (vocabulary sizes depend on the data) is stored in
``info.metadata["schema"]`` once the data are read.
"""

from __future__ import annotations

import abc
import dataclasses
import json
import re
import shutil
import sys
from pathlib import Path
from typing import Iterable, Iterator, Mapping, Sequence

import numpy as np
import tensorflow_datasets as tfds
from tensorflow_datasets.core.dataset_builder import FileReaderBuilder

from tfdebias.errors import DataError, SchemaError
from tfdebias.schema import Feature, Schema

Columns = dict[str, np.ndarray]

VERSION = tfds.core.Version("1.0.0")
RELEASE_NOTES = {"1.0.0": "Initial release."}

#: Rows per serialised block (and per output shard). Bounds the memory of one block.
BLOCK_ROWS = 200_000
#: Rows serialised at once (bounds the byte matrix of :func:`serialize_block`).
SERIALIZE_ROWS = 50_000


# -- files -------------------------------------------------------------------------------


def find_file(root, name: str, *, page: str, required: bool = True) -> Path | None:
    """The file called ``name`` anywhere below ``root`` (the shallowest match).

    ``name`` may hold a folder part (``"train/train_data_ads.csv"``); it is matched as
    a path suffix. Raises one :class:`DataError` naming the file and ``page`` when it
    is missing and ``required``.
    """
    root = Path(root)
    parts = Path(name).parts
    matches = [p for p in root.rglob(parts[-1]) if p.is_file() and p.parts[-len(parts):] == parts]
    if not matches:
        if not required:
            return None
        raise DataError(
            f"raw file {name!r} not found under the manual directory; download it from {page} "
            "and unpack it there",
            path=root / name,
        )
    return min(matches, key=lambda p: (len(p.parts), str(p)))


def check_manual_dir(dl_manager, *, files: Sequence[str], page: str) -> Path:
    """TFDS's ``manual_dir`` as a :class:`Path`, or one :class:`DataError` saying what
    to download from where."""
    try:
        path = Path(dl_manager.manual_dir)
    except (AssertionError, ValueError, OSError):
        where = getattr(dl_manager, "_manual_dir", None)
        raise DataError(
            f"the manual directory is missing or empty; it must hold {', '.join(files)} "
            f"from {page} (pass the folder with --manual-dir)",
            path=where,
        ) from None
    return path


def _one_line(e) -> str:
    return " ".join(str(e).split())


# -- reading CSV -------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Col:
    """A column to read: its name, kind and whether empty values are allowed.

    kind: ``"int"`` (int64), ``"float"`` (float64), ``"str"`` (a pyarrow string array,
    kept for vectorised parsing).
    """

    name: str
    kind: str = "int"
    nullable: bool = False

    @property
    def expected(self) -> str:
        if self.nullable:
            return {"int": "an integer", "float": "a number", "str": "a string"}[self.kind]
        return {"int": "a non-empty integer", "float": "a non-empty number",
                "str": "a non-empty string"}[self.kind]


def _arrow_type(kind):
    import pyarrow as pa

    # ints are parsed as float64 and checked to be whole, so "3.0" (as pandas writes an
    # int column with gaps) reads as 3; ids stay exact below 2**53
    return {"int": pa.float64(), "float": pa.float64(), "str": pa.string()}[kind]


def csv_header(path: Path, *, delimiter: str = ",", encoding: str = "utf-8") -> list[str]:
    """The header row of a CSV file (BOM and surrounding spaces stripped)."""
    import csv

    try:
        with open(path, encoding=encoding, newline="") as f:
            names = next(csv.reader(f, delimiter=delimiter), [])
    except (OSError, UnicodeDecodeError, csv.Error) as e:  # unreadable file, bad encoding
        raise DataError(f"cannot read the header row ({_one_line(e)[:120]})", path=path, line=1,
                        expected=f"a {encoding} CSV header row") from None
    if not names:
        raise DataError("the file is empty", path=path, line=1, expected="a CSV header row")
    return [n.strip().lstrip("\ufeff") for n in names]


def read_csv(
    path,
    cols: Sequence[Col],
    *,
    delimiter: str = ",",
    header: bool = True,
    names: Sequence[str] | None = None,
    encoding: str = "utf-8",
    block_size: int = 64 << 20,
) -> Iterator[tuple[int, dict]]:
    """Stream ``cols`` of a CSV file in blocks: yields ``(first_line, {name: array})``.

    Columns are found by header name (``header=True``) or by the documented order
    ``names`` of a headerless file. ``int``/``float`` columns come back as numpy int64 /
    float64 arrays (a nullable int column as float64 with NaN), ``str`` columns as
    pyarrow string arrays. Any problem raises one :class:`DataError` with the file,
    line, column and what was expected.
    """
    import pyarrow as pa
    import pyarrow.csv as pacsv

    path = Path(path)
    if not path.is_file():
        raise DataError("file not found", path=path)
    if header:
        found = csv_header(path, delimiter=delimiter, encoding=encoding)
        missing = [c.name for c in cols if c.name not in found]
        if missing:
            raise DataError(
                f"missing column(s) {missing} in the header", path=path, line=1, column=missing[0],
                expected=f"a header with {[c.name for c in cols]}; found {found[:40]}",
            )
        column_names, skip = found, 1  # the stripped header names
    else:
        column_names, skip = list(names), 0
    first_data_line = 2 if header else 1
    types = {c.name: _arrow_type(c.kind) for c in cols}
    try:
        reader = pacsv.open_csv(
            str(path),
            read_options=pacsv.ReadOptions(encoding=encoding, block_size=block_size,
                                           column_names=column_names, skip_rows=skip),
            parse_options=pacsv.ParseOptions(delimiter=delimiter),
            convert_options=pacsv.ConvertOptions(
                column_types=types,
                include_columns=[c.name for c in cols],
                strings_can_be_null=False,
                quoted_strings_can_be_null=False,
            ),
        )
    except (pa.ArrowInvalid, pa.ArrowTypeError, UnicodeDecodeError) as e:
        _raise_diagnosed(path, cols, delimiter, header, names, encoding, e)
    line = first_data_line
    while True:
        try:
            batch = reader.read_next_batch()
        except StopIteration:
            break
        except (pa.ArrowInvalid, pa.ArrowTypeError, UnicodeDecodeError) as e:
            _raise_diagnosed(path, cols, delimiter, header, names, encoding, e)
        out = {}
        for c in cols:
            arr = batch.column(c.name)
            if arr.null_count and not c.nullable:
                bad = int(np.argmax(np.asarray(arr.is_null())))
                raise DataError("empty value", path=path, line=line + bad, column=c.name,
                                expected=c.expected)
            if c.kind == "str":
                out[c.name] = arr
                continue
            v = np.asarray(arr.to_numpy(zero_copy_only=False), dtype=np.float64)
            if c.kind == "int":
                with np.errstate(invalid="ignore"):
                    bad = ~np.isnan(v) & ((v != np.round(v)) | (np.abs(v) >= 2.0**53))
                if bad.any():
                    i = int(np.argmax(bad))
                    raise DataError(f"bad value {float(v[i])!r}", path=path, line=line + i, column=c.name,
                                    expected=c.expected)
                if not arr.null_count:
                    v = v.astype(np.int64)
            out[c.name] = v
        yield line, out
        line += batch.num_rows


def read_csv_all(path, cols: Sequence[Col], **kwargs) -> dict:
    """:func:`read_csv` concatenated into whole columns (for small side tables)."""
    import pyarrow as pa

    parts = [b for _, b in read_csv(path, cols, **kwargs)]
    out = {}
    for c in cols:
        chunks = [p[c.name] for p in parts]
        if c.kind == "str":
            out[c.name] = pa.concat_arrays(chunks) if chunks else pa.array([], pa.string())
        else:
            dtype = np.int64 if c.kind == "int" and not c.nullable else np.float64
            out[c.name] = np.concatenate(chunks).astype(dtype, copy=False) if chunks else np.zeros(0, dtype)
    return out


_LINE_RE = re.compile(r"line (\d+)")


def _raise_diagnosed(path, cols, delimiter, header, names, encoding, err):
    """Re-read the file with pandas as text to name the exact line and column."""
    import pandas as pd

    if isinstance(err, UnicodeDecodeError) or "UTF8" in str(err) or "utf" in str(err).lower():
        raise DataError(f"the file is not valid {encoding} text ({_one_line(err)[:120]})",
                        path=path, expected=f"{encoding}-encoded text") from None
    n_fields = None if header else len(names)
    try:
        chunks = pd.read_csv(
            path, sep=delimiter, header=0 if header else None, names=None if header else names,
            dtype=str, keep_default_na=False, na_filter=False, chunksize=500_000,
            encoding=encoding, engine="c",
        )
        line0 = 2 if header else 1
        for chunk in chunks:
            for c in cols:
                v = chunk[c.name]
                s = v.str.strip()
                empty = (s == "").to_numpy()
                if c.kind == "str":
                    bad = empty & (not c.nullable)
                else:
                    num = pd.to_numeric(s.where(~empty, None), errors="coerce").to_numpy(dtype=np.float64)
                    bad = np.isnan(num) & ~empty
                    if c.kind == "int":
                        with np.errstate(invalid="ignore"):
                            bad |= ~np.isnan(num) & (num != np.round(num))
                    if not c.nullable:
                        bad |= empty
                if bad.any():
                    i = int(np.argmax(bad))
                    value = v.iloc[i]
                    raise DataError(
                        f"bad value {value[:40]!r}" if value else "empty value",
                        path=path, line=line0 + i, column=c.name, expected=c.expected,
                    )
            line0 += len(chunk)
    except pd.errors.ParserError as e:
        m = _LINE_RE.search(str(e))
        msg = _one_line(e).replace("Error tokenizing data. C error: ", "")
        raise DataError(
            f"malformed row ({msg})", path=path, line=int(m.group(1)) if m else None,
            expected=f"{n_fields or 'the header'}'s number of {delimiter!r}-separated fields",
        ) from None
    except UnicodeDecodeError as e:
        raise DataError(f"the file is not valid {encoding} text ({_one_line(e)[:120]})",
                        path=path, expected=f"{encoding}-encoded text") from None
    raise DataError(f"malformed file ({_one_line(err)[:200]})", path=path,
                    expected=f"{delimiter!r}-separated values") from None


# -- reading JSON-lines files ------------------------------------------------------------


def read_text_lines(path, *, block_size: int = 64 << 20) -> Iterator[tuple[int, object]]:
    """Stream a text file (``.gz`` too) as ``(first_line, pyarrow string array of lines)``.

    Lines are taken verbatim (no CSV quoting), empty lines included, so line numbers are
    exact. Used for JSON-lines files whose fields are then extracted with vectorised
    regular expressions (:func:`extract_field`).
    """
    import pyarrow as pa
    import pyarrow.csv as pacsv

    path = Path(path)
    if not path.is_file():
        raise DataError("file not found", path=path)
    try:
        reader = pacsv.open_csv(
            str(path),
            read_options=pacsv.ReadOptions(column_names=["line"], block_size=block_size),
            parse_options=pacsv.ParseOptions(delimiter="\x1f", quote_char=False, escape_char=False,
                                             ignore_empty_lines=False),
            convert_options=pacsv.ConvertOptions(column_types={"line": pa.string()},
                                                 strings_can_be_null=False),
        )
    except (pa.ArrowInvalid, OSError) as e:
        raise DataError(f"cannot read the file ({_one_line(e)[:120]})", path=path,
                        expected="UTF-8 text, one record per line") from None
    line = 1
    while True:
        try:
            batch = reader.read_next_batch()
        except StopIteration:
            break
        except (pa.ArrowInvalid, OSError) as e:
            raise DataError(f"cannot read the file ({_one_line(e)[:120]})", path=path, line=line,
                            expected="UTF-8 text, one record per line") from None
        arr = batch.column(0)
        yield line, arr
        line += len(arr)


def extract_field(lines, pattern: str, *, path, first_line: int, column: str, expected: str,
                  required: bool = True):
    """The first group of regex ``pattern`` in every line (a pyarrow string array, null
    where absent). A line without it raises one :class:`DataError` when ``required``;
    blank lines are never required."""
    import pyarrow.compute as pc

    got = pc.extract_regex(lines, pattern)
    field = pc.struct_field(got, [0])
    if required:
        blank = np.asarray(pc.equal(pc.utf8_trim_whitespace(lines), ""))
        missing = np.asarray(pc.is_null(field)) & ~blank
        if missing.any():
            i = int(np.argmax(missing))
            raise DataError(f"no readable {column!r} in {lines[i].as_py()[:60]!r}", path=path,
                            line=first_line + i, column=column, expected=expected)
    return field


# -- parsing list-valued fields -----------------------------------------------------------


def split_lists(arr, sep: str):
    """Split a pyarrow string array on ``sep``: ``(flat values, row of each value)``.

    Empty strings, empty elements and nulls give no values.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    arr = pc.fill_null(arr, "") if arr.null_count else arr
    if sep == " ":
        parts = pc.split_pattern(pc.utf8_trim_whitespace(arr), " ")
    else:
        parts = pc.split_pattern(arr, sep)
    flat = pc.list_flatten(parts)
    parent = np.asarray(pc.list_parent_indices(parts))
    flat = pc.utf8_trim_whitespace(flat)
    keep = np.asarray(pc.not_equal(flat, ""))
    flat = flat.filter(pa.array(keep))
    return flat, parent[keep]


def cast_values(flat, kind: str, parent: np.ndarray, *, path, first_line: int, column: str, what: str):
    """Cast split string values to int64/float32; one :class:`DataError` names the line."""
    import pyarrow as pa
    import pyarrow.compute as pc

    target = pa.int64() if kind == "int" else pa.float32()
    try:
        return np.asarray(pc.cast(flat, target)).astype(np.int64 if kind == "int" else np.float32)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        pattern = r"^-?\d+$" if kind == "int" else r"^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$|^[-+]?(nan|inf)$"
        ok = np.asarray(pc.match_substring_regex(flat, pattern, ignore_case=True))
        i = int(np.argmax(~ok))
        raise DataError(f"bad list element {flat[i].as_py()[:40]!r}", path=path,
                        line=first_line + int(parent[i]), column=column, expected=what) from None


def pad_lists(values: np.ndarray, parent: np.ndarray, n_rows: int, max_len: int, *,
              keep: str = "last", align: str = "right") -> np.ndarray:
    """``[n_rows, max_len]`` int64 matrix of each row's list, 0-padded.

    ``keep="last"`` keeps the last ``max_len`` elements of a longer list (``"first"``:
    the first ones); ``align="right"`` puts the last kept element in the last column
    (the tfdebias convention for histories: most recent last).
    """
    out = np.zeros((n_rows, max_len), np.int64)
    if len(values) == 0:
        return out
    counts = np.bincount(parent, minlength=n_rows)
    starts = np.cumsum(counts) - counts
    pos = np.arange(len(values)) - starts[parent]
    if keep == "last":
        from_end = counts[parent] - 1 - pos
        ok = from_end < max_len
        col = (max_len - 1 - from_end) if align == "right" else (np.minimum(counts[parent], max_len) - 1 - from_end)
    else:
        ok = pos < max_len
        col = pos + (max_len - np.minimum(counts[parent], max_len)) if align == "right" else pos
    out[parent[ok], col[ok]] = values[ok]
    return out


def parse_int_lists(arr, sep: str, max_len: int, *, path, first_line: int, column: str,
                    keep: str = "last", align: str = "right"):
    """A pyarrow string column of ``sep``-joined integers as a padded int64 matrix of
    *raw* ids (map them with :func:`encode_ids` afterwards)."""
    flat, parent = split_lists(arr, sep)
    vals = cast_values(flat, "int", parent, path=path, first_line=first_line, column=column,
                       what=f"{sep!r}-separated integers")
    return pad_lists(vals, parent, len(arr), max_len, keep=keep, align=align)


def parse_float_vectors(arr, sep: str, width: int, *, path, first_line: int, column: str,
                        allow_empty: bool = True, allow_other: bool = False):
    """A pyarrow string column of ``sep``-separated floats as ``([n, width] float32,
    valid mask)``. An empty row is all zeros (``valid`` False) when ``allow_empty``; a
    row with another number of values raises one DataError, or is zeros too when
    ``allow_other`` (releases with known short lists)."""
    flat, parent = split_lists(arr, sep)
    vals = cast_values(flat, "float", parent, path=path, first_line=first_line, column=column,
                       what=f"{width} {sep!r}-separated numbers")
    n = len(arr)
    counts = np.bincount(parent, minlength=n)
    bad = (counts != width) & ((counts != 0) | (not allow_empty)) & (not allow_other)
    if bad.any():
        i = int(np.argmax(bad))
        raise DataError(f"{counts[i]} numbers", path=path, line=first_line + i, column=column,
                        expected=f"{width} {sep!r}-separated numbers")
    out = np.zeros((n, width), np.float32)
    valid = counts == width
    out[valid] = vals[valid[parent]].reshape(-1, width)
    return out, valid


# -- ids -----------------------------------------------------------------------------------


def right_align(m: np.ndarray) -> np.ndarray:
    """Left-aligned, 0-padded id lists -> right-aligned (the tfdebias sequence convention:
    the last element in the last column)."""
    counts = (m > 0).sum(axis=1)
    shift = m.shape[1] - counts
    cols = (np.arange(m.shape[1])[None, :] - shift[:, None]) % m.shape[1]
    return np.take_along_axis(m, cols, axis=1) * (np.arange(m.shape[1])[None, :] >= shift[:, None])


def encode_ids(values, *, missing=None) -> tuple[np.ndarray, int, np.ndarray]:
    """Map raw ids to ``1..V`` in sorted order of the raw values; 0 stays for
    ``missing`` (and NaN). Returns ``(ids int64, vocab_size = V + 1, raw vocabulary)``.

    Works on any numpy array (ints, floats, strings); N-D arrays are mapped elementwise.
    """
    v = np.asarray(values)
    shape = v.shape
    flat = v.reshape(-1)
    skip = np.zeros(len(flat), bool)
    if flat.dtype.kind == "f":
        skip |= np.isnan(flat)
    if missing is not None:
        skip |= flat == missing
    vocab, inv = np.unique(flat[~skip], return_inverse=True)
    ids = np.zeros(len(flat), np.int64)
    ids[~skip] = inv + 1
    return ids.reshape(shape), len(vocab) + 1, vocab


def lookup_ids(values, vocab: np.ndarray, *, missing=None) -> np.ndarray:
    """Ids ``1..V`` of ``values`` in a sorted raw ``vocab`` (from :func:`encode_ids`);
    values outside the vocabulary (and ``missing``) map to 0."""
    v = np.asarray(values)
    if len(vocab) == 0:
        return np.zeros(v.shape, np.int64)
    pos = np.searchsorted(vocab, v)
    pos = np.minimum(pos, len(vocab) - 1)
    hit = vocab[pos] == v
    if missing is not None:
        hit &= v != missing
    return np.where(hit, pos + 1, 0).astype(np.int64)


def log1p_nonneg(x) -> np.ndarray:
    """``log(1 + max(x, 0))`` as float32, NaN -> 0 (count statistics)."""
    x = np.nan_to_num(np.asarray(x, np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    return np.log1p(np.maximum(x, 0.0)).astype(np.float32)


def rank_within_groups(groups_sorted: np.ndarray) -> np.ndarray:
    """Position of each element within its run of equal values (input sorted by group)."""
    n = len(groups_sorted)
    idx = np.arange(n)
    if n == 0:
        return idx
    start = np.r_[True, groups_sorted[1:] != groups_sorted[:-1]]
    return idx - np.maximum.accumulate(np.where(start, idx, 0))


def chronological_split(user: np.ndarray, order_key: Sequence[np.ndarray],
                        fractions: Sequence[float]) -> np.ndarray:
    """Per-user chronological split: the split index (0, 1, ...) of every row.

    Rows are ordered by ``order_key`` (``np.lexsort`` keys, last = primary) within
    each user; a user's first ``round(f0 * n)`` rows go to split 0, up to
    ``round((f0 + f1) * n)`` to split 1, the rest to the last split (DAMCAR's 6:2:2,
    official_code_notes.md §2.4; the same rounding as the ``cascade_exposure``
    simulator).
    """
    order = np.lexsort(tuple(order_key) + (user,))
    u = user[order]
    rank = rank_within_groups(u)
    inv = np.unique(u, return_inverse=True)[1]
    n = np.bincount(inv)[inv]
    bounds = np.cumsum(fractions)[:-1]
    split_sorted = np.zeros(len(u), np.int64)
    for b in bounds:  # one pass per boundary, not per row
        split_sorted += rank >= np.round(b * n)
    out = np.empty(len(u), np.int64)
    out[order] = split_sorted
    return out


def history_before(
    user: np.ndarray,
    time: np.ndarray,
    ev_user: np.ndarray,
    ev_time: np.ndarray,
    ev_item: np.ndarray,
    max_len: int,
    *,
    strict: bool = True,
) -> np.ndarray:
    """Each row's last ``max_len`` events of the same user strictly before its time.

    ``[n_rows, max_len]`` int64, right-aligned (most recent last), 0-padded. Events are
    e.g. a domain's clicks; ties in time keep event order. Vectorised with one sort and
    one ``searchsorted``.
    """
    n = len(user)
    out = np.zeros((n, max_len), np.int64)
    if len(ev_user) == 0 or n == 0:
        return out
    order = np.lexsort((ev_time, ev_user))
    eu, et, ei = ev_user[order], ev_time[order], ev_item[order]
    ukeys, ustart = np.unique(eu, return_index=True)
    uend = np.r_[ustart[1:], len(eu)]
    pos = np.minimum(np.searchsorted(ukeys, user), len(ukeys) - 1)
    has = ukeys[pos] == user
    lo, hi = ustart[pos], uend[pos]
    # One sorted int64 key (user block, time rank) for events and queries alike, so a
    # single searchsorted counts each row's earlier events of its user.
    times, t_rank = np.unique(np.concatenate([et, time]), return_inverse=True)
    span = np.int64(len(times) + 1)
    block = np.repeat(np.arange(len(ukeys), dtype=np.int64), uend - ustart)
    keyed = block * span + t_rank[: len(et)]
    q = pos.astype(np.int64) * span + t_rank[len(et):]
    k = np.searchsorted(keyed, q, side="left" if strict else "right")
    k = np.clip(k, lo, hi)
    idx = k[:, None] - max_len + np.arange(max_len)[None, :]
    ok = has[:, None] & (idx >= lo[:, None]) & (idx < k[:, None])
    out[ok] = ei[np.where(ok, idx, 0)][ok]
    return out


def asof_index(user: np.ndarray, time: np.ndarray, ev_user: np.ndarray, ev_time: np.ndarray) -> np.ndarray:
    """For each row, the index of the same user's latest event at or before its time (-1
    if none): an as-of join, vectorised with one sort and one ``searchsorted``."""
    n = len(user)
    out = np.full(n, -1, np.int64)
    if len(ev_user) == 0 or n == 0:
        return out
    order = np.lexsort((np.arange(len(ev_user)), ev_time, ev_user))
    eu, et = ev_user[order], ev_time[order]
    ukeys, ustart = np.unique(eu, return_index=True)
    pos = np.minimum(np.searchsorted(ukeys, user), len(ukeys) - 1)
    has = ukeys[pos] == user
    times, t_rank = np.unique(np.concatenate([et, time]), return_inverse=True)
    span = np.int64(len(times) + 1)
    block = np.repeat(np.arange(len(ukeys), dtype=np.int64), np.diff(np.r_[ustart, len(eu)]))
    keyed = block * span + t_rank[: len(et)]
    k = np.searchsorted(keyed, pos.astype(np.int64) * span + t_rank[len(et):], side="right") - 1
    ok = has & (k >= ustart[pos])
    out[ok] = order[k[ok]]
    return out


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


__all__ = [
    "BLOCK_ROWS", "Col", "block_rows", "Columns", "DataError", "Feature", "PackedFeatures", "RealConfig",
    "RealDataBuilder", "Schema", "asof_index", "cast_values", "check_block", "check_manual_dir",
    "chronological_split", "csv_header", "encode_ids", "extract_field", "find_file",
    "history_before", "log1p_nonneg", "lookup_ids", "pad_lists", "parse_float_vectors",
    "parse_int_lists", "rank_within_groups", "read_csv", "read_csv_all", "read_text_lines",
    "read_packed_split", "right_align", "serialize_block", "split_lists", "write_split",
]
