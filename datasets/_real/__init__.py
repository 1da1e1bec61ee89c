"""Shared machinery of the real-data TFDS builders (KuaiRec, WeChat, TikTok, Amazon, DIGIX).

Each real builder reads the raw files exactly as their owners publish them from TFDS's
``manual_dir`` and writes the same schema roles as its simulator. They share four
things, one module each:

* **Finding files** (:mod:`.discovery`, :func:`find_file`): a file is looked up by its
  published name anywhere below ``manual_dir`` (archives unpack into folders such as
  ``KuaiRec 2.0/data/`` or ``wechat_algo_data1/``). A missing directory or file raises
  one :class:`~tfdebias.errors.DataError` naming the file and the download page.
* **Reading tables** (:mod:`.parsing`: :func:`read_csv`, :func:`read_text_lines`,
  :func:`parse_int_lists`, ...): columns are read by header name (or by the documented
  order for headerless files), streamed in blocks by pyarrow (JSON lines as text lines
  with vectorised regular expressions), and type-checked. A malformed row, a missing
  column or a value of the wrong type raises one ``DataError`` naming the file, the line,
  the column and what was expected.
* **Ids** (:mod:`.encoding`): every id column is remapped to ``1..V``
  (:func:`encode_ids`); 0 is padding and unknown, as everywhere in tfdebias.
* **Writing** (:mod:`.builder`: :class:`RealDataBuilder`, :class:`PackedFeatures`,
  :func:`write_split`, :func:`read_packed_split`): TFDS's per-example Python encoder writes
  about 2,000 rows/s for a row of 80 features, which would take hours for KuaiRec's 17M
  rows, and a ``tf.train.Example`` repeats every feature name in every row (~1.5 KB a
  row). The builders' features are therefore a :class:`PackedFeatures` dict: reading gives
  one tensor per schema field, as usual, but each stored example holds two byte strings
  (all int ids, all floats), so every row has the same length and a block of rows is
  serialised by numpy in one pass (:func:`serialize_block`). The rows are written as
  TFDS ``tfrecord`` shards with TFDS's own file names and split metadata;
  ``tfds.builder(...).as_dataset`` reads them like any other TFDS data set. Everything
  is written inside TFDS's ``incomplete.*`` temporary directory, which is renamed on
  success and deleted on failure; a failed first build also removes the empty
  ``<data_dir>/<name>/`` folder.

The tfdebias schema (vocabulary sizes depend on the data) is stored in
``info.metadata["schema"]`` once the data are read.

Import order inside the package: ``builder -> discovery``, ``parsing -> encoding``.
"""

from tfdebias.errors import DataError, SchemaError  # noqa: F401  (builders import them from here)
from tfdebias.schema import Feature, Schema  # noqa: F401

from .builder import (  # noqa: F401
    BLOCK_ROWS,
    RELEASE_NOTES,
    SERIALIZE_ROWS,
    VERSION,
    Columns,
    PackedFeatures,
    PrepareMessages,
    RealConfig,
    RealDataBuilder,
    block_rows,
    categorical,
    check_block,
    read_packed_split,
    row_blocks,
    serialize_block,
    write_split,
)
from .discovery import check_manual_dir, find_file  # noqa: F401
from .encoding import (  # noqa: F401
    asof_index,
    chronological_split,
    encode_ids,
    history_before,
    log1p_nonneg,
    lookup_ids,
    pad_lists,
    rank_within_groups,
    right_align,
)
from .parsing import (  # noqa: F401
    Col,
    cast_values,
    csv_header,
    extract_field,
    parse_float_vectors,
    parse_int_lists,
    read_csv,
    read_csv_all,
    read_text_lines,
    split_lists,
)

__all__ = [
    "BLOCK_ROWS", "Col", "block_rows", "Columns", "DataError", "Feature", "PackedFeatures", "RealConfig",
    "RealDataBuilder", "Schema", "asof_index", "cast_values", "check_block", "check_manual_dir",
    "chronological_split", "csv_header", "encode_ids", "extract_field", "find_file",
    "history_before", "log1p_nonneg", "lookup_ids", "pad_lists", "parse_float_vectors",
    "parse_int_lists", "rank_within_groups", "read_csv", "read_csv_all", "read_text_lines",
    "read_packed_split", "right_align", "serialize_block", "split_lists", "write_split",
    "categorical", "row_blocks", "PrepareMessages", "RELEASE_NOTES", "SERIALIZE_ROWS", "SchemaError",
    "VERSION",
]
