"""``tiktok_icme19``: ByteDance/TikTok ICME 2019 Short Video Understanding Challenge, track 2.

Paper 001 (DAMCAR), Sec. 5.1.1: short-video interactions with visual, acoustic and
textual item content, label ``finish``, a per-user 6:2:2 time split
(official_code_notes.md §2.4). The real-data counterpart of the ``cascade_exposure``
simulator: the same ids (``user_id``, ``item_id``, ``author_id``), content vectors
``item_visual`` and ``item_acoustic``, ``duration`` (seconds) and the ``finish`` label.

Raw files (found anywhere below ``manual_dir``; the challenge's ``.tgz`` archives each
hold one ``.txt`` of the same name and must be extracted):

* ``final_track2_train.txt``: TAB-separated, **no header**, 12 integer columns in this
  order: uid, user_city, item_id, author_id, item_city, channel, finish, like,
  music_id, did, creat_time, video_duration.
* ``track2_video_features.txt``: JSON lines ``{"item_id": i, "video_feature_dim_128": [128 floats]}``.
* ``track2_audio_features.txt``: JSON lines ``{"audio_feature_128_dim": [...], "item_id": i}``.
* ``track2_title.txt``: JSON lines ``{"item_id": i, "title_features": {"word": count, ...}}``.

``track2_face_attrs.txt`` and the test file (labels -1) are not used.

Preprocessing (every choice is a config field):

* **Labels**: ``finish`` (first) and ``like``, as released (0/1).
* **De-duplication**: a repeated (user, item) pair keeps its last row (``dedup``; the
  DAMCAR authors' code).
* **Split** per user in file order, 6:2:2 (``split``): the file has no interaction time
  (``creat_time`` is the video's publish time), and its rows are in time order, as the
  challenge data are commonly read; a user's first ``round(0.6 n)`` rows train, up to
  ``round(0.8 n)`` valid, the rest test.
* **Content**: ``item_visual``/``item_acoustic`` are the 128-d video/audio features
  joined by ``item_id``; an item without one, or whose list does not hold exactly 128
  numbers (the release has some empty and short lists), gets zeros. ``item_title`` is
  the title's word ids (the keys of ``title_features``, in file order, first
  ``max_title_len``). No ``day`` field: the release has no interaction time.
* **Ids**: every id is remapped to ``1..V`` in sorted raw order; -1 (the release's
  "unknown" city / no music) and empty map to 0. ``duration`` is ``video_duration``.
* No ``play_seconds`` (the release has no watch time) and no ``propensity``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from tfdebias.datasets import _real
from tfdebias.datasets._real import Col, DataError, Feature, Schema

PAGE = ("https://biendata.com/competition/icmechallenge2019/ (ICME 2019 Short Video "
        "Understanding Challenge, track 2; baseline github.com/challenge-ICME2019-Bytedance)")

MANUAL_DOWNLOAD_INSTRUCTIONS = """\
Download track 2 of the ByteDance ICME 2019 Short Video Understanding Challenge from
https://biendata.com/competition/icmechallenge2019/data/ (files final_track2_train.txt.tgz,
track2_video_features.txt.tgz, track2_title.txt.tgz and track2_audio_features.txt), extract
each archive and put into the manual directory (at any depth): final_track2_train.txt,
track2_video_features.txt, track2_audio_features.txt, track2_title.txt.
"""

COLUMNS = ("uid", "user_city", "item_id", "author_id", "item_city", "channel", "finish", "like",
           "music_id", "did", "creat_time", "video_duration")
FILES = ("final_track2_train.txt", "track2_video_features.txt", "track2_audio_features.txt",
         "track2_title.txt")
WIDTH = 128
#: raw column -> feature name (categorical ids)
CATEGORICAL = {"uid": "user_id", "item_id": "item_id", "author_id": "author_id",
               "user_city": "user_city", "item_city": "item_city", "channel": "channel",
               "music_id": "music_id", "did": "device"}


@dataclasses.dataclass(eq=False)
class TikTokConfig(_real.RealConfig):
    """Preprocessing of ``tiktok_icme19`` (see the module docstring).

    Attributes:
      max_title_len: words kept of a title.
      dedup: keep only the last row of a repeated (user, item) pair.
      split: per-user chronological fractions (train, valid, test).
    """

    max_title_len: int = 20
    dedup: bool = True
    split: tuple = (0.6, 0.2, 0.2)


class Builder(_real.RealDataBuilder):
    """TikTok (ICME 2019 track 2) for DAMCAR: finish label, visual/acoustic/title content, 6:2:2."""

    BUILDER_CONFIGS = [TikTokConfig(
        name="damcar", description="finish label, per-user 6:2:2 split in file order, "
                                   "128-d video and audio features, title words")]
    MANUAL_DOWNLOAD_INSTRUCTIONS = MANUAL_DOWNLOAD_INSTRUCTIONS
    HOMEPAGE = "https://biendata.com/competition/icmechallenge2019/"
    DOWNLOAD_PAGE = PAGE
    REQUIRED_FILES = FILES

    def schema(self, sizes: dict | None = None) -> Schema:
        cfg = self.builder_config
        feats = [_real.categorical(sizes, name, f"{raw} (remapped)") for raw, name in CATEGORICAL.items()]
        feats += [
            Feature("item_visual", "vector", width=WIDTH, description="video_feature_dim_128"),
            Feature("item_acoustic", "vector", width=WIDTH, description="audio_feature_128_dim"),
            Feature("item_title", "sequence", vocab_size=(sizes or {}).get("word", 1), max_len=cfg.max_title_len,
                    vocab="word", description="title word ids"),
            Feature("duration", "dense", description="video_duration (seconds)"),
            Feature("finish", "label", description="watched to the end"),
            Feature("like", "label", description="liked"),
        ]
        return Schema(feats)

    def generate(self, manual_dir: Path):
        cfg = self.builder_config
        paths = self.required_paths(manual_dir)
        main = paths["final_track2_train.txt"]
        cols = [Col(c) for c in COLUMNS if c != "creat_time"]
        act = {c.name: [] for c in cols}
        for _, block in _real.read_csv(main, cols, delimiter="\t", header=False, names=COLUMNS):
            for c in cols:
                v = block[c.name]
                act[c.name].append(v.astype(np.int32) if c.name not in ("item_id", "author_id") else v)
        act = {k: np.concatenate(v) if v else np.zeros(0, np.int64) for k, v in act.items()}
        for label in ("finish", "like"):
            bad = (act[label] != 0) & (act[label] != 1)
            if bad.any():
                i = int(np.argmax(bad))
                raise DataError(f"bad value {act[label][i]}", path=main, line=i + 1, column=label,
                                expected="0 or 1 (the test file's -1 labels are not training data)")
        n = len(act["uid"])
        keep = np.ones(n, bool)
        if cfg.dedup:
            o = np.lexsort((np.arange(n), act["item_id"], act["uid"]))
            same_next = np.r_[(act["uid"][o][1:] == act["uid"][o][:-1])
                              & (act["item_id"][o][1:] == act["item_id"][o][:-1]), False]
            keep[o[same_next]] = False
        rows = np.nonzero(keep)[0]
        part = _real.chronological_split(act["uid"][rows], [rows], cfg.split)

        sizes, vocabs = {}, {}
        for raw, name in CATEGORICAL.items():
            _, sizes[name], vocabs[raw] = _real.encode_ids(np.unique(act[raw]), missing=-1)
        items = vocabs["item_id"]
        n_items = len(items) + 1
        visual = _read_vectors(paths["track2_video_features.txt"], "video_feature_dim_128", items,
                               self.scratch("visual", (n_items, WIDTH)))
        acoustic = _read_vectors(paths["track2_audio_features.txt"], "audio_feature_128_dim", items,
                                 self.scratch("acoustic", (n_items, WIDTH)))
        title_raw = _read_titles(paths["track2_title.txt"], items, cfg.max_title_len)
        title, sizes["word"], _ = _real.encode_ids(title_raw, missing=-1)
        title = _real.right_align(title)
        schema = self.schema(sizes)

        def encode(r):
            iid = _real.lookup_ids(act["item_id"][r], items, missing=-1)
            cols = {name: _real.lookup_ids(act[raw][r], vocabs[raw], missing=-1)
                    for raw, name in CATEGORICAL.items()}
            cols.update({
                "item_visual": np.asarray(visual[iid]), "item_acoustic": np.asarray(acoustic[iid]),
                "item_title": title[iid],
                "duration": act["video_duration"][r].astype(np.float32),
                "finish": act["finish"][r].astype(np.float32),
                "like": act["like"][r].astype(np.float32),
            })
            return cols

        return schema, {name: _real.row_blocks(schema, encode, rows[part == i])
                        for i, name in enumerate(("train", "valid", "test"))}


_INT = r"-?\d+"


def _read_vectors(path: Path, key: str, items: np.ndarray, out: np.ndarray) -> np.ndarray:
    """Item vectors of a JSON-lines file into ``out`` (row = item id); other rows zero."""
    for line, lines in _real.read_text_lines(path):
        ids = _real.extract_field(lines, rf'"item_id"\s*:\s*(?P<v>{_INT})', path=path, first_line=line,
                                  column="item_id", expected='{"item_id": <int>, ...}')
        vec = _real.extract_field(lines, rf'"{key}"\s*:\s*\[(?P<v>[^\]]*)\]', path=path, first_line=line,
                                  column=key, expected=f'"{key}": [a list of numbers]')
        ids = _cast_ids(ids, path, line)
        v, ok = _real.parse_float_vectors(vec, ",", WIDTH, path=path, first_line=line, column=key,
                                          allow_empty=True, allow_other=True)
        row = _real.lookup_ids(ids, items, missing=-1)
        hit = (row > 0) & ok
        out[row[hit]] = v[hit]
    return out


def _cast_ids(arr, path, line) -> np.ndarray:
    import pyarrow.compute as pc

    blank = np.asarray(pc.is_null(arr))
    vals = _real.cast_values(pc.fill_null(arr, "-1"), "int", np.arange(len(arr)), path=path,
                             first_line=line, column="item_id", what="an integer item_id")
    vals[blank] = -1
    return vals


def _read_titles(path: Path, items: np.ndarray, max_len: int) -> np.ndarray:
    """[n_items + 1, max_len] raw word ids (-1 = padding), left-aligned, file order."""
    import pyarrow.compute as pc

    out = np.full((len(items) + 1, max_len), -1, np.int64)
    for line, lines in _real.read_text_lines(path):
        ids = _cast_ids(_real.extract_field(
            lines, rf'"item_id"\s*:\s*(?P<v>{_INT})', path=path, first_line=line, column="item_id",
            expected='{"item_id": <int>, ...}'), path, line)
        body = _real.extract_field(lines, r'"title_features"\s*:\s*\{(?P<v>[^}]*)\}', path=path,
                                   first_line=line, column="title_features",
                                   expected='"title_features": {"<word id>": <count>, ...}')
        pairs, parent = _real.split_lists(body, ",")
        words = pc.struct_field(pc.extract_regex(pairs, r'^"(?P<w>-?\d+)"\s*:'), [0])
        bad = np.asarray(pc.is_null(words))
        if bad.any():
            i = int(np.argmax(bad))
            raise DataError(f"bad title entry {pairs[i].as_py()[:40]!r}", path=path,
                            line=line + int(parent[i]), column="title_features",
                            expected='"<word id>": <count> pairs')
        w = np.asarray(pc.cast(words, "int64"))
        m = _real.pad_lists(w, parent, len(lines), max_len, keep="first", align="left")
        counts = np.bincount(parent, minlength=len(lines))
        m = np.where(np.arange(max_len)[None, :] < counts[:, None], m, -1)
        row = _real.lookup_ids(ids, items, missing=-1)
        hit = row > 0
        out[row[hit]] = m[hit]
    return out
