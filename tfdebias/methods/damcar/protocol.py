"""DAMCAR's ``cascade`` evaluation protocol (Sec. 5.1.2-5.1.4): retrieval over the whole
corpus, re-ranking by the ranker, per-user values against every held-out positive and
its exposed / unexposed groups; plus the score functions of the evidence table's
reference rows (popularity, item-kNN, the simulator's true relevance)."""

from __future__ import annotations

import dataclasses

import numpy as np

from tfdebias.errors import DataError, UsageError
from tfdebias.evaluation import metrics as M
from tfdebias.evaluation import protocols
from tfdebias.methods.damcar.data import CascadeData, predict_gathered
from tfdebias.methods.damcar.losses import ITEM, USER
from tfdebias.models import predict


# =============================================================================================
# The cascade protocol
# =============================================================================================


#: relevant-set groups of the protocol: "" = every held-out positive (the paper's
#: protocol), "exposed" = test positives (shown by the logging policy), "unexposed" =
#: oracle positives (pairs the policy never showed, labelled by the true model)
GROUPS = {"": ("test", "oracle"), "exposed": ("test",), "unexposed": ("oracle",)}


@dataclasses.dataclass
class EvalSet:
    """What the cascade protocol needs of the splits, computed once per data draw.

    ``users``: every user with a held-out positive (sorted ids; the test units of the
    evidence tables). ``relevant[group]``: per user (aligned with ``users``), the ids of
    the group's held-out positives. ``corpus``: every item id in the splits, with the
    item features ``table`` indexed by id. ``seen``: ``(user row, corpus column)``
    pairs masked before retrieval (the user's train/valid exposures).
    """

    users: np.ndarray
    relevant: dict
    corpus: np.ndarray
    table: dict
    seen: tuple
    item_names: list
    _tensors: dict = dataclasses.field(default_factory=dict, repr=False, compare=False)

    def corpus_features(self) -> dict:
        return {n: self.table[n][self.corpus] for n in self.item_names}

    def predict(self, model, columns: dict, **kwargs) -> np.ndarray:
        """:func:`tfdebias.models.predict` of ``model`` on ``columns`` (``item_id``, and
        ``user_id`` for a model that reads it), the item features gathered per batch from
        ``table``: the outputs on the rows given feature by feature, without the copy."""
        names = [n for n in self.item_names if n not in columns]
        return predict_gathered(model, columns, self.table, names, self._tensors,
                                self.item_names, **kwargs)


def eval_set(splits: dict, label: str, item_names, *, holdout=("test", "oracle"),
             seen=("train", "valid"), groups: dict | None = None) -> EvalSet:
    """The :class:`EvalSet` of ``splits``: groups are :data:`GROUPS` restricted to the
    holdout splits present (a group whose splits are all missing is left out; the
    ``""`` group is always ``holdout``)."""
    groups = dict(GROUPS if groups is None else groups)
    groups[""] = tuple(holdout)
    n_ids = int(max(np.max(np.asarray(c[ITEM])) for c in splits.values())) + 1
    table = {n: None for n in item_names}
    present = np.zeros(n_ids, bool)
    for c in splits.values():
        ids = np.asarray(c[ITEM], np.int64)
        present[ids] = True
        for n in item_names:
            if table[n] is None:
                table[n] = np.zeros((n_ids, *np.asarray(c[n]).shape[1:]), np.asarray(c[n]).dtype)
            table[n][ids] = c[n]
    corpus = np.nonzero(present)[0]

    def positives(names):
        us, its = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)]
        for sp in names:
            if sp in splits:
                c = splits[sp]
                pos = np.asarray(c[label]) > 0.5
                us.append(np.asarray(c[USER], np.int64)[pos])
                its.append(np.asarray(c[ITEM], np.int64)[pos])
        return np.concatenate(us), np.concatenate(its)

    ru, _ = positives(groups[""])
    users = np.unique(ru)
    if len(users) == 0:
        raise DataError("no held-out positives to evaluate against")
    relevant = {}
    for g, names in groups.items():
        if g and not any(sp in splits for sp in names):
            continue
        gu, gi = positives(names)
        keep = np.isin(gu, users)
        gu, gi = gu[keep], gi[keep]
        row = np.searchsorted(users, gu)
        order = np.argsort(row, kind="stable")
        relevant[g] = np.split(gi[order], np.cumsum(np.bincount(row, minlength=len(users)))[:-1])
    col_of = np.full(n_ids, -1, np.int64)
    col_of[corpus] = np.arange(len(corpus))
    sr, sc = [], []
    for sp in seen:
        if sp in splits:
            u = np.asarray(splits[sp][USER], np.int64)
            r = np.searchsorted(users, u)
            ok = (r < len(users)) & (users[np.minimum(r, len(users) - 1)] == u)
            sr.append(r[ok])
            sc.append(col_of[np.asarray(splits[sp][ITEM], np.int64)[ok]])
    seen_pairs = (np.concatenate(sr), np.concatenate(sc)) if sr else \
        (np.zeros(0, np.int64), np.zeros(0, np.int64))
    return EvalSet(users, relevant, corpus, table, seen_pairs, list(item_names))


#: the graded group: each user's true top-M unexposed items (see :func:`add_true_top`)
TRUE_TOP = "true_top"


def add_true_top(es: EvalSet, truth_block, splits: dict, *, m: int = 50,
                 exposed=("train", "valid", "test"), max_cells: int = 2_000_000) -> EvalSet:
    """Add the graded group :data:`TRUE_TOP` to ``es.relevant``: for every user, the ``m``
    corpus items of highest *true* relevance among those the user was never shown
    (no row in ``exposed``) and that retrieval does not mask (``es.seen``). Recall@K on
    it (``retrieval/R@100/true_top``) is the share of a user's best never-shown items a
    retriever finds: it covers every unexposed item (not a sample of labelled pairs) and
    grades by the true relevance. ``truth_block(user_ids) -> (n, len(es.corpus))`` true
    relevance (e.g. :func:`truth_scorer`'s). Users processed in blocks."""
    n_users, n_corpus = len(es.users), len(es.corpus)
    m = int(min(m, n_corpus))
    col_of = np.full(int(es.corpus.max()) + 1, -1, np.int64)
    col_of[es.corpus] = np.arange(n_corpus)
    rr, cc = [es.seen[0]], [es.seen[1]]
    for sp in exposed:
        if sp in splits:
            u = np.asarray(splits[sp][USER], np.int64)
            i = np.asarray(splits[sp][ITEM], np.int64)
            r = np.searchsorted(es.users, u)
            ok = (r < n_users) & (es.users[np.minimum(r, n_users - 1)] == u)
            ok &= i < len(col_of)
            rr.append(r[ok])
            cc.append(col_of[i[ok]])
    rr, cc = np.concatenate(rr), np.concatenate(cc)
    keep = cc >= 0
    rr, cc = rr[keep], cc[keep]
    order = np.argsort(rr, kind="stable")
    rr, cc = rr[order], cc[order]
    block = max(1, int(max_cells) // max(n_corpus, 1))
    out = []
    for a in range(0, n_users, block):
        b = min(n_users, a + block)
        sc = np.array(truth_block(es.users[a:b]), dtype=np.float64, copy=True)
        lo, hi = np.searchsorted(rr, [a, b])
        sc[rr[lo:hi] - a, cc[lo:hi]] = -np.inf
        top = np.argpartition(-sc, m - 1, axis=1)[:, :m]
        out.extend(list(es.corpus[top]))
    es.relevant[TRUE_TOP] = out
    return es


def _key(metric: str, group: str) -> str:
    return f"{metric}/{group}" if group else metric


def cascade_eval(score_block, ranker, es: EvalSet, *, ks=(100, 200), rank_ratio: int = 10,
                 max_cells: int = 2_000_000) -> dict:
    """Per-user values of the cascade metrics (Sec. 5.1.2-5.1.4) of one retriever.

    ``score_block(user_ids) -> (len(user_ids), len(es.corpus))`` scores the corpus for a
    block of users (a DSSM: the cosine of the towers; a baseline: its scores). Users are
    processed in blocks of at most ``max_cells`` user x item scores with a streamed
    top-K, so memory does not grow with users x corpus. Retrieval: the user's
    train/valid exposures masked, top K1 (R/P/F@K1). Ranking (when ``ranker`` is not
    None): the ranker scores the K1 candidates, the top K2 = K1 / ``rank_ratio`` are kept
    (N/M/H@K2; H = hits / K2, the authors' ``hr``, a precision).

    Returns ``{metric key: [len(es.users)] values}``, NaN where a user has no relevant
    item in the key's group. Keys: ``retrieval/R@100`` (every held-out positive),
    ``retrieval/R@100/exposed``, ``retrieval/R@100/unexposed`` (the groups of
    :data:`GROUPS`), ``retrieval/R@100/true_top`` (after :func:`add_true_top`),
    ``retrieval/P@100``, ``retrieval/F@100``, ``ranking/N@10``, ...
    """
    n_users, n_corpus = len(es.users), len(es.corpus)
    kmax = min(max(ks), n_corpus)
    block = max(1, int(max_cells) // max(n_corpus, 1))
    seen_order = np.argsort(es.seen[0], kind="stable")
    seen_r, seen_c = es.seen[0][seen_order], es.seen[1][seen_order]
    parts: dict = {}

    def put(key, values):
        parts.setdefault(key, []).append(np.asarray(values, np.float64))

    for a in range(0, n_users, block):
        b = min(n_users, a + block)
        scores = np.array(score_block(es.users[a:b]), dtype=np.float64, copy=True)
        if scores.shape != (b - a, n_corpus):
            raise DataError(f"a scorer returned {scores.shape}, expected {(b - a, n_corpus)}")
        lo, hi = np.searchsorted(seen_r, [a, b])
        scores[seen_r[lo:hi] - a, seen_c[lo:hi]] = -np.inf
        top = np.argpartition(-scores, kmax - 1, axis=1)[:, :kmax]
        top = np.take_along_axis(top, np.argsort(-np.take_along_axis(scores, top, 1), 1,
                                                 kind="stable"), 1)
        top_ids = es.corpus[top]
        rel = {g: lists[a:b] for g, lists in es.relevant.items()}
        rs_all = None
        if ranker is not None:  # item features gathered per predict batch, not per block
            pairs = {ITEM: top_ids.reshape(-1),
                     USER: np.repeat(es.users[a:b], kmax).astype(np.int64)}
            rs_all = es.predict(ranker, pairs).reshape(b - a, kmax)
        for k1 in ks:
            k1e = min(k1, kmax)
            ids = top_ids[:, :k1e]
            for g, lists in rel.items():
                put(_key(f"retrieval/R@{k1}", g), M.recall_at_k(lists, top_ids=ids, k=k1e,
                                                                per_query=True))
            put(f"retrieval/P@{k1}", M.precision_at_k(rel[""], top_ids=ids, k=k1e,
                                                     per_query=True))
            put(f"retrieval/F@{k1}", M.f1_at_k(rel[""], top_ids=ids, k=k1e, per_query=True))
            if rs_all is None:
                continue
            k2 = max(1, k1 // rank_ratio)
            order = np.argsort(-rs_all[:, :k1e], axis=1, kind="stable")
            reranked = np.take_along_axis(ids, order, 1)[:, :k2]
            put(f"ranking/N@{k2}", M.ndcg_at_k(rel[""], top_ids=reranked, k=k2, per_query=True))
            put(f"ranking/M@{k2}", M.map_at_k(rel[""], top_ids=reranked, k=k2,
                                             per_query=True))
            put(f"ranking/H@{k2}", M.precision_at_k(rel[""], top_ids=reranked, k=k2,
                                                   per_query=True))
    return {k: np.concatenate(v) for k, v in parts.items()}


def retriever_scorer(retriever, es: EvalSet):
    """``score_block`` of a two-tower retriever: user tower x item tower (the corpus's
    item vectors computed once)."""
    def vectors(tower, columns, n):
        # the towers' (n, d) float32 outputs, so the scores are their own float32 dot products
        return predict(tower, columns, full=True, dtype=np.float32)

    # the corpus's item features gathered per batch (no copy of the whole corpus)
    iv = es.predict(retriever.item_tower, {ITEM: es.corpus}, full=True, dtype=np.float32)

    def score(users):
        uv = vectors(retriever.user_tower, {USER: np.asarray(users, np.int64)}, len(users))
        return uv @ iv.T

    return score


def mean_metrics(per_user: dict) -> dict:
    """Means over users with a relevant item (the per-user NaNs left out)."""
    out = {}
    for k, v in per_user.items():
        ok = np.isfinite(v)
        out[k] = float(v[ok].mean()) if ok.any() else float("nan")
    return out


@protocols.register("cascade")
def cascade_protocol(model, splits: dict, schema=None, config=None) -> dict:
    """Two-stage evaluation (Sec. 5.1.2-5.1.4); the means of :func:`cascade_eval`.

    ``model``: the pair ``(retriever, ranker)``; the retriever has ``user_tower`` /
    ``item_tower`` (unit vectors). ``splits``: the splits as the models see them (scaled
    as in :func:`prepare_cascade`). ``config`` (dict, optional): ``retrieval_ks`` (100,
    200), ``rank_ratio`` (10), ``holdout`` (("test", "oracle")), ``seen`` (("train",
    "valid")).

    Users: every user with a held-out positive. Corpus: every item id in the splits.
    Relevant = the held-out positives (exposed test positives and oracle positives of
    never-shown pairs); the ``/exposed`` and ``/unexposed`` keys score the two groups
    apart. Metric names ``"retrieval/R@100"``, ``"ranking/N@10"``, ...
    """
    if not isinstance(model, (tuple, list)) or len(model) != 2:
        raise UsageError("the cascade protocol scores a (retriever, ranker) pair")
    retriever, ranker = model
    cfg = dict(config or {}) if isinstance(config, dict) or config is None else {}
    label = schema.label.name if schema is not None else "finish"
    es = eval_set(splits, label, list(retriever.dssm.item_names),
                  holdout=tuple(cfg.get("holdout", ("test", "oracle"))),
                  seen=tuple(cfg.get("seen", ("train", "valid"))))
    per_user = cascade_eval(retriever_scorer(retriever, es), ranker, es,
                            ks=tuple(cfg.get("retrieval_ks", (100, 200))),
                            rank_ratio=int(cfg.get("rank_ratio", 10)))
    return mean_metrics(per_user)


#: names of the reference rows scored by :func:`simple_scorers`
POPULARITY, ITEM_KNN = "Popularity", "Item-kNN"


def _histories(users_sorted: np.ndarray, u: np.ndarray, i: np.ndarray) -> np.ndarray:
    """``[len(users_sorted), L]`` 0-padded item histories of ``users_sorted`` from pairs
    ``(u, i)`` (pairs of other users are dropped)."""
    order = np.argsort(u, kind="stable")
    u, i = u[order], i[order]
    row = np.searchsorted(users_sorted, u)
    ok = (row < len(users_sorted)) & (users_sorted[np.minimum(row, len(users_sorted) - 1)] == u)
    row, i = row[ok], i[ok]
    counts = np.bincount(row, minlength=len(users_sorted))
    out = np.zeros((len(users_sorted), max(int(counts.max(initial=0)), 1)), np.int64)
    start = np.cumsum(counts) - counts
    out[row, np.arange(len(row)) - start[row]] = i
    return out


def simple_scorers(data: CascadeData, es: EvalSet) -> dict:
    """``score_block`` of the simple baselines, fitted on the exposed train positives (the
    rows BC learns from): popularity (finishes per item) and item-kNN
    (:class:`tfdebias.evaluation.baselines.ItemKNN` over the users' finished train items;
    ties broken by popularity)."""
    from tfdebias.evaluation import baselines

    tr = data.splits["train"]
    pos = np.asarray(tr[data.label]) > 0.5
    u = np.asarray(tr[USER], np.int64)[pos]
    i = np.asarray(tr[ITEM], np.int64)[pos]
    pop = baselines.popularity(i, data.n_items)
    knn = baselines.ItemKNN(u, i, data.n_items)
    hist = _histories(es.users, u, i)
    tie = 1e-9 * pop / max(pop.max(), 1.0)

    def popularity(users):
        return np.broadcast_to(pop[es.corpus], (len(users), len(es.corpus)))

    def item_knn(users):
        rows = np.searchsorted(es.users, np.asarray(users, np.int64))  # es.users is sorted
        return knn.score(hist[rows])[:, es.corpus] + tie[es.corpus]

    return {POPULARITY: popularity, ITEM_KNN: item_knn}


def truth_model(name: str, data: CascadeData, *, data_dir=None, data_seed=None):
    """The simulator's true model of the draw (``truth(params)``: ``relevance(u, i)``,
    ``relevance_block(users)``), or None for a data set without a known truth. Rebuilt
    from the draw's parameters and checked against the ``relevance`` column of the test
    split."""
    from tfdebias import data as tdata
    from tfdebias.datasets.synthetic import SIMULATORS

    module = SIMULATORS.get(name.split("/")[0].split(":")[0])
    if module is None or not hasattr(module, "truth"):
        return None
    params = tdata.get_builder(name, data_dir=data_dir, data_seed=data_seed).params
    truth = module.truth(params)
    te = data.splits["test"]
    if "relevance" in te and len(te[USER]):
        got = truth.relevance(te[USER], te[ITEM])
        if not np.allclose(got, np.asarray(te["relevance"], np.float64), atol=1e-5):
            raise DataError(f"{name}: the truth rebuilt from the parameters does not match the "
                            "data's relevance column (a stale build?)")
    return truth


def truth_scorer(name: str, data: CascadeData, es: EvalSet, *, data_dir=None, data_seed=None,
                 truth=None):
    """``score_block`` ranking by the true relevance (:func:`truth_model`), or None for a
    data set without a known truth."""
    if truth is None:
        truth = truth_model(name, data, data_dir=data_dir, data_seed=data_seed)
    if truth is None:
        return None

    def score(users):
        return truth.relevance_block(users)[:, es.corpus - 1]

    return score
