"""``wechat_channels`` on its dummy data (the real raw format, a few dozen rows)."""

from __future__ import annotations

import numpy as np
import pytest

from tfdebias.datasets.wechat_channels import wechat_channels_dataset_builder as wb

from .test_real_common import (cli_prepare_dummy, cli_rejects, corrupt_copy, dummy_dir,
                               expect_data_error, prepare_dummy, replace_line, set_field,
                               tfds_test_case)

D = "wechat_algo_data1"

if tfds_test_case() is not None:

    class WeChatChannelsTest(tfds_test_case()):
        DATASET_CLASS = wb.Builder
        SPLITS = {"train": 16, "valid": 6, "test": 5}  # 40 actions, 27 after de-duplication
        EXAMPLE_DIR = str(dummy_dir("wechat_channels"))
        SKIP_CHECKSUMS = True


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    _, schema, splits = prepare_dummy(tmp_path_factory, "wechat_channels")
    return schema, splits


def _raw():
    import pandas as pd

    act = pd.read_csv(dummy_dir("wechat_channels") / D / "user_action.csv")
    feed = pd.read_csv(dummy_dir("wechat_channels") / D / "feed_info.csv")
    return act, feed


def test_schema_matches_the_cascade_simulator(prepared):
    from tfdebias.datasets.synthetic import cascade_exposure

    schema, _ = prepared
    sim = cascade_exposure.schema()
    for name in ("user_id", "item_id", "author_id", "duration", "day", "finish", "play_seconds"):
        assert schema[name].role == sim[name].role, name
    assert schema.label.name == "finish"
    assert schema["feed_embedding"].width == 512
    assert schema.exposure is None and not schema.by_role("truth")


def test_finish_label_units_and_time_split(prepared):
    """finish compares play (ms) with videoplayseconds (s); each user's rows are split in
    date order, de-duplicated with the last row kept."""
    schema, splits = prepared
    act, feed = _raw()
    dur = dict(zip(feed.feedid, feed.videoplayseconds))
    act = act.sort_values("date_", kind="stable").drop_duplicates(["userid", "feedid"], keep="last")
    assert sum(len(c["finish"]) for c in splits.values()) == len(act)
    want = (act.play >= act.feedid.map(dur) * 1000).astype(np.float32).to_numpy()
    got = np.concatenate([c["finish"] for c in splits.values()])
    assert sorted(got) == sorted(want) and want.sum() > 0
    for c in splits.values():
        np.testing.assert_array_equal(c["finish"], (c["play_seconds"] >= c["duration"]).astype(np.float32))
    # per user: every train day <= every valid day <= every test day
    for u in np.unique(splits["train"]["user_id"]):
        days = [c["day"][c["user_id"] == u] for c in (splits["train"], splits["valid"], splits["test"])]
        days = [d for d in days if len(d)]
        for a, b in zip(days, days[1:]):
            assert a.max() <= b.min()


def test_text_and_tag_fields(prepared):
    schema, splits = prepared
    c = splits["train"]
    for name in ("description", "keywords", "tags"):
        m = c[name]
        assert m.shape[1] == schema[name].max_len
        # right-aligned: no padding after an id
        assert not ((m[:, :-1] > 0) & (m[:, 1:] == 0)).any(), name
    assert (c["tags"] > 0).any() and (c["feed_embedding"] != 0).any()


@pytest.mark.parametrize("rel,edit,fragments", [
    (f"{D}/user_action.csv", set_field(4, 7, "12.5s"), ["user_action.csv, line 4, column 'play'"]),
    (f"{D}/user_action.csv", set_field(1, 1, "feed"), ["user_action.csv, line 1, column 'feedid'", "missing column"]),
    (f"{D}/feed_info.csv", set_field(3, 2, ""), ["feed_info.csv, line 3, column 'videoplayseconds'", "empty value"]),
    (f"{D}/feed_embeddings.csv", replace_line(2, lambda s: s.rsplit(" ", 3)[0]),
     ["feed_embeddings.csv, line 2, column 'feed_embedding'", "512"]),
    (f"{D}/feed_info.csv", set_field(2, 14, "12 0.5;abc"), ["feed_info.csv, line 2, column 'machine_tag_list'"]),
    (f"{D}/feed_info.csv", None, ["feed_info.csv", "not found", "algo.weixin.qq.com"]),
])
def test_bad_input(tmp_path, rel, edit, fragments):
    manual = corrupt_copy("wechat_channels", tmp_path, rel, edit)
    expect_data_error("wechat_channels", manual, tmp_path / "out", *fragments)


def test_cli_prepare_dummy_data(tmp_path, capsys):
    out = cli_prepare_dummy(capsys, "wechat_channels", tmp_path)
    assert "train" in out and "valid" in out and "test" in out


@pytest.mark.slow
def test_cli_bad_input_exits_2(tmp_path):
    manual = corrupt_copy("wechat_channels", tmp_path, f"{D}/user_action.csv", set_field(3, 0, "u7"))
    line = cli_rejects("wechat_channels", manual, tmp_path / "bad")
    assert "user_action.csv, line 3, column 'userid'" in line
