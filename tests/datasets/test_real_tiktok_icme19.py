"""``tiktok_icme19`` on its dummy data (the real raw format, a few dozen rows)."""

from __future__ import annotations

import numpy as np
import pytest

from tfdebias.datasets.tiktok_icme19 import tiktok_icme19_dataset_builder as tb

from .test_real_common import (cli_prepare_dummy, cli_rejects, corrupt_copy, dummy_dir,
                               expect_data_error, prepare_dummy, replace_line, set_field,
                               tfds_test_case)

if tfds_test_case() is not None:

    class TikTokTest(tfds_test_case()):
        DATASET_CLASS = tb.Builder
        SPLITS = {"train": 18, "valid": 6, "test": 5}  # 40 rows, 29 (user, item) pairs
        EXAMPLE_DIR = str(dummy_dir("tiktok_icme19"))
        SKIP_CHECKSUMS = True


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    _, schema, splits = prepare_dummy(tmp_path_factory, "tiktok_icme19")
    return schema, splits


def test_schema_matches_the_cascade_simulator(prepared):
    from tfdebias.datasets.synthetic import cascade_exposure

    schema, _ = prepared
    sim = cascade_exposure.schema()
    for name in ("user_id", "item_id", "author_id", "item_visual", "item_acoustic", "duration", "finish"):
        assert schema[name].role == sim[name].role, name
    assert schema.label.name == "finish" and schema["item_visual"].width == 128


def test_side_files_joined_by_item_id(prepared):
    """Vectors follow their item; the empty video list, the short audio list and the
    item without a side line give zeros; the empty title gives no words."""
    import json

    _, splits = prepared
    raw = {}
    for fname, key in (("track2_video_features.txt", "video_feature_dim_128"),
                       ("track2_audio_features.txt", "audio_feature_128_dim")):
        for line in (dummy_dir("tiktok_icme19") / fname).read_text().splitlines():
            o = json.loads(line)
            raw.setdefault(key, {})[o["item_id"]] = o[key]
    cols = {k: np.concatenate([c[k] for c in splits.values()]) for k in splits["train"]}
    train_txt = np.loadtxt(dummy_dir("tiktok_icme19") / "final_track2_train.txt", dtype=np.int64)
    items = np.unique(train_txt[:, 2])
    raw_item = items[cols["item_id"] - 1]  # ids are 1..V in sorted raw order
    zeros = 0
    for r in range(len(raw_item)):
        for key, col in (("video_feature_dim_128", "item_visual"), ("audio_feature_128_dim", "item_acoustic")):
            v = raw[key].get(int(raw_item[r]))
            if v is None or len(v) != 128:
                assert not cols[col][r].any()
                zeros += 1
            else:
                np.testing.assert_allclose(cols[col][r], np.asarray(v, np.float32))
    assert zeros > 0


@pytest.mark.parametrize("rel,edit,fragments", [
    ("final_track2_train.txt", set_field(3, 6, "-1", "\t"), ["final_track2_train.txt, line 3, column 'finish'", "0 or 1"]),
    ("final_track2_train.txt", set_field(5, 2, "x9", "\t"), ["final_track2_train.txt, line 5, column 'item_id'"]),
    ("final_track2_train.txt", replace_line(4, lambda s: s.rsplit("\t", 1)[0]), ["final_track2_train.txt, line 4"]),
    ("track2_video_features.txt", replace_line(3, lambda s: s.replace('"item_id"', '"id"')),
     ["track2_video_features.txt, line 3, column 'item_id'"]),
    ("track2_audio_features.txt", replace_line(2, lambda s: s.replace(", ", ", x", 1)),
     ["track2_audio_features.txt, line 2, column 'audio_feature_128_dim'"]),
    ("track2_title.txt", None, ["track2_title.txt", "not found", "biendata.com"]),
])
def test_bad_input(tmp_path, rel, edit, fragments):
    manual = corrupt_copy("tiktok_icme19", tmp_path, rel, edit)
    expect_data_error("tiktok_icme19", manual, tmp_path / "out", *fragments)


def test_cli_prepare_dummy_data(tmp_path, capsys):
    out = cli_prepare_dummy(capsys, "tiktok_icme19", tmp_path)
    assert "train" in out and "valid" in out and "test" in out


@pytest.mark.slow
def test_cli_bad_input_exits_2(tmp_path):
    manual = corrupt_copy("tiktok_icme19", tmp_path, "track2_title.txt",
                          replace_line(2, lambda s: s.replace('{"', '{"x', 1).replace("title_features", "t")))
    line = cli_rejects("tiktok_icme19", manual, tmp_path / "bad")
    assert "track2_title.txt, line 2" in line
