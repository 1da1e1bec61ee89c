"""``kuairec``: KuaiRec 2.0 (Gao et al., CIKM 2022) as CP2Rec uses it (the CP2Rec paper, Sec. 5.1).

The real-data counterpart of the ``confounded_ctr`` simulator: the same roles
(``user_id``/``item_id`` and other categorical features, 11 ``proxy`` features, a
``click`` label), so every model and method runs on both unchanged.

Raw files (read from ``manual_dir``, found anywhere below it; the Zenodo zip unpacks to
``KuaiRec 2.0/data/``): ``big_matrix.csv``, ``small_matrix.csv``, ``user_features.csv``,
``item_categories.csv``, ``item_daily_features.csv``, read by header name.

Preprocessing (config ``cp2rec``, the default; every choice is a config field):

* **Splits** (paper Sec. 5.1.2, Table 2): the biased ``big_matrix`` is split 8:2 at
  random into ``train`` (``floor(0.8 n)`` rows: 10,024,644 of 12,530,806, as Table 2) and
  ``valid``; the whole fully observed ``small_matrix`` (4,676,570 rows) is the unbiased
  ``test`` set. Rows keep their file order inside a split.
* **Label** ``click = watch_ratio > label_threshold``, default **2.0**: the rule the
  KuaiRec authors give in their README ("like = 1 if watch_ratio > 2.0", there is no
  explicit like signal) and the one third-party KuaiRec loaders use; CP2Rec states no
  threshold. ``watch_ratio`` itself is kept as a second label.
* **Ids**: users and videos are remapped to ``1..V`` in sorted raw-id order over every
  file (0 = padding/unknown); every categorical attribute likewise (sorted distinct
  values; empty = 0).
* **User features** (30 attributes, ``user_features.csv``): 26 categorical
  (``user_active_degree``, ``is_lowactive_period``, ``is_live_streamer``,
  ``is_video_author``, the four ``*_range`` buckets, ``onehot_feat0..17``) and 4 dense
  counts as ``log(1 + x)`` (``follow_user_num``, ``fans_user_num``,
  ``friend_user_num``, ``register_days``).
* **Item features**: ``item_category`` (the first tag of ``item_categories.csv``'s
  ``feat``, like the simulator's single category) and ``item_tags`` (all tags, up to
  ``max_tags``); from ``item_daily_features.csv``: the video's latest ``author_id``,
  ``video_type``, ``upload_type``, ``visible_status``, ``music_id``, ``video_tag_id``
  (categorical) and ``video_duration`` (log seconds), ``video_width``/``video_height``
  (pixels / 1000), ``days_since_upload`` (log days).
* **Item daily statistics**: each row gets its video's statistics of the day
  ``stats_lag_days`` (default 1) before the interaction, i.e. what a recommender could
  have known when it showed the video (the same-day counts include the interaction
  itself). When that day has no row, the latest earlier day is used; before the first
  one, zeros. Rows with an empty date (some ``small_matrix`` rows) use the last logged
  day. Counts are ``log(1 + x)``; ``play_progress`` is kept as is.
* **The 11 confounding proxies** (role ``proxy``; CP2Rec: "11 features from the
  item-related statistical feature set", Sec. 5.1.2, chosen, per Sec. 4.2, as the
  statistics "more likely to be captured by the recommendation model, thus affecting
  the exposure probability"): exposure ``show_cnt``; the consumption counts
  ``play_cnt``, ``complete_play_cnt``, ``valid_play_cnt``, ``long_time_play_cnt``; the
  engagement counts ``like_cnt``, ``comment_cnt``, ``share_cnt``, ``follow_cnt``,
  ``collect_cnt``; and ``play_progress``. They mirror the simulator's proxies (show
  count and nine play/engagement rates). The other 34 daily statistics form the
  ``item_daily_stats`` vector (dense input, not a proxy). The paper does not list its
  11; this choice is ours.
* No ``propensity`` (KuaiRec logs no exposure probability).
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path

import numpy as np

from tfdebias.datasets import _real
from tfdebias.datasets._real import Col, DataError, Feature, Schema

PAGE = "https://zenodo.org/records/18164998 (KuaiRec.zip; homepage https://kuairec.com/)"

MANUAL_DOWNLOAD_INSTRUCTIONS = """\
Download KuaiRec 2.0 (CC BY-SA 4.0) from https://zenodo.org/records/18164998
(`wget https://zenodo.org/records/18164998/files/KuaiRec.zip`; homepage
https://kuairec.com/) and unzip it into the manual directory. The builder reads, from
anywhere below it (the zip unpacks to `KuaiRec 2.0/data/`):
big_matrix.csv, small_matrix.csv, user_features.csv, item_categories.csv,
item_daily_features.csv.
"""

FILES = ("big_matrix.csv", "small_matrix.csv", "user_features.csv", "item_categories.csv",
         "item_daily_features.csv")

USER_CATEGORICAL = (
    "user_active_degree", "is_lowactive_period", "is_live_streamer", "is_video_author",
    "follow_user_num_range", "fans_user_num_range", "friend_user_num_range",
    "register_days_range", *(f"onehot_feat{i}" for i in range(18)),
)
USER_DENSE = ("follow_user_num", "fans_user_num", "friend_user_num", "register_days")
ITEM_CATEGORICAL = ("author_id", "video_type", "upload_type", "visible_status", "music_id",
                    "video_tag_id")
#: The 45 per-day statistics of item_daily_features.csv, in file order.
DAILY_STATS = (
    "show_cnt", "show_user_num", "play_cnt", "play_user_num", "play_duration",
    "complete_play_cnt", "complete_play_user_num", "valid_play_cnt", "valid_play_user_num",
    "long_time_play_cnt", "long_time_play_user_num", "short_time_play_cnt",
    "short_time_play_user_num", "play_progress", "comment_stay_duration", "like_cnt",
    "like_user_num", "click_like_cnt", "double_click_cnt", "cancel_like_cnt",
    "cancel_like_user_num", "comment_cnt", "comment_user_num", "direct_comment_cnt",
    "reply_comment_cnt", "delete_comment_cnt", "delete_comment_user_num", "comment_like_cnt",
    "comment_like_user_num", "follow_cnt", "follow_user_num", "cancel_follow_cnt",
    "cancel_follow_user_num", "share_cnt", "share_user_num", "download_cnt",
    "download_user_num", "report_cnt", "report_user_num", "reduce_similar_cnt",
    "reduce_similar_user_num", "collect_cnt", "collect_user_num", "cancel_collect_cnt",
    "cancel_collect_user_num",
)
#: The 11 confounding proxies (see the module docstring for why these).
PROXIES = ("show_cnt", "play_cnt", "complete_play_cnt", "valid_play_cnt", "long_time_play_cnt",
           "like_cnt", "comment_cnt", "share_cnt", "follow_cnt", "collect_cnt", "play_progress")
OTHER_STATS = tuple(s for s in DAILY_STATS if s not in PROXIES)
RATIOS = ("play_progress",)  # kept as is; every other statistic is log(1 + x)


@dataclasses.dataclass(eq=False)
class KuaiRecConfig(_real.RealConfig):
    """Preprocessing of ``kuairec`` (see the module docstring).

    Attributes:
      label_threshold: ``click = watch_ratio > label_threshold`` (default 2.0, KuaiRec's README).
      valid_fraction: share of ``big_matrix`` rows drawn at random for ``valid`` (0.2 = 8:2).
      split_seed: seed of that draw.
      stats_lag_days: the daily statistics of this many days before the interaction.
      max_tags: length of ``item_tags``.
    """

    label_threshold: float = 2.0
    valid_fraction: float = 0.2
    split_seed: int = 0
    stats_lag_days: int = 1
    max_tags: int = 4


class Builder(_real.RealDataBuilder):
    """KuaiRec 2.0 for CP2Rec: biased big matrix -> train/valid 8:2, small matrix -> test."""

    BUILDER_CONFIGS = [KuaiRecConfig(
        name="cp2rec",
        description="CP2Rec's preprocessing: click = watch_ratio > 2.0, 8:2 random train/valid "
                    "of big_matrix, small_matrix test, 11 item-statistic proxies.")]
    MANUAL_DOWNLOAD_INSTRUCTIONS = MANUAL_DOWNLOAD_INSTRUCTIONS
    HOMEPAGE = "https://kuairec.com/"
    DOWNLOAD_PAGE = PAGE
    REQUIRED_FILES = FILES

    def schema(self, sizes: dict | None = None) -> Schema:
        cfg = self.builder_config
        cat = functools.partial(_real.categorical, sizes)
        feats = [cat("user_id", "user"), cat("item_id", "video")]
        feats += [cat(c, f"user {c}") for c in USER_CATEGORICAL]
        feats += [Feature(c, "dense", description=f"log(1 + user {c})") for c in USER_DENSE]
        feats += [
            cat("item_category", "first tag of the video (item_categories.csv)", vocab="item_tag"),
            Feature("item_tags", "sequence", vocab_size=(sizes or {}).get("item_category", 1),
                    max_len=cfg.max_tags, vocab="item_tag", description="the video's tags"),
        ]
        feats += [cat(c, f"video {c}") for c in ITEM_CATEGORICAL]
        feats += [
            Feature("video_duration", "dense", description="log(1 + video length in seconds)"),
            Feature("video_width", "dense", description="video width in pixels / 1000"),
            Feature("video_height", "dense", description="video height in pixels / 1000"),
            Feature("days_since_upload", "dense", description="log(1 + days since upload)"),
        ]
        feats += [Feature(c, "proxy", description=(
            f"confounding proxy: video {c} the day before" if c in RATIOS
            else f"confounding proxy: log(1 + video {c} the day before)")) for c in PROXIES]
        feats += [
            Feature("item_daily_stats", "vector", width=len(OTHER_STATS),
                    description="log(1 + x) of the other 34 daily statistics: " + ", ".join(OTHER_STATS)),
            Feature("click", "label", description=f"watch_ratio > {cfg.label_threshold}"),
            Feature("watch_ratio", "label", description="play_duration / video_duration"),
        ]
        return Schema(feats)

    # -- reading ----------------------------------------------------------------------
    def generate(self, manual_dir: Path):
        cfg = self.builder_config
        if not 0.0 < cfg.valid_fraction < 1.0:
            raise DataError(f"valid_fraction must be in (0, 1), got {cfg.valid_fraction}")
        paths = self.required_paths(manual_dir)
        big = _read_matrix(paths["big_matrix.csv"])
        small = _read_matrix(paths["small_matrix.csv"])
        users = _read_users(paths["user_features.csv"])
        tags = _read_categories(paths["item_categories.csv"], cfg.max_tags)
        daily = _read_daily(paths["item_daily_features.csv"])

        sizes: dict[str, int] = {}
        # ids: 1..V over every file, sorted by raw id
        _, sizes["user_id"], user_vocab = _real.encode_ids(np.concatenate(
            [np.unique(big["user_id"]), np.unique(small["user_id"]), users["user_id"]]))
        _, sizes["item_id"], item_vocab = _real.encode_ids(np.concatenate(
            [np.unique(big["video_id"]), np.unique(small["video_id"]), tags["video_id"],
             np.unique(daily["video_id"])]))
        n_items = sizes["item_id"]

        # user table, row = user id (0 = unknown user: all zeros)
        u_rows = _real.lookup_ids(users["user_id"], user_vocab)
        user_table = {}
        for c in USER_CATEGORICAL:
            ids, sizes[c], _ = _real.encode_ids(_as_text(users[c]), missing="")
            user_table[c] = _scatter(sizes["user_id"], u_rows, ids, np.int64)
        for c in USER_DENSE:
            user_table[c] = _scatter(sizes["user_id"], u_rows, _real.log1p_nonneg(users[c]), np.float32)

        # tags
        t_rows = _real.lookup_ids(tags["video_id"], item_vocab)
        tag_ids, sizes["item_category"], _ = _real.encode_ids(tags["tags"], missing=-1)
        item_tags = _scatter(n_items, t_rows, tag_ids, np.int64)
        first_tag = item_tags[:, 0]  # tags are still left-aligned: column 0 is the first
        item_tags = _real.right_align(item_tags)

        # daily statistics: a (video, day) grid of row indices, forward-filled over days
        all_dates = np.concatenate([big["date"], small["date"], daily["date"]])
        day0, last_day, day_of = _day_index(all_dates, path=paths["big_matrix.csv"])
        d_items = _real.lookup_ids(daily["video_id"], item_vocab)
        d_days = day_of(daily["date"])
        n_days = last_day + 1
        grid = np.full((n_items, n_days), -1, np.int64)
        grid[d_items, d_days] = np.arange(len(d_items))
        have = np.where(grid >= 0, np.arange(n_days)[None, :], -1)
        ff_day = np.maximum.accumulate(have, axis=1)  # latest day <= d with a row
        ff_row = np.where(ff_day >= 0, np.take_along_axis(grid, np.maximum(ff_day, 0), axis=1), -1)
        stats = np.zeros((len(d_items) + 1, len(DAILY_STATS)), np.float32)  # last row: zeros
        for j, c in enumerate(DAILY_STATS):
            v = daily[c]
            stats[:-1, j] = (np.nan_to_num(v, nan=0.0).astype(np.float32) if c in RATIOS
                             else _real.log1p_nonneg(v))

        # static item attributes: the video's latest daily row
        order = np.lexsort((d_days, d_items))
        last = order[np.r_[d_items[order][1:] != d_items[order][:-1], True]]
        item_table = {}
        for c in ITEM_CATEGORICAL:
            ids, sizes[c], _ = _real.encode_ids(_as_text(daily[c]), missing="")
            item_table[c] = _scatter(n_items, d_items[last], ids[last], np.int64)
        item_table["video_duration"] = _scatter(
            n_items, d_items[last], _real.log1p_nonneg(daily["video_duration"][last] / 1000.0), np.float32)
        for c in ("video_width", "video_height"):
            item_table[c] = _scatter(
                n_items, d_items[last], np.nan_to_num(daily[c][last] / 1000.0, nan=0.0), np.float32)
        upload_day = _text_days(daily["upload_dt"], day0)
        upload = np.full(n_items, np.nan)
        upload[d_items[last]] = upload_day[last]

        def encode(m: dict, rows: np.ndarray) -> dict:
            """The schema's columns for rows ``rows`` of interaction table ``m``."""
            uid = _real.lookup_ids(m["user_id"][rows], user_vocab)
            iid = _real.lookup_ids(m["video_id"][rows], item_vocab)
            day = m["day"][rows]
            q = np.clip(day - cfg.stats_lag_days, -1, n_days - 1)
            srow = np.where(q >= 0, ff_row[iid, np.maximum(q, 0)], -1)
            st = stats[srow]  # -1 -> the zero row
            cols = {"user_id": uid, "item_id": iid}
            cols.update({c: t[uid] for c, t in user_table.items()})
            cols["item_category"] = first_tag[iid]
            cols["item_tags"] = item_tags[iid]
            cols.update({c: t[iid] for c, t in item_table.items()})
            since = day - upload[iid]
            cols["days_since_upload"] = _real.log1p_nonneg(np.where(np.isnan(since), 0, since))
            for j, c in enumerate(DAILY_STATS):
                if c in PROXIES:
                    cols[c] = st[:, j]
            cols["item_daily_stats"] = np.ascontiguousarray(st[:, [DAILY_STATS.index(c) for c in OTHER_STATS]])
            wr = m["watch_ratio"][rows]
            cols["click"] = (wr > cfg.label_threshold).astype(np.float32)
            cols["watch_ratio"] = wr.astype(np.float32)
            return cols

        for m in (big, small):
            m["day"] = np.where(np.isnan(m["date"]), last_day, day_of(m["date"], allow_missing=True))
        n = len(big["user_id"])
        n_train = int(np.floor((1.0 - cfg.valid_fraction) * n))
        perm = np.random.default_rng(cfg.split_seed).permutation(n)
        train_rows, valid_rows = np.sort(perm[:n_train]), np.sort(perm[n_train:])
        del perm
        schema = self.schema(sizes)

        return schema, {
            "train": _real.row_blocks(schema, functools.partial(encode, big), train_rows),
            "valid": _real.row_blocks(schema, functools.partial(encode, big), valid_rows),
            "test": _real.row_blocks(schema, functools.partial(encode, small), np.arange(len(small["user_id"]))),
        }


# -- helpers ---------------------------------------------------------------------------


def _read_matrix(path: Path) -> dict:
    """user_id, video_id, date (may be empty), watch_ratio of a big/small matrix."""
    cols = [Col("user_id"), Col("video_id"), Col("date", "int", nullable=True),  # empty in some small_matrix rows
            Col("watch_ratio", "float")]
    out = _real.read_csv_all(path, cols)
    if len(out["user_id"]) == 0:
        raise DataError("holds a header but no rows", path=path, line=2,
                        expected="one row per logged user-video pair")
    bad = ~np.isfinite(out["watch_ratio"]) | (out["watch_ratio"] < 0)
    if bad.any():
        i = int(np.argmax(bad))
        raise DataError(f"bad value {float(out['watch_ratio'][i])!r}", path=path, line=i + 2,
                        column="watch_ratio", expected="a finite number >= 0")
    return out


def _read_users(path: Path) -> dict:
    cols = ([Col("user_id")] + [Col(c, "str", nullable=True) for c in USER_CATEGORICAL]
            + [Col(c, "float", nullable=True) for c in USER_DENSE])
    return _real.read_csv_all(path, cols)


def _read_categories(path: Path, max_tags: int) -> dict:
    """video_id and its tags ``feat`` (a list literal such as "[27, 9]"), left-aligned."""
    import pyarrow.compute as pc

    t = _real.read_csv_all(path, [Col("video_id"), Col("feat", "str", nullable=True)])
    feat = t["feat"]
    text = pc.utf8_trim_whitespace(pc.fill_null(feat, ""))
    whole = pc.or_(pc.equal(text, ""), pc.and_(pc.starts_with(text, "["), pc.ends_with(text, "]")))
    bad = ~np.asarray(whole.to_numpy(zero_copy_only=False), bool)
    if bad.any():
        i = int(np.argmax(bad))
        raise DataError(f"malformed tag list {text[i].as_py()!r}", path=path, line=i + 2, column="feat",
                        expected='a list literal such as "[27, 9]"')
    stripped = pc.utf8_trim(text, "[] ")
    tags = _real.parse_int_lists(stripped, ",", max_tags, path=path, first_line=2, column="feat",
                                 keep="first", align="left")
    # -1 marks padding here (0 is a real KuaiRec tag id); encode_ids maps it to 0
    flat, parent = _real.split_lists(stripped, ",")
    counts = np.bincount(parent, minlength=len(feat))
    pad = np.arange(max_tags)[None, :] >= np.minimum(counts, max_tags)[:, None]
    tags = np.where(pad, -1, tags)
    return {"video_id": t["video_id"], "tags": tags}


def _read_daily(path: Path) -> dict:
    cols = ([Col("video_id"), Col("date")]
            + [Col(c, "str", nullable=True) for c in ITEM_CATEGORICAL]
            + [Col("upload_dt", "str", nullable=True)]
            + [Col(c, "float", nullable=True) for c in ("video_duration", "video_width", "video_height")]
            + [Col(c, "float", nullable=True) for c in DAILY_STATS])
    t = _real.read_csv_all(path, cols)
    return t


def _as_text(arr) -> np.ndarray:
    """A pyarrow string column as a numpy str array ("" for empty); "3.0" -> "3"."""
    import pyarrow.compute as pc

    arr = pc.fill_null(arr, "")
    arr = pc.replace_substring_regex(pc.utf8_trim_whitespace(arr), r"^(-?\d+)\.0+$", r"\1")
    return np.asarray(arr.to_numpy(zero_copy_only=False), dtype=str)


def _scatter(n: int, rows: np.ndarray, values: np.ndarray, dtype) -> np.ndarray:
    """A table of ``n`` rows with ``values`` at ``rows`` (row 0 and the rest zero)."""
    out = np.zeros((n,) + values.shape[1:], dtype)
    ok = rows > 0
    out[rows[ok]] = values[ok]
    return out




def _day_index(dates: np.ndarray, *, path):
    """Day numbers for yyyymmdd values: returns ``(first date, last day index, fn)``."""
    import pandas as pd

    d = dates[~np.isnan(dates)] if dates.dtype.kind == "f" else dates
    uniq = np.unique(d.astype(np.int64))
    parsed = pd.to_datetime(pd.Series(uniq.astype(str)), format="%Y%m%d", errors="coerce")
    if parsed.isna().any():
        bad = uniq[parsed.isna().to_numpy()][0]
        raise DataError(f"bad date {int(bad)}", path=path, column="date", expected="a yyyymmdd date")
    if not len(uniq):
        raise DataError("no dated rows", path=path, column="date", expected="yyyymmdd dates")
    day0 = parsed.min()
    ordinal = ((parsed - day0).dt.days).to_numpy()

    def day_of(values, allow_missing=False, path=path):
        v = np.asarray(values)
        missing = np.isnan(v) if v.dtype.kind == "f" else np.zeros(len(v), bool)
        if missing.any() and not allow_missing:
            i = int(np.argmax(missing))
            raise DataError("empty date", path=path, line=i + 2, column="date", expected="a yyyymmdd date")
        pos = np.searchsorted(uniq, np.where(missing, uniq[0], v).astype(np.int64))
        return ordinal[np.minimum(pos, len(uniq) - 1)].astype(np.int64)

    return day0, int(ordinal.max()), day_of


def _text_days(arr, day0) -> np.ndarray:
    """Days since ``day0`` of "2020-07-08"-style dates (NaN when empty or unreadable)."""
    import pandas as pd

    s = pd.to_datetime(pd.Series(_as_text(arr)), errors="coerce", format="mixed")
    return ((s - day0).dt.days).to_numpy(dtype=np.float64, na_value=np.nan)
