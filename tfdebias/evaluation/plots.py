"""Plots people would rather look at than read: learning curves and the bias itself.

``plot_calibration`` buckets rows by the *true* exposure propensity (simulators know it)
and draws, per bucket, the model's mean prediction against the observed click rate on the
biased validation split and on the unbiased test split. A biased model over-predicts
where the logging policy rarely showed items; a debiased one tracks the unbiased line.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np


def pyplot():
    """``matplotlib.pyplot`` on the file-only Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def read_history(path: str | os.PathLike) -> dict[str, list[float]]:
    """history.csv as columns; a resumed run may repeat an epoch, the last row wins."""
    rows: dict[int, dict] = {}
    with open(path) as f:
        for r in csv.DictReader(f):
            rows[int(r["epoch"])] = r
    cols: dict[str, list[float]] = {}
    for e in sorted(rows):
        for k, v in rows[e].items():
            cols.setdefault(k, []).append(float(v) if v not in ("", None) else float("nan"))
    return cols


def plot_learning_curves(history_csv: str | os.PathLike, out_png: str | os.PathLike) -> None:
    if not Path(history_csv).exists():
        return
    h = read_history(history_csv)
    metrics = [k for k in h if k != "epoch" and not k.startswith("val_") and k != "learning_rate"]
    plt = pyplot()
    fig, axes = plt.subplots(1, len(metrics), figsize=(4 * len(metrics), 3.2), squeeze=False)
    epochs = np.array(h["epoch"]) + 1
    for ax, k in zip(axes[0], metrics):
        ax.plot(epochs, h[k], "o-", label="train")
        if f"val_{k}" in h:
            ax.plot(epochs, h[f"val_{k}"], "s--", label="valid")
        ax.set_xlabel("epoch")
        ax.set_title(k)
        ax.legend()
    fig.tight_layout()
    Path(out_png).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=100)
    plt.close(fig)


def calibration_by_propensity(pred, label, propensity, n_buckets: int = 10):
    """Per propensity-quantile bucket: (mean propensity, mean prediction, click rate)."""
    pred, label, propensity = map(np.asarray, (pred, label, propensity))
    edges = np.unique(np.quantile(propensity, np.linspace(0, 1, n_buckets + 1)))
    idx = np.clip(np.searchsorted(edges, propensity, side="right") - 1, 0, len(edges) - 2)
    counts = np.bincount(idx, minlength=len(edges) - 1)
    keep = counts > 0

    def mean(x):
        return (np.bincount(idx, weights=x, minlength=len(edges) - 1)[keep] / counts[keep])

    return mean(propensity), mean(pred), mean(label)


def plot_calibration(curves: dict[str, tuple], out_png, title="Calibration by true propensity"):
    """``curves``: split name → (propensity, prediction, click rate) per bucket."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for i, (split, (p, pred, rate)) in enumerate(curves.items()):
        c = f"C{i}"
        ax.plot(p, rate, "o-", color=c, label=f"{split}: click rate")
        ax.plot(p, pred, "x--", color=c, label=f"{split}: mean prediction")
    ax.set_xscale("log")
    ax.set_xlabel("true exposure propensity (bucket mean)")
    ax.set_ylabel("click probability")
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    Path(out_png).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=100)
    plt.close(fig)


def plot_run_calibration(model, splits: dict, schema, out_png) -> bool:
    """Calibration plot for a run when the data carries true propensities."""
    from tfdebias.evaluation.protocols import scored_splits
    from tfdebias.models import predict

    exp = schema.exposure
    if exp is None:
        return False
    curves = {}
    for split in scored_splits(splits, schema):
        cols = splits[split]
        if exp.name not in cols:
            continue
        p = predict(model, cols)
        curves[split] = calibration_by_propensity(p, cols[schema.label.name], cols[exp.name])
    if not curves:
        return False
    plot_calibration(curves, out_png)
    return True
