"""``huawei_digix22``: Huawei DIGIX Global AI Challenge 2022, CTR from ads and news feeds, as DADIN uses it.

Paper 002 (DADIN), Sec. 4.2: the ads log is the **target** domain, the news-feeds log the
**source** domain; 50% of the users are kept ("Huawei has too much data and has resampled
an 50% of all data additionally"), then the cold-start resampling of Algorithm 2
(:func:`tfdebias.datasets.cold_start.resample_cold_start`). The real-data counterpart of the
``cross_domain_ctr`` simulator: the same fields ``user_id``, ``user_age``,
``user_gender``, ``user_activity``, ``item_id`` (source items first), ``item_category``,
``domain`` (0 = feeds, 1 = ads), ``history_source``, ``history_target``, ``day``, the
``click`` label and ``cold_start``, plus every other column of the release.

Raw files (``train/`` of the challenge zip; comma-separated with a header, read by column
name): ``train_data_ads.csv`` (35 columns) and ``train_data_feeds.csv`` (28 columns).
List fields are '^'-joined ids; times are 12-digit ``yyyymmddHHMM``; the feeds ``label``
is -1/1; ``i_docId``/``i_s_sourceId`` are 40-hex strings. The test files have no labels
and are not used.

Preprocessing (every choice is a config field):

* **Users**: a user is kept when a seeded hash of her ``user_id`` falls below
  ``user_fraction`` = 0.5 (DADIN's 50%; the same users in both files).
* **Labels**: ``click`` = the ads ``label`` (0/1) and, for feeds rows, ``label == 1``
  (the release codes feeds labels as -1/1).
* **Items** (one id space, source first): feeds items are documents ``i_docId``; ads items
  are ``task_id``, the id space of ``ad_click_list_v001``/``ad_close_list_v001`` (the
  clicked / closed ad tasks). ``item_category`` is the news category ``i_cat`` (feeds) or
  ``app_second_class`` (ads), source categories first; the news-category lists share the
  source categories.
* **Histories** from both domains: ``history_source`` = ``u_newsCatInterestsST`` (the
  short-term news-category interests, on every row of both files) and ``history_target``
  = ``ad_click_list_v001``. Every other list becomes a sequence too (``ad_click_adv`` =
  v002, ``ad_click_app`` = v003, ``ad_close_task``/``_adv``/``_app`` = the close lists,
  ``news_interests``, ``news_dislikes``, ``news_clicks`` = ``u_click_ca2_news``). A row of
  one domain gets the other domain's lists from the same user's latest row of that
  domain at or before its time (an as-of join), else empty. The first ``max_len`` ids
  of a list are kept (the release does not say which end is the most recent),
  right-aligned. A cold-start user's ``history_target`` is emptied, as in the simulator.
* **User features**: ``user_age`` (age), ``user_gender`` (gender), ``user_activity``
  (``u_feedLifeCycle``, "user activity"), the ads-file profile (``residence``, ``city``,
  ``city_rank``, ``series_dev``, ``series_group``, ``emui_dev``, ``device_name``,
  ``device_size``, ``net_type``; the user's latest ads row) and the feeds-file profile
  (``u_phonePrice``, ``u_browserLifeCycle``, ``u_browserMode``; the latest feeds row), on
  rows of both domains.
* **Domain-specific features** are 0 on rows of the other domain: ads ``adv_id``,
  ``creat_type_cd``, ``adv_prim_id``, ``inter_type_cd``, ``slot_id``, ``site_id``,
  ``spread_app_id``, ``hispace_app_tags`` (its first id), ``app_score``; feeds
  ``i_s_sourceId``, ``i_regionEntity``, ``i_dtype``, ``e_ch``, ``e_m``, ``e_po``, ``e_pl``,
  ``e_rn``, ``e_section``, ``i_dislikeTimes``/``i_upTimes`` (log counts). ``i_entities``,
  ``cillabel`` and ``pro`` are not used.
* **Algorithm 2** with ``a_train`` 0.8, ``a_cross`` 0.3 (the paper gives no values; the
  simulator's defaults) and the global last day (the log spans 8 days) as valid/test.
* **Ids** are remapped to ``1..V`` in sorted raw order (0 = padding/unknown).
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path

import numpy as np

from tfdebias.datasets import _real
from tfdebias.datasets._real import Col, DataError, Feature, Schema
from tfdebias.datasets.cold_start import resample_cold_start

PAGE = ("https://developer.huawei.com/consumer/cn/activity/starAI2022/algo/competition.html "
        "(DIGIX 2022 task 3, 2022_3_data.zip; Kaggle mirror xiaojiu1414/digix-global-ai-challenge)")

MANUAL_DOWNLOAD_INSTRUCTIONS = """\
Download the DIGIX Global AI Challenge 2022 CTR data (task 3, "CTR prediction through
cross-domain data from ads and news feeds") from
https://developer.huawei.com/consumer/cn/activity/starAI2022/algo/competition.html
(2022_3_data.zip; a mirror is on Kaggle, xiaojiu1414/digix-global-ai-challenge) and unzip it
into the manual directory, so that it holds (at any depth) train/train_data_ads.csv and
train/train_data_feeds.csv.
"""

FILES = ("train/train_data_ads.csv", "train/train_data_feeds.csv")

ADS_PROFILE = ("residence", "city", "city_rank", "series_dev", "series_group", "emui_dev",
               "device_name", "device_size", "net_type")
FEEDS_PROFILE = ("u_phonePrice", "u_browserLifeCycle", "u_browserMode")
ADS_ITEM = ("adv_id", "creat_type_cd", "adv_prim_id", "inter_type_cd", "slot_id", "site_id",
            "spread_app_id")
FEEDS_ITEM = ("i_regionEntity", "i_dtype", "e_ch", "e_m", "e_po", "e_pl", "e_rn", "e_section")
#: sequence feature -> (raw column, file, table)
SEQUENCES = {
    "history_source": ("u_newsCatInterestsST", "both", "item_category"),
    "history_target": ("ad_click_list_v001", "ads", "item_id"),
    "ad_click_adv": ("ad_click_list_v002", "ads", "ad_click_adv"),
    "ad_click_app": ("ad_click_list_v003", "ads", "ad_click_app"),
    "ad_close_task": ("ad_close_list_v001", "ads", "item_id"),
    "ad_close_adv": ("ad_close_list_v002", "ads", "ad_click_adv"),
    "ad_close_app": ("ad_close_list_v003", "ads", "ad_click_app"),
    "news_interests": ("u_newsCatInterests", "feeds", "item_category"),
    "news_dislikes": ("u_newsCatDislike", "feeds", "item_category"),
    "news_clicks": ("u_click_ca2_news", "feeds", "item_category"),
}


@dataclasses.dataclass(eq=False)
class DigixConfig(_real.RealConfig):
    """Preprocessing of ``huawei_digix22`` (see the module docstring).

    Attributes:
      user_fraction: share of users kept (by a seeded hash of the user id).
      max_len: length of every sequence.
      a_train, a_cross: DADIN's Algorithm 2 fractions.
      seed: seeds the user hash and Algorithm 2.
    """

    user_fraction: float = 0.5
    max_len: int = 10
    a_train: float = 0.8
    a_cross: float = 0.3
    seed: int = 0


class Builder(_real.RealDataBuilder):
    """Huawei DIGIX 2022 ads (target) + news feeds (source) for DADIN, with cold-start resampling."""

    BUILDER_CONFIGS = [DigixConfig(name="dadin", description="DADIN: 50% of users, ads = target, "
                                   "feeds = source, Algorithm 2 cold-start resampling")]
    MANUAL_DOWNLOAD_INSTRUCTIONS = MANUAL_DOWNLOAD_INSTRUCTIONS
    HOMEPAGE = "https://developer.huawei.com/consumer/cn/activity/starAI2022/algo/competition.html"
    DOWNLOAD_PAGE = PAGE
    REQUIRED_FILES = FILES

    def schema(self, sizes: dict | None = None) -> Schema:
        cfg = self.builder_config
        s = sizes or {}
        cat = functools.partial(_real.categorical, sizes)
        feats = [
            cat("user_id", "user_id / u_userId"),
            cat("user_age", "age"),
            cat("user_gender", "gender"),
            cat("user_activity", "u_feedLifeCycle (user activity)"),
            *(cat(c, f"{c} (the user's latest ads row)") for c in ADS_PROFILE),
            *(cat(c, f"{c} (the user's latest feeds row)") for c in FEEDS_PROFILE),
            cat("u_refreshTimes", "daily refresh count"),
            cat("item_id", "i_docId (feeds, first) or task_id (ads)"),
            cat("item_category", "i_cat (feeds, first) or app_second_class (ads)"),
            *(cat(c, f"ads {c} (0 on feeds rows)") for c in ADS_ITEM),
            cat("hispace_app_tags", "ads app tag (its first id; 0 on feeds rows)"),
            Feature("app_score", "dense", description="ads app score (0 on feeds rows)"),
            cat("i_s_sourceId", "feeds source (0 on ads rows)"),
            *(cat(c, f"feeds {c} (0 on ads rows)") for c in FEEDS_ITEM),
            Feature("i_dislikeTimes", "dense", description="log(1 + feeds dislike count)"),
            Feature("i_upTimes", "dense", description="log(1 + feeds up count)"),
            Feature("domain", "domain", vocab_size=2, description="0 = news feeds (source), 1 = ads (target)"),
        ]
        for name, (raw, _, table) in SEQUENCES.items():
            feats.append(Feature(name, "sequence", vocab_size=s.get(table, 1), max_len=cfg.max_len,
                                 vocab=table, description=f"{raw}, right-aligned"))
        feats += [
            cat("day", "day of the log, 1 = the first"),
            Feature("click", "label", description="ads label; feeds label == 1"),
            Feature("cold_start", "truth", description="1 if the user has no target row in train"),
        ]
        return Schema(feats)

    def generate(self, manual_dir: Path):
        cfg = self.builder_config
        if not 0.0 < cfg.user_fraction <= 1.0:
            raise DataError(f"user_fraction must be in (0, 1], got {cfg.user_fraction}")
        paths = self.required_paths(manual_dir)
        ads = _read(paths[FILES[0]], "ads", cfg)
        feeds = _read(paths[FILES[1]], "feeds", cfg)
        n_f, n_a = len(feeds["user"]), len(ads["user"])
        sizes: dict[str, int] = {}

        # time: yyyymmddHHMM -> minutes and days
        minutes, day = _times(np.concatenate([feeds["time"], ads["time"]]),
                              [(paths[FILES[1]], "e_et", feeds["_line"]), (paths[FILES[0]], "pt_d", ads["_line"])])
        f_min, a_min = minutes[:n_f], minutes[n_f:]
        sizes["day"] = int(day.max()) + 1 if len(day) else 1

        # ids
        user_raw = np.concatenate([feeds["user"], ads["user"]])
        user_id, sizes["user_id"], _ = _real.encode_ids(user_raw)
        docs, doc_id = np.unique(feeds["i_docId"], return_inverse=True)
        tasks = np.unique(np.concatenate([ads["task_id"], *[_nonzero(ads[SEQUENCES[k][0]])
                                                              for k in ("history_target", "ad_close_task")]]))
        sizes["item_id"] = 1 + len(docs) + len(tasks)
        cats = np.unique(np.concatenate([feeds["i_cat"], *[_nonzero(d[SEQUENCES[k][0]]) for k, d in
                                        (("history_source", feeds), ("history_source", ads),
                                         ("news_interests", feeds), ("news_dislikes", feeds),
                                         ("news_clicks", feeds))]]))
        app_cls = np.unique(ads["app_second_class"])
        sizes["item_category"] = 1 + len(cats) + len(app_cls)
        f_item = doc_id + 1
        a_item = len(docs) + _real.lookup_ids(ads["task_id"], tasks)
        f_cat = _real.lookup_ids(feeds["i_cat"], cats)
        a_cat = len(cats) + _real.lookup_ids(ads["app_second_class"], app_cls)

        def seq_ids(m, table):
            if table == "item_id":
                return np.where(m > 0, len(docs) + _real.lookup_ids(m, tasks), 0)
            if table == "item_category":
                return _real.lookup_ids(m, cats, missing=0)
            return _real.lookup_ids(m, vocabs[table], missing=0)

        vocabs = {}
        for table in ("ad_click_adv", "ad_click_app"):
            cols = [SEQUENCES[k][0] for k, v in SEQUENCES.items() if v[2] == table]
            vocabs[table] = np.unique(np.concatenate([_nonzero(ads[c]) for c in cols]))
            sizes[table] = len(vocabs[table]) + 1

        # as-of joins: the other domain's latest row of the same user at or before the row
        a_of_f = _real.asof_index(feeds["user"], f_min, ads["user"], a_min)
        f_of_a = _real.asof_index(ads["user"], a_min, feeds["user"], f_min)
        seqs = {}
        for name, (raw, where, table) in SEQUENCES.items():
            if where == "both":
                f_raw, a_raw = feeds[raw], ads[raw]
            elif where == "ads":
                f_raw, a_raw = _take(ads[raw], a_of_f), ads[raw]
            else:
                f_raw, a_raw = feeds[raw], _take(feeds[raw], f_of_a)
            seqs[name] = _real.right_align(seq_ids(np.concatenate([f_raw, a_raw]).astype(np.int64), table))
            seqs[name] = seqs[name].astype(np.int32)  # ids < 2**31; int64 again per block

        # user profiles: the user's latest row of each file
        cols: dict[str, np.ndarray] = {}
        last_a = _real.asof_index(np.unique(user_raw), np.full(len(np.unique(user_raw)), np.iinfo(np.int64).max),
                                  ads["user"], a_min)
        last_f = _real.asof_index(np.unique(user_raw), np.full(len(np.unique(user_raw)), np.iinfo(np.int64).max),
                                  feeds["user"], f_min)
        uidx = user_id - 1  # users in sorted order = np.unique(user_raw)
        for src, keys, last in ((ads, ("age", "gender") + ADS_PROFILE, last_a), (feeds, FEEDS_PROFILE, last_f)):
            for c in keys:
                name = {"age": "user_age", "gender": "user_gender"}.get(c, c)
                ids, sizes[name], vocab = _real.encode_ids(src[c])
                per_user = np.where(last >= 0, ids[np.maximum(last, 0)], 0)
                cols[name] = per_user[uidx]
        for name, raw in (("user_activity", "u_feedLifeCycle"), ("u_refreshTimes", "u_refreshTimes")):
            ids, sizes[name], _ = _real.encode_ids(np.concatenate([feeds[raw], ads[raw]]))
            cols[name] = ids
        # domain-specific item / context features, 0 on the other domain's rows
        zf, za = np.zeros(n_f, np.int64), np.zeros(n_a, np.int64)
        for c in ADS_ITEM + ("hispace_app_tags",):
            ids, sizes[c], _ = _real.encode_ids(ads[c])
            cols[c] = np.concatenate([zf, ids])
        for c in FEEDS_ITEM:
            ids, sizes[c], _ = _real.encode_ids(feeds[c])
            cols[c] = np.concatenate([ids, za])
        ids, sizes["i_s_sourceId"], _ = _real.encode_ids(feeds["i_s_sourceId"])
        cols["i_s_sourceId"] = np.concatenate([ids, za])
        cols["app_score"] = np.concatenate([np.zeros(n_f, np.float32), np.nan_to_num(ads["app_score"]).astype(np.float32)])
        for c in ("i_dislikeTimes", "i_upTimes"):
            cols[c] = np.concatenate([_real.log1p_nonneg(feeds[c]), np.zeros(n_a, np.float32)])
        cols.update(user_id=user_id, item_id=np.concatenate([f_item, a_item]),
                    item_category=np.concatenate([f_cat, a_cat]),
                    domain=np.concatenate([zf, za + 1]), day=day,
                    click=np.concatenate([feeds["label"] == 1, ads["label"] == 1]).astype(np.float32))
        cols.update(seqs)
        del ads, feeds

        splits = resample_cold_start({"row": np.arange(n_f + n_a), "user_id": user_id,
                                      "domain": cols["domain"], "day": day},
                                     a_train=cfg.a_train, a_cross=cfg.a_cross, seed=cfg.seed, last_day="global")
        schema = self.schema(sizes)

        def encode(rows, cold):
            out = {k: v[rows].astype(np.int64) if v.dtype == np.int32 else v[rows] for k, v in cols.items()}
            out["history_target"][cold == 1] = 0  # a cold-start user is new to the ads domain
            out["cold_start"] = cold.astype(np.float32)
            return out

        return schema, {k: _real.row_blocks(schema, encode, v["row"], v["cold_start"]) for k, v in splits.items()}


def _nonzero(m: np.ndarray) -> np.ndarray:
    return np.unique(m[m > 0]) if m.size else m.reshape(-1)


def _take(m: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Rows ``idx`` of ``m``; all zeros where ``idx`` is -1."""
    out = m[np.maximum(idx, 0)] if len(m) else np.zeros((len(idx),) + m.shape[1:], m.dtype)
    out[idx < 0] = 0
    return out


def _keep_user(user: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """The same pseudo-random ``fraction`` of users, by a seeded hash of the raw id."""
    if fraction >= 1.0:
        return np.ones(len(user), bool)
    x = (user.astype(np.uint64) + np.uint64(seed) * np.uint64(0x9E3779B97F4A7C15)) * np.uint64(0xBF58476D1CE4E5B9)
    x ^= x >> np.uint64(31)
    x *= np.uint64(0x94D049BB133111EB)
    x ^= x >> np.uint64(29)
    return (x >> np.uint64(11)).astype(np.float64) / 2.0**53 < fraction


def _read(path: Path, kind: str, cfg: DigixConfig) -> dict:
    """One file's columns (users subsampled), lists parsed to padded raw ids."""
    if kind == "ads":
        ints = ("log_id", "label", "user_id", "age", "gender", "task_id", "app_second_class",
                "u_refreshTimes", "u_feedLifeCycle") + ADS_PROFILE + ADS_ITEM
        strs = ("hispace_app_tags",)
        floats = ("app_score",)
        user_col, time_col = "user_id", "pt_d"
    else:
        ints = ("u_userId", "label", "i_cat", "u_refreshTimes", "u_feedLifeCycle", "i_dislikeTimes",
                "i_upTimes") + FEEDS_PROFILE + FEEDS_ITEM
        strs = ("i_docId", "i_s_sourceId")
        floats = ()
        user_col, time_col = "u_userId", "e_et"
    lists = tuple(dict.fromkeys(raw for raw, where, _ in SEQUENCES.values() if where in (kind, "both")))
    spec = ([Col(c) for c in ints] + [Col(time_col)] + [Col(c, "float", nullable=True) for c in floats]
            + [Col(c, "str", nullable=c == "hispace_app_tags") for c in strs]
            + [Col(c, "str", nullable=True) for c in lists])
    parts: dict[str, list] = {}
    for line, block in _real.read_csv(path, spec, block_size=32 << 20):
        keep = _keep_user(block[user_col], cfg.user_fraction, cfg.seed)
        idx = np.nonzero(keep)[0]
        out = {"_line": line + idx}
        bad = ~np.isin(block["label"], (0, 1) if kind == "ads" else (-1, 0, 1))
        if bad.any():
            i = int(np.argmax(bad))
            raise DataError(f"bad value {block['label'][i]}", path=path, line=line + i, column="label",
                            expected="0 or 1" if kind == "ads" else "-1 or 1 (the feeds label)")
        for c in ints:
            out[c] = block[c][idx]
        out["time"] = block[time_col][idx]
        for c in floats:
            out[c] = block[c][idx]
        for c in lists:
            m = _real.parse_int_lists(block[c], "^", cfg.max_len, path=path, first_line=line, column=c,
                                      keep="first", align="left")[idx]
            out[c] = m.astype(np.int32) if (m.size == 0 or m.max() < 2**31) else m  # halves memory
        for c in strs:
            arr = block[c].take(idx)
            if c == "hispace_app_tags":  # one id, or a '^' list of which the first id is kept
                out[c] = _real.parse_int_lists(arr, "^", 1, path=path, first_line=line, column=c,
                                               keep="first", align="left")[:, 0]
            else:
                out[c] = np.asarray(arr.to_numpy(zero_copy_only=False), dtype=str)
        for k, v in out.items():
            parts.setdefault(k, []).append(v)
    res = {k: np.concatenate(v) for k, v in parts.items()}
    res["user"] = res.pop(user_col)
    return res


def _times(stamps: np.ndarray, sources) -> tuple[np.ndarray, np.ndarray]:
    """12-digit yyyymmddHHMM -> (minutes since the first, day 1..D)."""
    import pandas as pd

    uniq, inv = np.unique(stamps, return_inverse=True)
    parsed = pd.to_datetime(pd.Series(uniq.astype(str)), format="%Y%m%d%H%M", errors="coerce")
    if parsed.isna().any():
        bad = uniq[parsed.isna().to_numpy()][0]
        i = int(np.nonzero(stamps == bad)[0][0])
        offset = 0
        for path, column, lines in sources:
            if i < offset + len(lines):
                raise DataError(f"bad time {bad}", path=path, line=int(lines[i - offset]), column=column,
                                expected="a 12-digit yyyymmddHHMM time")
            offset += len(lines)
    t0 = parsed.min()
    minutes = ((parsed - t0).dt.total_seconds() // 60).to_numpy(np.int64)[inv]
    days = ((parsed.dt.normalize() - t0.normalize()).dt.days + 1).to_numpy(np.int64)[inv]
    return minutes, days
