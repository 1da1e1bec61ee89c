"""Writers of synthetic raw files in the *published* formats of the five real data sets.

Used by ``benchmarks/prepare_scale.py`` (full-size files, to time the builders) and to
make the builders' ``dummy_data/`` (a few dozen rows). The values are random; the
formats are the owners' (``../shared/reference/raw_formats.md``): file names and folders,
column names and order, separators, header or not, quoting, list encodings, JSON
(or Python-literal) lines, gzip, and the documented quirks (empty time fields in
KuaiRec's small matrix, WeChat's empty lists and "tag prob" pairs, TikTok's short or
missing feature lists, DIGIX's -1/1 feeds labels and hex ids, Amazon 2018's string
``vote`` and missing keys).

Every writer is vectorised (numpy/pyarrow); the only Python loops are over the lines of
the Python-literal and JSON side files, which have one line per item.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np


def _write_csv(path: Path, columns: dict, *, header: bool = True, sep: str = ",") -> None:
    """CSV like pandas' ``to_csv(index=False)``: quotes only where needed."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    import pyarrow.compute as pc

    path.parent.mkdir(parents=True, exist_ok=True)
    table = pa.table({k: (pa.array(v) if not isinstance(v, pa.Array) else v) for k, v in columns.items()})
    special = f'[{sep}"\n]' if sep != "\t" else '[\t"\n]'
    needs = any(pa.types.is_string(c.type) and pc.any(pc.match_substring_regex(c, special)).as_py()
                for c in table.columns)
    with open(path, "wb") as f:
        if header:  # pyarrow quotes header names; the published files do not
            f.write((sep.join(table.column_names) + "\n").encode())
        pacsv.write_csv(table, f, write_options=pacsv.WriteOptions(
            include_header=False, delimiter=sep, quoting_style="needed" if needs else "none"))
    if needs:
        _unquote_simple(path, sep)


def _unquote_simple(path: Path, sep: str) -> None:
    """pyarrow quotes every string; drop the quotes that pandas would not write."""
    import re

    text = path.read_text(encoding="utf-8")
    text = re.sub(r'"([^"\n' + re.escape(sep) + r']*)"', r"\1", text)
    path.write_text(text, encoding="utf-8")


def _fmt_float(x: np.ndarray, digits: int = 6) -> np.ndarray:
    return np.char.mod(f"%.{digits}f", x)


# -- KuaiRec 2.0 ---------------------------------------------------------------------------


def write_kuairec(root, *, n_users=7176, n_items=10728, n_big=12_530_806, n_small_users=1411,
                  n_small_items=3327, n_days=63, seed=0) -> Path:
    """``KuaiRec 2.0/data/`` with the five files the builder reads (plus social_network)."""
    rng = np.random.default_rng(seed)
    d = Path(root) / "KuaiRec 2.0" / "data"
    d.mkdir(parents=True, exist_ok=True)
    day0 = np.datetime64("2020-07-05")

    def matrix(users, items, n, empty_time_frac):
        uu = np.sort(rng.choice(users, n))
        ii = rng.choice(items, n)
        vd = rng.integers(3000, 60000, n)
        wr = np.exp(rng.normal(-0.2, 0.8, n))
        pd_ = np.round(vd * wr).astype(np.int64)
        ts = (day0.astype("datetime64[s]").astype(np.int64) - 8 * 3600
              + rng.integers(0, n_days * 86400, n)).astype(np.float64) + rng.integers(0, 1000, n) / 1000
        ts.sort()
        local = (ts + 8 * 3600)
        t64 = (local * 1000).astype("datetime64[ms]")
        time = np.datetime_as_string(t64, unit="ms").astype(object)
        time = np.char.replace(time.astype(str), "T", " ")
        date = np.char.replace(np.datetime_as_string(t64, unit="D"), "-", "").astype(object)
        ts_s = np.char.mod("%.3f", ts).astype(object)
        wr_s = np.char.mod("%.6f", pd_ / vd).astype(object)
        time = time.astype(object)
        if empty_time_frac:
            empty = rng.random(n) < empty_time_frac
            empty[rng.integers(0, n, 2)] = True  # at least one, even in tiny files
            time[empty] = None
            date[empty] = None
            ts_s[empty] = None
        import pyarrow as pa
        return {"user_id": uu, "video_id": ii, "play_duration": pd_, "video_duration": vd,
                "time": pa.array(time, pa.string()), "date": pa.array(date, pa.string()),
                "timestamp": pa.array(ts_s, pa.string()), "watch_ratio": pa.array(wr_s, pa.string())}

    _write_csv(d / "big_matrix.csv", matrix(np.arange(n_users), np.arange(n_items), n_big, 0.0))
    su = np.sort(rng.choice(n_users, n_small_users, replace=False))
    si = np.sort(rng.choice(n_items, n_small_items, replace=False))
    # the small matrix is (almost) every pair of su x si
    n_small = int(0.996 * n_small_users * n_small_items)
    pairs = rng.choice(n_small_users * n_small_items, n_small, replace=False)
    pairs.sort()
    m = matrix(su, si, n_small, 0.05)
    m["user_id"], m["video_id"] = su[pairs // n_small_items], si[pairs % n_small_items]
    _write_csv(d / "small_matrix.csv", m)

    # user_features.csv (31 columns)
    degree = np.array(["high_active", "full_active", "middle_active", "UNKNOWN"])
    uf = {"user_id": np.arange(n_users),
          "user_active_degree": degree[rng.integers(0, 4, n_users)],
          "is_lowactive_period": rng.integers(0, 2, n_users),
          "is_live_streamer": rng.integers(0, 2, n_users),
          "is_video_author": rng.integers(0, 2, n_users)}
    for name, buckets in (("follow_user_num", ["0", "(0,10]", "(10,50]", "(50,100]", "500+"]),
                          ("fans_user_num", ["0", "[1,10)", "[10,100)", "[100,1k)"]),
                          ("friend_user_num", ["0", "[1,5)", "[5,30)", "250+"]),
                          ("register_days", ["15-30", "61-90", "181-365", "730+"])):
        uf[name] = rng.integers(0, 2000, n_users)
        uf[f"{name}_range"] = np.array(buckets)[rng.integers(0, len(buckets), n_users)]
    order = ["user_id", "user_active_degree", "is_lowactive_period", "is_live_streamer",
             "is_video_author", "follow_user_num", "follow_user_num_range", "fans_user_num",
             "fans_user_num_range", "friend_user_num", "friend_user_num_range", "register_days",
             "register_days_range"]
    uf = {k: uf[k] for k in order}
    ranges = [2, 8, 30, 1076, 12, 10, 3, 47, 340, 7, 5, 3, 2, 2, 2, 2, 2, 2]
    for i, r in enumerate(ranges):
        uf[f"onehot_feat{i}"] = rng.integers(0, r, n_users)
    _write_csv(d / "user_features.csv", uf)

    # item_categories.csv: video_id,feat with list literals
    n_tags = rng.integers(1, 4, n_items)
    tags = rng.integers(0, 31, (n_items, 3))
    feat = np.where(n_tags == 1, np.char.mod("[%d]", tags[:, 0]),
                    np.where(n_tags == 2,
                             np.char.add(np.char.add(np.char.mod("[%d, ", tags[:, 0]), np.char.mod("%d", tags[:, 1])), "]"),
                             np.char.add(np.char.add(np.char.add(np.char.mod("[%d, ", tags[:, 0]),
                                                                 np.char.mod("%d, ", tags[:, 1])),
                                                     np.char.mod("%d", tags[:, 2])), "]")))
    _write_csv(d / "item_categories.csv", {"video_id": np.arange(n_items), "feat": feat})

    # item_daily_features.csv: one row per video per day from its upload day
    start = rng.integers(0, n_days, n_items)
    span = np.minimum(n_days - start, rng.integers(1, n_days + 1, n_items))
    vid = np.repeat(np.arange(n_items), span)
    day = np.repeat(start, span) + (np.arange(len(vid)) - np.repeat(np.cumsum(span) - span, span))
    n = len(vid)
    dates = np.char.replace(np.datetime_as_string(day0 + day.astype("timedelta64[D]"), unit="D"), "-", "")
    upload = np.datetime_as_string(day0 + (start - rng.integers(0, 30, n_items)).astype("timedelta64[D]"), unit="D")
    daily = {"video_id": vid, "date": dates, "author_id": rng.integers(0, 7000, n_items)[vid],
             "video_type": np.where(rng.random(n_items) < 0.95, "NORMAL", "AD")[vid],
             "upload_dt": upload[vid],
             "upload_type": np.array(["ShortImport", "LongImport", "ShortCamera"])[rng.integers(0, 3, n_items)][vid],
             "visible_status": np.full(n, "public"),
             "video_duration": np.char.mod("%.1f", rng.integers(3000, 60000, n_items)[vid].astype(float)),
             "video_width": rng.choice([720, 1080], n_items)[vid],
             "video_height": rng.choice([1280, 1920], n_items)[vid],
             "music_id": rng.integers(0, 9000, n_items)[vid],
             "video_tag_id": rng.integers(0, 300, n_items)[vid],
             "video_tag_name": np.array(["美食", "萌宠", "运动"])[rng.integers(0, 3, n_items)][vid]}
    from tfdebias.datasets.kuairec.kuairec_dataset_builder import DAILY_STATS
    for c in DAILY_STATS:
        if c == "play_progress":
            daily[c] = np.char.mod("%.6f", rng.random(n))
        else:
            daily[c] = rng.poisson(50, n)
    # a few empty numeric cells, as in the release
    import pyarrow as pa
    vd = daily["video_duration"].astype(object)
    vd[rng.random(n) < 0.01] = None
    daily["video_duration"] = pa.array(vd, pa.string())
    _write_csv(d / "item_daily_features.csv", daily)
    _write_csv(d / "social_network.csv", {"user_id": np.arange(3),
                                          "friend_list": np.array(["[4202, 7126]", "[8]", "[1, 2]"])})
    return d
