"""Writers of synthetic raw files in the *published* formats of the five real data sets.

Used by ``benchmarks/prepare_scale.py`` (full-size files, to time the builders) and to
make the builders' ``dummy_data/`` (a few dozen rows). The values are random; the
formats are the owners' (each data set's ``README.md``): file names and folders,
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
        import pyarrow as pa
        import pyarrow.compute as pc

        uu = np.sort(rng.choice(users, n))
        ii = rng.choice(items, n)
        vd = rng.integers(3000, 60000, n)
        wr = np.exp(rng.normal(-0.2, 0.8, n))
        play = np.round(vd * wr).astype(np.int64)
        start_ms = (day0.astype("datetime64[ms]").astype(np.int64) - 8 * 3600 * 1000)
        ts_ms = np.sort(start_ms + rng.integers(0, n_days * 86400 * 1000, n))
        local = pa.array(ts_ms + 8 * 3600 * 1000, pa.timestamp("ms"))  # Beijing time
        time = pc.strftime(local, format="%Y-%m-%d %H:%M:%S")  # %S prints the milliseconds
        date = pc.strftime(local, format="%Y%m%d")
        stamp = pc.cast(pa.array(ts_ms / 1000.0), pa.string())
        ratio = pc.cast(pa.array(play / vd), pa.string())
        if empty_time_frac:
            empty = rng.random(n) < empty_time_frac
            empty[rng.integers(0, n, 2)] = True  # at least one, even in tiny files
            mask = pa.array(empty)
            time, date, stamp = (pc.if_else(mask, pa.scalar(None, pa.string()), a)
                                 for a in (time, date, stamp))
        return {"user_id": uu, "video_id": ii, "play_duration": play, "video_duration": vd,
                "time": time, "date": date, "timestamp": stamp, "watch_ratio": ratio}

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


# -- WeChat Big Data Challenge 2021 (wechat_algo_data1) -------------------------------------


def write_wechat(root, *, n_users=20000, n_feeds=106444, n_actions=7_317_882, n_days=14,
                 emb_dim=512, seed=0) -> Path:
    """``wechat_algo_data1/`` with user_action.csv, feed_info.csv, feed_embeddings.csv, test_a.csv."""
    import pyarrow as pa
    import pyarrow.compute as pc

    rng = np.random.default_rng(seed)
    d = Path(root) / "wechat_algo_data1"
    d.mkdir(parents=True, exist_ok=True)
    feeds = np.sort(rng.choice(np.arange(1, 3 * n_feeds), n_feeds, replace=False))
    dur = rng.integers(5, 61, n_feeds)
    # user_action: rows per user in time order (day ascending), no timestamp column
    uu = np.sort(rng.integers(0, n_users, n_actions))
    day = np.empty(n_actions, np.int64)
    day[:] = rng.integers(1, n_days + 1, n_actions)
    order = np.lexsort((day, uu))
    uu, day = uu[order], day[order]
    fi = rng.integers(0, n_feeds, n_actions)
    frac = rng.beta(1.2, 1.0, n_actions) * 1.3
    play = np.round(dur[fi] * 1000 * frac).astype(np.int64)
    stay = play + rng.integers(0, 5000, n_actions)
    act = {"userid": uu, "feedid": feeds[fi], "date_": day, "device": rng.integers(1, 3, n_actions)}
    for name, p in (("read_comment", .04), ("comment", .005), ("like", .03)):
        act[name] = (rng.random(n_actions) < p).astype(np.int64)
    act["play"], act["stay"] = play, stay
    for name, p in (("click_avatar", .01), ("forward", .005), ("follow", .001), ("favorite", .002)):
        act[name] = (rng.random(n_actions) < p).astype(np.int64)
    _write_csv(d / "user_action.csv", act)

    def words(n, lo, hi, vocab, sep, empty=0.1):
        k = rng.integers(lo, hi + 1, n)
        k[rng.random(n) < empty] = 0
        flat = rng.integers(0, vocab, int(k.sum())).astype(str)
        joined = pa.array(flat)
        parents = np.repeat(np.arange(n), k)
        offsets = np.r_[0, np.cumsum(k)]
        lists = pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32)), joined)
        del parents
        return pc.binary_join(lists, sep)

    tag_ids = rng.integers(0, 350, (n_feeds, 3))
    probs = rng.random((n_feeds, 3))
    machine = np.char.add(np.char.add(tag_ids.astype(str), " "), np.char.mod("%.8f", probs))
    machine = np.char.add(np.char.add(np.char.add(np.char.add(machine[:, 0], ";"), machine[:, 1]), ";"),
                          machine[:, 2]).astype(object)
    machine[rng.random(n_feeds) < 0.1] = None
    bgm = rng.integers(0, 25159, n_feeds).astype(float)
    bgm[rng.random(n_feeds) < 0.2] = np.nan
    singer = np.where(np.isnan(bgm), np.nan, rng.integers(0, 17500, n_feeds).astype(float))
    info = {
        "feedid": feeds, "authorid": rng.integers(0, 18789, n_feeds), "videoplayseconds": dur,
        "description": words(n_feeds, 3, 30, 150000, " "), "ocr": words(n_feeds, 0, 20, 150000, " ", 0.4),
        "asr": words(n_feeds, 0, 25, 150000, " ", 0.4),
        "description_char": words(n_feeds, 5, 40, 30000, " "),
        "ocr_char": words(n_feeds, 0, 20, 30000, " ", 0.4), "asr_char": words(n_feeds, 0, 20, 30000, " ", 0.4),
        "bgm_song_id": pa.array(bgm, from_pandas=True), "bgm_singer_id": pa.array(singer, from_pandas=True),
        "manual_keyword_list": words(n_feeds, 1, 4, 27000, ";", 0.3),
        "machine_keyword_list": words(n_feeds, 1, 5, 27000, ";", 0.3),
        "manual_tag_list": words(n_feeds, 1, 3, 350, ";", 0.1),
        "machine_tag_list": pa.array(machine, pa.string()),
    }
    for k in ("bgm_song_id", "bgm_singer_id"):  # written as floats with empty cells, like pandas
        info[k] = pc.if_else(pc.is_null(info[k]), pa.scalar(None, pa.string()),
                             pc.binary_join_element_wise(pc.cast(pc.cast(info[k], pa.int64()), pa.string()),
                                                         pa.scalar(".0"), ""))
    _write_csv(d / "feed_info.csv", info)
    # feed_embeddings.csv: 512 floats separated by spaces (trailing space, as released)
    emb_feeds = feeds[rng.random(n_feeds) < 0.999] if n_feeds > 20 else feeds
    with open(d / "feed_embeddings.csv", "w", encoding="utf-8") as f:
        f.write("feedid,feed_embedding\n")
        step = 20000
        for s in range(0, len(emb_feeds), step):
            v = rng.standard_normal((min(step, len(emb_feeds) - s), emb_dim)).astype(np.float32) * 0.1
            text = pc.binary_join(pa.ListArray.from_arrays(
                pa.array(np.arange(0, v.size + 1, emb_dim, dtype=np.int32)),
                pc.cast(pa.array(v.reshape(-1)), pa.string())), " ")
            lines = pc.binary_join_element_wise(pa.array(emb_feeds[s:s + len(v)].astype(str)), text, ",")
            f.write("\n".join(lines.to_pylist()) + " \n")
    test = {"userid": rng.integers(0, n_users, 50), "feedid": feeds[rng.integers(0, n_feeds, 50)],
            "device": rng.integers(1, 3, 50)}
    _write_csv(d / "test_a.csv", test)
    return d


# -- TikTok / ByteDance ICME 2019 short-video challenge, track 2 -------------------------------


def _json_vectors(ids: np.ndarray, key: str, vecs: np.ndarray, lengths: np.ndarray, first: str) -> list[str]:
    """JSON lines {"item_id": i, key: [..]} (or key first when first == key)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    flat = vecs.reshape(-1)
    offsets = np.r_[0, np.cumsum(lengths)].astype(np.int32)
    take = np.concatenate([np.arange(r * vecs.shape[1], r * vecs.shape[1] + k) for r, k in
                           enumerate(lengths)]) if len(lengths) < 50 else None
    if take is None:  # vectorised: the first `lengths[r]` values of each row
        mask = np.arange(vecs.shape[1])[None, :] < lengths[:, None]
        values = flat[mask.reshape(-1)]
    else:
        values = flat[take] if len(take) else np.zeros(0, flat.dtype)
    txt = pc.cast(pa.array(values), pa.string())
    lists = pc.binary_join(pa.ListArray.from_arrays(pa.array(offsets), txt), ", ")
    idtxt = pc.cast(pa.array(ids), pa.string())
    if first == "item_id":
        parts = [pa.scalar('{"item_id": '), idtxt, pa.scalar(f', "{key}": ['), lists, pa.scalar("]}")]
    else:
        parts = [pa.scalar(f'{{"{key}": ['), lists, pa.scalar('], "item_id": '), idtxt, pa.scalar("}")]
    return pc.binary_join_element_wise(*parts, "").to_pylist()


def write_tiktok(root, *, n_users=70711, n_items=3_687_157, n_rows=19_622_340, seed=0,
                 dim=128) -> Path:
    """final_track2_train.txt (TAB, no header) and the JSON-lines side files."""
    rng = np.random.default_rng(seed)
    d = Path(root)
    d.mkdir(parents=True, exist_ok=True)
    items = np.sort(rng.choice(np.arange(0, 4 * n_items), n_items, replace=False))
    author = rng.integers(0, 850_000, n_items)
    item_city = rng.integers(-1, 460, n_items)
    music = np.where(rng.random(n_items) < 0.3, -1, rng.integers(0, 89_000, n_items))
    dur = rng.integers(1, 60, n_items)
    ctime = 53_000_000 + rng.integers(0, 100_000, n_items)
    it = rng.integers(0, n_items, n_rows)
    uid = rng.integers(0, n_users, n_rows)
    cols = {"uid": uid, "user_city": np.where(rng.random(n_rows) < 0.1, -1, rng.integers(0, 396, n_rows)),
            "item_id": items[it], "author_id": author[it], "item_city": item_city[it],
            "channel": rng.integers(0, 5, n_rows), "finish": (rng.random(n_rows) < 0.35).astype(np.int64),
            "like": (rng.random(n_rows) < 0.01).astype(np.int64), "music_id": music[it],
            "did": rng.integers(0, 71_681, n_rows), "creat_time": ctime[it], "video_duration": dur[it]}
    _write_csv(d / "final_track2_train.txt", cols, header=False, sep="\t")

    step = 200_000
    files = {"track2_video_features.txt": ("video_feature_dim_128", "item_id"),
             "track2_audio_features.txt": ("audio_feature_128_dim", "audio")}
    for fname, (key, first) in files.items():
        with open(d / fname, "w", encoding="utf-8") as f:
            for s in range(0, n_items, step):
                ids = items[s:s + step]
                k = len(ids)
                lengths = np.full(k, dim)
                lengths[rng.random(k) < 0.01] = 0  # empty lists, as in the release
                lengths[rng.random(k) < 0.005] = 64  # a short one
                vec = rng.standard_normal((k, dim)).astype(np.float32)
                keep = rng.random(k) < 0.97  # not every item has side information
                lines = _json_vectors(ids[keep], key, vec[keep], lengths[keep],
                                      "item_id" if first == "item_id" else key)
                f.write("\n".join(lines) + "\n")
    with open(d / "track2_title.txt", "w", encoding="utf-8") as f:
        for s in range(0, n_items, step):
            ids = items[s:s + step]
            k = len(ids)
            nw = rng.integers(0, 12, k)
            words = rng.integers(0, 134_000, int(nw.sum()))
            counts = rng.integers(1, 3, int(nw.sum()))
            import pyarrow as pa
            import pyarrow.compute as pc
            pairs = pc.binary_join_element_wise(pa.scalar('"'), pc.cast(pa.array(words), pa.string()),
                                                pa.scalar('": '), pc.cast(pa.array(counts), pa.string()), "")
            dicts = pc.binary_join(pa.ListArray.from_arrays(pa.array(np.r_[0, np.cumsum(nw)].astype(np.int32)),
                                                            pairs), ", ")
            lines = pc.binary_join_element_wise(pa.scalar('{"item_id": '), pc.cast(pa.array(ids), pa.string()),
                                                pa.scalar(', "title_features": {'), dicts, pa.scalar("}}"), "")
            f.write("\n".join(lines.to_pylist()) + "\n")
    with open(d / "track2_face_attrs.txt", "w", encoding="utf-8") as f:
        f.write('{"item_id": %d, "face_attrs": [{"gender": 0, "beauty": 0.53, '
                '"relative_position": [0.1, 0.2, 0.3, 0.4]}]}\n' % items[0])
        f.write('{"item_id": %d, "face_attrs": []}\n' % items[-1])
    return d


# -- Amazon product reviews, 2014 (McAuley) and 2018 (Ni) releases ------------------------------


AMAZON_5CORE_2014 = {"Movies_and_TV": 1_697_533, "CDs_and_Vinyl": 1_097_592,
                     "Clothing_Shoes_and_Jewelry": 278_677, "Sports_and_Outdoors": 296_337,
                     "Cell_Phones_and_Accessories": 194_439, "Electronics": 1_689_188}


def write_amazon(root, categories, *, release="2014", n_users=None, overlap=0.3, seed=0,
                 reviews=None, reviews_per_item=30) -> Path:
    """``reviews_<Cat>_5.json.gz`` + ``meta_<Cat>.json.gz`` (2014: JSON reviews, Python-literal
    meta) or ``<Cat>_5.json.gz`` + ``meta_<Cat>.json.gz`` (2018: JSON lines, string ``vote``,
    missing keys) for each category, sharing one pool of reviewers."""
    import pyarrow as pa
    import pyarrow.compute as pc

    rng = np.random.default_rng(seed)
    d = Path(root)
    d.mkdir(parents=True, exist_ok=True)
    reviews = reviews or {c: AMAZON_5CORE_2014[c] for c in categories}
    total = sum(reviews.values())
    n_users = n_users or max(4, total // 9)
    users = np.char.add("A", np.char.zfill(np.char.upper(np.char.mod("%x", rng.choice(16**12, n_users, replace=False))), 13))
    # each category draws its reviewers from a shifted window: neighbouring categories overlap
    for ci, cat in enumerate(categories):
        n = reviews[cat]
        n_items = max(3, n // reviews_per_item)
        asins = np.char.add("B0", np.char.zfill(np.char.mod("%d", rng.choice(10**8, n_items, replace=False) + ci), 8))
        lo = int(ci * (1 - overlap) * n_users / max(1, len(categories)))
        span = max(2, int(n_users * (1.0 / max(1, len(categories)) + overlap)))
        who = users[(lo + rng.integers(0, span, n)) % n_users]
        what = asins[rng.integers(0, n_items, n)]
        overall = rng.choice([1.0, 2.0, 3.0, 4.0, 5.0], n, p=[.05, .07, .13, .25, .5])
        t = 1_000_000_000 + rng.integers(0, 14 * 365, n) * 86400
        dt = t.astype("datetime64[s]")
        month = np.char.zfill(np.char.mod("%d", (dt.astype("datetime64[M]").astype(int) % 12) + 1), 2)
        day = np.char.mod("%d", (dt - dt.astype("datetime64[M]")).astype("timedelta64[D]").astype(int) + 1)
        year = np.char.mod("%d", dt.astype("datetime64[Y]").astype(int) + 1970)
        rtime = np.char.add(np.char.add(np.char.add(np.char.add(month, " "), day), ", "), year)
        q = lambda a: pc.binary_join_element_wise(pa.scalar('"'), pa.array(a), pa.scalar('"'), "")  # noqa: E731
        ov = pa.array(np.char.mod("%.1f", overall))
        ts = pc.cast(pa.array(t), pa.string())
        text = pa.array(np.char.add("Good ", np.char.mod("%d", rng.integers(0, 99, n))))
        if release == "2014":
            helpful = pc.binary_join_element_wise(pa.scalar("["), pc.cast(pa.array(rng.integers(0, 3, n)), pa.string()),
                                                  pa.scalar(", "), pc.cast(pa.array(rng.integers(3, 6, n)), pa.string()),
                                                  pa.scalar("]"), "")
            parts = ['{"reviewerID": ', q(who), ', "asin": ', q(what), ', "reviewerName": "J. Doe", "helpful": ',
                     helpful, ', "reviewText": ', q(text), ', "overall": ', ov, ', "summary": "Nice", "unixReviewTime": ',
                     ts, ', "reviewTime": ', q(rtime), "}"]
            fname = f"reviews_{cat}_5.json.gz"
        else:
            vote = pa.array(np.where(rng.random(n) < 0.5, "", np.char.add(', "vote": "', np.char.add(
                np.where(rng.random(n) < 0.1, "1,234", np.char.mod("%d", rng.integers(2, 90, n))), '"'))))
            style = pa.array(np.where(rng.random(n) < 0.6, ', "style": {"Color:": " Blue", "Size:": " Large"}', ""))
            parts = ['{"overall": ', ov, vote, ', "verified": true, "reviewTime": ', q(rtime), ', "reviewerID": ',
                     q(who), ', "asin": ', q(what), style, ', "reviewerName": "Bendy", "reviewText": ', q(text),
                     ', "summary": "Five Stars", "unixReviewTime": ', ts, "}"]
            fname = f"{cat}_5.json.gz"
        lines = pc.binary_join_element_wise(*[pa.scalar(p) if isinstance(p, str) else p for p in parts], "")
        with gzip.open(d / fname, "wt", encoding="utf-8") as f:
            for s in range(0, n, 500_000):
                f.write("\n".join(lines[s:s + 500_000].to_pylist()) + "\n")
        # metadata, one line per item (Python literals in 2014, JSON in 2018)
        top = cat.replace("_and_", " & ").replace("_", " ")
        sub = np.array(["Sub A", "Sub B", "Sub C"])[rng.integers(0, 3, n_items)]
        brand = np.array(["Acme", "Zed's", "Brand & Co"])[rng.integers(0, 3, n_items)]
        meta_lines = []
        for i, a in enumerate(asins.tolist()):
            if release == "2014":
                rec = {"asin": a, "related": {"also_bought": [str(asins[(i + 1) % n_items])]},
                       "title": f"Item {i}'s title", "price": 9.99, "salesRank": {top: int(i + 1)},
                       "imUrl": "http://ecx.images-amazon.com/images/I/x.jpg",
                       "categories": [[top, str(sub[i])]]}
                if i % 7:
                    rec["brand"] = str(brand[i])
                meta_lines.append(repr(rec))
            else:
                rec = {"category": [top, str(sub[i])], "tech1": "", "description": ["A thing."], "fit": "",
                       "title": f"Item {i}", "also_buy": [], "tech2": "", "brand": str(brand[i]), "feature": [],
                       "rank": f"{i + 1} in {top} (", "also_view": [], "main_cat": top, "similar_item": "",
                       "date": "", "price": "$12.99", "asin": a}
                meta_lines.append(json.dumps(rec))
        with gzip.open(d / f"meta_{cat}.json.gz", "wt", encoding="utf-8") as f:
            f.write("\n".join(meta_lines) + "\n")
    return d


# -- Huawei DIGIX Global AI Challenge 2022, CTR with ads and news feeds -----------------------

ADS_COLUMNS = ("log_id", "label", "user_id", "age", "gender", "residence", "city", "city_rank", "series_dev",
               "series_group", "emui_dev", "device_name", "device_size", "net_type", "task_id", "adv_id",
               "creat_type_cd", "adv_prim_id", "inter_type_cd", "slot_id", "site_id", "spread_app_id",
               "hispace_app_tags", "app_second_class", "app_score", "ad_click_list_v001",
               "ad_click_list_v002", "ad_click_list_v003", "ad_close_list_v001", "ad_close_list_v002",
               "ad_close_list_v003", "pt_d", "u_newsCatInterestsST", "u_refreshTimes", "u_feedLifeCycle")
FEEDS_COLUMNS = ("u_userId", "u_phonePrice", "u_browserLifeCycle", "u_browserMode", "u_feedLifeCycle",
                 "u_refreshTimes", "u_newsCatInterests", "u_newsCatDislike", "u_newsCatInterestsST",
                 "u_click_ca2_news", "i_docId", "i_s_sourceId", "i_regionEntity", "i_cat", "i_entities",
                 "i_dislikeTimes", "i_upTimes", "i_dtype", "e_ch", "e_m", "e_po", "e_pl", "e_rn",
                 "e_section", "e_et", "label", "cillabel", "pro")


def _caret_lists(rng, n, lo, hi, vocab, empty=0.1):
    import pyarrow as pa
    import pyarrow.compute as pc

    k = rng.integers(lo, hi + 1, n)
    k[rng.random(n) < empty] = 0
    flat = pc.cast(pa.array(rng.integers(1, vocab, int(k.sum()))), pa.string())
    lists = pa.ListArray.from_arrays(pa.array(np.r_[0, np.cumsum(k)].astype(np.int32)), flat)
    return pc.binary_join(lists, "^")


def _hex40(rng, n):
    return np.array([f"{a:016x}{b:016x}{c:08x}" for a, b, c in
                     zip(rng.integers(0, 2**63, n), rng.integers(0, 2**63, n), rng.integers(0, 2**32, n))])


def write_digix(root, *, n_users=65000, n_ads=7_675_517, n_feeds=3_227_732, n_tasks=35000, n_docs=300000,
                seed=0, ads_ctr=0.03, n_days=8) -> Path:
    """``train/train_data_ads.csv`` (35 columns) and ``train/train_data_feeds.csv`` (28 columns):
    comma-separated with header, '^'-joined lists, 12-digit yyyymmddHHMM times, feeds labels -1/1,
    40-hex document ids."""
    rng = np.random.default_rng(seed)
    d = Path(root) / "train"
    d.mkdir(parents=True, exist_ok=True)
    minute = lambda day, n: (np.int64(202206030000) + day * 10000  # noqa: E731
                             + rng.integers(0, 24, n) * 100 + rng.integers(0, 60, n))
    users = np.sort(rng.choice(np.arange(100000, 100000 + 4 * n_users), n_users, replace=False))
    ads_users = users[rng.random(n_users) < 0.7]  # ads users are a subset of feeds users
    u = np.sort(ads_users[rng.integers(0, len(ads_users), n_ads)])
    prof = {c: rng.integers(1, r, n_users) for c, r in (("age", 9), ("gender", 4), ("residence", 40),
                                                        ("city", 400), ("city_rank", 6), ("series_dev", 40),
                                                        ("series_group", 8), ("emui_dev", 30), ("device_name", 300),
                                                        ("net_type", 8))}
    ui = np.searchsorted(users, u)
    task = rng.integers(1, n_tasks, n_ads)
    ads = {"log_id": np.arange(1, n_ads + 1), "label": (rng.random(n_ads) < ads_ctr).astype(np.int64), "user_id": u}
    for c in ("age", "gender", "residence", "city", "city_rank", "series_dev", "series_group", "emui_dev",
              "device_name"):
        ads[c] = prof[c][ui]
    ads["device_size"] = rng.choice([1290, 2117, 2340], n_ads)
    ads["net_type"] = prof["net_type"][ui]
    ads["task_id"] = task
    ads["adv_id"] = task % 20000 + 1
    for c, r in (("creat_type_cd", 10), ("adv_prim_id", 3000), ("inter_type_cd", 6), ("slot_id", 60),
                 ("site_id", 3), ("spread_app_id", 400), ("hispace_app_tags", 60), ("app_second_class", 30)):
        ads[c] = rng.integers(1, r, n_ads)
    ads["app_score"] = np.char.mod("%.1f", rng.choice([2.0, 8.0, 10.0], n_ads))
    ads["ad_click_list_v001"] = _caret_lists(rng, n_ads, 1, 8, n_tasks)
    ads["ad_click_list_v002"] = _caret_lists(rng, n_ads, 1, 6, 3000)
    ads["ad_click_list_v003"] = _caret_lists(rng, n_ads, 1, 4, 400)
    ads["ad_close_list_v001"] = _caret_lists(rng, n_ads, 0, 2, n_tasks, 0.5)
    ads["ad_close_list_v002"] = _caret_lists(rng, n_ads, 0, 2, 3000, 0.5)
    ads["ad_close_list_v003"] = _caret_lists(rng, n_ads, 0, 2, 400, 0.5)
    ads["pt_d"] = minute(rng.integers(0, n_days, n_ads), n_ads)
    ads["u_newsCatInterestsST"] = _caret_lists(rng, n_ads, 1, 5, 220)
    ads["u_refreshTimes"] = rng.integers(0, 10, n_ads)
    ads["u_feedLifeCycle"] = rng.integers(10, 18, n_ads)
    _write_csv(d / "train_data_ads.csv", {c: ads[c] for c in ADS_COLUMNS})

    fu = np.sort(users[rng.integers(0, n_users, n_feeds)])
    fi = np.searchsorted(users, fu)
    docs = _hex40(rng, min(n_docs, max(3, n_feeds // 10)))
    sources = _hex40(rng, 50)
    feeds = {"u_userId": fu}
    for c, r in (("u_phonePrice", 17), ("u_browserLifeCycle", 18), ("u_browserMode", 20)):
        feeds[c] = rng.integers(1, r, n_users)[fi]
    feeds["u_feedLifeCycle"] = rng.integers(10, 18, n_feeds)
    feeds["u_refreshTimes"] = rng.integers(0, 10, n_feeds)
    feeds["u_newsCatInterests"] = _caret_lists(rng, n_feeds, 1, 5, 220)
    feeds["u_newsCatDislike"] = _caret_lists(rng, n_feeds, 0, 2, 220, 0.6)
    feeds["u_newsCatInterestsST"] = _caret_lists(rng, n_feeds, 1, 5, 220)
    feeds["u_click_ca2_news"] = _caret_lists(rng, n_feeds, 1, 5, 220)
    feeds["i_docId"] = docs[rng.integers(0, len(docs), n_feeds)]
    feeds["i_s_sourceId"] = sources[rng.integers(0, len(sources), n_feeds)]
    feeds["i_regionEntity"] = rng.integers(0, 300, n_feeds)
    feeds["i_cat"] = rng.integers(1, 220, n_feeds)
    ent = np.where(rng.random(n_feeds) < 0.5, "", np.char.add(np.char.add(
        np.char.mod("%08x", rng.integers(0, 2**32, n_feeds)), "^"), np.char.mod("%08x", rng.integers(0, 2**32, n_feeds))))
    feeds["i_entities"] = ent
    for c, r in (("i_dislikeTimes", 10), ("i_upTimes", 10), ("i_dtype", 14), ("e_ch", 20), ("e_m", 800),
                 ("e_po", 30), ("e_pl", 1000), ("e_rn", 10), ("e_section", 2)):
        feeds[c] = rng.integers(0, r, n_feeds)
    feeds["e_et"] = minute(rng.integers(0, n_days, n_feeds), n_feeds)
    feeds["label"] = np.where(rng.random(n_feeds) < 0.2, 1, -1)
    feeds["cillabel"] = np.where(rng.random(n_feeds) < 0.05, 1, -1)
    feeds["pro"] = rng.integers(0, 100, n_feeds)
    _write_csv(d / "train_data_feeds.csv", {c: feeds[c] for c in FEEDS_COLUMNS})
    return d
