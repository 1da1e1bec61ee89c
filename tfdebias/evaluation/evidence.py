"""Evidence: how much bias a scenario holds, and how much of it each method removes.

Every ``tfdebias reproduce`` table is measured the same way (the definitions are the
project's evidence guide):

* **floor** — the backbone trained naively on the biased log;
* **skyline** — the same backbone, features, budget and number of rows, trained on a
  sample drawn *without* the bias (only a simulator can draw it: it knows the truth);
* **gap** ``G = m(skyline) - m(floor)`` of the headline metric ``m``. When the 95% CI of
  ``G`` contains 0, the scenario holds no measurable bias and the table says so; when it
  lies wholly on the wrong side (the skyline is measurably worse), likewise, and gap
  closed is left out;
* **gap closed** by a row ``r``: ``(m(r) - m(floor)) / G``, 0 for the floor and 1 for
  the skyline by construction;
* every row against the paper's main baseline as a **paired difference**.

Uncertainty comes from two sources: the data draw (a simulator regenerated per *data
seed*) and the test units (users, or user × item clusters). Intervals are percentile
intervals of a **paired two-level bootstrap**: each replicate draws data seeds with
replacement, and inside each drawn data seed draws its test units with replacement; every
row of the table is scored on the *same* resampled units, so differences are paired.
Model seeds (initialisation, batch order) are averaged inside a data seed; their noise
reaches the interval through the spread between data seeds.

Coverage, measured by ``tests/test_evidence.py`` on synthetic paired data with a known
difference: about 95% on one data draw (the cluster bootstrap over units); with several
draws the interval counts test-unit noise at both levels, so it is conservative when
draws barely differ (98% with three draws) and near nominal when they do (92% with five
draws whose own differences vary). Few data seeds make the top level coarse: read the
intervals of a three-seed ``--quick`` table as indicative, and of a five-seed table as
the result.

A reproducer hands :func:`write_evidence` one record per (row, data seed, model seed)::

    {"name": "IPS-NCF", "role": "baseline", "data_seed": 0, "seed": 0,
     "metrics": {"test/auc": 0.71, ...},
     "scores": {"test/auc": row_auc(y, p, users), ...}}

``scores`` hold what a bootstrap needs to recompute a metric on resampled units
(:func:`row_mean`, :func:`row_auc`); they are never written to JSON.

Example (two rows on one data draw; the skyline is better by construction):

>>> rng = np.random.default_rng(0)
>>> units = np.repeat(np.arange(200), 5)
>>> y = rng.random(1000) < 0.3
>>> recs = [{"name": name, "role": role, "data_seed": 0, "seed": 0, "metrics": {},
...          "scores": {"test/auc": row_auc(y, y * skill + rng.random(1000), units)}}
...         for name, role, skill in [("NCF", "floor", 0.2), ("oracle", "skyline", 1.0)]]
>>> table = analyse(recs, metric="test/auc", n_boot=200)
>>> table["headroom"]["gap"]["ci95"][0] > 0
True
>>> [r["gap_closed"]["mean"] for r in table["rows"]]
[0.0, 1.0]
"""

from __future__ import annotations

import dataclasses
import math
from typing import Iterable, Mapping, Sequence

import numpy as np

from tfdebias.errors import UsageError

#: the roles a row of an evidence table may play
ROLES = ("floor", "skyline", "method", "baseline", "simple", "truth")

#: z-multiplier of the minimum detectable effect: 80% power at a two-sided alpha = 0.05
#: (1.96 + 0.84), applied to the standard error of a paired difference
MDE_Z = 2.8

_PRIME = 7919  # spreads the inner resample used by each copy of a data seed (see _replicates)


# -- what a bootstrap needs to recompute one metric -------------------------------------


def _check_units(units, n: int, where: str) -> np.ndarray:
    units = np.asarray(units)
    if units.shape != (n,):
        raise UsageError(f"{where}: units must have one id per row ({n}), got shape {units.shape}")
    if n and (units.dtype.kind not in "iu" or units.min() < 0):
        raise UsageError(f"{where}: units must be non-negative integer ids")
    return units.astype(np.int64)


@dataclasses.dataclass(frozen=True)
class RowMean:
    """A metric that is the mean of per-row values, rows clustered by test unit.

    Under unit weights ``w`` (how often each unit is drawn) the metric is
    ``sum_u w_u S_u / sum_u w_u C_u``, with ``S_u`` and ``C_u`` the sum and count of the
    unit's rows: per-user NDCG (one row per user) and log loss (many rows per user) alike.
    """

    sums: np.ndarray
    counts: np.ndarray

    @property
    def n_units(self) -> int:
        return len(self.sums)

    def point(self) -> float:
        return float(self.sums.sum() / max(self.counts.sum(), 1e-300))

    def under(self, weights: np.ndarray) -> np.ndarray:
        """The metric under each row of ``weights`` (``[B, n_units]``): ``[B]``."""
        w = weights[:, : self.n_units]
        with np.errstate(invalid="ignore", divide="ignore"):
            return (w @ self.sums) / (w @ self.counts)


@dataclasses.dataclass(frozen=True)
class RowAUC:
    """ROC AUC over rows, rows clustered by test unit (the rows of a unit are drawn together).

    Under unit weights ``w`` the AUC is the weighted Mann-Whitney statistic
    ``sum_{pos i} w_i (N_<(i) + N_=(i) / 2) / (sum_pos w * sum_neg w)``, with ``N_<`` and
    ``N_=`` the weight of negatives scoring below and level with positive ``i``. Scores
    are sorted once; each positive keeps the number of negatives strictly below its
    score (``lo``) and up to it (``hi``), so a block of weight vectors costs one cumulative
    sum over the negatives and two gathers at the positives.
    """

    pos_units: np.ndarray  # unit of each positive row
    neg_units: np.ndarray  # unit of each negative row, in ascending score order
    lo: np.ndarray  # per positive: negatives scoring strictly below it
    hi: np.ndarray  # per positive: negatives scoring below or level with it
    n_units: int
    y_true: np.ndarray = dataclasses.field(default=None, repr=False)  # rows in their given order,
    y_score: np.ndarray = dataclasses.field(default=None, repr=False)  # for DeLong's paired test

    def _auc(self, w: np.ndarray) -> np.ndarray:
        """AUC under each row of ``w`` ([B, n_units]), in ``w``'s float precision."""
        wt = np.ascontiguousarray(w.T)  # gathering rows (units) is the fast direction
        below = np.zeros((len(self.neg_units) + 1, len(w)), w.dtype)
        np.cumsum(wt[self.neg_units], axis=0, out=below[1:])
        wp = wt[self.pos_units]
        num = np.einsum("ij,ij->j", wp, below[self.lo] + below[self.hi]).astype(np.float64) * 0.5
        with np.errstate(invalid="ignore", divide="ignore"):
            return num / (wp.sum(axis=0, dtype=np.float64) * below[-1].astype(np.float64))

    def point(self) -> float:
        return float(self._auc(np.ones((1, self.n_units)))[0])

    def under(self, weights: np.ndarray, block: int = 128) -> np.ndarray:
        """The AUC under each row of ``weights`` (``[B, n_units]``): ``[B]``. Computed in
        float32 (relative error ~1e-7, far below any bootstrap spread) for speed."""
        out = np.empty(len(weights))
        for a in range(0, len(weights), block):
            out[a:a + block] = self._auc(np.asarray(weights[a:a + block], np.float32))
        return out


def row_mean(values, units) -> RowMean:
    """Scores for a metric that is the mean of ``values`` (one per test row)."""
    values = np.asarray(values, np.float64).reshape(-1)
    units = _check_units(units, len(values), "row_mean")
    if not np.isfinite(values).all():
        raise UsageError("row_mean: values must be finite")
    n = int(units.max()) + 1 if len(units) else 0
    return RowMean(np.bincount(units, values, minlength=n), np.bincount(units, minlength=n).astype(np.float64))


def row_auc(y_true, y_score, units) -> RowAUC:
    """Scores for the ROC AUC of ``y_score`` against binary ``y_true`` over test rows."""
    y_true = np.asarray(y_true).reshape(-1)
    y_score = np.asarray(y_score, np.float64).reshape(-1)
    if y_true.shape != y_score.shape:
        raise UsageError(f"row_auc: y_true {y_true.shape} and y_score {y_score.shape} differ")
    units = _check_units(units, len(y_true), "row_auc")
    positive = y_true > 0.5
    if positive.all() or not positive.any():
        raise UsageError("row_auc: the test rows need both positive and negative labels")
    order = np.argsort(y_score, kind="stable")
    s, pos = y_score[order], positive[order]
    group = np.cumsum(np.r_[True, s[1:] != s[:-1]]) - 1  # tie group of each sorted row
    neg_per_group = np.bincount(group, ~pos, minlength=group[-1] + 1)
    neg_before_group = np.cumsum(neg_per_group) - neg_per_group
    lo = neg_before_group[group[pos]].astype(np.int64)
    hi = lo + neg_per_group[group[pos]].astype(np.int64)
    return RowAUC(units[order][pos], units[order][~pos], lo, hi, int(units.max()) + 1,
                  positive, y_score)


def ctr_scores(y_true, y_prob, units, groups: Mapping[str, np.ndarray] | None = None,
               prefix: str = "test") -> dict:
    """The scores of a CTR table from predicted click probabilities: ``<prefix>/auc``
    and ``<prefix>/logloss`` over all rows, and ``<prefix>/auc/<group>`` over each
    group's rows (``groups`` maps a name to a boolean row mask)."""
    y = np.asarray(y_true, np.float64).reshape(-1)
    p = np.clip(np.asarray(y_prob, np.float64).reshape(-1), 1e-7, 1 - 1e-7)
    units = np.asarray(units).astype(np.int64).reshape(-1)
    loss = -(y * np.log(p) + (1 - y) * np.log1p(-p))
    out = {f"{prefix}/auc": row_auc(y, p, units), f"{prefix}/logloss": row_mean(loss, units)}
    for name, mask in (groups or {}).items():
        out[f"{prefix}/auc/{name}"] = row_auc(y[mask], p[mask], units[mask])
    return out


# -- DeLong's paired test ----------------------------------------------------------------


def _midranks(x: np.ndarray) -> np.ndarray:
    order = np.argsort(x, kind="stable")
    xs = x[order]
    start = np.r_[True, xs[1:] != xs[:-1]]
    first = np.flatnonzero(start)
    counts = np.diff(np.r_[first, len(xs)])
    mid = np.repeat(first + 0.5 * (counts + 1), counts)  # 1-based midrank of each tie group
    out = np.empty(len(x))
    out[order] = mid
    return out


def delong(y_true, score_a, score_b) -> dict:
    """DeLong, DeLong & Clarke-Pearson (1988): the paired test of two AUCs on the same rows.

    Uses Sun & Xu's (2014) midrank form of the structural components. Returns
    ``{"auc_a", "auc_b", "diff", "se", "z", "p", "ci95"}`` (``diff = auc_a - auc_b``,
    a two-sided normal p-value and a 95% normal interval of the difference).
    """
    y = np.asarray(y_true).reshape(-1) > 0.5
    scores = np.stack([np.asarray(score_a, np.float64).reshape(-1), np.asarray(score_b, np.float64).reshape(-1)])
    if scores.shape[1] != len(y):
        raise UsageError("delong: the scores and labels must have the same length")
    m, n = int(y.sum()), int((~y).sum())
    if m == 0 or n == 0:
        raise UsageError("delong: needs both positive and negative labels")
    aucs, v10, v01 = [], [], []
    for s in scores:
        pos, neg = s[y], s[~y]
        tx, ty, tz = _midranks(pos), _midranks(neg), _midranks(np.r_[pos, neg])
        aucs.append((tz[:m].sum() - m * (m + 1) / 2) / (m * n))
        v10.append((tz[:m] - tx) / n)
        v01.append(1.0 - (tz[m:] - ty) / m)
    s10, s01 = np.cov(np.array(v10)), np.cov(np.array(v01))
    cov = s10 / m + s01 / n
    diff = aucs[0] - aucs[1]
    var = cov[0, 0] + cov[1, 1] - 2 * cov[0, 1]
    se = math.sqrt(max(var, 0.0))
    z = diff / se if se > 0 else (0.0 if diff == 0 else math.copysign(math.inf, diff))
    p = math.erfc(abs(z) / math.sqrt(2.0))
    return {"auc_a": float(aucs[0]), "auc_b": float(aucs[1]), "diff": float(diff), "se": se,
            "z": float(z), "p": float(p), "ci95": [float(diff - 1.96 * se), float(diff + 1.96 * se)]}


# -- the self-normalised IPS validation loss -------------------------------------------


def snips_logloss(y_true, y_pred, propensity, eps: float = 1e-7) -> float:
    """Self-normalised IPS estimate of the log loss on the *whole* population.

    ``sum_i w_i l_i / sum_i w_i`` with ``w_i = 1 / propensity_i`` over the logged
    validation rows (Swaminathan & Joachims, 2015): rows the logging policy rarely shows
    count more, so early stopping on it does not reward fitting the policy.
    """
    y = np.asarray(y_true, np.float64).reshape(-1)
    p = np.clip(np.asarray(y_pred, np.float64).reshape(-1), eps, 1 - eps)
    prop = np.asarray(propensity, np.float64).reshape(-1)
    if not (len(y) == len(p) == len(prop)):
        raise UsageError("snips_logloss: labels, predictions and propensities must have the same length")
    if len(prop) == 0 or not (prop > 0).all():
        raise UsageError("snips_logloss: propensities must be > 0")
    w = 1.0 / prop
    loss = -(y * np.log(p) + (1 - y) * np.log(1 - p))
    return float((w * loss).sum() / w.sum())


# -- the bootstrap -----------------------------------------------------------------------


def _ci(x: np.ndarray) -> list[float]:
    x = x[np.isfinite(x)]
    if not len(x):
        return [math.nan, math.nan]
    lo, hi = np.percentile(x, [2.5, 97.5])
    return [float(lo), float(hi)]


def _summary(point: float, reps: np.ndarray) -> dict:
    return {"mean": float(point), "ci95": _ci(reps)}


def _excludes_zero(ci: Sequence[float]) -> bool:
    return ci[0] > 0 or ci[1] < 0


class _Table:
    """Per data seed, each row's metric under ``B`` shared inner resamples of its units."""

    def __init__(self, records: Sequence[dict], n_boot: int, seed: int):
        self.names: list[str] = []
        self.roles: dict[str, str] = {}
        self.data_seeds: list = []
        for r in records:
            if r["name"] not in self.roles:
                self.names.append(r["name"])
                self.roles[r["name"]] = r.get("role", "baseline")
            if r.get("data_seed", 0) not in self.data_seeds:
                self.data_seeds.append(r.get("data_seed", 0))
        self.records = records
        self.n_boot = n_boot
        rng = np.random.default_rng(seed)
        self._weights = {}
        for d in self.data_seeds:
            n_units = max((sc.n_units for r in records if r.get("data_seed", 0) == d
                           for sc in (r.get("scores") or {}).values()), default=0)
            # one multinomial draw of the units per replicate, shared by every row
            self._weights[d] = rng.multinomial(n_units, np.full(n_units, 1.0 / n_units), size=n_boot
                                               ).astype(np.float64) if n_units else None
        self._top = rng.integers(0, len(self.data_seeds), size=(n_boot, len(self.data_seeds)))
        self._cache: dict = {}

    def per_seed(self, name: str, metric: str):
        """``({data_seed: point}, {data_seed: [B] replicate values})`` of ``name``'s metric,
        averaged over its model seeds; None where a data seed lacks the metric."""
        key = (name, metric)
        if key not in self._cache:
            point, reps = {}, {}
            for d in self.data_seeds:
                rs = [r for r in self.records if r["name"] == name and r.get("data_seed", 0) == d]
                sc = [r["scores"][metric] for r in rs if metric in (r.get("scores") or {})]
                if sc:
                    point[d] = float(np.mean([s.point() for s in sc]))
                    reps[d] = np.mean([s.under(self._weights[d]) for s in sc], axis=0)
                    continue
                vals = [r["metrics"][metric] for r in rs if metric in r.get("metrics", {})]
                if vals:  # no unit scores: the data-seed level carries the uncertainty alone
                    point[d] = float(np.mean(vals))
                    reps[d] = np.full(self.n_boot, point[d])
            self._cache[key] = (point, reps)
        return self._cache[key]

    def combine(self, per_seed_reps: dict, per_seed_point: dict):
        """Mean over data seeds: the point estimate and ``[B]`` replicates, each replicate
        averaging the data seeds it drew (copy ``k`` of a seed uses inner resample
        ``(b + k * prime) mod B``, so repeated copies are not identical)."""
        seeds = [d for d in self.data_seeds if d in per_seed_reps]
        if not seeds:
            return math.nan, np.full(self.n_boot, math.nan)
        point = float(np.mean([per_seed_point[d] for d in seeds]))
        idx = np.arange(self.n_boot)
        total = np.zeros(self.n_boot)
        count = np.zeros(self.n_boot)
        pos = {d: i for i, d in enumerate(self.data_seeds)}
        for k in range(self._top.shape[1]):
            inner = (idx + k * _PRIME) % self.n_boot
            drawn = self._top[:, k]
            for d in seeds:
                hit = drawn == pos[d]
                total[hit] += per_seed_reps[d][inner[hit]]
                count[hit] += 1
        with np.errstate(invalid="ignore"):
            return point, total / np.where(count > 0, count, np.nan)


def _paired(table: _Table, a: str, b: str, metric: str, seeds=None):
    """Point and replicates of ``m(a) - m(b)`` over the data seeds both have (or ``seeds``)."""
    pa, ra = table.per_seed(a, metric)
    pb, rb = table.per_seed(b, metric)
    common = [d for d in pa if d in pb and (seeds is None or d in seeds)]
    return table.combine({d: ra[d] - rb[d] for d in common}, {d: pa[d] - pb[d] for d in common})


def _delong_rows(records: Sequence[dict], name: str, base: str, metric: str) -> dict | None:
    """DeLong's paired test of ``name`` against ``base`` on each data seed's test rows
    (scores averaged over model seeds: one prediction per row and row), combined over the
    independent data draws by Stouffer's z. None unless both rows carry AUC scores."""
    per = []
    for d in dict.fromkeys(r.get("data_seed", 0) for r in records):
        def scores(n):
            sc = [r["scores"][metric] for r in records if r["name"] == n and r.get("data_seed", 0) == d
                  and isinstance((r.get("scores") or {}).get(metric), RowAUC)]
            return sc
        a, b = scores(name), scores(base)
        if not a or not b or a[0].y_score is None or b[0].y_score is None:
            continue
        if len(a[0].y_true) != len(b[0].y_true) or not np.array_equal(a[0].y_true, b[0].y_true):
            continue  # not the same test rows: DeLong does not apply
        t = delong(a[0].y_true, np.mean([s.y_score for s in a], axis=0), np.mean([s.y_score for s in b], axis=0))
        per.append({"data_seed": d, "diff": t["diff"], "z": t["z"], "p": t["p"]})
    if not per:
        return None
    zs = np.array([x["z"] for x in per], np.float64)
    z = float(zs.sum() / math.sqrt(len(zs))) if np.isfinite(zs).all() else math.nan
    p = math.erfc(abs(z) / math.sqrt(2.0)) if math.isfinite(z) else math.nan
    return {"vs": base, "z": z, "p": p, "per_data_seed": per}


def analyse(records: Sequence[dict], *, metric: str, main_baseline: str | None = None,
            method: str | None = None, metrics: Sequence[str] | None = None,
            higher_is_better: bool = True, n_boot: int = 1000, seed: int = 0) -> dict:
    """The evidence of one table: headroom, per-row CIs, gap closed, paired differences, flags.

    ``records`` as in the module docstring; exactly one row has role ``floor`` and one
    ``skyline``. Returns ``{"headroom", "power", "rows", "flags"}``; each row is
    ``{"name", "role", "n_seeds", "n_data_seeds", "seeds", "data_seeds", "mean", "std",
    "ci95", "gap_closed", "vs_baseline", "vs_floor", "mde", "flags"}``.

    Gap closed is the ratio of the mean paired difference to the mean gap, both taken
    over the same replicate, ``sum_d (m_r - m_floor) / sum_d (m_sky - m_floor)``: a ratio
    of means rather than a mean of per-seed ratios, which would explode on a data seed
    whose own gap happens to be near 0.
    """
    records = list(records)
    if not records:
        raise UsageError("analyse: no records")
    for r in records:
        role = r.get("role", "baseline")
        if role not in ROLES:
            raise UsageError(f"analyse: row {r['name']!r} has role {role!r}; expected one of {ROLES}")
    table = _Table(records, n_boot, seed)
    floors = [n for n in table.names if table.roles[n] == "floor"]
    skies = [n for n in table.names if table.roles[n] == "skyline"]
    if len(floors) != 1 or len(skies) != 1:
        raise UsageError(f"analyse: a table needs exactly one floor and one skyline row, got "
                         f"floor {floors}, skyline {skies}")
    floor, sky = floors[0], skies[0]
    for name in (main_baseline, method):
        if name is not None and name not in table.roles:
            raise UsageError(f"analyse: no row named {name!r}; rows are {table.names}")
    sign = 1.0 if higher_is_better else -1.0
    shown = list(dict.fromkeys([metric, *(metrics or [])]))

    # headroom
    p_sky, r_sky = table.combine(*reversed(table.per_seed(sky, metric)))
    p_floor, r_floor = table.combine(*reversed(table.per_seed(floor, metric)))
    p_gap, r_gap = _paired(table, sky, floor, metric)
    gap_ci = _ci(r_gap)
    reversed_gap = _excludes_zero(gap_ci) and sign * p_gap < 0  # skyline measurably worse
    no_bias = not _excludes_zero(gap_ci) or reversed_gap
    headroom = {"metric": metric, "skyline": _summary(p_sky, r_sky),
                "floor": _summary(p_floor, r_floor), "gap": _summary(p_gap, r_gap),
                "measurable": not no_bias}

    # simple baselines the backbone must beat
    simple = [n for n in table.names if table.roles[n] == "simple"]
    beaten, not_beaten = [], []
    for s in simple:
        p, reps = _paired(table, floor, s, metric)
        (beaten if _excludes_zero(_ci(sign * reps)) and sign * p > 0 else not_beaten).append(s)
    interpretable = not not_beaten

    table_flags = []
    if reversed_gap:
        table_flags.append("no measurable bias: the skyline scores below the floor (training without the "
                           "bias does worse here), so there is no gap to close and gap closed is left out")
    elif no_bias:
        table_flags.append("no measurable bias: the gap's 95% CI contains 0, so no row can show debiasing")
    if not interpretable:
        table_flags.append(f"backbone does not beat {', '.join(not_beaten)}: the debiasing rows are not "
                           "interpretable")

    rows = []
    mdes = []
    for name in table.names:
        rs = [r for r in records if r["name"] == name]
        role = table.roles[name]
        keys = list(dict.fromkeys([*shown, *sorted({k for r in rs for k in r.get("metrics", {})}),
                                   *sorted({k for r in rs for k in (r.get("scores") or {})})]))
        mean, std, ci = {}, {}, {}
        for k in keys:
            pt, reps = table.per_seed(name, k)
            if not pt:
                continue
            vals = [r["metrics"][k] if k in r.get("metrics", {}) else r["scores"][k].point()
                    for r in rs if k in r.get("metrics", {}) or k in (r.get("scores") or {})]
            mean[k] = float(np.mean(vals))
            std[k] = float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0
            ci[k] = _ci(table.combine(reps, pt)[1])
        row = {"name": name, "role": role,
               **{k: v for k, v in rs[0].items() if k not in ("name", "role", "seed", "data_seed",
                                                              "metrics", "scores")},
               "n_seeds": len(rs), "seeds": [r.get("seed") for r in rs],
               "data_seeds": sorted({r.get("data_seed", 0) for r in rs}),
               "n_data_seeds": len({r.get("data_seed", 0) for r in rs}),
               "mean": mean, "std": std, "ci95": ci}
        flags = []
        if table.per_seed(name, metric)[0]:
            common = [d for d in table.per_seed(name, metric)[0] if d in table.per_seed(floor, metric)[0]]
            p_diff, r_diff = _paired(table, name, floor, metric)
            g_pt, g_reps = _paired(table, sky, floor, metric, seeds=common)
            if name == floor:
                frac, frac_reps = 0.0, np.zeros(n_boot)
            elif name == sky:
                frac, frac_reps = 1.0, np.ones(n_boot)
            else:
                with np.errstate(invalid="ignore", divide="ignore"):
                    frac_reps = r_diff / g_reps
                frac = p_diff / g_pt if g_pt != 0 else math.nan
            if (reversed_gap and name not in (floor, sky)) or role in ("simple", "truth"):
                # a ratio to a negative gap means nothing; reference rows are context only
                frac, frac_reps = math.nan, np.full(n_boot, math.nan)
            row["gap_closed"] = _summary(frac, frac_reps)
            row["vs_floor"] = _summary(p_diff, r_diff)
            row["mde"] = MDE_Z * float(np.nanstd(r_diff, ddof=1)) if name != floor else 0.0
            if role in ("method", "baseline"):
                mdes.append(row["mde"])
            if main_baseline and name != main_baseline:
                p_b, r_b = _paired(table, name, main_baseline, metric)
                row["vs_baseline"] = {"name": main_baseline, **_summary(p_b, r_b)}
                dl = _delong_rows(records, name, main_baseline, metric)
                if dl:
                    row["delong"] = dl
            if role in ("method", "baseline"):
                if not interpretable:
                    flags.append("not interpretable")
                if no_bias:
                    flags.append("no measurable bias")
                elif _excludes_zero(row["vs_floor"]["ci95"]):
                    flags.append("better than floor" if sign * p_diff > 0 else "worse than floor")
        row["flags"] = flags
        rows.append(row)

    # the power of the table: the smallest paired difference it can detect
    p_f, reps_f = table.per_seed(floor, metric)
    within = [float(np.std(reps_f[d], ddof=1)) for d in reps_f]
    power = {"metric": metric, "mde": float(np.median(mdes)) if mdes else math.nan,
             "metric_se_one_draw": float(np.mean(within)) if within else math.nan,
             "n_boot": n_boot, "n_data_seeds": len(table.data_seeds)}
    return {"headroom": headroom, "power": power, "rows": rows, "flags": table_flags,
            "floor": floor, "skyline": sky, "main_baseline": main_baseline, "method": method,
            "simple_beaten": beaten}


# -- writing a table -------------------------------------------------------------------


def _fmt_ci(mean: float, ci: Sequence[float] | None, digits: int = 4) -> str:
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "—"
    if not ci or any(math.isnan(c) for c in ci):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} [{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]"


def to_markdown(ev: dict, metrics: Sequence[str]) -> str:
    """The evidence table: headroom first, then one line per row with CIs and gap closed."""
    h = ev["headroom"]
    m = h["metric"]
    lines = [f"**Headroom** on `{m}`: skyline {_fmt_ci(h['skyline']['mean'], h['skyline']['ci95'])}, "
             f"floor {_fmt_ci(h['floor']['mean'], h['floor']['ci95'])}, "
             f"gap {_fmt_ci(h['gap']['mean'], h['gap']['ci95'])}.",
             f"Minimum detectable effect (2.8 × SE of a paired difference): {ev['power']['mde']:.4f}; "
             f"SE of `{m}` on one data draw: {ev['power']['metric_se_one_draw']:.4f}; "
             f"{ev['power']['n_data_seeds']} data seed(s), {ev['power']['n_boot']} bootstrap replicates.", ""]
    for f in ev["flags"]:
        lines.append(f"> **Flag: {f}.**")
    if ev["flags"]:
        lines.append("")
    base = ev.get("main_baseline")
    head = ["row", "role", "seeds", *metrics, "gap closed", f"vs {base}" if base else None, "flags"]
    head = [c for c in head if c is not None]
    lines += ["| " + " | ".join(head) + " |", "|---|---|---:|" + "---:|" * (len(head) - 4) + "---|"]
    for r in ev["rows"]:
        cells = [r["name"], r["role"], f"{r['n_data_seeds']}×{r['n_seeds'] // max(r['n_data_seeds'], 1)}"]
        cells += [_fmt_ci(r["mean"].get(k, math.nan), r["ci95"].get(k)) for k in metrics]
        gc = r.get("gap_closed")
        if gc and (h["measurable"] or r["name"] in (ev["floor"], ev["skyline"])):
            cells.append(_fmt_ci(gc["mean"], gc["ci95"], 2))
        else:  # no gap to close: a ratio to it would be noise (results.json keeps it)
            cells.append("—")
        if base:
            vb = r.get("vs_baseline")
            cell = _fmt_ci(vb["mean"], vb["ci95"]) if vb else "—"
            dl = r.get("delong")
            if dl and dl.get("p") is not None and math.isfinite(dl["p"]):
                shown_p = "< 1e-300" if dl["p"] < 1e-300 else f"= {dl['p']:.2g}"
                cell += f" (DeLong p {shown_p})"
            cells.append(cell)
        cells.append(", ".join(r.get("flags", [])))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


HOW_TO_READ = (
    "How to read this table: each cell is the mean over data seeds × model seeds with a 95% "
    "paired two-level bootstrap interval (data seeds, then test units). The floor is the "
    "backbone trained naively on the biased log, the skyline the same backbone trained on a "
    "sample of the same size drawn without the bias; *gap closed* = (row − floor) / "
    "(skyline − floor). A row helps only where its gap-closed interval lies above 0. Where "
    "AUCs are compared on the same test rows, DeLong's paired test against the main "
    "baseline is given too (per data draw, combined by Stouffer's z).")


def summary_lines(ev: dict) -> list[str]:
    """A short plain-text account of an analysed table (what a reproduce run prints)."""
    h = ev["headroom"]
    m = h["metric"]
    out = [f"Headroom on {m}: skyline {_fmt_ci(h['skyline']['mean'], h['skyline']['ci95'])}, "
           f"floor {_fmt_ci(h['floor']['mean'], h['floor']['ci95'])}, "
           f"gap {_fmt_ci(h['gap']['mean'], h['gap']['ci95'])}; "
           f"minimum detectable effect {ev['power']['mde']:.4f}"]
    for r in ev["rows"]:
        gc = r.get("gap_closed") or {}
        line = f"  {r['name']:34s} {r['role']:8s} {m} {_fmt_ci(r['mean'].get(m, math.nan), r['ci95'].get(m))}"
        if (h["measurable"] and gc.get("mean") is not None and math.isfinite(gc["mean"])
                and r["role"] in ("method", "baseline")):
            line += f"  gap closed {_fmt_ci(gc['mean'], gc['ci95'], 2)}"
        if r.get("flags"):
            line += f"  ({', '.join(r['flags'])})"
        out.append(line)
    out += [f"  flag: {f}" for f in ev["flags"]]
    return out


def _json_safe(x):
    """NaN and infinities as ``null`` (strict JSON), recursively."""
    if isinstance(x, dict):
        return {k: _json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_safe(v) for v in x]
    if isinstance(x, (float, np.floating)) and not math.isfinite(x):
        return None
    return x


def write_evidence(out_dir, records: Sequence[dict], *, title: str, metric: str,
                   main_baseline: str | None = None, method: str | None = None,
                   stopping: str, metrics: Sequence[str] | None = None, notes: str = "",
                   command: str | None = None, extra: dict | None = None,
                   higher_is_better: bool = True, n_boot: int = 1000, seed: int = 0,
                   echo: bool = True):
    """Analyse ``records`` and write ``results.json``, ``results.md`` and ``results.png``.

    ``stopping`` says in words how every row was stopped (fixed budget or a named
    validation criterion) and is printed in the table; ``echo`` prints
    :func:`summary_lines`. Returns the output folder.
    """
    from tfdebias.evaluation.results import write_results

    ev = analyse(records, metric=metric, main_baseline=main_baseline, method=method,
                 metrics=metrics, higher_is_better=higher_is_better, n_boot=n_boot, seed=seed)
    shown = list(dict.fromkeys([metric, *(metrics or [])]))
    plain = [{k: v for k, v in r.items() if k != "scores"} for r in records]
    body = to_markdown(ev, shown)
    md_notes = "\n\n".join(x for x in (f"Stopping: {stopping}.", HOW_TO_READ, notes.strip()) if x)
    if echo:
        print("\n".join(summary_lines(ev)), flush=True)
    return write_results(out_dir, _json_safe(plain), title=title, rows=_json_safe(ev["rows"]),
                         table_md=body, plot_metric=metric, notes=md_notes, command=command,
                         extra=_json_safe({"headroom": ev["headroom"], "power": ev["power"],
                                           "flags": ev["flags"], "stopping": stopping,
                                           "main_baseline": main_baseline, "method": method,
                                           **(extra or {})}))


# -- progress ---------------------------------------------------------------------------


__all__ = ["HOW_TO_READ", "MDE_Z", "ROLES", "RowAUC", "RowMean", "analyse", "ctr_scores", "delong",
           "row_auc", "row_mean", "snips_logloss", "summary_lines", "to_markdown", "write_evidence"]
