"""``amazon_reviews`` on its dummy data: 2014 files (Movies/CDs, Clothing/Sports) and 2018
files (Cell_Phones/Electronics), gzipped JSON lines and Python-literal metadata."""

from __future__ import annotations

import numpy as np
import pytest

from tfdebias.datasets.amazon_reviews import amazon_reviews_dataset_builder as ab

from .test_real_common import (cli_prepare_dummy, cli_rejects, corrupt_copy, dummy_dir,
                               expect_data_error, replace_line, tfds_test_case)

if tfds_test_case() is not None:

    class AmazonMoviesMusicTest(tfds_test_case()):
        DATASET_CLASS = ab.Builder
        BUILDER_CONFIG_NAMES_TO_TEST = ["movies_music"]
        SPLITS = {"train": 88, "valid": 2, "test": 4}
        EXAMPLE_DIR = str(dummy_dir("amazon_reviews"))
        SKIP_CHECKSUMS = True

    class AmazonClothSportTest(tfds_test_case()):
        DATASET_CLASS = ab.Builder
        BUILDER_CONFIG_NAMES_TO_TEST = ["cloth_sport"]
        SPLITS = {"train": 7, "unobserved": 4, "valid": 11, "test": 11}
        EXAMPLE_DIR = str(dummy_dir("amazon_reviews"))
        SKIP_CHECKSUMS = True
        OVERLAPPING_SPLITS = ["train", "unobserved", "valid", "test"]  # rows may repeat a (history, item)

    class AmazonPhoneElecTest(tfds_test_case()):  # the 2018 release
        DATASET_CLASS = ab.Builder
        BUILDER_CONFIG_NAMES_TO_TEST = ["phone_elec"]
        SPLITS = {"train": 9, "unobserved": 3, "valid": 12, "test": 12}
        EXAMPLE_DIR = str(dummy_dir("amazon_reviews"))
        SKIP_CHECKSUMS = True
        OVERLAPPING_SPLITS = ["train", "unobserved", "valid", "test"]

    class AmazonPhoneElecKu75Test(AmazonPhoneElecTest):
        BUILDER_CONFIG_NAMES_TO_TEST = ["phone_elec_ku75"]
        SPLITS = {"train": 11, "unobserved": 1, "valid": 12, "test": 12}


def _prepare(tmp_path_factory, name):
    from tfdebias import data

    d = tmp_path_factory.mktemp(name.replace("/", "_"))
    b = data.prepare(name, data_dir=str(d), manual_dir=str(dummy_dir("amazon_reviews")))
    return data.load_schema(b), {s: data.read_split(b, s) for s in b.info.splits}


@pytest.fixture(scope="module")
def ctr(tmp_path_factory):
    return _prepare(tmp_path_factory, "amazon_reviews/movies_music")


@pytest.fixture(scope="module")
def seqs(tmp_path_factory):
    return _prepare(tmp_path_factory, "amazon_reviews/cloth_sport"), \
        _prepare(tmp_path_factory, "amazon_reviews/cloth_sport_ku75")


def test_ctr_schema_and_cold_start(ctr):
    from tfdebias.datasets.synthetic import cross_domain_ctr

    schema, splits = ctr
    sim = cross_domain_ctr.schema()
    for name in ("user_id", "item_id", "item_category", "domain", "history_source", "history_target",
                 "day", "click", "cold_start"):
        assert schema[name].role == sim[name].role, name
    assert schema["history_target"].table == "item_id"
    # Algorithm 2: valid/test hold target rows only, of disjoint users; cold users lose their target history
    for s in ("valid", "test"):
        assert (splits[s]["domain"] == 1).all()
    assert not set(splits["valid"]["user_id"]) & set(splits["test"]["user_id"])
    for c in splits.values():
        assert not c["history_target"][c["cold_start"] == 1].any()
        np.testing.assert_array_equal(c["click"], (c["rating"] >= 4).astype(np.float32))
    # source item ids come first
    tr = splits["train"]
    assert tr["item_id"][tr["domain"] == 0].max() < tr["item_id"][tr["domain"] == 1].min()


def test_ctr_histories_are_earlier_clicks(ctr):
    """History items are clicked items of the right domain (checked against the ids)."""
    _, splits = ctr
    tr = splits["train"]
    src_max = tr["item_id"][tr["domain"] == 0].max()
    hs, ht = tr["history_source"], tr["history_target"]
    assert ((hs == 0) | (hs <= src_max)).all() and ((ht == 0) | (ht > src_max)).all()
    assert (hs > 0).any()


def test_sequences_open_world_split(seqs):
    from tfdebias.datasets.synthetic import cross_domain_sequences

    (schema, s25), (_, s75) = seqs
    sim = cross_domain_sequences.schema()
    assert [(f.name, f.role) for f in schema] == [(f.name, f.role) for f in sim if f.role != "exposure"]
    # every overlapping user is observed; train = observed users, unobserved = the rest
    assert (s25["train"]["observed"] == 1).all() and (s25["unobserved"]["observed"] == 0).all()
    assert (s25["unobserved"]["overlap"] == 0).all()
    assert len(s75["train"]["user_id"]) > len(s25["train"]["user_id"])
    # valid/test: every (user, domain) once; histories end before their target
    for split in ("valid", "test"):
        key = s25[split]["user_id"] * 2 + s25[split]["domain"]
        assert len(np.unique(key)) == len(key)
    n_a = s25["train"]["item_id"][s25["train"]["domain"] == 0].max()
    for c in s25.values():
        assert ((c["history_a"] == 0) | (c["history_a"] <= n_a)).all()
        assert ((c["history_b"] == 0) | (c["history_b"] > n_a)).all()


@pytest.mark.parametrize("name,rel,edit,fragments", [
    ("amazon_reviews/movies_music", "reviews_Movies_and_TV_5.json.gz",
     replace_line(3, lambda s: s.replace('"overall": ', '"overall": "five", "x": ')),
     ["reviews_Movies_and_TV_5.json.gz, line 3, column 'overall'", "five"]),
    ("amazon_reviews/movies_music", "reviews_CDs_and_Vinyl_5.json.gz",
     replace_line(2, lambda s: s.replace('"asin"', '"ASIN"')),
     ["reviews_CDs_and_Vinyl_5.json.gz, line 2, column 'asin'"]),
    ("amazon_reviews/movies_music", "meta_Movies_and_TV.json.gz",
     replace_line(1, lambda s: s.replace("'title'", "title")),
     ["meta_Movies_and_TV.json.gz, line 1", "Python dict literal"]),
    ("amazon_reviews/movies_music", "meta_CDs_and_Vinyl.json.gz", None,
     ["meta_CDs_and_Vinyl.json.gz", "not found", "jmcauley.ucsd.edu"]),
    ("amazon_reviews/phone_elec", "Electronics_5.json.gz",
     replace_line(4, lambda s: s.replace('"unixReviewTime": ', '"unixReviewTime": 1.5e')),
     ["Electronics_5.json.gz, line 4, column 'unixReviewTime'"]),
])
def test_bad_input(tmp_path, name, rel, edit, fragments):
    manual = corrupt_copy("amazon_reviews", tmp_path, rel, edit)
    expect_data_error(name, manual, tmp_path / "out", *fragments)


def test_reviews_as_python_literals(tmp_path):
    """2014 review lines written as Python dict literals (single quotes) read the same."""
    from tfdebias import data

    manual = corrupt_copy("amazon_reviews", tmp_path, "reviews_Clothing_Shoes_and_Jewelry_5.json.gz",
                          lambda t: t.replace('"', "'"))
    b = data.prepare("amazon_reviews/cloth_sport", data_dir=str(tmp_path / "out"), manual_dir=str(manual))
    assert {k: v.num_examples for k, v in b.info.splits.items()} == {
        "train": 7, "unobserved": 4, "valid": 11, "test": 11}


def test_python_literal_meta_is_never_evaluated(tmp_path):
    """A metadata line with code in it is an error, not executed (ast.literal_eval)."""
    marker = tmp_path / "pwned"
    code = f"__import__('pathlib').Path({str(marker)!r}).touch()"
    manual = corrupt_copy("amazon_reviews", tmp_path, "meta_CDs_and_Vinyl.json.gz",
                          replace_line(2, lambda s: s.replace("'price': 9.99", f"'price': {code}")))
    expect_data_error("amazon_reviews/movies_music", manual, tmp_path / "out", "meta_CDs_and_Vinyl.json.gz, line 2")
    assert not marker.exists()


@pytest.mark.parametrize("config", ["movies_music", "cloth_sport", "phone_elec_ku75"])
def test_cli_prepare_dummy_data(tmp_path, capsys, config):
    out = cli_prepare_dummy(capsys, f"amazon_reviews/{config}", tmp_path)
    assert f"amazon_reviews/{config}/1.0.0" in out and ("unobserved" in out) == (config != "movies_music")


@pytest.mark.slow
def test_cli_bad_gzip_exits_2(tmp_path):
    manual = corrupt_copy("amazon_reviews", tmp_path, "reviews_Sports_and_Outdoors_5.json.gz", lambda t: t)
    (manual / "reviews_Sports_and_Outdoors_5.json.gz").write_bytes(b"not gzip at all")
    line = cli_rejects("amazon_reviews/cloth_sport", manual, tmp_path / "bad")
    assert "reviews_Sports_and_Outdoors_5.json.gz" in line
