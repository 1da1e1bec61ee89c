"""``wechat_channels``: WeChat Big Data Challenge 2021 (WeChat Channels) as DAMCAR uses it.

Paper 001 (DAMCAR), Sec. 5.1.1: a two-week log of WeChat Channels short videos, label
"finish playing", a per-user 6:2:2 time split; official_code_notes.md §2.4 for the
authors' code. The real-data counterpart of the ``cascade_exposure`` simulator: the same
ids (``user_id``, ``item_id``, ``author_id``), ``duration`` (seconds), ``day``, and the
labels ``finish`` (first) and ``play_seconds``, so every model and method runs on both.

Raw files (``wechat_algo_data1/``, the preliminary-round data; comma-separated with a
header, read by column name): ``user_action.csv``, ``feed_info.csv``,
``feed_embeddings.csv``. ``test_a.csv``/``test_b.csv`` have no labels and are not used.

Preprocessing (every choice is a config field):

* **Label** ``finish = play >= videoplayseconds * 1000``: ``play`` is in milliseconds,
  ``videoplayseconds`` in seconds (the competition's definition of a complete play).
  ``play_seconds = play / 1000`` is the second label; the competition's actions
  (``read_comment``, ``like``, ``click_avatar``, ``forward``, ``comment``, ``follow``,
  ``favorite``) are kept as further labels.
* **De-duplication**: a (user, feed) pair seen more than once keeps its last row after a
  stable sort by ``date_`` (the authors' code; ``dedup``).
* **Split** per user in time order (``date_``, then file order: the file lists each user's
  actions in time order), 6:2:2 (``split``): a user's first ``round(0.6 n)`` rows train,
  up to ``round(0.8 n)`` valid, the rest test.
* **Item content** (the release has no separate visual/acoustic vectors): ``feed_embedding``
  is the released 512-d multimodal feed embedding (config ``damcar``), or its first
  ``embedding_dims`` principal components (config ``damcar_pca64``, what the authors' code
  feeds the model); ``bgm_song_id``/``bgm_singer_id`` (background music, categorical);
  text as word-id sequences ``description``, ``ocr``, ``asr`` (one word table; the first
  ``max_text_len`` words), ``keywords`` (manual then machine keywords, one table) and
  ``tags`` (manual tags, then machine tags by decreasing probability; "tag prob" pairs).
  Character-level fields are not used. A feed without an embedding gets zeros.
* **Ids**: every id is remapped to ``1..V`` in sorted raw order (0 = padding/unknown);
  empty fields map to 0. ``duration`` is ``videoplayseconds`` in seconds, as the
  simulator's.
* No ``propensity``/``relevance``: a real log has no exposure probabilities.
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path

import numpy as np

from tfdebias.datasets import _real
from tfdebias.datasets._real import Col, DataError, Feature, Schema

PAGE = ("https://algo.weixin.qq.com/ (WeChat Big Data Challenge 2021, preliminary data "
        "wechat_algo_data1; the official page is offline, see the README for mirrors)")

MANUAL_DOWNLOAD_INSTRUCTIONS = """\
The WeChat Big Data Challenge 2021 data (the preliminary round, `wechat_algo_data1`) were
distributed from https://algo.weixin.qq.com/ (also
https://cloud.tencent.com/developer/competition/introduction/10010). The official page is
offline; copies circulate from the competitors (see the data set README). Unzip so that
the manual directory holds (at any depth): wechat_algo_data1/user_action.csv,
wechat_algo_data1/feed_info.csv, wechat_algo_data1/feed_embeddings.csv.
"""

FILES = ("user_action.csv", "feed_info.csv", "feed_embeddings.csv")
ACTIONS = ("read_comment", "like", "click_avatar", "forward", "comment", "follow", "favorite")
EMBEDDING_WIDTH = 512


@dataclasses.dataclass(eq=False)
class WeChatConfig(_real.RealConfig):
    """Preprocessing of ``wechat_channels`` (see the module docstring).

    Attributes:
      embedding_dims: width of ``feed_embedding``: 512 keeps the released vector, fewer
        keeps that many principal components (fit on all feeds).
      max_text_len: words kept of ``description``/``ocr``/``asr``.
      max_keywords, max_tags: lengths of ``keywords`` and ``tags``.
      dedup: keep only the last row of a repeated (user, feed) pair.
      split: per-user chronological fractions (train, valid, test).
    """

    embedding_dims: int = EMBEDDING_WIDTH
    max_text_len: int = 32
    max_keywords: int = 10
    max_tags: int = 10
    dedup: bool = True
    split: tuple = (0.6, 0.2, 0.2)


class Builder(_real.RealDataBuilder):
    """WeChat Channels (WeChat Big Data Challenge 2021) for DAMCAR: finish label, 6:2:2 by time."""

    BUILDER_CONFIGS = [
        WeChatConfig(name="damcar", description="finish label, per-user 6:2:2 time split, "
                                                "the released 512-d feed embeddings"),
        WeChatConfig(name="damcar_pca64", embedding_dims=64,
                     description="as damcar, with 64 principal components of the feed "
                                 "embedding (as the DAMCAR authors' code)"),
    ]
    MANUAL_DOWNLOAD_INSTRUCTIONS = MANUAL_DOWNLOAD_INSTRUCTIONS
    HOMEPAGE = "https://algo.weixin.qq.com/"
    DOWNLOAD_PAGE = PAGE
    REQUIRED_FILES = tuple(f"wechat_algo_data1/{f}" for f in FILES)

    def schema(self, sizes: dict | None = None) -> Schema:
        cfg = self.builder_config
        s = sizes or {}
        cat = functools.partial(_real.categorical, sizes)
        return Schema([
            cat("user_id", "userid"),
            cat("item_id", "feedid"),
            cat("author_id", "authorid"),
            cat("bgm_song_id", "background music"),
            cat("bgm_singer_id", "background music singer"),
            cat("device", "device type"),
            Feature("feed_embedding", "vector", width=cfg.embedding_dims,
                    description="released multimodal feed embedding" +
                    ("" if cfg.embedding_dims == EMBEDDING_WIDTH else
                     f" ({cfg.embedding_dims} principal components)")),
            Feature("description", "sequence", vocab_size=s.get("word", 1), max_len=cfg.max_text_len,
                    vocab="word", description="description word ids"),
            Feature("ocr", "sequence", vocab_size=s.get("word", 1), max_len=cfg.max_text_len,
                    vocab="word", description="OCR word ids"),
            Feature("asr", "sequence", vocab_size=s.get("word", 1), max_len=cfg.max_text_len,
                    vocab="word", description="ASR word ids"),
            Feature("keywords", "sequence", vocab_size=s.get("keyword", 1), max_len=cfg.max_keywords,
                    vocab="keyword", description="manual then machine keywords"),
            Feature("tags", "sequence", vocab_size=s.get("tag", 1), max_len=cfg.max_tags,
                    vocab="tag", description="manual tags, then machine tags by probability"),
            Feature("duration", "dense", description="videoplayseconds (video length, seconds)"),
            cat("day", "date_ (day 1..14)"),
            Feature("finish", "label", description="play >= videoplayseconds * 1000"),
            Feature("play_seconds", "label", description="play / 1000 (watch time, seconds)"),
            *(Feature(a, "label", description=f"the competition's {a} action") for a in ACTIONS),
        ])

    def generate(self, manual_dir: Path):
        cfg = self.builder_config
        if cfg.embedding_dims < 1 or cfg.embedding_dims > EMBEDDING_WIDTH:
            raise DataError(f"embedding_dims must be in 1..{EMBEDDING_WIDTH}, got {cfg.embedding_dims}")
        paths = {Path(f).name: p for f, p in self.required_paths(manual_dir).items()}
        act = _read_actions(paths["user_action.csv"])
        feeds = _read_feeds(paths["feed_info.csv"], cfg)
        sizes: dict[str, int] = {}

        # feeds: one row per feed, looked up by the sorted raw feedid
        feed_ids, order = np.unique(feeds["feedid"], return_index=True)
        if len(feed_ids) != len(feeds["feedid"]):
            raise DataError("repeated feedid", path=paths["feed_info.csv"], column="feedid",
                            expected="one row per feed")
        pos = np.searchsorted(feed_ids, act["feedid"])
        pos = np.minimum(pos, len(feed_ids) - 1)
        known = feed_ids[pos] == act["feedid"]
        if not known.all():
            i = int(np.argmax(~known))
            raise DataError(f"feedid {act['feedid'][i]} is not in feed_info.csv",
                            path=paths["user_action.csv"], line=int(act["_line"][i]), column="feedid",
                            expected="a feed listed in feed_info.csv")
        frow = order[pos]  # row of feed_info for every action

        # de-duplicate (user, feed): keep the last row after a stable sort by date_
        n = len(act["userid"])
        keep = np.ones(n, bool)
        if cfg.dedup:
            o = np.lexsort((np.arange(n), act["date_"], act["feedid"], act["userid"]))
            same_next = np.r_[(act["userid"][o][1:] == act["userid"][o][:-1])
                              & (act["feedid"][o][1:] == act["feedid"][o][:-1]), False]
            keep[o[same_next]] = False
        rows = np.nonzero(keep)[0]
        part = _real.chronological_split(act["userid"][rows], [rows, act["date_"][rows]], cfg.split)

        # vocabularies
        _, sizes["user_id"], user_vocab = _real.encode_ids(np.unique(act["userid"]))
        feed_item, sizes["item_id"], _ = _real.encode_ids(feeds["feedid"])
        author, sizes["author_id"], _ = _real.encode_ids(feeds["authorid"])
        song, sizes["bgm_song_id"], _ = _real.encode_ids(feeds["bgm_song_id"])
        singer, sizes["bgm_singer_id"], _ = _real.encode_ids(feeds["bgm_singer_id"])
        _, sizes["device"], device_vocab = _real.encode_ids(np.unique(act["device"]))
        text = np.concatenate([feeds["description"], feeds["ocr"], feeds["asr"]], axis=1)
        text, sizes["word"], _ = _real.encode_ids(text, missing=-1)
        k = cfg.max_text_len
        desc, ocr, asr = text[:, :k], text[:, k:2 * k], text[:, 2 * k:]
        keywords, sizes["keyword"], _ = _real.encode_ids(feeds["keywords"], missing=-1)
        tags, sizes["tag"], _ = _real.encode_ids(feeds["tags"], missing=-1)
        sizes["day"] = int(act["date_"].max()) + 1
        emb = _read_embeddings(paths["feed_embeddings.csv"], feed_ids, order, cfg.embedding_dims)
        duration = feeds["videoplayseconds"].astype(np.float32)
        schema = self.schema(sizes)

        def encode(r):
            f = frow[r]
            play = act["play"][r]
            cols = {
                "user_id": _real.lookup_ids(act["userid"][r], user_vocab),
                "item_id": feed_item[f], "author_id": author[f], "bgm_song_id": song[f],
                "bgm_singer_id": singer[f],
                "device": _real.lookup_ids(act["device"][r], device_vocab),
                "feed_embedding": emb[f],
                "description": _real.right_align(desc[f]), "ocr": _real.right_align(ocr[f]), "asr": _real.right_align(asr[f]),
                "keywords": _real.right_align(keywords[f]), "tags": _real.right_align(tags[f]),
                "duration": duration[f],
                "day": act["date_"][r],
                "finish": (play >= feeds["videoplayseconds"][f] * 1000).astype(np.float32),
                "play_seconds": (play / 1000.0).astype(np.float32),
            }
            cols.update({a: act[a][r].astype(np.float32) for a in ACTIONS})
            return cols

        return schema, {name: _real.row_blocks(schema, encode, rows[part == i])
                        for i, name in enumerate(("train", "valid", "test"))}




def _read_actions(path: Path) -> dict:
    cols = [Col("userid"), Col("feedid"), Col("date_"), Col("device"), Col("play")] + [
        Col(a) for a in ACTIONS]
    out: dict[str, list] = {c.name: [] for c in cols}
    lines = []
    for line, block in _real.read_csv(path, cols):
        for c in cols:
            v = block[c.name]
            out[c.name].append(v.astype(np.int8) if c.name in ACTIONS else v)
        lines.append(line + np.arange(len(block["userid"]), dtype=np.int64))
    act = {k: np.concatenate(v) if v else np.zeros(0, np.int64) for k, v in out.items()}
    act["_line"] = np.concatenate(lines) if lines else np.zeros(0, np.int64)
    for c in ("play", "date_"):
        bad = act[c] < (0 if c == "play" else 1)
        if bad.any():
            i = int(np.argmax(bad))
            raise DataError(f"bad value {act[c][i]}", path=path, line=int(act["_line"][i]), column=c,
                            expected="milliseconds >= 0" if c == "play" else "a day number >= 1")
    for a in ACTIONS:
        bad = (act[a] != 0) & (act[a] != 1)
        if bad.any():
            i = int(np.argmax(bad))
            raise DataError(f"bad value {act[a][i]}", path=path, line=int(act["_line"][i]), column=a,
                            expected="0 or 1")
    return act


def _read_feeds(path: Path, cfg: WeChatConfig) -> dict:
    import pyarrow.compute as pc

    text_cols = ("description", "ocr", "asr", "manual_keyword_list", "machine_keyword_list",
                 "manual_tag_list", "machine_tag_list")
    cols = ([Col("feedid"), Col("authorid"), Col("videoplayseconds"),
             Col("bgm_song_id", "float", nullable=True), Col("bgm_singer_id", "float", nullable=True)]
            + [Col(c, "str", nullable=True) for c in text_cols])
    t = _real.read_csv_all(path, cols)
    bad = t["videoplayseconds"] <= 0
    if bad.any():
        i = int(np.argmax(bad))
        raise DataError(f"bad value {t['videoplayseconds'][i]}", path=path, line=i + 2,
                        column="videoplayseconds", expected="a video length in seconds > 0")

    def ints(name, sep, max_len, keep="first"):
        m = _real.parse_int_lists(t[name], sep, max_len, path=path, first_line=2, column=name,
                                  keep=keep, align="left")
        flat, parent = _real.split_lists(t[name], sep)
        counts = np.bincount(parent, minlength=len(t[name]))
        return np.where(np.arange(max_len)[None, :] < counts[:, None], m, -1)  # -1 = padding

    out = {k: t[k] for k in ("feedid", "authorid", "videoplayseconds", "bgm_song_id", "bgm_singer_id")}
    for c in ("description", "ocr", "asr"):
        out[c] = ints(c, " ", cfg.max_text_len)
    out["keywords"] = _first_unique(np.concatenate(
        [ints("manual_keyword_list", ";", cfg.max_keywords),
         ints("machine_keyword_list", ";", cfg.max_keywords)], axis=1), cfg.max_keywords)
    # machine tags: "tag prob;tag prob": tags by decreasing probability
    pairs, parent = _real.split_lists(t["machine_tag_list"], ";")
    parts = pc.split_pattern(pc.utf8_trim_whitespace(pairs), " ", max_splits=1)
    tag_txt = pc.list_element(parts, 0)
    lens = np.asarray(pc.list_value_length(parts))
    if (lens != 2).any():
        i = int(np.argmax(lens != 2))
        raise DataError(f"bad tag {pairs[i].as_py()!r}", path=path, line=2 + int(parent[i]),
                        column="machine_tag_list", expected="'tag prob' pairs separated by ';'")
    tag = _real.cast_values(tag_txt, "int", parent, path=path, first_line=2, column="machine_tag_list",
                            what="'tag prob' pairs of an integer tag and a probability")
    prob = _real.cast_values(pc.list_element(parts, 1), "float", parent, path=path, first_line=2,
                             column="machine_tag_list", what="'tag prob' pairs with a number as prob")
    o = np.lexsort((-prob, parent))
    machine = _real.pad_lists(tag[o], parent[o], len(t["feedid"]), cfg.max_tags, keep="first", align="left")
    counts = np.bincount(parent, minlength=len(t["feedid"]))
    machine = np.where(np.arange(cfg.max_tags)[None, :] < counts[:, None], machine, -1)
    out["tags"] = _first_unique(np.concatenate([ints("manual_tag_list", ";", cfg.max_tags), machine],
                                               axis=1), cfg.max_tags)
    return out


def _first_unique(m: np.ndarray, width: int) -> np.ndarray:
    """Per row, the first ``width`` distinct values >= 0, left-aligned, -1 padded."""
    n, w = m.shape
    srt = np.sort(np.where(m < 0, np.iinfo(np.int64).max, m), axis=1, kind="stable")
    # a value is a repeat if it equals an earlier value in its row
    order = np.argsort(np.where(m < 0, np.iinfo(np.int64).max, m), axis=1, kind="stable")
    dup_sorted = np.c_[np.zeros((n, 1), bool), srt[:, 1:] == srt[:, :-1]]
    dup = np.zeros_like(dup_sorted)
    np.put_along_axis(dup, order, dup_sorted, axis=1)
    valid = (m >= 0) & ~dup
    rank = np.cumsum(valid, axis=1) - 1
    out = np.full((n, width), -1, np.int64)
    ok = valid & (rank < width)
    r, c = np.nonzero(ok)
    out[r, rank[r, c]] = m[r, c]
    return out


def _read_embeddings(path: Path, feed_ids: np.ndarray, order: np.ndarray, dims: int) -> np.ndarray:
    """[n_feeds, dims] float32 in feed_info row order; zeros for feeds without one."""
    n = len(order)
    emb = np.zeros((n, EMBEDDING_WIDTH), np.float32)
    row_of_sorted = np.empty(n, np.int64)
    row_of_sorted[:] = order
    for line, block in _real.read_csv(path, [Col("feedid"), Col("feed_embedding", "str", nullable=True)],
                                      block_size=16 << 20):
        v, ok = _real.parse_float_vectors(block["feed_embedding"], " ", EMBEDDING_WIDTH, path=path,
                                          first_line=line, column="feed_embedding")
        pos = np.minimum(np.searchsorted(feed_ids, block["feedid"]), len(feed_ids) - 1)
        hit = (feed_ids[pos] == block["feedid"]) & ok
        emb[row_of_sorted[pos[hit]]] = v[hit]
    if dims == EMBEDDING_WIDTH:
        return emb
    # principal components over the feeds that have an embedding
    have = np.abs(emb).sum(axis=1) > 0
    x = emb[have].astype(np.float64)
    mean = x.mean(axis=0) if len(x) else np.zeros(EMBEDDING_WIDTH)
    cov = np.cov((x - mean).T) if len(x) > 1 else np.eye(EMBEDDING_WIDTH)
    w, vecs = np.linalg.eigh(cov)
    comps = vecs[:, np.argsort(w)[::-1][:dims]]
    out = np.zeros((n, dims), np.float32)
    out[have] = ((emb[have] - mean) @ comps).astype(np.float32)
    return out
