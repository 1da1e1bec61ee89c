"""DAMCAR's target-domain generation (paper 001, Eq. (1)-(3)) against a brute-force
single-walk reference."""

import random
from collections import Counter, deque

import numpy as np
import pytest

from tfdebias.data import random_walk as rw
from tfdebias.errors import UsageError


def small_graph(seed=0, n_users=6, n_items=8, n_edges=20):
    rng = np.random.default_rng(seed)
    keys = rng.choice(n_users * n_items, n_edges, replace=False)
    u, i = keys // n_items, keys % n_items
    w = rng.uniform(0.5, 5.0, n_edges)
    return u, i, w, n_users, n_items


def reference_walks(u, i, w, user, radius, walks, seed):
    """Brute force, one walker at a time: H walks of R hops from ``user``, counting the
    items landed on (hops 1, 3, ...). Plain Python, Eq. (1)-(2) by dict look-ups."""
    out_u, out_i = {}, {}
    for a, b, c in zip(u.tolist(), i.tolist(), w.tolist()):
        out_u.setdefault(a, []).append((b, c))
        out_i.setdefault(b, []).append((a, c))
    r = random.Random(seed)
    counts = Counter()
    for _ in range(walks):
        node, at_user = user, True
        for _hop in range(radius):
            nbrs = out_u[node] if at_user else out_i[node]
            node = r.choices([n for n, _ in nbrs], weights=[c for _, c in nbrs])[0]
            at_user = not at_user
            if not at_user:
                counts[node] += 1
    return counts


def test_transition_probabilities_are_eq_1_and_2():
    u, i, w, nu, ni = small_graph()
    g = rw.ExposureGraph.from_pairs(u, i, w, nu, ni)
    for csr, rows, cols in ((g.user_to_item, u, i), (g.item_to_user, i, u)):
        dense = np.zeros((max(rows) + 1, max(cols) + 1))
        dense[rows, cols] = w
        expect = dense / dense.sum(1, keepdims=True).clip(1e-12)
        got = np.zeros_like(dense)
        r = np.repeat(np.arange(len(csr.indptr) - 1), csr.degree())
        got[r, csr.indices] = csr.prob
        np.testing.assert_allclose(got, expect, atol=1e-12)


def test_counts_match_brute_force_reference():
    u, i, w, nu, ni = small_graph(seed=1)
    g = rw.ExposureGraph.from_pairs(u, i, w, nu, ni)
    radius, walks = 5, 6000
    vec = rw.walk_counts(g, radius, walks, seed=3)
    for user in np.unique(u)[:3]:
        ref = reference_walks(u, i, w, int(user), radius, walks, seed=int(user))
        total = walks * ((radius + 1) // 2)
        mine = {int(it): c for uu, it, c in zip(vec.user, vec.item, vec.count) if uu == user}
        assert sum(mine.values()) == total == sum(ref.values())
        for item in set(mine) | set(ref):
            # both are frequencies of the same Markov chain: within ~4 standard errors
            p, q = mine.get(item, 0) / total, ref.get(item, 0) / total
            assert abs(p - q) < 4 * np.sqrt(max(p, q, 1e-3) / walks) + 1e-3, (user, item, p, q)


def test_radius_is_never_exceeded():
    # a chain u0 - i0 - u1 - i1 - u2 - i2 - u3 - i3: from u0, item i_k is 2k+1 hops away
    n = 4
    u = np.array([0, 1, 1, 2, 2, 3, 3])
    i = np.array([0, 0, 1, 1, 2, 2, 3])
    g = rw.ExposureGraph.from_pairs(u, i, np.ones(len(u)), n, n)
    for radius in (1, 2, 3, 5):
        c = rw.walk_counts(g, radius, 500, seed=0, users=np.array([0]))
        far = c.item[c.count > 0].max()
        assert 2 * far + 1 <= radius
    # on a random graph every visited item is within R hops (BFS distance)
    u, i, w, nu, ni = small_graph(seed=2, n_users=10, n_items=12, n_edges=18)
    g = rw.ExposureGraph.from_pairs(u, i, w, nu, ni)
    radius = 3
    c = rw.walk_counts(g, radius, 300, seed=1)
    adj_u = {a: set(i[u == a].tolist()) for a in range(nu)}
    adj_i = {b: set(u[i == b].tolist()) for b in range(ni)}
    for user in np.unique(c.user):
        dist, todo = {("u", user): 0}, deque([("u", user)])
        while todo:
            kind, node = todo.popleft()
            nxt = adj_u[node] if kind == "u" else adj_i[node]
            for m in nxt:
                key = ("i" if kind == "u" else "u", m)
                if key not in dist:
                    dist[key] = dist[(kind, node)] + 1
                    todo.append(key)
        for it in c.item[c.user == user]:
            assert dist[("i", int(it))] <= radius


def test_eq3_selects_unexposed_items_at_or_above_the_exposed_mean():
    g = rw.ExposureGraph.from_pairs([0, 0, 1], [0, 1, 2], [1.0, 1.0, 1.0], 2, 6)
    counts = rw.VisitCounts(
        user=np.array([0, 0, 0, 0, 0, 1, 1]), item=np.array([0, 1, 2, 3, 4, 2, 5]),
        count=np.array([4, 2, 3, 2, 5, 7, 7]))
    tu, ti = rw.select_target(g, counts)
    # user 0: exposed mean (4 + 2) / 2 = 3 -> items 2 (3 >= 3) and 4; user 1: mean 7 -> 5
    assert sorted(zip(tu.tolist(), ti.tolist())) == [(0, 2), (0, 4), (1, 5)]
    tu, ti = rw.select_target(g, counts, exclude_keys=np.array([0 * 6 + 4]))
    assert sorted(zip(tu.tolist(), ti.tolist())) == [(0, 2), (1, 5)]


def test_seeded_and_reproducible_and_target_is_unexposed():
    u, i, w, nu, ni = small_graph(seed=4, n_users=30, n_items=40, n_edges=200)
    a = rw.generate_target_domain(u, i, w, nu, ni, radius=7, walks=20, seed=5)
    b = rw.generate_target_domain(u, i, w, nu, ni, radius=7, walks=20, seed=5)
    c = rw.generate_target_domain(u, i, w, nu, ni, radius=7, walks=20, seed=6)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert len(a[0]) > 0
    assert not (len(a[0]) == len(c[0]) and np.array_equal(a[1], c[1]))
    exposed = set((u * ni + i).tolist())
    assert not exposed & set((a[0] * ni + a[1]).tolist())


def test_random_unexposed_avoids_exposures_and_bad_arguments_raise():
    exposed = np.array([0 * 5 + 1, 1 * 5 + 2])
    tu, ti = rw.random_unexposed(3, 5, np.array([3, 3, 0]), exposed, seed=0)
    assert not set((tu * 5 + ti).tolist()) & set(exposed.tolist())
    assert set(tu.tolist()) <= {0, 1}
    g = rw.ExposureGraph.from_pairs([0], [0], [1.0], 1, 1)
    with pytest.raises(UsageError):
        rw.walk_counts(g, 0, 5)
    with pytest.raises(UsageError):
        rw.walk_counts(g, 3, -1)
