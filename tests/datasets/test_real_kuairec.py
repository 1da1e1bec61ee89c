"""``kuairec`` on its dummy data (the real raw format, a few dozen rows)."""

from __future__ import annotations

import numpy as np
import pytest

from tfdebias.datasets.kuairec import kuairec_dataset_builder as kb

from .test_real_common import (cli_prepare_dummy, cli_rejects, corrupt_copy, dummy_dir,
                               expect_data_error, prepare_dummy, set_field, tfds_test_case)

DATA = "KuaiRec 2.0/data"

if tfds_test_case() is not None:

    class KuaiRecTest(tfds_test_case()):
        """TFDS's own checks: registered, prepares from dummy_data, splits, reload."""

        DATASET_CLASS = kb.Builder
        SPLITS = {"train": 32, "valid": 8, "test": 23}  # big matrix 40 rows 8:2; small 23
        EXAMPLE_DIR = str(dummy_dir("kuairec"))
        SKIP_CHECKSUMS = True  # a manual data set: nothing is downloaded


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    return prepare_dummy(tmp_path_factory, "kuairec")


def test_schema_roles_match_the_simulator(prepared):
    from tfdebias.datasets.synthetic import confounded_ctr

    _, schema, _ = prepared
    assert schema.label.name == "click"
    assert [f.name for f in schema.proxies] == list(kb.PROXIES) and len(schema.proxies) == 11
    sim = confounded_ctr.schema()
    shared = ["user_id", "item_id", "item_category", "click"]
    for name in shared:
        assert schema[name].role == sim[name].role, name
    assert schema.exposure is None and not schema.by_role("truth")
    assert schema["item_tags"].table == schema["item_category"].table
    # vocabularies from the data: 8 users, 12 videos in the dummy files, 0 reserved
    assert schema["user_id"].vocab_size == 9 and schema["item_id"].vocab_size == 13


def test_labels_splits_and_features(prepared):
    _, schema, splits = prepared
    for cols in splits.values():
        np.testing.assert_array_equal(cols["click"], (cols["watch_ratio"] > 2.0).astype(np.float32))
        assert cols["user_id"].min() >= 1 and cols["item_id"].min() >= 1
        assert cols["item_daily_stats"].shape[1] == 34
    # test = the small matrix: its (user, item) pairs form the dense block
    test = splits["test"]
    assert len(test["user_id"]) == 23
    # previous-day statistics: a video's first logged day has no earlier statistics
    assert (splits["train"]["show_cnt"] == 0).any() and (splits["train"]["show_cnt"] > 0).any()


def test_missing_manual_dir_and_file(tmp_path):
    from tfdebias import data
    from tfdebias.errors import DataError

    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="zenodo.org/records/18164998"):
        data.prepare("kuairec", data_dir=str(tmp_path / "out"), manual_dir=str(empty))
    manual = corrupt_copy("kuairec", tmp_path, f"{DATA}/item_daily_features.csv", None)
    expect_data_error("kuairec", manual, tmp_path / "out2", "item_daily_features.csv",
                      "not found", "zenodo.org/records/18164998")


@pytest.mark.parametrize("edit,fragments", [
    (set_field(5, 7, "abc"), ["big_matrix.csv, line 5, column 'watch_ratio'", "'abc'", "a non-empty number"]),
    (set_field(3, 0, "1.5"), ["big_matrix.csv, line 3, column 'user_id'", "a non-empty integer"]),
    (set_field(4, 1, ""), ["big_matrix.csv, line 4, column 'video_id'", "empty value"]),
    (set_field(6, 7, "0.5,7"), ["big_matrix.csv, line 6", "malformed row"]),
    (set_field(1, 0, "uid"), ["big_matrix.csv, line 1, column 'user_id'", "missing column"]),
])
def test_malformed_big_matrix(tmp_path, edit, fragments):
    manual = corrupt_copy("kuairec", tmp_path, f"{DATA}/big_matrix.csv", edit)
    expect_data_error("kuairec", manual, tmp_path / "out", *fragments)


def test_cli_prepare_dummy_data(tmp_path, capsys):
    out = cli_prepare_dummy(capsys, "kuairec", tmp_path)
    assert "kuairec/cp2rec/1.0.0" in out and "test" in out and "23" in out


@pytest.mark.slow
def test_cli_bad_input_exits_2(tmp_path):
    manual = corrupt_copy("kuairec", tmp_path, f"{DATA}/small_matrix.csv", set_field(2, 1, "x"))
    line = cli_rejects("kuairec", manual, tmp_path / "bad")
    assert "small_matrix.csv, line 2, column 'video_id'" in line


def _header_only(text):
    return text.splitlines(keepends=True)[0]


def _unterminated_feat(text):
    lines = text.splitlines(keepends=True)
    head, rest = lines[2].split(",", 1)
    lines[2] = f'{head},"[27, 9"\n'
    return "".join(lines)


@pytest.mark.parametrize("rel,edit,fragments", [
    # a header alone would otherwise be prepared into an empty unbiased test split
    (f"{DATA}/small_matrix.csv", _header_only, ["small_matrix.csv, line 2", "no rows"]),
    (f"{DATA}/big_matrix.csv", _header_only, ["big_matrix.csv, line 2", "no rows"]),
    # an unterminated list literal would otherwise be read as if whole
    (f"{DATA}/item_categories.csv", _unterminated_feat,
     ["item_categories.csv, line 3, column 'feat'", "'[27, 9'", "a list literal"]),
])
def test_empty_matrix_and_malformed_tag_list(tmp_path, rel, edit, fragments):
    manual = corrupt_copy("kuairec", tmp_path, rel, edit)
    expect_data_error("kuairec", manual, tmp_path / "out", *fragments)
