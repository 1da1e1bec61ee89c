"""Reading raw tables (CSV/TSV, JSON lines) with one error naming the file and line.

Columns are read by header name (or by the documented order for headerless files),
streamed in blocks by pyarrow (JSON lines as text lines with vectorised regular
expressions), and type-checked. A malformed row, a missing column or a value of the wrong
type raises one :class:`~tfdebias.errors.DataError` naming the file, the line, the column
and what was expected. List-valued fields (``"1^2^3"``, ``"0.5 0.1"``) are split and cast
here too.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from tfdebias.errors import DataError

from .encoding import pad_lists


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
