"""``amazon_reviews``: Amazon product reviews (2014 and 2018 releases) as DADIN and AMID use them.

Two kinds of configs, each the real-data counterpart of a simulator:

* ``movies_music`` (DADIN, Sec. 4.2) -> ``cross_domain_ctr``: source domain
  Movies_and_TV, target domain CDs_and_Vinyl ("music"), the users reviewing in both
  ("the overlapped part of users is captured as the total dataset"), a binary click from
  the rating, click histories of both domains, and DADIN's cold-start resampling
  (Algorithm 2, :func:`tfdebias.datasets.cold_start.resample_cold_start`).
* ``cloth_sport``, ``phone_elec`` (K_u = 25%) and ``cloth_sport_ku75``,
  ``phone_elec_ku75`` (K_u = 75%) (AMID, Sec. 5.1; official_code_notes.md
  §1.5) -> ``cross_domain_sequences``: per-user review sequences of two domains, the last
  three items of each (user, domain) held out as train/valid/test targets, and AMID's
  open-world selection: every overlapping user plus a ``k_u`` fraction of the
  non-overlapping users are observed in training.

Raw files (found anywhere below ``manual_dir``), per category ``<Cat>``:

* 2014 release (jmcauley.ucsd.edu/data/amazon/): ``reviews_<Cat>_5.json.gz`` (5-core,
  one JSON object per line) and ``meta_<Cat>.json.gz`` (one **Python literal** dict per
  line, parsed with ``ast.literal_eval``, never ``eval``).
* 2018 release (nijianmo.github.io/amazon/): ``<Cat>_5.json.gz`` and
  ``meta_<Cat>.json.gz`` (both JSON lines; ``vote`` is a string, keys may be missing).

``release="auto"`` takes the 2014 file when both are there. Fields are read by key name
(order and extra keys do not matter); ``meta`` is needed by the CTR configs only.

Choices the papers leave open (all config fields):

* ``click = overall >= click_threshold`` with **4.0** (the usual "4 or 5 stars is a
  positive" rule; DADIN converts ratings to clicks without giving the rule).
* CTR histories: the items the user clicked in each domain strictly before the row's
  review time, right-aligned, the last ``max_len`` = 5 (DADIN's Amazon config); a
  cold-start user's ``history_target`` is emptied, as in the simulator.
* Algorithm 2 with ``a_train`` 0.8, ``a_cross`` 0.3 (the paper gives no values; the
  simulator's defaults) and the **user's own** last day (``last_day="user"``: the logs
  span years, so a global last day would hold almost no rows).
* ``item_category``: the second level of the product's category path (2014
  ``categories[0][1]``, 2018 ``category[1]``; the first level when there is no second),
  ids of the source domain first; ``item_brand``: the brand (0 when missing).
* AMID preprocessing after the authors' NMCDR scripts (notes §1.5): drop items with
  fewer than ``min_item_ratings`` = 10 reviews in their domain, keep reviews with
  ``overall >= min_rating`` = 3, keep a (user, domain) sequence of at least
  ``min_seq_len`` = 5 items. Sequences are ordered by ``unixReviewTime`` (ties in file
  order); the authors' released files are in file order, not time order.
* K_u as in the authors' code: every overlapping user plus ``round(k_u * n)`` of the
  ``n`` non-overlapping users, drawn with ``seed``.
* Ids: users and items are remapped to ``1..V`` in sorted raw order (items of domain A /
  the source domain first); 0 is padding.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import json
from pathlib import Path

import numpy as np

from tfdebias.datasets import _real
from tfdebias.datasets._real import DataError, Feature, Schema
from tfdebias.datasets.cold_start import resample_cold_start

PAGE_2014 = "http://jmcauley.ucsd.edu/data/amazon/ (2014 release, 5-core reviews and metadata)"
PAGE_2018 = "https://nijianmo.github.io/amazon/index.html (2018 release, 5-core reviews and metadata)"
PAGE = f"{PAGE_2014} or {PAGE_2018}"

MANUAL_DOWNLOAD_INSTRUCTIONS = """\
Download the Amazon review data of the config's two categories, either the 2014 release
(http://jmcauley.ucsd.edu/data/amazon/, files reviews_<Cat>_5.json.gz and
meta_<Cat>.json.gz) or the 2018 release (https://nijianmo.github.io/amazon/index.html,
files <Cat>_5.json.gz and meta_<Cat>.json.gz), and put them, still gzipped, into the
manual directory (at any depth). Categories: movies_music = Movies_and_TV and
CDs_and_Vinyl; cloth_sport = Clothing_Shoes_and_Jewelry and Sports_and_Outdoors;
phone_elec = Cell_Phones_and_Accessories and Electronics. The sequence configs need no
meta files.
"""


@dataclasses.dataclass(eq=False)
class AmazonConfig(_real.RealConfig):
    """Preprocessing of one ``amazon_reviews`` config (see the module docstring).

    Attributes:
      task: ``"ctr"`` (DADIN, rows = reviews) or ``"sequences"`` (AMID, rows = targets).
      source, target: the two categories: source/target domain (ctr) or domain A/B.
      release: ``"auto"``, ``"2014"`` or ``"2018"``.
      max_len: history length.
      click_threshold: ``click = overall >= click_threshold`` (ctr).
      a_train, a_cross: DADIN's Algorithm 2 fractions (ctr).
      min_rating, min_item_ratings, min_seq_len: AMID's filters (sequences).
      k_u: fraction of non-overlapping users observed in training (sequences).
      seed: seeds the resampling / the K_u draw.
    """

    task: str = "ctr"
    source: str = "Movies_and_TV"
    target: str = "CDs_and_Vinyl"
    release: str = "auto"
    max_len: int = 5
    click_threshold: float = 4.0
    a_train: float = 0.8
    a_cross: float = 0.3
    min_rating: float = 3.0
    min_item_ratings: int = 10
    min_seq_len: int = 5
    k_u: float = 0.25
    seed: int = 0


def _seq(name, a, b, k_u, desc):
    return AmazonConfig(name=name, task="sequences", source=a, target=b, max_len=20, k_u=k_u,
                        description=desc)


class Builder(_real.RealDataBuilder):
    """Amazon reviews for DADIN (movies -> music, CTR) and AMID (Cloth-Sport, Phone-Elec, sequences)."""

    BUILDER_CONFIGS = [
        AmazonConfig(name="movies_music", description="DADIN: Movies_and_TV -> CDs_and_Vinyl CTR, "
                     "click = rating >= 4, overlapping users, cold-start resampling (Algorithm 2)"),
        _seq("cloth_sport", "Clothing_Shoes_and_Jewelry", "Sports_and_Outdoors", 0.25,
             "AMID: Clothing-Sports sequences, K_u = 25%"),
        _seq("phone_elec", "Cell_Phones_and_Accessories", "Electronics", 0.25,
             "AMID: Cell_Phones-Electronics sequences, K_u = 25%"),
        _seq("cloth_sport_ku75", "Clothing_Shoes_and_Jewelry", "Sports_and_Outdoors", 0.75,
             "AMID: Clothing-Sports sequences, K_u = 75%"),
        _seq("phone_elec_ku75", "Cell_Phones_and_Accessories", "Electronics", 0.75,
             "AMID: Cell_Phones-Electronics sequences, K_u = 75%"),
    ]
    MANUAL_DOWNLOAD_INSTRUCTIONS = MANUAL_DOWNLOAD_INSTRUCTIONS
    HOMEPAGE = "https://nijianmo.github.io/amazon/index.html"
    DOWNLOAD_PAGE = PAGE

    @property
    def REQUIRED_FILES(self):  # noqa: N802  (the base class reads it as an attribute)
        cfg = self.builder_config
        meta = cfg.task == "ctr"
        return tuple(f for c in (cfg.source, cfg.target)
                     for f in (f"reviews_{c}_5.json.gz (or {c}_5.json.gz)",) + ((f"meta_{c}.json.gz",) if meta else ()))

    def schema(self, sizes: dict | None = None) -> Schema:
        cfg = self.builder_config
        cat = functools.partial(_real.categorical, sizes)
        items = (sizes or {}).get("item_id", 1)
        if cfg.task == "sequences":
            return Schema([
                cat("user_id", "reviewerID"),
                Feature("history_a", "sequence", vocab_size=items, max_len=cfg.max_len, vocab="item_id",
                        description=f"{cfg.source} items before the target, right-aligned"),
                Feature("history_b", "sequence", vocab_size=items, max_len=cfg.max_len, vocab="item_id",
                        description=f"{cfg.target} items before the target, right-aligned"),
                Feature("domain", "domain", vocab_size=2, description=f"target's domain: 0 = {cfg.source}, 1 = {cfg.target}"),
                cat("item_id", "target asin; domain A first"),
                Feature("label", "label", description="1.0 (a positive next item)"),
                Feature("observed", "label", description="1 if the user is observed in training"),
                Feature("overlap", "truth", description="1 if the user has both domains"),
            ])
        return Schema([
            cat("user_id", "reviewerID"),
            cat("item_id", "asin; source items first"),
            cat("item_category", "second-level category; source categories first"),
            cat("item_brand", "brand"),
            Feature("domain", "domain", vocab_size=2, description=f"0 = {cfg.source} (source), 1 = {cfg.target} (target)"),
            Feature("history_source", "sequence", vocab_size=items, max_len=cfg.max_len, vocab="item_id",
                    description="source items clicked before the review, right-aligned"),
            Feature("history_target", "sequence", vocab_size=items, max_len=cfg.max_len, vocab="item_id",
                    description="target items clicked before the review (empty for cold-start users)"),
            cat("day", "review day, 1 = the first"),
            Feature("click", "label", description=f"overall >= {cfg.click_threshold}"),
            Feature("rating", "label", description="overall (1-5 stars)"),
            Feature("cold_start", "truth", description="1 if the user has no target row in train"),
        ])

    # -- reading ------------------------------------------------------------------------
    def _reviews_file(self, manual_dir: Path, cat: str) -> Path:
        rel = self.builder_config.release
        names = {"2014": [f"reviews_{cat}_5.json.gz", f"reviews_{cat}.json.gz"],
                 "2018": [f"{cat}_5.json.gz", f"{cat}.json.gz"]}
        order = names["2014"] + names["2018"] if rel == "auto" else names.get(rel)
        if order is None:
            raise DataError(f"release must be 'auto', '2014' or '2018', got {rel!r}")
        for name in order:
            p = _real.find_file(manual_dir, name, page=PAGE, required=False)
            if p is not None:
                return p
        raise DataError(f"raw file {order[0]!r} (or {order[2 if rel == 'auto' else 1]!r}) not found under the "
                        f"manual directory; download it from {PAGE}", path=Path(manual_dir) / order[0])

    def generate(self, manual_dir: Path):
        cfg = self.builder_config
        if cfg.task not in ("ctr", "sequences"):
            raise DataError(f"task must be 'ctr' or 'sequences', got {cfg.task!r}")
        revs = [_read_reviews(self._reviews_file(manual_dir, c)) for c in (cfg.source, cfg.target)]
        if cfg.task == "sequences":
            return self._sequences(revs)
        metas = [_real.find_file(manual_dir, f"meta_{c}.json.gz", page=PAGE) for c in (cfg.source, cfg.target)]
        return self._ctr(revs, metas)

    def _ctr(self, revs, metas):
        cfg = self.builder_config
        # overlapping users only
        both = np.intersect1d(np.unique(revs[0]["user"]), np.unique(revs[1]["user"]))
        parts = []
        for dom, r in enumerate(revs):
            keep = np.isin(r["user"], both)
            parts.append({k: v[keep] for k, v in r.items()} | {"domain": np.full(int(keep.sum()), dom)})
        cols = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
        sizes = {}
        uid, sizes["user_id"], _ = _real.encode_ids(cols["user"])
        # items: source asins first, then target asins
        src_items = np.unique(parts[0]["asin"])
        tgt_items = np.unique(parts[1]["asin"])
        iid = np.where(cols["domain"] == 0, _real.lookup_ids(cols["asin"], src_items),
                       len(src_items) + _real.lookup_ids(cols["asin"], tgt_items))
        sizes["item_id"] = 1 + len(src_items) + len(tgt_items)
        cat_s, brand_s = _read_meta(metas[0], src_items)
        cat_t, brand_t = _read_meta(metas[1], tgt_items)
        cats_s, cat_s_ids = np.unique(cat_s, return_inverse=True)
        cats_t, cat_t_ids = np.unique(cat_t, return_inverse=True)
        cat_s_ids = np.where(cat_s == "", 0, cat_s_ids + 1)
        cat_t_ids = np.where(cat_t == "", 0, cat_t_ids + 1 + len(cats_s))
        item_cat = np.concatenate([[0], cat_s_ids, cat_t_ids])
        sizes["item_category"] = 1 + len(cats_s) + len(cats_t)
        brand_ids, sizes["item_brand"], _ = _real.encode_ids(np.concatenate([brand_s, brand_t]), missing="")
        item_brand = np.concatenate([[0], brand_ids])
        day_abs = cols["time"] // 86400
        day = (day_abs - day_abs.min() + 1) if len(day_abs) else day_abs
        sizes["day"] = int(day.max()) + 1 if len(day) else 1
        click = cols["overall"] >= cfg.click_threshold
        hist = {}
        for dom, name in ((0, "history_source"), (1, "history_target")):
            ev = click & (cols["domain"] == dom)
            hist[name] = _real.history_before(uid, cols["time"], uid[ev], cols["time"][ev], iid[ev], cfg.max_len)
        splits = resample_cold_start(
            {"row": np.arange(len(uid)), "user_id": uid, "domain": cols["domain"], "day": day},
            a_train=cfg.a_train, a_cross=cfg.a_cross, seed=cfg.seed, last_day="user")
        schema = self.schema(sizes)

        def encode(rows, cold):
            ht = hist["history_target"][rows].copy()
            ht[cold == 1] = 0  # a cold-start user is new to the target domain
            return {"user_id": uid[rows], "item_id": iid[rows], "item_category": item_cat[iid[rows]],
                    "item_brand": item_brand[iid[rows]], "domain": cols["domain"][rows],
                    "history_source": hist["history_source"][rows], "history_target": ht,
                    "day": day[rows], "click": click[rows].astype(np.float32),
                    "rating": cols["overall"][rows].astype(np.float32),
                    "cold_start": cold.astype(np.float32)}

        return schema, {k: _real.row_blocks(schema, encode, v["row"], v["cold_start"]) for k, v in splits.items()}

    def _sequences(self, revs):
        cfg = self.builder_config
        seqs = []
        for r in revs:
            asins, inv, counts = np.unique(r["asin"], return_inverse=True, return_counts=True)
            keep = (counts[inv] >= cfg.min_item_ratings) & (r["overall"] >= cfg.min_rating)
            seqs.append({k: v[keep] for k, v in r.items()})
        # sequences long enough, per (user, domain)
        for s in seqs:
            users, inv, counts = np.unique(s["user"], return_inverse=True, return_counts=True)
            keep = counts[inv] >= max(cfg.min_seq_len, 4)
            for k in list(s):
                s[k] = s[k][keep]
        sizes = {}
        all_users = np.union1d(np.unique(seqs[0]["user"]), np.unique(seqs[1]["user"]))
        sizes["user_id"] = len(all_users) + 1
        items = [np.unique(s["asin"]) for s in seqs]
        sizes["item_id"] = 1 + len(items[0]) + len(items[1])
        has = [np.isin(all_users, np.unique(s["user"])) for s in seqs]
        overlap = has[0] & has[1]
        rng = np.random.default_rng(cfg.seed)
        non = np.nonzero(~overlap)[0]
        chosen = non[rng.permutation(len(non))[: int(round(cfg.k_u * len(non)))]]
        observed = overlap.copy()
        observed[chosen] = True
        # per domain: user index, position in time order, length, item id
        dom_data = []
        for dom, s in enumerate(seqs):
            u = np.searchsorted(all_users, s["user"])
            it = _real.lookup_ids(s["asin"], items[dom]) + (len(items[0]) if dom else 0)
            o = np.lexsort((np.arange(len(u)), s["time"], u))
            u, it = u[o], it[o]
            pos = _real.rank_within_groups(u)
            length = np.bincount(u, minlength=len(all_users))
            dom_data.append((u, pos, length[u], it))
        n_users = len(all_users)
        schema = self.schema(sizes)
        levels = []
        for k in range(3):
            hist, targets = [], []
            for dom, (u, pos, tl, it) in enumerate(dom_data):
                before = pos < tl - 3 + k
                hist.append(_pad_by_user(u[before], it[before], n_users, cfg.max_len))
                t = pos == tl - 3 + k
                targets.append((u[t], it[t], np.full(int(t.sum()), dom)))
            ru, ri, rd = (np.concatenate(a) for a in zip(*targets))
            o = np.lexsort((rd, ru))  # rows by user, then domain
            ru, ri, rd = ru[o], ri[o], rd[o]
            levels.append({"user_id": ru + 1, "history_a": hist[0][ru], "history_b": hist[1][ru],
                           "domain": rd.astype(np.int64), "item_id": ri.astype(np.int64),
                           "label": np.ones(len(ru), np.float32),
                           "observed": observed[ru].astype(np.float32),
                           "overlap": overlap[ru].astype(np.float32)})
        obs = levels[0]["observed"] == 1
        out = {"train": {k: v[obs] for k, v in levels[0].items()},
               "unobserved": {k: v[~obs] for k, v in levels[0].items()},
               "valid": levels[1], "test": levels[2]}
        return schema, {k: iter([v]) for k, v in out.items()}


def _pad_by_user(users: np.ndarray, items: np.ndarray, n_users: int, max_len: int) -> np.ndarray:
    """Each user's items (``users`` sorted, items in order), the last ``max_len`` right-aligned."""
    return _real.pad_lists(items, users, n_users, max_len, keep="last", align="right")


_ID = r"""['"](?P<v>[^'"]*)['"]"""  # a quoted id; JSON or Python-literal quotes


def _read_reviews(path: Path) -> dict:
    """reviewerID, asin, overall, unixReviewTime of a reviews JSON-lines file (.gz)."""
    import pyarrow.compute as pc

    users, asins, overall, times = [], [], [], []
    for line, lines in _real.read_text_lines(path):
        get = dict(path=path, first_line=line)
        u = _real.extract_field(lines, r"""['"]reviewerID['"]\s*:\s*""" + _ID, column="reviewerID",
                                expected='"reviewerID": "<id>"', **get)
        a = _real.extract_field(lines, r"""['"]asin['"]\s*:\s*""" + _ID, column="asin",
                                expected='"asin": "<id>"', **get)
        o = _real.extract_field(lines, r"""['"]overall['"]\s*:\s*(?P<v>[^,}\s]+)""", column="overall",
                                expected='"overall": <rating>', **get)
        t = _real.extract_field(lines, r"""['"]unixReviewTime['"]\s*:\s*(?P<v>[^,}\s]+)""",
                                column="unixReviewTime", expected='"unixReviewTime": <seconds>', **get)
        ok = np.asarray(pc.is_valid(u))  # blank lines give nulls
        idx = np.arange(len(lines))[ok]
        users.append(np.asarray(u.filter(ok).to_numpy(zero_copy_only=False), dtype=object))
        asins.append(np.asarray(a.filter(ok).to_numpy(zero_copy_only=False), dtype=object))
        overall.append(_real.cast_values(o.filter(ok), "float", idx, path=path, first_line=line,
                                         column="overall", what="a rating number").astype(np.float64))
        times.append(_real.cast_values(t.filter(ok), "int", idx, path=path, first_line=line,
                                       column="unixReviewTime", what="an integer Unix time"))
    cat = (lambda x, dt: np.concatenate(x).astype(dt) if x else np.zeros(0, dt))
    out = {"user": cat(users, str), "asin": cat(asins, str), "overall": cat(overall, np.float64),
           "time": cat(times, np.int64)}
    bad = ~np.isfinite(out["overall"]) | (out["overall"] < 0)
    if bad.any():
        raise DataError(f"bad rating {out['overall'][int(np.argmax(bad))]}", path=path, column="overall",
                        expected="a rating from 1 to 5")
    return out


def _read_meta(path: Path, wanted: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Category (second level) and brand of the ``wanted`` asins ("" when unknown).

    Lines are JSON (2018) or Python literals (2014, parsed with ``ast.literal_eval``,
    never ``eval``); only the lines of wanted items are parsed, one by one (no
    vectorised parser exists for Python literals).
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    cats = np.full(len(wanted), "", dtype=object)
    brands = np.full(len(wanted), "", dtype=object)
    want = pa.array(wanted.astype(str))
    for line, lines in _real.read_text_lines(path):
        asin = _real.extract_field(lines, r"""['"]asin['"]\s*:\s*['"](?P<v>[^'"]+)['"]""", path=path,
                                   first_line=line, column="asin", expected="'asin': '<id>'")
        hit = np.asarray(pc.fill_null(pc.is_in(asin, value_set=want), False))
        for i in np.nonzero(hit)[0]:  # only the wanted items' lines
            text = lines[int(i)].as_py()
            try:
                rec = json.loads(text)
            except ValueError:
                try:
                    rec = ast.literal_eval(text)
                except (ValueError, SyntaxError, MemoryError, RecursionError) as e:
                    raise DataError(f"not a JSON object or Python dict literal ({type(e).__name__})",
                                    path=path, line=line + int(i),
                                    expected="one product record per line") from None
            if not isinstance(rec, dict):
                raise DataError("not a product record", path=path, line=line + int(i),
                                expected="one dict per line")
            j = int(np.searchsorted(wanted, rec.get("asin", "")))
            path_ = rec.get("categories") or [rec.get("category") or []]
            first = path_[0] if path_ and isinstance(path_[0], list) else path_
            if isinstance(first, list) and first:
                cats[j] = str(first[1] if len(first) > 1 else first[0])
            brands[j] = str(rec.get("brand") or "")
    return cats.astype(str), brands.astype(str)
