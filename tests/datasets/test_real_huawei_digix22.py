"""``huawei_digix22`` on its dummy data (the real raw format: '^' lists, -1/1 feeds labels,
40-hex document ids, 12-digit times)."""

from __future__ import annotations

import numpy as np
import pytest

from tfdebias.datasets.huawei_digix22 import huawei_digix22_dataset_builder as hb

from .test_real_common import (cli_prepare_dummy, cli_rejects, corrupt_copy, dummy_dir,
                               expect_data_error, prepare_dummy, set_field, tfds_test_case)

ADS, FEEDS = "train/train_data_ads.csv", "train/train_data_feeds.csv"

if tfds_test_case() is not None:

    class DigixTest(tfds_test_case()):
        DATASET_CLASS = hb.Builder
        SPLITS = {"train": 52, "valid": 6, "test": 4}
        EXAMPLE_DIR = str(dummy_dir("huawei_digix22"))
        SKIP_CHECKSUMS = True


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    _, schema, splits = prepare_dummy(tmp_path_factory, "huawei_digix22")
    return schema, splits


def test_schema_matches_the_cross_domain_simulator(prepared):
    from tfdebias.datasets.synthetic import cross_domain_ctr

    schema, _ = prepared
    sim = cross_domain_ctr.schema()
    for f in sim:
        if f.role == "truth" and f.name == "relevance":
            assert f.name not in schema  # not derivable from a real log
            continue
        assert schema[f.name].role == f.role, f.name
    assert schema["history_target"].table == "item_id"
    assert schema["history_source"].table == "item_category"


def test_domains_labels_and_cold_start(prepared):
    import pandas as pd

    _, splits = prepared
    tr = splits["train"]
    # feeds (source) rows first in the id space; labels -1/1 became 0/1
    assert tr["item_id"][tr["domain"] == 0].max() < tr["item_id"][tr["domain"] == 1].min()
    assert set(np.unique(tr["click"])) <= {0.0, 1.0}
    feeds = pd.read_csv(dummy_dir("huawei_digix22") / FEEDS)
    assert set(feeds.label) == {-1, 1}
    for s in ("valid", "test"):
        assert (splits[s]["domain"] == 1).all()
        assert (splits[s]["day"] == splits[s]["day"].max()).all()  # the last day
    for c in splits.values():
        assert not c["history_target"][c["cold_start"] == 1].any()
        # domain-specific features are 0 on the other domain's rows
        assert not c["adv_id"][c["domain"] == 0].any() and not c["e_ch"][c["domain"] == 1].any()
    # 50% of the users, by a seeded hash
    raw_users = np.union1d(feeds.u_userId, pd.read_csv(dummy_dir("huawei_digix22") / ADS).user_id)
    kept = hb._keep_user(raw_users, 0.5, 0)
    assert 0 < kept.sum() < len(raw_users)
    n_users = len(np.unique(np.concatenate([c["user_id"] for c in splits.values()])))
    assert n_users == kept.sum()


def test_lists_are_parsed(prepared):
    _, splits = prepared
    tr = splits["train"]
    ads = tr["domain"] == 1
    assert (tr["history_target"][ads] > 0).any() and (tr["news_clicks"] > 0).any()
    for name in hb.SEQUENCES:
        m = tr[name]
        assert not ((m[:, :-1] > 0) & (m[:, 1:] == 0)).any(), name  # right-aligned


@pytest.mark.parametrize("rel,edit,fragments", [
    (ADS, set_field(4, 25, "12^x^3"), ["train_data_ads.csv, line 4, column 'ad_click_list_v001'", "'x'"]),
    (ADS, set_field(6, 31, "2022-06-04"), ["train_data_ads.csv, line 6, column 'pt_d'"]),
    (FEEDS, set_field(3, 25, "2"), ["train_data_feeds.csv, line 3, column 'label'", "-1 or 1"]),
    (FEEDS, set_field(1, 13, "cat"), ["train_data_feeds.csv, line 1, column 'i_cat'", "missing column"]),
    (ADS, None, ["train_data_ads.csv", "not found", "developer.huawei.com"]),
])
def test_bad_input(tmp_path, rel, edit, fragments):
    manual = corrupt_copy("huawei_digix22", tmp_path, rel, edit)
    expect_data_error("huawei_digix22", manual, tmp_path / "out", *fragments)


def test_cli_prepare_dummy_data(tmp_path, capsys):
    out = cli_prepare_dummy(capsys, "huawei_digix22", tmp_path)
    assert "huawei_digix22/dadin/1.0.0" in out


@pytest.mark.slow
def test_cli_missing_manual_dir_exits_2(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    line = cli_rejects("huawei_digix22", empty, tmp_path / "bad")
    assert "train_data_ads.csv" in line and "developer.huawei.com" in line
