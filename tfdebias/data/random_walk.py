"""Target-domain generation for DAMCAR by random walk on the exposure graph (the DAMCAR paper,
Sec. 4.1, Eq. (1)-(3)): the ``target_domain_sampler``.

The directed weighted bipartite graph is built from exposure logs ``S_exp``; the edge
weight ``v_ui`` is the engagement of user ``u`` with item ``i`` (watch time,
``play_seconds``, as in the authors' code). Transition probabilities:

    P(u -> i) = v_ui / sum_{i' in I(u)} v_ui'                                   (1)
    P(i -> u) = v_ui / sum_{u' in U(i)} v_u'i                                   (2)

From every user ``u`` walkers go ``u -> i -> u' -> i' -> ...``. Let ``T(u, i)`` be the
number of visits of item ``i`` by the walks started at ``u``, ``I_u`` the visited
exposed items of ``u`` and ``I_u*`` the visited unexposed ones. The target domain is

    S_sam = {(u, i*) | i* in I_u*, T(u, i*) >= mean_{i in I_u} T(u, i)}         (3)

**How R, H and v_ui are read** (the paper leaves it open; the authors' code
``target_domain_generation.py`` decides it, see ``official_code_notes.md`` §2.1):

* ``R`` (radius) is the number of hops of one walk: a walk is ``R`` transitions long
  and "returns to u when the next hop would exceed R", i.e. the next walk restarts at
  ``u``. No node farther than ``R`` hops from ``u`` is ever reached.
* ``H`` is the number of such walks (restarts) per user.
* Visits are counted where a hop lands on an item: hops 1, 3, 5, ... (a walk starts at
  a user), so each walk gives ``ceil(R / 2)`` item visits, each user ``H ceil(R / 2)``.
* ``v_ui`` = ``play_seconds`` when the data has it, else the label plus a small floor
  (every exposure stays an edge).
* Eq. (3) uses ``>=`` as printed (the authors' code uses ``>``); users whose exposed
  items were never visited (no edge) get no target samples.

Vectorised: all ``n_users * H`` walkers move together, one numpy step per hop (the only
Python loop is over the ``R`` hops). A weighted neighbour is drawn for every walker at
once from CSR arrays with a *row-offset cumulative distribution*: ``cum[j] = row(j) +
P(row -> col_j)`` summed within the row, so ``searchsorted(cum, row + U(0, 1))`` lands
in the walker's own row. Visits are counted with one ``np.unique`` over
``user * n_items + item`` keys. Seeded with ``numpy.random.default_rng(seed)``: the same
seed gives the same target domain.

Example:

>>> import numpy as np
>>> g = ExposureGraph.from_pairs([0, 0, 1], [0, 1, 1], [1.0, 1.0, 2.0], 2, 3)
>>> counts = walk_counts(g, radius=3, walks=4, seed=0)
>>> sorted(set(counts.user.tolist()))
[0, 1]
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np

from tfdebias.errors import DataError, UsageError


@dataclasses.dataclass
class CSR:
    """A row-normalised sparse transition matrix: row ``r``'s neighbours are
    ``indices[indptr[r]:indptr[r+1]]`` with probabilities ``prob`` there, and
    ``cum`` the row-offset cumulative probabilities (see the module docstring)."""

    indptr: np.ndarray
    indices: np.ndarray
    prob: np.ndarray
    cum: np.ndarray

    @classmethod
    def build(cls, rows: np.ndarray, cols: np.ndarray, weights: np.ndarray, n_rows: int):
        order = np.lexsort((cols, rows))
        rows, cols, w = rows[order], cols[order], weights[order].astype(np.float64)
        indptr = np.zeros(n_rows + 1, np.int64)
        np.cumsum(np.bincount(rows, minlength=n_rows), out=indptr[1:])
        total = np.bincount(rows, weights=w, minlength=n_rows)
        prob = w / total[rows]  # Eq. (1) / (2)
        csum = np.cumsum(prob)
        # cumulative probability within the row: subtract the sum of earlier rows
        before = np.concatenate([[0.0], csum])[indptr[:-1]]  # mass of the earlier rows
        within = csum - np.repeat(before, np.diff(indptr))
        ends = indptr[1:][np.diff(indptr) > 0] - 1
        within[ends] = 1.0  # exactly 1 at the end of every row (no round-off gap)
        cum = rows.astype(np.float64) + within
        return cls(indptr, cols.astype(np.int64), prob, cum)

    def degree(self) -> np.ndarray:
        return np.diff(self.indptr)

    def sample(self, rows: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """One weighted neighbour for each entry of ``rows`` (all at once)."""
        u = rng.random(len(rows))
        pos = np.searchsorted(self.cum, rows + u, side="right")
        pos = np.clip(pos, self.indptr[rows], self.indptr[rows + 1] - 1)
        return self.indices[pos]


@dataclasses.dataclass
class ExposureGraph:
    """The directed weighted bipartite user-item graph of Sec. 4.1 (0-based ids)."""

    n_users: int
    n_items: int
    user_to_item: CSR  # Eq. (1)
    item_to_user: CSR  # Eq. (2)
    edge_keys: np.ndarray  # sorted unique user * n_items + item of the exposed pairs

    @classmethod
    def from_pairs(cls, users, items, weights, n_users: int, n_items: int) -> "ExposureGraph":
        """Build from exposure rows (duplicates of a pair add their weights)."""
        users = np.asarray(users, np.int64).reshape(-1)
        items = np.asarray(items, np.int64).reshape(-1)
        weights = np.asarray(weights, np.float64).reshape(-1)
        if not (len(users) == len(items) == len(weights)):
            raise DataError("users, items and weights must have the same length")
        if len(users) and (users.min() < 0 or users.max() >= n_users
                           or items.min() < 0 or items.max() >= n_items):
            raise DataError(f"ids out of range: users in [0, {n_users}), items in [0, {n_items})")
        if np.any(weights < 0) or not np.all(np.isfinite(weights)):
            raise DataError("edge weights v_ui must be finite and >= 0")
        keep = weights > 0
        users, items, weights = users[keep], items[keep], weights[keep]
        key = users * n_items + items
        uniq, inv = np.unique(key, return_inverse=True)
        w = np.bincount(inv, weights=weights, minlength=len(uniq))
        u, i = uniq // n_items, uniq % n_items
        return cls(n_users, n_items, CSR.build(u, i, w, n_users), CSR.build(i, u, w, n_items), uniq)

    @property
    def n_edges(self) -> int:
        return len(self.edge_keys)


@dataclasses.dataclass
class VisitCounts:
    """``T(u, i)``: one row per visited (user, item) pair."""

    user: np.ndarray
    item: np.ndarray
    count: np.ndarray


def _check_rh(radius, walks):
    for name, v in (("radius R", radius), ("walks H", walks)):
        if not isinstance(v, (int, np.integer)) or v < 1:
            raise UsageError(f"{name} must be a positive integer, got {v!r}")


def walk_items(graph: ExposureGraph, starts: np.ndarray, radius: int,
               rng: np.random.Generator) -> np.ndarray:
    """Run one walk of ``radius`` hops from each start user; returns the item landed on
    at hops 1, 3, 5, ... as an array (n_walkers, ceil(R/2)), row ``w`` for ``starts[w]``.

    All walkers move at once; the loop is over hops only. Before each hop the walkers
    are ordered by their current node, so the binary searches of
    :meth:`CSR.sample` run over nearly sorted queries (2-3x faster on a large graph).
    """
    _check_rh(radius, 1)
    cur = np.asarray(starts, np.int64)
    walker = np.arange(len(cur))
    out = np.empty((len(cur), (radius + 1) // 2), np.int64)
    for hop in range(radius):  # hop 0 leaves the user, hop 1 leaves the item, ...
        order = np.argsort(cur.astype(np.int32), kind="stable")
        cur, walker = cur[order], walker[order]
        if hop % 2 == 0:
            cur = graph.user_to_item.sample(cur, rng)  # Eq. (1)
            out[walker, hop // 2] = cur
        else:
            cur = graph.item_to_user.sample(cur, rng)  # Eq. (2)
    return out


def walk_counts(graph: ExposureGraph, radius: int, walks: int, seed: int = 0,
                users: np.ndarray | None = None, chunk_walkers: int = 1 << 20) -> VisitCounts:
    """Visit counts ``T(u, i)`` of ``walks`` (H) walks of ``radius`` (R) hops from every
    user with at least one edge (or from ``users``)."""
    _check_rh(radius, walks)
    rng = np.random.default_rng(seed)
    if users is None:
        users = np.nonzero(graph.user_to_item.degree() > 0)[0]
    else:
        users = np.asarray(users, np.int64)
        users = users[graph.user_to_item.degree()[users] > 0]
    starts = np.repeat(users, walks)
    keys = []
    per = max(1, chunk_walkers)
    for lo in range(0, len(starts), per):  # bounds memory on huge graphs
        s = starts[lo:lo + per]
        items = walk_items(graph, s, radius, rng)
        keys.append((s[:, None] * graph.n_items + items).reshape(-1))
    keys = np.concatenate(keys) if keys else np.zeros(0, np.int64)
    uniq, count = np.unique(keys, return_counts=True)
    return VisitCounts(uniq // graph.n_items, uniq % graph.n_items, count)


def _member_sorted(keys: np.ndarray, table: np.ndarray) -> np.ndarray:
    """``np.isin(keys, table)`` for sorted unique ``keys`` and ``table``: binary search
    of the table's entries in ``keys`` (cheaper than ``isin``'s sort of both)."""
    out = np.zeros(len(keys), bool)
    if len(keys) == 0 or len(table) == 0:
        return out
    pos = np.searchsorted(keys, table)
    ok = pos < len(keys)
    pos, tab = pos[ok], table[ok]
    out[pos[keys[pos] == tab]] = True
    return out


def select_target(graph: ExposureGraph, counts: VisitCounts,
                  exclude_keys: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Eq. (3): unexposed visited items whose count is >= the user's mean count over
    visited exposed items. ``exclude_keys`` (sorted ``u * n_items + i``) are further
    pairs that may not be chosen (e.g. exposures outside the graph)."""
    key = counts.user * graph.n_items + counts.item
    exposed = _member_sorted(key, graph.edge_keys)
    n = graph.n_users
    tot = np.bincount(counts.user[exposed], weights=counts.count[exposed], minlength=n)
    num = np.bincount(counts.user[exposed], minlength=n)
    mean = np.divide(tot, num, out=np.full(n, np.inf), where=num > 0)
    pick = ~exposed & (counts.count >= mean[counts.user])
    if exclude_keys is not None and len(exclude_keys):
        pick &= ~_member_sorted(key, np.unique(exclude_keys))
    return counts.user[pick], counts.item[pick]


def generate_target_domain(users, items, weights, n_users: int, n_items: int, *,
                           radius: int = 25, walks: int = 50, seed: int = 0,
                           exclude_keys: np.ndarray | None = None):
    """Eq. (1)-(3) end to end from exposure rows (0-based ids): returns the target
    domain ``S_sam`` as ``(users, items)`` arrays and a small stats dict."""
    t0 = time.perf_counter()
    graph = ExposureGraph.from_pairs(users, items, weights, n_users, n_items)
    counts = walk_counts(graph, radius, walks, seed)
    tu, ti = select_target(graph, counts, exclude_keys)
    stats = {"edges": graph.n_edges, "visited_pairs": int(len(counts.count)),
             "target_pairs": int(len(tu)), "radius": int(radius), "walks": int(walks),
             "seconds": round(time.perf_counter() - t0, 3)}
    return tu, ti, stats


def random_unexposed(n_users: int, n_items: int, per_user: np.ndarray, exposed_keys: np.ndarray,
                     seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The "w/o TDG" ablation (Sec. 5.3): ``per_user[u]`` uniformly random unexposed items
    per user (same sizes as the random-walk target domain). Drawn with replacement and
    de-duplicated, so a user may get slightly fewer."""
    rng = np.random.default_rng(seed)
    per_user = np.asarray(per_user, np.int64)
    u = np.repeat(np.arange(n_users), per_user)
    # draw 20% extra to make up for collisions with exposures and duplicates
    extra = rng.integers(0, n_items, (len(u), 2))
    cand = u[:, None] * n_items + extra
    ok = ~np.isin(cand, exposed_keys)
    first = np.where(ok[:, 0], cand[:, 0], np.where(ok[:, 1], cand[:, 1], -1))
    keys = np.unique(first[first >= 0])
    return keys // n_items, keys % n_items
