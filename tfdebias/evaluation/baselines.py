"""Simple baselines every evidence table carries: popularity, item-kNN, logistic regression.

A backbone that does not beat these has learnt nothing a count could not tell, and the
debiasing rows built on it cannot be read (:func:`tfdebias.evaluation.evidence.analyse`
flags them). They are deliberately plain and fast, and each is a standard library
estimator where one exists (scikit-learn's logistic regression, scipy's sparse matrices).

Example:

>>> users = np.array([1, 1, 2, 2, 3]); items = np.array([1, 2, 1, 2, 3])
>>> knn = ItemKNN(users, items, n_items=4)
>>> scores = knn.score(np.array([[0, 1]]))      # a history holding item 1 only
>>> int(np.argmax(scores[0, 2:])) + 2            # item 2 co-occurs with item 1
2
>>> popularity(items, n_items=4).round(2).tolist()
[0.0, 2.0, 2.0, 1.0]
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from tfdebias.errors import UsageError


def popularity(items, n_items: int, *, weights=None) -> np.ndarray:
    """How often each item id occurs in ``items`` (optionally ``weights``-weighted, e.g.
    clicks): ``[n_items]`` scores, padding id 0 included."""
    items = np.asarray(items).reshape(-1)
    if items.size and (items.min() < 0 or items.max() >= n_items):
        raise UsageError(f"popularity: item ids must lie in [0, {n_items}), got [{items.min()}, {items.max()}]")
    w = None if weights is None else np.asarray(weights, np.float64).reshape(-1)
    return np.bincount(items, w, minlength=n_items).astype(np.float64)


def item_ctr(items, labels, n_items: int, *, prior_strength: float = 10.0) -> np.ndarray:
    """Each item's click-through rate in the log, shrunk toward the global rate by a Beta
    prior worth ``prior_strength`` shows: the popularity baseline of a CTR table."""
    labels = np.asarray(labels, np.float64).reshape(-1)
    shows = popularity(items, n_items)
    clicks = popularity(items, n_items, weights=labels)
    base = labels.mean() if labels.size else 0.0
    return (clicks + prior_strength * base) / (shows + prior_strength)


class ItemKNN:
    """Item-based k-nearest neighbours (Sarwar et al., 2001; Deshpande & Karypis, 2004).

    Item-item cosine similarity of the binary user × item matrix of ``(users, items)``
    interactions, shrunk by ``shrink`` (``sim = co / (|i||j| + shrink)``) and pruned to
    each item's ``k`` nearest neighbours; a user's score for item ``j`` is the sum of
    ``sim(i, j)`` over the items ``i`` in their history.
    """

    def __init__(self, users, items, n_items: int, *, k: int = 100, shrink: float = 10.0):
        import scipy.sparse as sp

        users = np.asarray(users).reshape(-1)
        items = np.asarray(items).reshape(-1)
        if users.shape != items.shape:
            raise UsageError("ItemKNN: users and items must have the same length")
        if items.size and (items.min() < 0 or items.max() >= n_items):
            raise UsageError(f"ItemKNN: item ids must lie in [0, {n_items})")
        _, u = np.unique(users, return_inverse=True)
        x = sp.csr_matrix((np.ones(len(u)), (u, items)), shape=(int(u.max()) + 1 if len(u) else 0, n_items))
        x.data[:] = 1.0  # binary: repeated interactions count once
        co = (x.T @ x).tocsr().astype(np.float64)
        co.setdiag(0.0)
        co.eliminate_zeros()
        norm = np.sqrt(np.asarray(x.sum(axis=0)).reshape(-1))
        co = co.tocoo()
        sim = co.data / (norm[co.row] * norm[co.col] + shrink)
        # keep each item's k strongest neighbours: sort by (row, -sim), rank within row
        order = np.lexsort((-sim, co.row))
        row, col, sim = co.row[order], co.col[order], sim[order]
        start = np.r_[True, row[1:] != row[:-1]]
        first = np.maximum.accumulate(np.where(start, np.arange(len(row)), 0))
        keep = (np.arange(len(row)) - first) < k
        self.similarity = sp.csr_matrix((sim[keep], (row[keep], col[keep])), shape=(n_items, n_items))
        self.n_items = n_items

    def score(self, histories) -> np.ndarray:
        """``[n, n_items]`` scores of 0-padded item histories ``[n, L]`` (padding id 0 ignored)."""
        import scipy.sparse as sp

        h = np.asarray(histories)
        if h.ndim != 2:
            raise UsageError(f"ItemKNN.score: histories must be [n, L], got shape {h.shape}")
        rows = np.repeat(np.arange(len(h)), h.shape[1])
        cols = h.reshape(-1)
        keep = cols > 0
        hist = sp.csr_matrix((np.ones(int(keep.sum())), (rows[keep], cols[keep])), shape=(len(h), self.n_items))
        return np.asarray((hist @ self.similarity).todense())

    def score_pairs(self, histories, items) -> np.ndarray:
        """One score per row: the row's history against the row's candidate item."""
        items = np.asarray(items).reshape(-1)
        out = np.empty(len(items))
        for a in range(0, len(items), 4096):  # blocks of rows bound the dense [n, n_items] block
            s = self.score(np.asarray(histories)[a:a + 4096])
            out[a:a + 4096] = s[np.arange(len(s)), items[a:a + 4096]]
        return out


class LogisticRegression:
    """Logistic regression on a data set's own input features (scikit-learn's ``lbfgs``).

    Categorical ids and domains are one-hot encoded, dense fields and proxies
    standardised, vectors used as they are, sequences as normalised multi-hot bags; truth,
    exposure and label columns are never read.
    """

    def __init__(self, schema, fields: Sequence[str], C: float, max_iter: int):
        self.schema, self.fields, self.C, self.max_iter = schema, list(fields), C, max_iter
        self._mean: dict[str, float] = {}
        self._std: dict[str, float] = {}
        self._offsets: dict[str, int] = {}
        self.model = None

    def _design(self, columns: Mapping[str, np.ndarray]):
        import scipy.sparse as sp

        n = len(next(iter(columns.values())))
        blocks = []
        for name in self.fields:
            f = self.schema[name]
            v = np.asarray(columns[name])
            if f.vocab_size and f.role != "sequence":
                ids = np.clip(v.astype(np.int64).reshape(-1), 0, f.vocab_size - 1)
                blocks.append(sp.csr_matrix((np.ones(n), (np.arange(n), ids)), shape=(n, f.vocab_size)))
            elif f.role == "sequence":
                rows = np.repeat(np.arange(n), v.shape[1])
                ids = v.reshape(-1)
                keep = ids > 0
                m = sp.csr_matrix((np.ones(int(keep.sum())), (rows[keep], ids[keep])), shape=(n, f.vocab_size))
                lens = np.maximum(np.asarray(m.sum(axis=1)).reshape(-1), 1.0)
                blocks.append(sp.diags(1.0 / lens) @ m)
            else:
                x = v.astype(np.float64).reshape(n, -1)
                if f.role != "vector":
                    x = (x - self._mean[name]) / self._std[name]
                blocks.append(sp.csr_matrix(x))
        return sp.hstack(blocks, format="csr")

    def fit(self, columns: Mapping[str, np.ndarray], labels, sample_weight=None) -> "LogisticRegression":
        from sklearn.linear_model import LogisticRegression as SkLR

        for name in self.fields:
            f = self.schema[name]
            if not f.vocab_size and f.role != "vector":
                x = np.asarray(columns[name], np.float64)
                self._mean[name], self._std[name] = float(x.mean()), float(x.std()) or 1.0
        y = np.asarray(labels).reshape(-1) > 0.5
        self.model = SkLR(C=self.C, max_iter=self.max_iter)
        self.model.fit(self._design(columns), y, sample_weight=sample_weight)
        return self

    def predict(self, columns: Mapping[str, np.ndarray]) -> np.ndarray:
        """P(label = 1) of each row."""
        return self.model.predict_proba(self._design(columns))[:, 1]


def logistic_regression(columns: Mapping[str, np.ndarray], schema, *, label: str | None = None,
                        fields: Sequence[str] | None = None, sample_weight=None, C: float = 1.0,
                        max_iter: int = 200) -> LogisticRegression:
    """Fit :class:`LogisticRegression` on ``columns``; ``fields`` default to every model
    input of the schema (categorical, dense, sequence, vector, domain, proxy)."""
    fields = list(fields) if fields is not None else [f.name for f in schema.inputs]
    missing = [f for f in fields if f not in columns]
    if missing:
        raise UsageError(f"logistic_regression: columns lack {missing}")
    label = label or schema.label.name
    return LogisticRegression(schema, fields, C, max_iter).fit(columns, columns[label], sample_weight)


__all__ = ["ItemKNN", "LogisticRegression", "item_ctr", "logistic_regression", "popularity"]
