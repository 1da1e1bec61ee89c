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
import shlex
import sys
import textwrap
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from tfdebias.atomic import write_json, write_with


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
    """A horizontal bar chart of ``metric``: 95% CIs as error bars where rows carry
    ``ci95`` (evidence tables), else ±std."""
    from tfdebias.evaluation.plots import pyplot

    plt = pyplot()

    shown = [r for r in rows if r["mean"].get(metric) is not None]
    names = [r["name"] for r in shown]
    means = np.array([r["mean"][metric] for r in shown], dtype=np.float64)
    lo, hi = [], []
    for r, m in zip(shown, means):
        ci = (r.get("ci95") or {}).get(metric)
        if ci and all(c is not None and math.isfinite(c) for c in ci):
            lo.append(max(m - ci[0], 0.0))
            hi.append(max(ci[1] - m, 0.0))
        else:
            sd = r.get("std", {}).get(metric, 0.0)
            lo.append(sd)
            hi.append(sd)
    colors = {"floor": "#999999", "skyline": "#55A868", "simple": "#C9C9C9", "truth": "#8172B2",
              "method": "#C44E52"}
    fig, ax = plt.subplots(figsize=(7, 0.35 * len(names) + 1.2))
    ax.barh(range(len(names)), means, xerr=[lo, hi], ecolor="#333", capsize=3,
            color=[colors.get(r.get("role"), "#4C72B0") for r in shown])
    ax.set_yticks(range(len(names)), names)
    ax.invert_yaxis()
    if len(means):
        a, b = float(np.min(means - lo)), float(np.max(means + hi))
        pad = max((b - a) * 0.15, 1e-3)
        ax.set_xlim(a - pad, b + pad)
    ax.set_xlabel(metric)
    for role, style in (("floor", ":"), ("skyline", "--")):  # the headroom band, where there is one
        at = [r["mean"][metric] for r in shown if r.get("role") == role]
        if at:
            ax.axvline(at[0], color=colors[role], linestyle=style, linewidth=1, label=role)
    if any(r.get("role") in ("floor", "skyline") for r in shown):
        ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8, frameon=False)
    ax.set_title(textwrap.fill(title or metric, 70), fontsize=10)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, format="png")
    plt.close(fig)


def write_results(out_dir: str | os.PathLike, records: Sequence[dict], *, title: str,
                  metrics: Sequence[str] | None = None, plot_metric: str | None = None,
                  bold_best: dict[str, str] | None = None, notes: str = "",
                  command: str | None = None, extra: dict | None = None,
                  rows: Sequence[dict] | None = None, table_md: str | None = None) -> Path:
    """Write ``results.json``, ``results.md`` (and ``results.png``) into ``out_dir``.

    ``rows`` default to :func:`summarize` of ``records`` and ``table_md`` to
    :func:`to_markdown` of the rows (the evidence tables pass their own). Each file is
    written to a temporary sibling and renamed into place, ``results.json`` last, so a
    folder holding ``results.json`` holds a complete table; other files in ``out_dir``
    (per-run folders, plots) are left alone.
    """
    out = Path(out_dir).absolute()
    out.mkdir(parents=True, exist_ok=True)
    rows = list(rows) if rows is not None else summarize(records)
    command = command or "tfdebias " + shlex.join(sys.argv[1:])  # quoted: it can be pasted
    payload = {"title": title, "command": command,
               "date": _dt.date.today().isoformat(), **(extra or {}), "rows": rows,
               "records": list(records)}
    md = [f"# {title}", "", f"Produced by `{command}`.", "",
          table_md if table_md is not None else to_markdown(rows, metrics, bold_best=bold_best)]
    if plot_metric:
        write_with(out / "results.png", lambda p: plot_rows(rows, plot_metric, p, title=title))
        md += ["", f"![{plot_metric}](results.png)"]
    if notes:
        md += ["", notes.strip()]
    write_with(out / "results.md", lambda p: p.write_text("\n".join(md) + "\n"))
    write_json(out / "results.json", payload)  # atomic too
    return out
