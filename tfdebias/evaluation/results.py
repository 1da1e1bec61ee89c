"""Results tables: many runs (rows × seeds) to one markdown + JSON table with mean ± std.

Every results table in README and ``docs/results/`` is made by :func:`write_results`
from protocol dicts, never by hand.

>>> recs = [{"name": "dcn", "seed": s, "metrics": {"test/auc": a}} for s, a in [(0, .70), (1, .72)]]
>>> rows = summarize(recs)
>>> rows[0]["n_seeds"], round(rows[0]["mean"]["test/auc"], 2)
(2, 0.71)
"""

from __future__ import annotations

import datetime as _dt
import math
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from tfdebias.training.run_dir import write_json


def summarize(records: Iterable[dict]) -> list[dict]:
    """Group ``{"name", "seed", "metrics"}`` records by name (first-seen order).

    Returns one row per name: ``{"name", "n_seeds", "seeds", "mean": {...}, "std": {...}}``;
    std is the sample standard deviation (ddof=1), 0 for a single seed.
    """
    groups: dict[str, list[dict]] = {}
    extra: dict[str, dict] = {}
    for r in records:
        groups.setdefault(r["name"], []).append(r)
        extra.setdefault(r["name"], {k: v for k, v in r.items() if k not in ("name", "seed", "metrics")})
    rows = []
    for name, rs in groups.items():
        keys = sorted({k for r in rs for k in r["metrics"]})
        mean, std = {}, {}
        for k in keys:
            vals = np.array([r["metrics"][k] for r in rs if k in r["metrics"]], dtype=np.float64)
            mean[k] = float(vals.mean())
            std[k] = float(vals.std(ddof=1)) if len(vals) > 1 else 0.0
        rows.append({"name": name, **extra[name], "n_seeds": len(rs),
                     "seeds": [r.get("seed") for r in rs], "mean": mean, "std": std})
    return rows


def _fmt(mean: float, std: float, digits: int) -> str:
    if math.isnan(mean):
        return "—"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def to_markdown(rows: Sequence[dict], metrics: Sequence[str] | None = None, *,
                digits: int = 4, bold_best: dict[str, str] | None = None) -> str:
    """A markdown table, one row per model, ``mean ± std`` per metric.

    ``bold_best`` maps metric → ``"max"``/``"min"``; the best mean is bolded.
    """
    metrics = list(metrics or sorted({k for r in rows for k in r["mean"]}))
    best = {}
    for k, mode in (bold_best or {}).items():
        vals = [r["mean"].get(k, float("nan")) for r in rows]
        vals = [v for v in vals if not math.isnan(v)]
        if vals:
            best[k] = max(vals) if mode == "max" else min(vals)
    head = "| model | seeds | " + " | ".join(metrics) + " |"
    sep = "|---|---:|" + "---:|" * len(metrics)
    lines = [head, sep]
    for r in rows:
        cells = []
        for k in metrics:
            mu, sd = r["mean"].get(k, float("nan")), r["std"].get(k, 0.0)
            cell = _fmt(mu, sd, digits)
            if k in best and not math.isnan(mu) and mu == best[k]:
                cell = f"**{cell}**"
            cells.append(cell)
        lines.append(f"| {r['name']} | {r['n_seeds']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot_rows(rows: Sequence[dict], metric: str, path: str | os.PathLike, title: str = "") -> None:
    """A horizontal bar chart of ``metric`` with ±std error bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [r["name"] for r in rows if metric in r["mean"]]
    means = [r["mean"][metric] for r in rows if metric in r["mean"]]
    stds = [r["std"][metric] for r in rows if metric in r["mean"]]
    fig, ax = plt.subplots(figsize=(7, 0.35 * len(names) + 1.2))
    ax.barh(range(len(names)), means, xerr=stds, color="#4C72B0", ecolor="#333", capsize=3)
    ax.set_yticks(range(len(names)), names)
    ax.invert_yaxis()
    if means:
        lo, hi = min(m - s for m, s in zip(means, stds)), max(m + s for m, s in zip(means, stds))
        pad = max((hi - lo) * 0.15, 1e-3)
        ax.set_xlim(lo - pad, hi + pad)
    ax.set_xlabel(metric)
    ax.set_title(title or metric)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_results(out_dir: str | os.PathLike, records: Sequence[dict], *, title: str,
                  metrics: Sequence[str] | None = None, plot_metric: str | None = None,
                  bold_best: dict[str, str] | None = None, notes: str = "",
                  command: str | None = None, extra: dict | None = None) -> Path:
    """Write ``results.json``, ``results.md`` (and ``results.png``) into ``out_dir``.

    Written into a temporary sibling folder and renamed into place when complete.
    """
    out = Path(out_dir).absolute()
    out.parent.mkdir(parents=True, exist_ok=True)
    rows = summarize(records)
    command = command or "tfdebias " + " ".join(sys.argv[1:])
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}."))
    try:
        if out.exists():  # keep other files a caller put there (per-run folders, plots)
            shutil.copytree(out, tmp, dirs_exist_ok=True)
        payload = {"title": title, "command": command,
                   "date": _dt.date.today().isoformat(), "rows": rows,
                   "records": list(records), **(extra or {})}
        write_json(tmp / "results.json", payload)
        md = [f"# {title}", "", f"Produced by `{command}`.", "",
              to_markdown(rows, metrics, bold_best=bold_best)]
        if plot_metric:
            plot_rows(rows, plot_metric, tmp / "results.png", title=title)
            md += ["", f"![{plot_metric}](results.png)"]
        if notes:
            md += ["", notes.strip()]
        (tmp / "results.md").write_text("\n".join(md) + "\n")
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out
